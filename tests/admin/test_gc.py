"""`python -m file_uploader gc`: unfinished multipart uploads are aborted, young ones kept."""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
import re
import time

import aiohttp
import pytest

from file_uploader.admin.gc import parse_age
from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import MiB
from file_uploader.storage import open_storage
from file_uploader.storage.sweep import (
    EXPIRED_GRANTS_KEPT,
    abort_stale_uploads,
    collect_garbage,
    forget_expired_grants,
)

from ..faultproxy import Fault, FaultProxy
from ..helpers import all_keys, new_token, open_uploads, run_admin

GATEWAY_KEY = "files/" + "ab" * 32 + "/crashed.bin"
OTHER_KEY = "backups/not-ours.bin"


def start_upload(s3, bucket: str, key: str) -> str:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"left behind")
    return upload_id


def open_keys(s3, bucket: str) -> list[str]:
    return sorted(upload["Key"] for upload in open_uploads(s3, bucket))


@pytest.mark.process
def test_gc_command_aborts_the_gateways_stale_uploads_and_says_so(s3_url, bucket, s3, tmp_path):
    upload_id = start_upload(s3, bucket, GATEWAY_KEY)
    start_upload(s3, bucket, OTHER_KEY)
    result = run_admin(s3_url, bucket, tmp_path, "gc", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert upload_id in result.stdout
    assert "aborted 1 multipart upload(s)" in result.stdout
    assert "removed 0 share link(s) and upload request(s)" in result.stdout
    assert open_keys(s3, bucket) == [OTHER_KEY]  # outside files/: not the gateway's to abort


@pytest.mark.slow
@pytest.mark.process
async def test_gc_on_moto_leaves_a_slow_put_in_flight_and_collects_an_abandoned_upload(
    gateway_process, s3_url, bucket, s3, tmp_path
):
    """moto says every multipart upload was initiated in 2010. A PUT sending a part every
    2 s is in flight when `gc --older-than 10s` runs: its newest part is seconds old, so
    it is kept and completes byte-exact; an upload whose only part is 12 s old is aborted."""
    abandoned = start_upload(s3, bucket, GATEWAY_KEY)
    pieces = [os.urandom(8 * MiB) for _ in range(12)] + [b"tail"]
    gc_done = asyncio.Event()

    async def body():
        for piece in pieces[:-1]:
            yield piece
            if not gc_done.is_set():
                await asyncio.sleep(2)
        yield pieces[-1]

    auth = {"X-Auth-Token": new_token()}
    async with aiohttp.ClientSession() as session:
        put = asyncio.ensure_future(
            session.put(f"{gateway_process}/api/files/slow.bin", data=body(), headers=auth)
        )
        await asyncio.sleep(12)
        result = await asyncio.to_thread(run_admin, s3_url, bucket, tmp_path, "gc", "--older-than", "10s")
        gc_done.set()
        assert result.returncode == 0, result.stderr
        assert "aborted 1 multipart upload(s)" in result.stdout and abandoned in result.stdout
        response = await put
        assert response.status == 204, await response.text()
        stored = await session.get(f"{gateway_process}/api/files/slow.bin", headers=auth)
        assert await stored.read() == b"".join(pieces)


def initiated_now(key: str):
    """Rewrite a ListMultipartUploads answer so that `key`'s upload started just now.

    moto reports the same fixed Initiated date (in 2010) for every upload, so
    an upload can only look young if the test says so on the way through.
    """
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pattern = re.compile(rf"(<Key>{re.escape(key)}</Key>.*?<Initiated>)[^<]*(</Initiated>)", re.S)

    def rewrite(body: bytes) -> bytes:
        return pattern.sub(rf"\g<1>{now}\g<2>", body.decode()).encode()

    return rewrite


def parts_written_long_ago(key: str):
    """Rewrite a ListParts answer for `key`'s upload so that its parts were written in 2010,
    as an abandoned upload's were: on moto they can only look old if the test says so."""
    pattern = re.compile(r"(<LastModified>)[^<]*(</LastModified>)")

    def rewrite(body: bytes) -> bytes:
        text = body.decode()
        if f"<Key>{key}</Key>" not in text:
            return body
        return pattern.sub(r"\g<1>2010-11-10T20:48:33.000Z\g<2>", text).encode()

    return rewrite


async def test_gc_keeps_uploads_younger_than_the_age(settings, s3, s3_url, bucket):
    old_id = start_upload(s3, bucket, GATEWAY_KEY)
    young_key = GATEWAY_KEY.replace("crashed", "in-progress")
    start_upload(s3, bucket, young_key)
    proxy = await FaultProxy(s3_url).start()
    try:
        proxy.add(Fault("ListMultipartUploads", action="rewrite", rewrite=initiated_now(young_key)))
        proxy.add(Fault("ListParts", action="rewrite", rewrite=parts_written_long_ago(GATEWAY_KEY)))
        async with open_storage(Settings(**{**settings.__dict__, "s3_endpoint_url": proxy.url})) as storage:
            aborted = await abort_stale_uploads(storage, datetime.timedelta(hours=1))
    finally:
        await proxy.close()
    assert [upload.upload_id for upload in aborted] == [old_id]
    assert open_keys(s3, bucket) == [young_key]


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_ages_parse(text, seconds):
    assert parse_age(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1w", "1 hour"])
def test_a_bad_age_is_refused(text):
    with pytest.raises(ValueError):
        parse_age(text)


async def test_gc_keeps_a_live_resumable_upload_however_old(client, auth, settings, s3, bucket):
    """A tus upload may sit idle until it expires: gc aborts only the crashed plain upload."""
    response = await client.post(
        "/api/uploads",
        headers={
            **auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "100",
            "Upload-Metadata": "filename " + base64.b64encode(b"resumable.bin").decode(),
        },
    )
    assert response.status == 201, await response.text()
    tus_keys = open_keys(s3, bucket)
    assert len(tus_keys) == 1  # the tus upload has its multipart upload open
    crashed_id = start_upload(s3, bucket, GATEWAY_KEY)
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.upload_id for upload in collected.aborted] == [crashed_id]
    assert open_keys(s3, bucket) == tus_keys


async def test_gc_works_with_keys_s3_xml_cannot_carry_planted_in_the_bucket(settings, s3, bucket):
    """Keys with U+FFFF (the gateway refuses such names) planted among files and upload state:
    another user's stale upload is still aborted."""
    for root in ("files/", "uploads/"):
        s3.put_object(Bucket=bucket, Key=f"{root}{'cd' * 32}/x\uffffy", Body=b"planted")
    stale = start_upload(s3, bucket, GATEWAY_KEY)
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.upload_id for upload in collected.aborted] == [stale]
    assert open_uploads(s3, bucket) == []


