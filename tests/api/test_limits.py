"""MAX_UPLOADS_PER_USER, and digests checked over the whole body."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os

import pytest

from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import MIN_PART_SIZE
from file_uploader.storage.keys import user_id, user_prefix

from ..helpers import all_keys, new_token, open_uploads

PART = MIN_PART_SIZE


@pytest.fixture
async def one_upload_each(aiohttp_client, app_for, settings):
    limited = Settings(**{**settings.__dict__, "max_uploads_per_user": 1, "part_size": PART})
    return await aiohttp_client(await app_for(limited))


async def start_upload(client, auth, name: str, declared: int, sent: bytes):
    """An upload that has sent `sent` of `declared` bytes and then waits."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/{name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: {declared}\r\n\r\n".encode()
        + sent
    )
    await writer.drain()
    slots, uid = client.app[STORAGE].pipeline.slots, user_id(auth["X-Auth-Token"])
    for _ in range(200):  # until the gateway's handler holds the slot (slow on a busy machine)
        if slots.active(uid):
            break
        await asyncio.sleep(0.02)
    assert slots.active(uid) == 1
    return reader, writer


async def test_an_upload_over_the_per_user_limit_gets_429_with_retry_after(one_upload_each, auth):
    _reader, writer = await start_upload(one_upload_each, auth, "first", 1000, b"x" * 10)
    response = await one_upload_each.put("/api/files/second", data=b"y", headers=auth)
    assert response.status == 429
    assert (await response.json())["error"]["code"] == "too_many_uploads"
    assert response.headers["Retry-After"]
    writer.close()


async def test_the_upload_limit_refuses_before_the_body_with_expect_continue(one_upload_each, auth):
    _r, first = await start_upload(one_upload_each, auth, "first", 1000, b"x" * 10)
    reader, writer = await asyncio.open_connection(one_upload_each.host, one_upload_each.port)
    writer.write(
        f"PUT /api/files/second HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Length: {100 * PART}\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)  # no body was sent, yet an answer comes
    assert response.startswith(b"HTTP/1.1 429")
    assert b"Retry-After:" in response
    assert b"100 Continue" not in response
    writer.close()
    first.close()


async def test_the_upload_limit_is_per_user(one_upload_each, auth):
    _r, writer = await start_upload(one_upload_each, auth, "first", 1000, b"x" * 10)
    other = {"X-Auth-Token": new_token()}
    assert (await one_upload_each.put("/api/files/mine", data=b"y", headers=other)).status == 204
    writer.close()


async def test_a_slot_is_free_again_when_an_upload_ends_even_by_disconnect(one_upload_each, auth, s3, bucket):
    _r, writer = await start_upload(one_upload_each, auth, "first", 3 * PART, os.urandom(PART + 10))
    writer.transport.abort()
    for _ in range(100):
        response = await one_upload_each.put("/api/files/next", data=b"y", headers=auth)
        if response.status != 429:
            break
        await asyncio.sleep(0.05)
    assert response.status == 204
    assert [key.rsplit("/", 1)[1] for key in all_keys(s3, bucket)] == ["next"]


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def digest_headers(kind: str, data: bytes) -> dict[str, str]:
    if kind == "Content-MD5":
        return {"Content-MD5": b64(hashlib.md5(data).digest())}
    if kind == "Digest":
        return {"Digest": f"sha-256={b64(hashlib.sha256(data).digest())}"}
    return {"Repr-Digest": f"sha-256=:{b64(hashlib.sha256(data).digest())}:"}


KINDS = ["Content-MD5", "Digest", "Repr-Digest"]
SIZES = [10, PART + 5]  # one PutObject; a multipart upload


@pytest.mark.parametrize("size", SIZES)
async def test_a_matching_digest_is_accepted(one_upload_each, auth, size):
    data = os.urandom(size)
    for kind in KINDS:
        headers = {**auth, **digest_headers(kind, data)}
        response = await one_upload_each.put(f"/api/files/{kind}", data=data, headers=headers)
        assert response.status == 204, (kind, await response.text())
        assert await (await one_upload_each.get(f"/api/files/{kind}", headers=auth)).read() == data


@pytest.mark.parametrize("size", SIZES)
async def test_a_digest_mismatch_gets_400_and_stores_nothing(one_upload_each, auth, s3, bucket, size):
    data = os.urandom(size)
    for kind in KINDS:
        wrong = digest_headers(kind, data[:-1] + bytes([data[-1] ^ 1]))  # one bit off, in the last byte
        response = await one_upload_each.put("/api/files/d", data=data, headers={**auth, **wrong})
        assert response.status == 400, kind
        assert (await response.json())["error"]["code"] == "digest_mismatch"
        assert open_uploads(s3, bucket) == []
        assert all_keys(s3, bucket) == []


async def test_a_digest_mismatch_keeps_the_old_version(one_upload_each, auth):
    old = b"old contents"
    assert (await one_upload_each.put("/api/files/d", data=old, headers=auth)).status == 204
    new = os.urandom(PART + 1)
    response = await one_upload_each.put(
        "/api/files/d", data=new, headers={**auth, **digest_headers("Content-MD5", old)}
    )
    assert response.status == 400
    assert await (await one_upload_each.get("/api/files/d", headers=auth)).read() == old


MALFORMED = [
    {"Content-MD5": "not base64!"},
    {"Content-MD5": b64(b"short")},
    {"Digest": "sha-256=AAAA"},
    {"Repr-Digest": f"sha-256={b64(hashlib.sha256(b'x').digest())}"},  # missing the colons
]


async def test_a_malformed_digest_is_refused_before_the_body(one_upload_each, auth):
    for headers in MALFORMED:
        reader, writer = await asyncio.open_connection(one_upload_each.host, one_upload_each.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"PUT /api/files/d HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
            f"Content-Length: 1000\r\nExpect: 100-continue\r\n{extra}\r\n".encode()
        )
        await writer.drain()
        # Up to the end of the JSON error: the answer came although no body was sent.
        response = await asyncio.wait_for(reader.readuntil(b"}}"), 5)
        assert response.startswith(b"HTTP/1.1 400"), headers
        assert b'"invalid_digest"' in response
        writer.close()


async def test_a_digest_in_an_algorithm_we_do_not_check_is_ignored(one_upload_each, auth):
    headers = {**auth, "Digest": "unixsum=30637", "Repr-Digest": "sha-512=:AA==:"}
    response = await one_upload_each.put("/api/files/d", data=b"x", headers=headers)
    assert response.status == 204


async def test_etag_and_size_reported_match_what_s3_stores(one_upload_each, auth, s3, bucket):
    prefix = user_prefix(user_id(auth["X-Auth-Token"]))
    for size in [0, 10, PART + 5]:
        data = os.urandom(size)
        assert (await one_upload_each.put(f"/api/files/{size}", data=data, headers=auth)).status == 204
        stored = s3.head_object(Bucket=bucket, Key=f"{prefix}{size}")
        for response in [
            await one_upload_each.head(f"/api/files/{size}", headers=auth),
            await one_upload_each.get(f"/api/files/{size}", headers=auth),
        ]:
            assert response.headers["ETag"] == stored["ETag"]
            assert int(response.headers["Content-Length"]) == stored["ContentLength"] == size
        if size < PART:  # a single PutObject: the ETag is the MD5 of the bytes
            assert stored["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
