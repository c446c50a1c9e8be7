"""Streaming uploads: part boundaries, chunked bodies, and what failures leave behind."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os

import pytest

from file_uploader.app import create_app
from file_uploader.settings import Settings
from file_uploader.sizes import GiB, MiB

from ..helpers import all_keys, free_port, open_uploads

PART = Settings.part_size  # the default part size the tests' gateway uses

SIZES = [0, 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, PART - 1, PART, PART + 1, 3 * PART + 3]


def parts_in(etag: str) -> int:
    """How many parts S3 built the object from (a plain MD5 ETag: one PutObject)."""
    etag = etag.strip('"')
    return int(etag.split("-")[1]) if "-" in etag else 0


def expected_parts(size: int) -> int:
    return 0 if size < PART else -(-size // PART)


async def chunked(data: bytes, piece: int = 100_003):
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_round_trip_is_byte_exact(client, auth, s3, bucket, size, framing):
    data = os.urandom(size)
    body = data if framing == "content-length" else chunked(data)
    response = await client.put("/api/files/blob", data=body, headers=auth)
    assert response.status == 204, await response.text()
    response = await client.get("/api/files/blob", headers=auth)
    assert response.headers["Content-Length"] == str(size)
    assert hashlib.sha256(await response.read()).digest() == hashlib.sha256(data).digest()
    assert parts_in(response.headers["ETag"]) == expected_parts(size)
    assert open_uploads(s3, bucket) == []


async def test_an_empty_chunked_body_makes_an_empty_file(client, auth):
    async def nothing():
        return
        yield b""

    response = await client.put("/api/files/empty", data=nothing(), headers=auth)
    assert response.status == 204
    response = await client.get("/api/files/empty", headers=auth)
    assert await response.read() == b""


async def wait_until_no_uploads(s3, bucket, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while open_uploads(s3, bucket) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    return open_uploads(s3, bucket)


async def send_part_of_a_body(client, auth, name: str, declared: int, sent: int, *, started_multipart=None):
    """Declare `declared` bytes, send `sent` of them, then hang up."""
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/{name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: {declared}\r\n\r\n".encode()
    )
    chunk = os.urandom(1 * MiB)
    for _ in range(sent // MiB):
        writer.write(chunk)
        await writer.drain()
    if started_multipart:
        await started_multipart()
    writer.transport.abort()  # a reset, as when a client is killed


async def test_client_disconnect_mid_upload_leaves_no_upload_and_no_object(client, auth, s3, bucket):
    async def multipart_is_open():
        for _ in range(200):
            if open_uploads(s3, bucket):
                return
            await asyncio.sleep(0.05)
        pytest.fail("the gateway never started a multipart upload")

    await send_part_of_a_body(client, auth, "cut", 100 * MiB, 3 * PART, started_multipart=multipart_is_open)
    assert await wait_until_no_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def test_client_disconnect_in_the_first_part_stores_nothing(client, auth, s3, bucket):
    await send_part_of_a_body(client, auth, "cut", 100 * MiB, 2 * MiB)
    await asyncio.sleep(0.5)
    assert await wait_until_no_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def test_a_failed_overwrite_keeps_the_old_version(client, auth, s3, bucket):
    old = os.urandom(PART + 7)
    assert (await client.put("/api/files/doc", data=old, headers=auth)).status == 204
    await send_part_of_a_body(client, auth, "doc", 50 * MiB, 2 * PART + MiB)
    assert await wait_until_no_uploads(s3, bucket) == []
    response = await client.get("/api/files/doc", headers=auth)
    assert await response.read() == old


async def test_a_client_that_stops_sending_is_cut_off_and_its_upload_aborted(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    quick = Settings(**{**settings.__dict__, "client_timeout": 0.5})
    client = await aiohttp_client(await app_for(quick))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/slow HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: {30 * MiB}\r\n\r\n".encode()
        + os.urandom(2 * PART)
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    assert response.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in response
    assert await wait_until_no_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []
    writer.close()


async def test_declared_length_over_the_limit_gets_413_before_the_body(
    aiohttp_client, app_for, settings, auth
):
    small = Settings(**{**settings.__dict__, "max_file_size": 1000})
    client = await aiohttp_client(await app_for(small))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/big HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: 1001\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    assert response.startswith(b"HTTP/1.1 413")
    assert b'"file_too_large"' in response
    writer.close()


async def test_a_413_gives_the_limit_in_a_unit_a_person_reads(aiohttp_client, app_for, settings, auth):
    limited = dataclasses.replace(settings, max_file_size=5 * GiB)
    client = await aiohttp_client(await app_for(limited))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/big HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: {5 * GiB + 1}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    error = json.loads(response.split(b"\r\n\r\n", 1)[1])["error"]
    assert error == {"code": "file_too_large", "message": "the file is larger than the limit of 5 GiB"}


async def test_chunked_body_over_the_limit_is_cut_off_with_413(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    small = Settings(**{**settings.__dict__, "max_file_size": PART + 1})
    client = await aiohttp_client(await app_for(small))
    response = await client.put("/api/files/big", data=chunked(os.urandom(PART + 2)), headers=auth)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "file_too_large"
    assert await wait_until_no_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def test_unreachable_s3_gets_503_json_with_retry_after(aiohttp_client, settings, auth, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    nowhere = Settings(**{**settings.__dict__, "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    client = await aiohttp_client(await create_app(nowhere))
    for method, path in [
        ("GET", "/api/files"),
        ("PUT", "/api/files/a"),
        ("GET", "/api/files/a"),
        ("DELETE", "/api/files/a"),
    ]:
        response = await client.request(method, path, data=b"x" if method == "PUT" else None, headers=auth)
        assert response.status == 503, (method, path)
        assert (await response.json())["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"]


async def test_s3_refusing_an_upload_gets_502_json_and_leaves_nothing(aiohttp_client, settings, auth, s3):
    """A bucket that does not exist: every S3 call fails, the client hears it as JSON."""
    missing = Settings(**{**settings.__dict__, "s3_bucket": "no-such-bucket-here", "s3_create_bucket": False})
    client = await aiohttp_client(await create_app(missing))
    response = await client.put("/api/files/a", data=os.urandom(PART + 1), headers=auth)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "storage_error"
