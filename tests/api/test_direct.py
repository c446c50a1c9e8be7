"""Direct-to-S3 uploads (DIRECT_UPLOADS) and download redirects (DIRECT_DOWNLOADS), on moto over sockets.

The client here makes exactly @uppy/aws-s3's calls in its multipart mode, each pointed at the
gateway's routes (createMultipartUpload, signPart, listParts, completeMultipartUpload,
abortMultipartUpload), and PUTs each part to the presigned URL as Uppy's uploadPartBytes does.

moto 5.2 verifies neither a presigned URL's signature nor x-amz-checksum-sha256 (nor
Content-MD5) on UploadPart: a part of other bytes, or another length, is accepted there. What is
enforceable on moto is what the gateway itself checks at completion (each part's size against
the plan it signed), and that is what these tests prove; AWS refuses the bytes at the PUT.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from file_uploader.settings import Settings, SettingsError
from file_uploader.sizes import MiB
from file_uploader.storage import open_storage
from file_uploader.storage.direct import part_checksum
from file_uploader.storage.keys import file_key, user_id
from file_uploader.storage.sweep import collect_garbage

from ..helpers import new_token, run_gateway
from ..hooks.test_blocking import SECRET as HOOK_SECRET
from ..hooks.test_blocking import Receiver
from ..node_clients import npm_installed


@pytest.fixture
def direct_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, direct_uploads=True, direct_downloads=True, part_size=5 * MiB)


@pytest.fixture
async def direct(aiohttp_client, app_for, direct_settings: Settings):
    return await aiohttp_client(await app_for(direct_settings))


async def _put_part(url: str, headers: dict[str, str], data: bytes) -> str:
    async with aiohttp.ClientSession() as session, session.put(url, data=data, headers=headers) as response:
        assert response.status == 200, await response.text()
        return response.headers["ETag"]


async def upload_like_uppy(client, auth: dict[str, str], name: str, data: bytes) -> dict:
    created = await client.post("/api/direct", json={"name": name, "size": len(data)}, headers=auth)
    assert created.status == 201, await created.text()
    plan = await created.json()
    size = plan["partSize"]
    for number, start in enumerate(range(0, len(data), size), start=1):
        chunk = data[start : start + size]
        signed = await client.post(
            f"/api/direct/{plan['uploadId']}/parts/{number}",
            json={"checksum": part_checksum(chunk)},
            headers=auth,
        )
        assert signed.status == 200, await signed.text()
        answer = await signed.json()
        await _put_part(answer["url"], answer["headers"], chunk)
    listed = await client.get(f"/api/direct/{plan['uploadId']}/parts", headers=auth)
    assert [part["Size"] for part in await listed.json()] == [
        len(data[start : start + size]) for start in range(0, len(data), size)
    ]
    done = await client.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    return {"status": done.status, "body": await done.json(), "plan": plan}


async def test_a_file_uploaded_through_presigned_parts_lands_in_the_users_space(
    direct, auth, token, s3, bucket
):
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB: three parts
    result = await upload_like_uppy(direct, auth, "direct/movie.bin", data)
    assert result["status"] == 200, result
    assert result["body"]["size"] == len(data)
    stored = s3.get_object(Bucket=bucket, Key=file_key(user_id(token), "direct/movie.bin"))["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    listing = await (await direct.get("/api/files", headers=auth)).json()
    assert "direct/movie.bin" in str(listing)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_a_declared_size_past_the_quota_is_refused_before_any_url(
    aiohttp_client, app_for, direct_settings, auth, s3, bucket
):
    client = await aiohttp_client(await app_for(dataclasses.replace(direct_settings, user_quota=10 * MiB)))
    refused = await client.post("/api/direct", json={"name": "big.bin", "size": 11 * MiB}, headers=auth)
    assert refused.status == 413
    assert (await refused.json())["error"]["code"] == "quota_exceeded"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_a_completion_with_a_part_larger_than_signed_is_refused_and_aborted(direct, auth, s3, bucket):
    created = await direct.post("/api/direct", json={"name": "liar.bin", "size": 6 * MiB}, headers=auth)
    plan = await created.json()
    parts = [b"a" * (5 * MiB), b"b" * (2 * MiB)]  # the second part was declared (and signed) as 1 MiB
    for number, chunk in enumerate(parts, start=1):
        signed = await (
            await direct.post(
                f"/api/direct/{plan['uploadId']}/parts/{number}",
                json={"checksum": part_checksum(chunk)},
                headers=auth,
            )
        ).json()
        assert signed["size"] == [5 * MiB, 1 * MiB][number - 1]
        await _put_part(signed["url"], signed["headers"], chunk)
    done = await direct.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    assert done.status == 409
    assert (await done.json())["error"]["code"] == "parts_refused"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="files/")
    again = await direct.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    assert again.status == 404


async def test_a_checksum_that_is_not_a_sha256_is_refused(direct, auth):
    plan = await (await direct.post("/api/direct", json={"name": "x.bin", "size": 10}, headers=auth)).json()
    signed = await direct.post(
        f"/api/direct/{plan['uploadId']}/parts/1", json={"checksum": "abc"}, headers=auth
    )
    assert signed.status == 400
    assert (await signed.json())["error"]["code"] == "invalid_field"
    aborted = await direct.delete(f"/api/direct/{plan['uploadId']}", headers=auth)
    assert aborted.status == 204


async def test_direct_uploads_are_off_by_default(client, auth):
    refused = await client.post("/api/direct", json={"name": "x.bin", "size": 10}, headers=auth)
    assert refused.status == 404


async def test_a_download_redirect_is_followed_by_curl(direct, auth, token):
    data = b"hello, straight from S3\n" * 1000
    put = await direct.put("/api/files/notes/hello%20world.txt", data=data, headers=auth)
    assert put.status in (200, 201, 204)
    redirect = await direct.get("/api/files/notes/hello%20world.txt", headers=auth, allow_redirects=False)
    assert redirect.status == 302
    url = f"http://{direct.server.host}:{direct.server.port}/api/files/notes/hello%20world.txt"
    # curl -L sends the token on to S3 too; S3 ignores a header its signature does not name.
    out = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "-L", "-D", "-", "-H", f"X-Auth-Token: {token}", url],
        capture_output=True,
        check=True,
    )
    assert out.stdout.endswith(data)
    head = out.stdout[: -len(data)].decode().lower()
    assert "302" in head
    assert "content-disposition: attachment" in head and "hello%20world.txt" in head


UPPY_DIR = Path(__file__).parent.parent / "node_uppy"


def uppy_client() -> Path:
    """tests/node_uppy/ with Uppy installed (`npm ci`, once); skips where Node is missing."""
    return npm_installed(UPPY_DIR, "@uppy/aws-s3", "Uppy") / "uppy_upload.mjs"


@pytest.mark.slow
async def test_uppy_aws_s3_uploads_100_mib_through_presigned_parts(direct, auth, token, s3, bucket, tmp_path):
    script = uppy_client()
    data = os.urandom(100 * MiB)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    gateway = f"http://{direct.server.host}:{direct.server.port}"
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        gateway,
        token,
        str(path),
        "uppy/big.bin",
        str(8 * MiB),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, (out.decode(), err.decode())
    answer = json.loads(out.decode().strip().splitlines()[-1])
    assert answer["parts"] == 13 and answer["body"]["size"] == len(data)
    stored = s3.get_object(Bucket=bucket, Key=file_key(user_id(token), "uppy/big.bin"))["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


async def test_an_abandoned_direct_upload_is_aborted_by_gc_and_forgotten(
    direct, direct_settings, auth, s3, bucket
):
    plan = await (
        await direct.post("/api/direct", json={"name": "left.bin", "size": 10}, headers=auth)
    ).json()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    async with open_storage(direct_settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.key.rsplit("/", 1)[-1] for upload in collected.aborted] == ["left.bin"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="direct/")
    gone = await direct.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    assert gone.status == 404


async def test_a_part_whose_bytes_do_not_match_its_signed_md5_is_refused_at_completion(
    direct, auth, s3, bucket
):
    # moto stores the part whatever its Content-MD5 says (AWS and Ceph RGW refuse it with 400
    # BadDigest); its part ETag is the MD5 of the bytes it got, which the completion compares.
    plan = await (
        await direct.post("/api/direct", json={"name": "flip.bin", "size": 1000}, headers=auth)
    ).json()
    meant, sent = b"m" * 1000, b"m" * 999 + b"!"
    md5 = base64.b64encode(hashlib.md5(meant).digest()).decode()
    signed = await (
        await direct.post(
            f"/api/direct/{plan['uploadId']}/parts/1",
            json={"checksum": part_checksum(meant), "md5": md5},
            headers=auth,
        )
    ).json()
    assert signed["headers"]["Content-MD5"] == md5
    await _put_part(signed["url"], signed["headers"], sent)
    done = await direct.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    assert done.status == 409
    assert "other bytes" in (await done.json())["error"]["message"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="direct/")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="files/")


def test_the_page_follows_a_download_redirect(s3_url, bucket, tmp_path, browser_page):
    token = new_token()
    data = os.urandom(200_000)
    with run_gateway(s3_url, bucket, tmp_path, DIRECT_DOWNLOADS="1") as gateway:
        put = urllib.request.Request(
            f"{gateway}/api/files/photo%20one.bin", data=data, method="PUT", headers={"X-Auth-Token": token}
        )
        urllib.request.urlopen(put, timeout=10).close()
        page = browser_page
        page.goto(gateway + "/")
        page.fill("#token", token)
        page.click("#token-use")
        redirects = []
        page.on(
            "response", lambda response: redirects.append(response.status) if response.status == 302 else None
        )
        with page.expect_download() as download_info:
            page.click('#files tr[data-name="photo one.bin"] button.download')
        download = download_info.value
        assert download.suggested_filename == "photo one.bin"
        saved = tmp_path / "downloaded.bin"
        download.save_as(saved)
        assert saved.read_bytes() == data
    # The page's download link answered with the redirect (a download's own responses are not
    # the page's events): the access log says so.
    assert "route=/s/{link} status=302" in (tmp_path / "gateway.log").read_text()


@pytest.fixture
async def hook_receiver():
    """The operator's hook endpoint (tests/hooks/test_blocking.py's), on a socket of its own."""
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hooks"  # type: ignore[union-attr]
    yield found
    await runner.cleanup()


async def test_the_blocking_hooks_judge_a_direct_upload_before_any_url_and_before_its_file(
    aiohttp_client,
    app_for,
    direct_settings,
    hook_receiver,
    auth,
    s3,
    bucket,
):
    settings = dataclasses.replace(direct_settings, hook_url=hook_receiver.url, hook_secret=HOOK_SECRET)
    client = await aiohttp_client(await app_for(settings))
    hook_receiver.answers["pre-create"] = (403, {"message": "no videos here"})
    refused = await client.post("/api/direct", json={"name": "clip.mp4", "size": 10}, headers=auth)
    assert refused.status == 403
    assert (await refused.json())["error"]["message"] == "no videos here"
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")

    del hook_receiver.answers["pre-create"]
    hook_receiver.answers["pre-finish"] = (422, {"message": "infected"})
    result = await upload_like_uppy(client, auth, "scan.bin", b"s" * 1000)
    assert result["status"] == 422
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="files/")
    asked = [(hook["type"], hook.get("upload"), hook.get("size")) for hook in hook_receiver.hooks]
    assert asked == [
        ("pre-create", "direct", 10),
        ("pre-create", "direct", 1000),
        ("pre-finish", "direct", 1000),
    ]


def test_direct_urls_are_refused_with_sse_c(settings):
    key = base64.b64encode(b"k" * 32).decode()
    env = {"S3_BUCKET": "b", "S3_SSE": "sse-c", "S3_SSE_C_KEY": key, "DIRECT_DOWNLOADS": "1"}
    with pytest.raises(SettingsError, match="S3_SSE=sse-c"):
        Settings.from_env(env)


async def test_a_direct_upload_holds_its_room_in_the_quota_until_it_lands_or_is_aborted(
    aiohttp_client, app_for, direct_settings, auth
):
    client = await aiohttp_client(await app_for(dataclasses.replace(direct_settings, user_quota=20 * MiB)))
    held = await (
        await client.post("/api/direct", json={"name": "a.bin", "size": 15 * MiB}, headers=auth)
    ).json()
    usage = await (await client.get("/api/usage", headers=auth)).json()
    assert usage["reserved"] == 15 * MiB
    refused = await client.post("/api/direct", json={"name": "b.bin", "size": 10 * MiB}, headers=auth)
    assert refused.status == 413
    assert (await client.delete(f"/api/direct/{held['uploadId']}", headers=auth)).status == 204
    assert (await (await client.get("/api/usage", headers=auth)).json())["used"] == 0
    data = b"q" * (12 * MiB)
    result = await upload_like_uppy(client, auth, "b.bin", data)
    assert result["status"] == 200
    usage = await (await client.get("/api/usage", headers=auth)).json()
    assert (usage["used"], usage["reserved"], usage["files"]) == (12 * MiB, 0, 1)


async def test_urls_name_the_public_endpoint_when_one_is_set(
    aiohttp_client, app_for, direct_settings, s3_url, auth
):
    public = s3_url.replace("127.0.0.1", "localhost")
    client = await aiohttp_client(
        await app_for(dataclasses.replace(direct_settings, s3_public_endpoint_url=public))
    )
    data = b"p" * 5000
    plan = await (
        await client.post("/api/direct", json={"name": "pub.bin", "size": len(data)}, headers=auth)
    ).json()
    signed = await (
        await client.post(
            f"/api/direct/{plan['uploadId']}/parts/1", json={"checksum": part_checksum(data)}, headers=auth
        )
    ).json()
    assert signed["url"].startswith(public + "/")
    await _put_part(signed["url"], signed["headers"], data)
    assert (await client.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)).status == 200
    redirect = await client.get("/api/files/pub.bin", headers=auth, allow_redirects=False)
    assert redirect.headers["Location"].startswith(public + "/")


async def test_two_completions_at_once_store_the_file_once(
    aiohttp_client, app_for, direct_settings, auth, s3, bucket
):
    client = await aiohttp_client(await app_for(dataclasses.replace(direct_settings, user_quota=100 * MiB)))
    data = b"c" * (6 * MiB)
    plan = await (
        await client.post("/api/direct", json={"name": "twice.bin", "size": len(data)}, headers=auth)
    ).json()
    for number, start in enumerate(range(0, len(data), plan["partSize"]), start=1):
        chunk = data[start : start + plan["partSize"]]
        signed = await (
            await client.post(
                f"/api/direct/{plan['uploadId']}/parts/{number}",
                json={"checksum": part_checksum(chunk)},
                headers=auth,
            )
        ).json()
        await _put_part(signed["url"], signed["headers"], chunk)
    answers = await asyncio.gather(
        *(client.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth) for _ in range(4))
    )
    statuses = sorted(answer.status for answer in answers)
    assert statuses.count(200) == 1 and set(statuses) <= {200, 404, 409}, statuses
    usage = await (await client.get("/api/usage", headers=auth)).json()
    assert (usage["used"], usage["files"]) == (len(data), 1)
    assert not [
        key
        for key in (item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
        if key.startswith("direct/")
    ]
