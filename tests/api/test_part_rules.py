"""Engines' part rules through every upload route, on moto: S3_MAX_PARTS (a 1,000-part engine
refuses part 1,001) and S3_EQUAL_PARTS (Cloudflare R2 refuses parts of unequal sizes).

The parts are looked at with ListParts while the multipart upload is still open: each body
below pauses once most of it is sent, until the test has seen the parts S3 holds."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp

from file_uploader.settings import Settings
from file_uploader.sizes import GiB, MiB

from ..helpers import all_keys, open_uploads, path_of

PART = 5 * MiB  # S3's smallest part: the quickest to send
TUS = {"Tus-Resumable": "1.0.0"}


async def gateway(aiohttp_client, app_for, settings: Settings, **changes: object):
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART, **changes)))


class PausedBody:
    """`data` sent in pieces, stopping after `pause_at` bytes until `go` is set."""

    def __init__(self, data: bytes, pause_at: int, piece: int = 256 * 1024) -> None:
        self.data, self.pause_at, self.piece = data, pause_at, piece
        self.go = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), self.piece):
            if start >= self.pause_at:
                await self.go.wait()
            yield self.data[start : start + self.piece]


async def parts_while_open(s3, bucket: str, count: int, timeout: float = 60.0) -> list[int]:
    """The sizes of the parts of the one open multipart upload, once it has `count` of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout  # generous: on a busy machine the parts take their time
    seen: list[int] = []
    while loop.time() < deadline:
        uploads = await asyncio.to_thread(open_uploads, s3, bucket)
        if uploads:
            (upload,) = uploads
            listed = await asyncio.to_thread(
                s3.list_parts, Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            seen = [part["Size"] for part in listed.get("Parts", [])]
            if len(seen) >= count:
                return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"no open multipart upload with {count} parts (last seen: {seen})")


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def read_back(gw, auth, name: str) -> bytes:
    response = await gw.get(f"/api/files/{name}", headers=auth)
    assert response.status == 200
    return await response.read()


# S3_MAX_PARTS.