async def test_expired_links_and_upload_requests_stay_listed_as_expired_then_gc_removes_them(
    client, auth, s3, bucket
):
    assert (await client.put("/api/files/a.txt", data=b"a", headers=auth)).status == 204

    async def made(path: str, body: dict) -> str:
        response = await client.post(path, json=body, headers=auth)
        assert response.status in (200, 201), await response.text()
        return (await response.json())["id"]

    link = await made("/api/files/a.txt/share", {"expires_in": 1})
    kept_link = await made("/api/files/a.txt/share", {})
    request = await made("/api/requests", {"folder": "in", "expires_in": 1})
    kept_request = await made("/api/requests", {"folder": "in"})
    await asyncio.sleep(1.1)

    async def listed(path: str) -> dict[str, bool]:
        return {item["id"]: item["expired"] for item in await (await client.get(path, headers=auth)).json()}

    # Past its time, each is still listed, as expired, for its owner to see why it stopped.
    assert await listed("/api/links") == {link: True, kept_link: False}
    assert await listed("/api/requests") == {request: True, kept_request: False}
    storage = client.app[STORAGE]
    assert await forget_expired_grants(storage, time.time()) == 0
    # A week on, gc removes them: their records and index entries, as a revoke would.
    later = time.time() + EXPIRED_GRANTS_KEPT.total_seconds() + 1
    assert await forget_expired_grants(storage, later) == 2
    assert await listed("/api/links") == {kept_link: False}
    assert await listed("/api/requests") == {kept_request: False}
    assert not [key for key in all_keys(s3, bucket) if link in key or request in key]
