"""tus 1.0.0 resumable uploads under /api/uploads/, over real HTTP against moto."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import socket
import time
from pathlib import Path

import pytest
import requests
from tusclient.client import TusClient

from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import KiB, MiB
from file_uploader.storage.keys import user_id

from ..helpers import all_keys, metric, metric_samples, new_token, open_uploads, path_of, run_gateway

PART = 5 * MiB  # the smallest part size S3 allows keeps these tests quick
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode() + ",filetype dGV4dC9wbGFpbg=="


def payload(size: int) -> bytes:
    block = hashlib.sha256(str(size).encode()).digest() * 64
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process, with 5 MiB parts."""
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART)))


async def create(gw, auth, name="data.bin", length: int | None = None, **headers) -> str:
    sizes = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    response = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, **sizes, "Upload-Metadata": metadata(name), **headers}
    )
    assert response.status == 201, await response.text()
    return path_of(response.headers["Location"])


async def patch(gw, auth, url: str, offset: int, data: bytes, **headers):
    return await gw.patch(
        url, data=data, headers={**auth, **TUS, **OCTETS, "Upload-Offset": str(offset), **headers}
    )


async def offset_of(gw, auth, url: str) -> int:
    response = await gw.head(url, headers={**auth, **TUS})
    assert response.status == 200
    return int(response.headers["Upload-Offset"])


async def names(gw, auth) -> list[str]:
    return await (await gw.get("/api/files", headers=auth)).json()


async def content(gw, auth, name: str) -> bytes:
    return await (await gw.get(f"/api/files/{name}", headers=auth)).read()


def state_keys(s3, bucket: str) -> list[str]:
    return [key for key in all_keys(s3, bucket) if key.startswith("uploads/")]


def leftovers(s3, bucket: str) -> list[str]:
    """State objects but the infos of finished uploads (kept until they expire, for HEAD)."""
    return [
        key
        for key in state_keys(s3, bucket)
        if not (
            key.endswith(".info")
            and json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["state"] == "done"
        )
    ]


async def test_options_advertises_version_extensions_and_limits(gw, auth):
    response = await gw.options("/api/uploads/", headers=auth)
    assert response.status == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length", "termination"} <= extensions
    assert {"expiration", "checksum"} <= extensions
    assert int(response.headers["Tus-Max-Size"]) > 0
    assert "sha1" in response.headers["Tus-Checksum-Algorithm"].split(",")


async def test_creation_returns_location_offset_zero_and_expiry(gw, auth, s3, bucket):
    response = await gw.post(
        "/api/uploads",
        headers={**auth, **TUS, "Upload-Length": "10", "Upload-Metadata": metadata("a.txt")},
    )
    assert response.status == 201
    assert response.headers["Tus-Resumable"] == "1.0.0"
    # Absolute, on the origin the client asked (api/proxies.py: PUBLIC_URL or a trusted proxy's).
    assert response.headers["Location"].startswith(f"http://{gw.host}:{gw.port}/api/uploads/")
    assert response.headers["Upload-Expires"].endswith("GMT")
    head = await gw.head(path_of(response.headers["Location"]), headers={**auth, **TUS})
    assert head.headers["Upload-Offset"] == "0"
    assert head.headers["Upload-Length"] == "10"
    assert head.headers["Upload-Metadata"] == metadata("a.txt")
    assert head.headers["Cache-Control"] == "no-store"
    assert [u["Key"] for u in open_uploads(s3, bucket)] == [f"files/{user_id(auth['X-Auth-Token'])}/a.txt"]


async def test_creation_with_upload_stores_a_small_file_at_once(gw, auth, s3, bucket):
    data = payload(100 * KiB)
    response = await gw.post(
        "/api/uploads/",
        data=data,
        headers={
            **auth,
            **TUS,
            **OCTETS,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata("notes/small.bin"),
        },
    )
    assert response.status == 201, await response.text()
    assert response.headers["Upload-Offset"] == str(len(data))
    assert await names(gw, auth) == ["notes/small.bin"]
    assert await content(gw, auth, "notes/small.bin") == data
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []
    # Completed: the upload URL says so (a client whose last answer was lost learns it is done).
    done = await gw.head(path_of(response.headers["Location"]), headers={**auth, **TUS})
    assert done.status == 200
    assert done.headers["Upload-Offset"] == done.headers["Upload-Length"] == str(len(data))


async def test_an_empty_upload_is_an_empty_file(gw, auth, s3, bucket):
    await create(gw, auth, "empty.txt", length=0)
    assert await names(gw, auth) == ["empty.txt"]
    assert await content(gw, auth, "empty.txt") == b""
    assert open_uploads(s3, bucket) == []