async def test_a_chunked_upload_that_needs_more_than_s3_max_parts_gets_413_and_leaves_nothing(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    # Two parts whose size doubles every part (9 % of 2 parts, at least 1): 5 + 10 MiB at most.
    gw = await gateway(aiohttp_client, app_for, settings, s3_max_parts=2)
    data = os.urandom(15 * MiB + 1)
    response = await gw.put("/api/files/big.bin", data=PausedBody(data, len(data)), headers=auth)
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "upload_too_large"
    assert "2 parts" in error["message"] and "S3_MAX_PARTS" in error["message"]
    assert open_uploads(s3, bucket) == []
    assert "files/" not in "".join(all_keys(s3, bucket))


async def test_a_chunked_upload_that_fits_s3_max_parts_is_stored_in_that_many_parts(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await gateway(aiohttp_client, app_for, settings, s3_max_parts=2)
    data = os.urandom(15 * MiB)
    body = PausedBody(data, 14 * MiB)
    upload = asyncio.create_task(gw.put("/api/files/fits.bin", data=body, headers=auth))
    assert await parts_while_open(s3, bucket, 1) == [5 * MiB]  # then 10 MiB: it grew
    body.go.set()
    response = await upload
    assert response.status == 204, await response.text()
    head = s3.head_object(Bucket=bucket, Key=next(k for k in all_keys(s3, bucket) if k.endswith("fits.bin")))
    assert head["ETag"].strip('"').endswith("-2")
    assert digest(await read_back(gw, auth, "fits.bin")) == digest(data)


async def test_a_tus_upload_longer_than_s3_max_parts_hold_is_refused_at_creation(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    # One part of at most 5 GiB (S3's largest part): 6 GiB cannot be stored.
    gw = await gateway(aiohttp_client, app_for, settings, s3_max_parts=1, max_file_size=10 * GiB)
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": str(6 * GiB), "Upload-Metadata": "filename aHVnZQ=="},
    )
    assert response.status == 413
    assert "S3_MAX_PARTS" in (await response.json())["error"]["message"]
    assert open_uploads(s3, bucket) == []


async def test_a_declared_length_sets_parts_that_fit_s3_max_parts(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    # 3 parts for 20 MiB: each grows from 5 to 7 MiB (whole MiB), all of one size.
    gw = await gateway(aiohttp_client, app_for, settings, s3_max_parts=3)
    data = os.urandom(20 * MiB)
    response = await gw.put("/api/files/sized.bin", data=data, headers=auth)
    assert response.status == 204, await response.text()
    key = next(k for k in all_keys(s3, bucket) if k.endswith("sized.bin"))
    sizes = [s3.head_object(Bucket=bucket, Key=key, PartNumber=n)["ContentLength"] for n in (1, 2, 3)]
    assert sizes == [7 * MiB, 7 * MiB, 6 * MiB]


# S3_EQUAL_PARTS: every part of a body of unknown length one size, chosen up front so that
# S3_MAX_PARTS of them hold MAX_FILE_SIZE (4 x 5 MiB hold 20 MiB).

EQUAL = {"s3_equal_parts": True, "s3_max_parts": 4, "max_file_size": 20 * MiB}


async def test_a_chunked_upload_with_equal_parts_has_parts_of_one_size(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    # Without S3_EQUAL_PARTS, 4 parts would grow 5, 10, 20, 40 MiB (doubling every part).
    gw = await gateway(aiohttp_client, app_for, settings, **EQUAL)
    data = os.urandom(18 * MiB)
    body = PausedBody(data, 16 * MiB)
    upload = asyncio.create_task(gw.put("/api/files/r2.bin", data=body, headers=auth))
    assert await parts_while_open(s3, bucket, 3) == [5 * MiB] * 3
    body.go.set()
    response = await upload
    assert response.status == 204, await response.text()
    assert digest(await read_back(gw, auth, "r2.bin")) == digest(data)


async def test_a_chunked_upload_with_equal_parts_past_max_file_size_gets_413_and_leaves_nothing(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await gateway(aiohttp_client, app_for, settings, **EQUAL)
    data = os.urandom(20 * MiB + 1)
    response = await gw.put("/api/files/r2.bin", data=PausedBody(data, len(data)), headers=auth)
    assert response.status == 413
    assert "limit of 20 MiB" in (await response.json())["error"]["message"]
    assert open_uploads(s3, bucket) == []
    assert "files/" not in "".join(all_keys(s3, bucket))


async def test_a_form_upload_with_equal_parts_has_parts_of_one_size(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await gateway(aiohttp_client, app_for, settings, **EQUAL)
    data = os.urandom(17 * MiB)
    body = PausedBody(data, 16 * MiB)
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("file", body.__aiter__(), filename="form.bin", content_type="application/octet-stream")
    upload = asyncio.create_task(gw.post("/api/files", data=form, headers=auth))
    assert await parts_while_open(s3, bucket, 3) == [5 * MiB] * 3
    body.go.set()
    response = await upload
    assert response.status == 200, await response.text()
    assert [f["status"] for f in (await response.json())["files"]] == [201]
    assert digest(await read_back(gw, auth, "form.bin")) == digest(data)


async def test_a_tus_upload_of_deferred_length_with_equal_parts_has_parts_of_one_size(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await gateway(aiohttp_client, app_for, settings, **EQUAL)
    name = base64.b64encode(b"tus.bin").decode()
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": f"filename {name}"},
    )
    assert response.status == 201
    url = path_of(response.headers["Location"])
    data = os.urandom(18 * MiB)
    octets = {**auth, **TUS, "Content-Type": "application/offset+octet-stream"}
    response = await gw.patch(url, data=data[: 16 * MiB], headers={**octets, "Upload-Offset": "0"})
    assert response.status == 204, await response.text()
    assert await parts_while_open(s3, bucket, 3) == [5 * MiB] * 3
    # Past what 4 parts of 5 MiB hold: refused, and the upload stays where it was.
    too_long = {**octets, "Upload-Offset": str(16 * MiB), "Upload-Length": str(21 * MiB)}
    response = await gw.patch(url, data=os.urandom(5 * MiB), headers=too_long)
    assert response.status == 413
    last = {**octets, "Upload-Offset": str(16 * MiB), "Upload-Length": str(len(data))}
    response = await gw.patch(url, data=data[16 * MiB :], headers=last)
    assert response.status == 204, await response.text()
    assert digest(await read_back(gw, auth, "tus.bin")) == digest(data)
    assert open_uploads(s3, bucket) == []
