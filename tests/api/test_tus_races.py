"""tus uploads under racing and careless clients: two PATCHes at one offset, lengths past the
limit, and the protocol's edge cases, over HTTP against moto.

Racing runs use two gateways (two apps, each with its own S3 client) on one
bucket, as two gateway processes or hosts would be.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import random
import time

import pytest

from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import MiB

from ..helpers import all_keys, new_token, open_uploads
from .test_tus import OCTETS, TUS, content, create, leftovers, metadata, offset_of, patch, payload

PART = 5 * MiB
LENGTH = 2 * PART + 1234  # three parts: two sent while the body arrives, the last at completion


def body(seed: str) -> bytes:
    block = hashlib.sha256(seed.encode()).digest() * 64
    return (block * (LENGTH // len(block) + 1))[:LENGTH]


async def gateways(aiohttp_client, app_for, settings: Settings, **changes):
    tuned = dataclasses.replace(settings, part_size=PART, **changes)
    return [await aiohttp_client(await app_for(tuned)) for _ in range(2)]


async def race(
    gws, auth, run: int, *, checksum: bool = False
) -> tuple[list[int], bytes | None, bytes, bytes, str]:
    """Two clients PATCH different bodies at offset 0 of one upload at the same instant, each
    pausing for a few random milliseconds somewhere in its body, as real networks do."""
    url = await create(gws[0], auth, f"race-{run}.bin", length=LENGTH)
    bodies = body(f"a{run}"), body(f"b{run}")
    jitter = random.Random(run)

    async def stream(data: bytes):
        pause_at = jitter.randrange(len(data))
        pause = jitter.uniform(0, 0.05)
        for start in range(0, len(data), 256 * 1024):
            if start <= pause_at < start + 256 * 1024:
                await asyncio.sleep(pause)
            yield data[start : start + 256 * 1024]

    async def send(gw, data: bytes) -> int:
        headers = {}
        if checksum:
            headers["Upload-Checksum"] = "sha1 " + base64.b64encode(hashlib.sha1(data).digest()).decode()
        response = await patch(gw, auth, url, 0, stream(data), **headers)
        await response.read()
        return response.status

    statuses = await asyncio.gather(send(gws[0], bodies[0]), send(gws[1], bodies[1]))
    stored = await gws[0].get(f"/api/files/race-{run}.bin", headers=auth)
    return list(statuses), (await stored.read() if stored.status == 200 else None), *bodies, url


async def run_races(gws, auth, s3, bucket, runs: int, **kwargs) -> tuple[int, int, list[list[int]]]:
    mixed = open_left = 0
    outcomes = []
    for run in range(runs):
        statuses, stored, a, b, url = await race(gws, auth, run, **kwargs)
        outcomes.append(statuses)
        if stored is not None and stored not in (a, b):
            mixed += 1
        if stored is not None:
            # The one client told 204 is the one whose bytes were stored.
            assert stored == (a if statuses[0] == 204 else b), statuses
        else:
            # No client finished it (both told 409, which only happens without conditional
            # writes, cas.py): it stays open for them to resume; they give up on it here.
            terminated = await gws[0].delete(url, headers={**auth, **TUS})
            assert terminated.status == 204
        open_left += len(open_uploads(s3, bucket))
    return mixed, open_left, outcomes


@pytest.mark.slow
async def test_twenty_racing_patches_store_only_one_clients_exact_bytes(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gws = await gateways(aiohttp_client, app_for, settings)
    mixed, open_left, outcomes = await run_races(gws, auth, s3, bucket, 20)
    print(f"20 races: {mixed} mixed files, {open_left} multipart uploads left open; statuses {outcomes}")
    assert mixed == 0
    assert open_left == 0
    for statuses in outcomes:
        # The lock serialises them: one stores, the other is told the upload is busy or moved on
        # (or, 502, that S3 failed it: moto's server answers an UploadPart 500 now and then under load).
        assert sorted(statuses)[0] == 204 and sorted(statuses)[1] in (409, 423, 502), statuses
    assert leftovers(s3, bucket) == []


@pytest.mark.slow
async def test_racing_patches_with_upload_checksum_store_only_one_clients_bytes(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gws = await gateways(aiohttp_client, app_for, settings)
    mixed, open_left, outcomes = await run_races(gws, auth, s3, bucket, 8, checksum=True)
    print(f"8 races with Upload-Checksum: {mixed} mixed, {open_left} left open; statuses {outcomes}")
    assert mixed == 0 and open_left == 0


@pytest.mark.slow
async def test_without_conditional_writes_racing_patches_never_mix(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    """An S3 that does not honour If-Match/If-None-Match: a race may cost a client its work
    (409, resume from HEAD), but a stored file is still exactly one client's bytes."""
    gws = await gateways(aiohttp_client, app_for, settings, s3_conditional_writes=False)
    mixed, _, outcomes = await run_races(gws, auth, s3, bucket, 10)
    print(f"10 races without conditional writes: {mixed} mixed; statuses {outcomes}")
    assert mixed == 0
    for statuses in outcomes:
        # The one that lost may also hear S3 refuse its parts: moto answers 500
        # (here 502) to an UploadPart that races the other's completion.
        assert statuses.count(204) <= 1 and set(statuses) <= {204, 409, 423, 502}, statuses