@pytest.mark.slow  # 4 s: hundreds of PATCHes and the S3 calls of each
async def test_tiny_patches_add_up_to_several_parts(gw, auth, s3, bucket):
    """Few-KiB PATCHes, many of them crossing part boundaries, through the tail object."""
    total = 2 * PART + 20 * KiB
    data = payload(total)
    url = await create(gw, auth, "tiny.bin", length=total)
    sizes: list[int] = []
    # 7 KiB short: the third 3 KiB PATCH after it straddles the first part
    # boundary; 6 KiB short: the second ends exactly on the next one.
    for boundary, short in ((PART, 7 * KiB), (2 * PART, 6 * KiB)):
        start = sum(sizes)
        sizes += [3 * KiB] * 4
        sizes.append(boundary - short - start - 12 * KiB)
        sizes += [3 * KiB] * 4
    sizes.append(total - sum(sizes))
    offset = 0
    for size in sizes:
        response = await patch(gw, auth, url, offset, data[offset : offset + size])
        assert response.status == 204, await response.text()
        offset += size
        assert response.headers["Upload-Offset"] == str(offset)
        if offset < total:
            assert await offset_of(gw, auth, url) == offset
            assert len(state_keys(s3, bucket)) <= 2  # the info and at most one tail
    assert await content(gw, auth, "tiny.bin") == data
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []


async def test_deferred_length_is_declared_by_a_later_patch(gw, auth):
    data = payload(PART + 300 * KiB)
    url = await create(gw, auth, "deferred.bin")
    head = await gw.head(url, headers={**auth, **TUS})
    assert head.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in head.headers
    first = await patch(gw, auth, url, 0, data[: PART + 100 * KiB])
    assert first.status == 204
    assert await names(gw, auth) == []
    last = await patch(
        gw, auth, url, PART + 100 * KiB, data[PART + 100 * KiB :], **{"Upload-Length": str(len(data))}
    )
    assert last.status == 204, await last.text()
    assert await content(gw, auth, "deferred.bin") == data


async def test_termination_aborts_the_multipart_upload_and_removes_state(gw, auth, s3, bucket):
    url = await create(gw, auth, "doomed.bin", length=3 * PART)
    assert (await patch(gw, auth, url, 0, payload(PART + 10))).status == 204
    assert len(open_uploads(s3, bucket)) == 1
    assert state_keys(s3, bucket) != []
    response = await gw.delete(url, headers={**auth, **TUS})
    assert response.status == 204
    assert open_uploads(s3, bucket) == []
    assert state_keys(s3, bucket) == []
    assert (await gw.head(url, headers={**auth, **TUS})).status == 404
    assert await names(gw, auth) == []


async def test_patch_at_a_wrong_offset_is_a_conflict(gw, auth):
    url = await create(gw, auth, length=100)
    assert (await patch(gw, auth, url, 0, b"x" * 10)).status == 204
    response = await patch(gw, auth, url, 5, b"y" * 10)  # a stale client
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "offset_mismatch"
    assert await offset_of(gw, auth, url) == 10


async def test_request_without_tus_resumable_is_refused_with_412(gw, auth):
    url = await create(gw, auth, length=100)
    response = await gw.patch(url, data=b"x", headers={**auth, **OCTETS, "Upload-Offset": "0"})
    assert response.status == 412
    assert response.headers["Tus-Version"] == "1.0.0"
    assert (await response.json())["error"]["code"] == "unsupported_tus_version"
    assert await offset_of(gw, auth, url) == 0


async def test_another_users_upload_is_not_found(gw, auth, s3, bucket):
    url = await create(gw, auth, length=100)
    other = {"X-Auth-Token": new_token()}
    assert (await gw.head(url, headers={**other, **TUS})).status == 404
    response = await patch(gw, other, url, 0, b"x" * 10)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    assert (await gw.delete(url, headers={**other, **TUS})).status == 404
    assert await offset_of(gw, auth, url) == 0
    assert len(open_uploads(s3, bucket)) == 1


async def test_patch_without_offset_content_type_is_unsupported(gw, auth):
    url = await create(gw, auth, length=100)
    response = await gw.patch(
        url, data=b"x", headers={**auth, **TUS, "Upload-Offset": "0", "Content-Type": "text/plain"}
    )
    assert response.status == 415


