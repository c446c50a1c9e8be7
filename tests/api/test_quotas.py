"""USER_QUOTA through the HTTP API, against moto: what fits is stored, what does not is refused
(before its body when its length is declared, cut off when it is not) and leaves nothing behind."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json

import pytest

from file_uploader.settings import Settings
from file_uploader.sizes import KiB, MiB
from file_uploader.storage.keys import user_id, user_prefix
from file_uploader.storage.quotas import ledger_key

from ..helpers import all_keys, chunked, new_token, open_uploads, path_of

PART = 5 * MiB  # the smallest part S3 takes
QUOTA = 100 * KiB
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process with a quota of 100 KiB."""
    return await aiohttp_client(
        await app_for(dataclasses.replace(settings, user_quota=QUOTA, part_size=PART))
    )


async def put(gw, auth, name: str, data: bytes) -> int:
    response = await gw.put(f"/api/files/{name}", data=data, headers=auth)
    if response.status >= 400:
        body = await response.json()
        assert set(body) == {"error"}
        response.error_code = body["error"]["code"]  # type: ignore[attr-defined]
    return response.status


async def usage(gw, auth) -> dict:
    response = await gw.get("/api/usage", headers=auth)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return await response.json()


def stored(s3, bucket: str, token: str) -> dict[str, int]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=user_prefix(user_id(token))).get("Contents", [])
    return {item["Key"].rsplit("/", 1)[1]: item["Size"] for item in listing}


async def test_sequential_uploads_are_stored_up_to_the_quota_and_refused_past_it(gw, auth, s3, bucket):
    for number in range(4):
        assert await put(gw, auth, f"f{number}", b"x" * (25 * KiB)) == 204
    response = await gw.put("/api/files/one-more", data=b"y", headers=auth)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "quota_exceeded"
    assert sum(stored(s3, bucket, auth["X-Auth-Token"]).values()) == QUOTA
    assert await usage(gw, auth) == {"used": QUOTA, "quota": QUOTA, "files": 4, "reserved": 0}


async def first_answer(gw, request_line: str, headers: dict[str, str]) -> bytes:
    """Send only a request's head, with Expect: 100-continue; the gateway's first answer."""
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"{request_line} HTTP/1.1\r\nHost: x\r\n{lines}Expect: 100-continue\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if answer.startswith(b"HTTP/1.1 413"):
        answer += await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_a_declared_length_past_the_quota_is_refused_before_the_body_with_expect_continue(gw, auth):
    answer = await first_answer(gw, "PUT /api/files/big", {**auth, "Content-Length": str(QUOTA + 1)})
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")  # not 100 Continue: not a byte of the body was sent
    assert json.loads(body)["error"]["code"] == "quota_exceeded"


async def test_a_replacement_that_fits_gets_100_continue_though_the_quota_is_full(gw, auth):
    assert await put(gw, auth, "doc", b"1" * QUOTA) == 204
    answer = await first_answer(gw, "PUT /api/files/doc", {**auth, "Content-Length": str(QUOTA)})
    assert answer.startswith(b"HTTP/1.1 100 Continue")