async def test_a_patch_while_another_holds_the_lock_gets_423(gw, auth):
    url = await create(gw, auth, "locked.bin", length=100)
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(
        f"PATCH {url} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\nTus-Resumable: 1.0.0\r\n"
        "Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 100\r\n\r\n"
        "first".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.5)  # it holds the lock, waiting for the rest of its body
    response = await patch(gw, auth, url, 0, b"x" * 100)
    assert response.status == 423
    assert response.headers["Retry-After"] and response.headers["Tus-Resumable"] == "1.0.0"
    writer.write(b"y" * 95)
    assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"HTTP/1.1 204")
    writer.close()
    assert await content(gw, auth, "locked.bin") == b"first" + b"y" * 95


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART)))


# Lengths past MAX_FILE_SIZE, and numbers that are not numbers. -------------------------------------


async def test_a_deferred_length_above_max_file_size_is_refused(aiohttp_client, app_for, settings, auth):
    small = dataclasses.replace(settings, part_size=PART, max_file_size=10 * MiB)
    gw = await aiohttp_client(await app_for(small))
    url = await create(gw, auth, "deferred.bin")
    response = await patch(gw, auth, url, 0, b"x" * 100, **{"Upload-Length": str(10 * MiB + 1)})
    assert response.status == 413
    assert await offset_of(gw, auth, url) == 0
    head = await gw.head(url, headers={**auth, **TUS})
    assert head.headers["Upload-Defer-Length"] == "1"


async def test_an_upload_length_of_10_to_the_30_is_refused(gw, auth):
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": str(10**30), "Upload-Metadata": metadata("huge.bin")},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_header"
    url = await create(gw, auth, "later.bin")
    response = await patch(gw, auth, url, 0, b"", **{"Upload-Length": str(10**30)})
    assert response.status == 400
    response = await patch(gw, auth, url, 10**30, b"x")
    assert response.status == 400


# The protocol's edge cases. ------------------------------------------------------------------------


async def test_creation_with_upload_refused_with_413_leaves_no_upload(gw, auth, s3, bucket):
    response = await gw.post(
        "/api/uploads/",
        data=b"x" * 200,
        headers={**auth, **TUS, **OCTETS, "Upload-Length": "100", "Upload-Metadata": metadata("over.bin")},
    )
    assert response.status == 413
    assert "Location" not in response.headers
    assert open_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def test_creation_with_an_over_long_chunked_body_leaves_no_upload(gw, auth, s3, bucket):
    async def chunked():
        yield b"x" * 150

    response = await gw.post(
        "/api/uploads/",
        data=chunked(),
        headers={**auth, **TUS, **OCTETS, "Upload-Length": "100", "Upload-Metadata": metadata("over.bin")},
    )
    assert response.status == 413
    assert open_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def test_an_upload_of_length_zero_has_a_location_that_answers(gw, auth):
    url = await create(gw, auth, "empty.txt", length=0)
    head = await gw.head(url, headers={**auth, **TUS})
    assert head.status == 200
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == "0"
    assert (await patch(gw, auth, url, 0, b"")).status == 204
    assert await content(gw, auth, "empty.txt") == b""