async def test_patch_past_the_declared_length_is_refused(gw, auth):
    url = await create(gw, auth, length=10)
    response = await patch(gw, auth, url, 0, b"x" * 11)
    assert response.status == 413
    assert await offset_of(gw, auth, url) == 0


async def test_deferred_upload_cannot_grow_past_the_size_limit(aiohttp_client, app_for, settings, auth):
    small = dataclasses.replace(settings, part_size=PART, max_file_size=PART + 10)
    gw = await aiohttp_client(await app_for(small))
    url = await create(gw, auth, "big.bin")
    assert (await patch(gw, auth, url, 0, payload(PART))).status == 204
    response = await patch(gw, auth, url, PART, payload(11))
    assert response.status == 413
    assert await offset_of(gw, auth, url) == PART


async def test_a_name_that_cannot_be_stored_is_refused_at_creation(gw, auth):
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": "1", "Upload-Metadata": metadata("../x")},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_name"


async def test_checksum_mismatch_commits_nothing(gw, auth):
    data = payload(PART + 1000)
    url = await create(gw, auth, "summed.bin", length=len(data))
    bad = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = await patch(gw, auth, url, 0, data[:-10], **{"Upload-Checksum": bad})
    assert response.status == 460
    assert (await response.json())["error"]["code"] == "checksum_mismatch"
    assert await offset_of(gw, auth, url) == 0
    good = "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()
    response = await patch(gw, auth, url, 0, data, **{"Upload-Checksum": good})
    assert response.status == 204
    assert await content(gw, auth, "summed.bin") == data


async def test_expired_upload_is_gone_and_gc_aborts_it(aiohttp_client, app_for, settings, auth, s3, bucket):
    gw = await aiohttp_client(await app_for(dataclasses.replace(settings, upload_expiry=1)))
    url = await create(gw, auth, "late.bin", length=3 * PART)
    assert (await patch(gw, auth, url, 0, payload(100))).status == 204
    keep = await create(gw, auth, "kept.bin", length=10)
    resumable = gw.app[STORAGE].resumable
    assert await resumable.expire(time.time()) == 0
    live = await resumable.live_multipart_ids(time.time())
    assert live == {upload["UploadId"] for upload in open_uploads(s3, bucket)}
    assert len(live) == 2
    await asyncio.sleep(1.1)
    response = await patch(gw, auth, url, 100, payload(100))
    assert response.status == 410
    assert (await response.json())["error"]["code"] == "upload_expired"
    assert await resumable.live_multipart_ids(time.time()) == set()
    assert await resumable.expire(time.time()) == 2
    assert open_uploads(s3, bucket) == []
    assert state_keys(s3, bucket) == []
    assert (await gw.head(keep, headers={**auth, **TUS})).status == 404
    assert (await gw.head(url, headers={**auth, **TUS})).status == 404


async def test_patch_with_a_bad_token_is_refused_before_the_body(gw):
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(
        b"PATCH /api/uploads/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: x\r\n"
        b"X-Auth-Token: nope\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
        b"Content-Type: application/offset+octet-stream\r\nContent-Length: 1000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401")


# tuspy against `python -m file_uploader` processes -------------------------------------------


def gateway(s3_url: str, bucket: str, workdir: Path):
    """A gateway process of its own (as conftest's gateway_process), with 5 MiB parts."""
    return run_gateway(s3_url, bucket, workdir, PART_SIZE=str(PART))


def listed(base: str, auth: dict[str, str]) -> list[str]:
    return requests.get(f"{base}/api/files", headers=auth, timeout=10).json()


def downloaded(base: str, auth: dict[str, str], name: str) -> bytes:
    return requests.get(f"{base}/api/files/{name}", headers=auth, timeout=30).content


@pytest.mark.process
def test_tuspy_uploads_a_file_of_several_parts_in_one_go(s3_url, bucket, s3, tmp_path, auth):
    data = payload(3 * PART + 123)
    path = tmp_path / "several.bin"
    path.write_bytes(data)
    with gateway(s3_url, bucket, tmp_path / "gw") as base:
        client = TusClient(f"{base}/api/uploads/", headers=auth)
        uploader = client.uploader(
            file_path=str(path), metadata={"filename": "several.bin"}, upload_checksum=True
        )
        uploader.upload()
        assert uploader.offset == len(data)
        assert listed(base, auth) == ["several.bin"]
        assert downloaded(base, auth, "several.bin") == data
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []


