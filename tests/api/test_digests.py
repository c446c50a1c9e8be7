"""What the gateway sends S3 to check each body with, and what S3 keeps of it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os

from file_uploader.storage.checksums import CHECKSUMS


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: a reference independent of google-crc32c."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_the_crc32c_reference_is_the_published_one():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720's check value


async def test_on_moto_each_body_carries_a_content_md5_and_its_etag_is_checked(client, auth, s3, bucket):
    """moto verifies no checksum: the probe falls back to Content-MD5 and ETag comparison."""
    data = os.urandom(1000)
    response = await client.put("/api/files/checked", data=data, headers=auth)
    assert response.status == 204
    key = s3.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"]
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    ready = await (await client.get("/readyz")).json()
    assert ready["s3"]["integrity"]["checksum"] == "md5"
    assert ready["s3"]["integrity"]["verified_by"] == "gateway"


async def test_s3_checksum_crc32c_sends_a_crc32c_that_s3_keeps(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    """With the fallback off (warn), the chosen CRC32C travels: moto keeps it, and it is the right one."""
    crc = dataclasses.replace(settings, s3_checksum="crc32c", s3_checksum_fallback="warn")
    client = await aiohttp_client(await app_for(crc))
    data = os.urandom(3000) + b"\x00" * 7  # a length that is no multiple of a word
    assert (await client.put("/api/files/crc", data=data, headers=auth)).status == 204
    key = s3.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"]
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == base64.b64encode(crc32c(data).to_bytes(4, "big")).decode()


def test_crc32c_over_pieces_and_slices_is_the_crc32c_of_the_whole():
    """Parts are hashed piece by piece, memoryview slices where a chunk straddles two parts."""
    checksum = CHECKSUMS["crc32c"]
    assert checksum is not None
    data = os.urandom(100_003)
    hasher = checksum.new()
    view = memoryview(data)
    for start in range(0, len(data), 7919):
        hasher.update(view[start : start + 7919] if start % 2 else data[start : start + 7919])
    assert int.from_bytes(hasher.digest(), "big") == crc32c(data)