async def test_a_tus_creation_with_upload_past_the_quota_is_refused_before_the_body(gw, auth):
    headers = {
        **auth,
        **TUS,
        "Upload-Length": str(QUOTA + 1),
        "Upload-Metadata": "filename " + base64.b64encode(b"big.bin").decode(),
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(QUOTA + 1),
    }
    head, _, body = (await first_answer(gw, "POST /api/uploads/", headers)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["error"]["code"] == "quota_exceeded"


@pytest.fixture
async def gw7(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process with a quota of 7 MiB."""
    return await aiohttp_client(
        await app_for(dataclasses.replace(settings, user_quota=7 * MiB, part_size=PART))
    )


async def test_a_chunked_body_past_the_quota_is_cut_off_and_leaves_nothing(gw7, s3, bucket):
    # 12 MiB sent chunked against 7 MiB: the first 5 MiB part is uploaded before the body passes
    # the quota, so the multipart upload it began must be aborted.
    gw = gw7
    auth = {"X-Auth-Token": new_token()}
    response = await gw.put("/api/files/big", data=chunked(b"z" * (12 * MiB)), headers=auth)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "quota_exceeded"
    assert stored(s3, bucket, auth["X-Auth-Token"]) == {}
    assert open_uploads(s3, bucket) == []
    # Its room came back: the whole quota is free for the next upload.
    assert await usage(gw, auth) == {"used": 0, "quota": 7 * MiB, "files": 0, "reserved": 0}
    assert await put(gw, auth, "fits", b"a" * (7 * MiB)) == 204


async def test_a_form_file_past_the_quota_is_refused_and_the_file_before_it_stays(gw, auth, s3, bucket):
    form = aiohttp_form({"first": b"a" * (60 * KiB), "second": b"b" * (60 * KiB)})
    response = await gw.post("/api/files", data=form, headers=auth)
    assert response.status == 207
    results = {entry["name"]: entry for entry in (await response.json())["files"]}
    assert results["first"]["status"] == 201
    assert results["second"]["status"] == 413
    assert results["second"]["error"]["code"] == "quota_exceeded"
    assert stored(s3, bucket, auth["X-Auth-Token"]) == {"first": 60 * KiB}


def aiohttp_form(files: dict[str, bytes]):
    import aiohttp

    form = aiohttp.FormData()
    for name, data in files.items():
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    return form


async def test_a_tus_creation_past_the_quota_is_refused_and_creates_nothing(gw, auth, s3, bucket):
    metadata = "filename " + base64.b64encode(b"big.bin").decode()
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": str(QUOTA + 1), "Upload-Metadata": metadata},
    )
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "quota_exceeded"
    assert not [key for key in all_keys(s3, bucket) if not key.startswith("quota/")]
    assert open_uploads(s3, bucket) == []


async def test_a_tus_upload_holds_its_length_until_it_is_terminated(gw, auth):
    metadata = "filename " + base64.b64encode(b"held.bin").decode()
    created = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Length": str(80 * KiB), "Upload-Metadata": metadata}
    )
    assert created.status == 201
    assert await usage(gw, auth) == {"used": 80 * KiB, "quota": QUOTA, "files": 0, "reserved": 80 * KiB}
    assert await put(gw, auth, "other", b"o" * (30 * KiB)) == 413  # 80 + 30 > 100
    terminated = await gw.delete(path_of(created.headers["Location"]), headers={**auth, **TUS})
    assert terminated.status == 204
    assert await put(gw, auth, "other", b"o" * (30 * KiB)) == 204


async def test_a_finished_tus_upload_counts_as_a_stored_file(gw, auth):
    metadata = "filename " + base64.b64encode(b"done.bin").decode()
    created = await gw.post(
        "/api/uploads/",
        data=b"t" * (40 * KiB),
        headers={
            **auth,
            **TUS,
            "Upload-Length": str(40 * KiB),
            "Upload-Metadata": metadata,
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert created.status == 201
    assert await usage(gw, auth) == {"used": 40 * KiB, "quota": QUOTA, "files": 1, "reserved": 0}


async def test_replacing_a_file_counts_only_the_difference(gw, auth):
    assert await put(gw, auth, "doc", b"1" * (90 * KiB)) == 204
    # 90 KiB stored: a new 95 KiB version of the same file fits, since it replaces the old one.
    assert await put(gw, auth, "doc", b"2" * (95 * KiB)) == 204
    assert await usage(gw, auth) == {"used": 95 * KiB, "quota": QUOTA, "files": 1, "reserved": 0}
    assert await put(gw, auth, "doc", b"3" * (10 * KiB)) == 204
    assert await usage(gw, auth) == {"used": 10 * KiB, "quota": QUOTA, "files": 1, "reserved": 0}


async def test_deleting_a_file_frees_its_room(gw, auth):
    assert await put(gw, auth, "a", b"a" * (70 * KiB)) == 204
    assert await put(gw, auth, "b", b"b" * (70 * KiB)) == 413
    assert (await gw.delete("/api/files/a", headers=auth)).status == 204
    assert await put(gw, auth, "b", b"b" * (70 * KiB)) == 204
    assert await usage(gw, auth) == {"used": 70 * KiB, "quota": QUOTA, "files": 1, "reserved": 0}


async def test_each_user_has_a_quota_of_their_own(gw, auth):
    assert await put(gw, auth, "mine", b"m" * QUOTA) == 204
    other = {"X-Auth-Token": new_token()}
    assert await put(gw, other, "theirs", b"t" * QUOTA) == 204


async def test_usage_without_a_quota_counts_the_files_and_says_null(client, auth):
    for name, size in (("a", 10), ("b", 2000)):
        assert (await client.put(f"/api/files/{name}", data=b"x" * size, headers=auth)).status == 204
    assert await usage(client, auth) == {"used": 2010, "quota": None, "files": 2, "reserved": 0}


async def test_usage_needs_a_token(gw):
    response = await gw.get("/api/usage")
    assert response.status == 401


async def test_files_stored_behind_the_gateways_back_are_counted_when_the_ledger_is_stale(
    gw, auth, s3, bucket
):
    uid = user_id(auth["X-Auth-Token"])
    assert await put(gw, auth, "first", b"f" * 10) == 204
    s3.put_object(Bucket=bucket, Key=f"{user_prefix(uid)}sideways", Body=b"s" * (95 * KiB))
    ledger = json.loads(s3.get_object(Bucket=bucket, Key=ledger_key(uid))["Body"].read())
    ledger["stale"] = True  # what a lease that ran out, or a race on one key, leaves
    s3.put_object(Bucket=bucket, Key=ledger_key(uid), Body=json.dumps(ledger).encode())
    assert await usage(gw, auth) == {"used": 95 * KiB + 10, "quota": QUOTA, "files": 2, "reserved": 0}
    assert await put(gw, auth, "second", b"x" * (6 * KiB)) == 413


async def test_deleting_a_folder_frees_the_room_of_its_files(gw, auth):
    for name in ("dir/a", "dir/b"):
        assert await put(gw, auth, name, b"d" * (40 * KiB)) == 204
    assert (await gw.delete("/api/files/dir/?recursive=1", headers=auth)).status == 200
    assert await usage(gw, auth) == {"used": 0, "quota": QUOTA, "files": 0, "reserved": 0}


async def test_a_tus_upload_of_deferred_length_is_stopped_at_the_quota(gw, auth, s3, bucket):
    metadata = "filename " + base64.b64encode(b"deferred.bin").decode()
    created = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": metadata}
    )
    assert created.status == 201
    patch = await gw.patch(
        path_of(created.headers["Location"]),
        data=b"p" * (QUOTA + 50 * KiB),
        headers={**auth, **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patch.status == 413
    assert (await patch.json())["error"]["code"] == "quota_exceeded"
    assert stored(s3, bucket, auth["X-Auth-Token"]) == {}
    found = await usage(gw, auth)
    assert found["files"] == 0 and found["used"] <= QUOTA