@pytest.mark.process
def test_tuspy_resumes_an_interrupted_upload_on_another_gateway(s3_url, bucket, s3, tmp_path, auth):
    data = payload(2 * PART + 777)
    path = tmp_path / "resumed.bin"
    path.write_bytes(data)
    sent = PART + 3 * MiB  # a full part and a tail
    with gateway(s3_url, bucket, tmp_path / "gw1") as first:
        uploader = TusClient(f"{first}/api/uploads/", headers=auth).uploader(
            file_path=str(path), metadata={"filename": "resumed.bin"}
        )
        location = uploader.create_url()
        path_part = location.split("://", 1)[1].split("/", 1)[1]
        # A PATCH for the whole file whose connection dies after `sent` bytes.
        with socket.create_connection(("127.0.0.1", int(first.rsplit(":", 1)[1]))) as sock:
            head = (
                f"PATCH /{path_part} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
                f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Length: {len(data)}\r\n"
                "Content-Type: application/offset+octet-stream\r\n\r\n"
            )
            sock.sendall(head.encode() + data[:sent])
        # The first gateway keeps what arrived: wait until it has committed it.
        deadline = time.monotonic() + 15
        while True:
            head = requests.head(f"{first}/{path_part}", headers={**auth, **TUS}, timeout=5)
            if int(head.headers["Upload-Offset"]) == sent or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    # The first gateway is stopped; a second one, started on its own, takes over.
    with gateway(s3_url, bucket, tmp_path / "gw2") as second:
        head = requests.head(f"{second}/{path_part}", headers={**auth, **TUS}, timeout=5)
        assert int(head.headers["Upload-Offset"]) == sent
        resumed = TusClient(f"{second}/api/uploads/", headers=auth).uploader(
            file_path=str(path), url=f"{second}/{path_part}"
        )
        assert resumed.offset == sent  # tuspy asked the server
        resumed.upload()
        assert listed(second, auth) == ["resumed.bin"]
        assert downloaded(second, auth, "resumed.bin") == data
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []


async def test_a_deferred_upload_that_ends_at_zero_bytes_is_an_empty_file(gw, auth, s3, bucket):
    url = await create(gw, auth, "nothing.txt")
    response = await patch(gw, auth, url, 0, b"", **{"Upload-Length": "0"})
    assert response.status == 204, await response.text()
    assert response.headers["Upload-Offset"] == "0"
    assert await content(gw, auth, "nothing.txt") == b""
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []


async def test_a_patch_takes_one_of_the_users_upload_slots(aiohttp_client, app_for, settings, auth):
    """tus PATCHes and PUTs count against MAX_UPLOADS_PER_USER together."""
    gw = await aiohttp_client(await app_for(dataclasses.replace(settings, max_uploads_per_user=1)))
    url = await create(gw, auth, "slow.bin", length=1000)
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(
        f"PATCH {url} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        "Content-Length: 1000\r\n\r\n".encode()
        + b"x" * 10
    )
    await writer.drain()
    slots, uid = gw.app[STORAGE].pipeline.slots, user_id(auth["X-Auth-Token"])
    for _ in range(200):
        if slots.active(uid):
            break
        await asyncio.sleep(0.02)
    assert slots.active(uid) == 1

    put = await gw.put("/api/files/other", data=b"y", headers=auth)
    second = await patch(gw, auth, await create(gw, auth, "other.bin", length=5), 0, b"12345")

    assert put.status == 429
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "too_many_uploads"
    assert second.headers["Tus-Resumable"] == "1.0.0"
    writer.write(b"x" * 990)  # the first PATCH finishes and gives its slot back
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 204")
    writer.close()
    assert slots.active(uid) == 0


async def test_resumable_uploads_count_in_the_upload_metrics(gw, auth):
    before = await metric_samples(gw)
    url = await create(gw, auth, "counted.bin", length=200)
    assert (await patch(gw, auth, url, 0, payload(100))).status == 204
    wrong = {"Upload-Checksum": "sha1 " + base64.b64encode(b"x" * 20).decode()}
    assert (await patch(gw, auth, url, 100, payload(100), **wrong)).status == 460
    assert (await patch(gw, auth, url, 100, payload(100))).status == 204
    after = await metric_samples(gw)
    assert (
        metric(after, "file_uploader_uploads_completed_total", kind="tus")
        - metric(before, "file_uploader_uploads_completed_total", kind="tus")
        == 1
    )
    aborted = "file_uploader_uploads_aborted_total"
    assert metric(after, aborted, kind="tus", reason="checksum_mismatch") == 1 + metric(
        before, aborted, kind="tus", reason="checksum_mismatch"
    )
    assert metric(after, "file_uploader_uploads_in_flight", kind="tus") == 0