async def test_options_discovery_needs_no_token(gw):
    for path in ("/api/uploads", "/api/uploads/", "/api/uploads/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        response = await gw.options(path)
        assert response.status == 204, path
        assert response.headers["Tus-Version"] == "1.0.0"
    # Only discovery: the uploads themselves still need one.
    assert (await gw.head("/api/uploads/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers=TUS)).status == 401


async def test_a_finished_upload_answers_head_and_an_empty_patch_as_finished(gw, auth):
    data = payload(1000)
    url = await create(gw, auth, "done.bin", length=len(data))
    assert (await patch(gw, auth, url, 0, data)).status == 204
    head = await gw.head(url, headers={**auth, **TUS})
    assert head.status == 200 and head.headers["Upload-Offset"] == "1000"
    again = await patch(gw, auth, url, 1000, b"")
    assert again.status == 204 and again.headers["Upload-Offset"] == "1000"
    stale = await patch(gw, auth, url, 0, data)
    assert stale.status == 409
    assert (await gw.delete(url, headers={**auth, **TUS})).status == 204
    assert await content(gw, auth, "done.bin") == data  # forgetting the upload keeps its file
    other = {"X-Auth-Token": new_token()}
    assert (await gw.head(url, headers={**other, **TUS})).status == 404


async def test_a_part_overwritten_behind_the_uploads_back_is_never_completed(gw, auth, s3, bucket):
    """What a writer that lost a race (no conditional writes, or a lost lock) does: it uploads
    its own bytes under a part number already committed. Completion names each committed
    part's ETag, S3 refuses the stranger's, and the upload goes back to where it is sound."""
    data = body("owner")
    url = await create(gw, auth, "overwritten.bin", length=LENGTH)
    assert (await patch(gw, auth, url, 0, data[: PART + 100])).status == 204
    (upload,) = open_uploads(s3, bucket)
    s3.upload_part(
        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], PartNumber=1, Body=b"z" * PART
    )
    response = await patch(gw, auth, url, PART + 100, data[PART + 100 :])
    assert response.status == 409
    assert (await response.json())["error"]["code"] == "upload_conflict"
    assert (await gw.get("/api/files/overwritten.bin", headers=auth)).status == 404  # nothing mixed stored
    assert await offset_of(gw, auth, url) == 0  # back to before the overwritten part
    assert (await patch(gw, auth, url, 0, data)).status == 204
    assert await content(gw, auth, "overwritten.bin") == data
    assert leftovers(s3, bucket) == []


@pytest.mark.slow  # waits out a PATCH of four seconds
async def test_a_long_patch_keeps_its_lock_past_its_lease(aiohttp_client, app_for, settings, auth):
    """A lease of 1.5 s, renewed every half second, held by a PATCH that lasts four."""
    gw = await aiohttp_client(await app_for(settings))
    gw.app[STORAGE].resumable.lock_seconds = 1.5  # the store's own parameter (LEASE_SECONDS by default)
    url = await create(gw, auth, "slow.bin", length=100)

    async def slowly():
        for _ in range(4):
            yield b"x" * 25
            await asyncio.sleep(1)

    first = asyncio.create_task(patch(gw, auth, url, 0, slowly()))
    await asyncio.sleep(2.5)  # past the first lease
    assert (await patch(gw, auth, url, 0, b"y" * 100)).status == 423
    assert (await first).status == 204
    assert await content(gw, auth, "slow.bin") == b"x" * 100


async def test_a_lock_left_by_a_killed_process_is_taken_over_after_its_lease(gw, auth, s3, bucket):
    url = await create(gw, auth, "orphan.bin", length=10)
    upload_id = url.rsplit("/", 1)[1]
    (info,) = [key for key in all_keys(s3, bucket) if key.endswith(f"{upload_id}.info")]
    lock = info.removesuffix(".info") + ".lock"
    s3.put_object(Bucket=bucket, Key=lock, Body=json.dumps({"holder": "dead", "until": time.time() + 1}))
    assert (await patch(gw, auth, url, 0, b"0123456789")).status == 423
    await asyncio.sleep(1.2)
    assert (await patch(gw, auth, url, 0, b"0123456789")).status == 204
    assert await content(gw, auth, "orphan.bin") == b"0123456789"
