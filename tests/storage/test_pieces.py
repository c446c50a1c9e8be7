"""A part's pieces sent as they arrived (storage/pieces.py): S3 stores exactly their bytes, and
botocore can read, rewind and size them like a file."""

from __future__ import annotations

import base64
import os

from file_uploader.storage.checksums import CHECKSUMS
from file_uploader.storage.connection import open_client, send_bodies_as_is
from file_uploader.storage.pieces import Pieces


def pieces_of(data: bytes, sizes: list[int]) -> list[bytes | memoryview]:
    """`data` cut at `sizes`, every other piece a memoryview slice (as where a chunk straddles parts)."""
    out: list[bytes | memoryview] = []
    start = 0
    for index, size in enumerate(sizes):
        piece = data[start : start + size]
        out.append(memoryview(data)[start : start + size] if index % 2 else piece)
        start += size
    assert start == len(data)
    return out


def test_pieces_read_like_a_file_across_their_boundaries_and_rewind():
    data = os.urandom(10_000)
    body = Pieces(pieces_of(data, [1, 4095, 3000, 0, 2904]))
    assert len(body) == 10_000 and body.tell() == 0
    assert body.read(3) + body.read(5000) + body.read(100_000) == data
    assert body.read(10) == b"" and body.tell() == 10_000
    assert body.seek(0) == 0 and body.read() == data
    body.seek(4096)
    assert body.read(1) == data[4096:4097]
    assert body.seek(-10, os.SEEK_END) == 9_990 and body.read() == data[-10:]


def test_an_empty_body_is_a_body_of_no_bytes():
    body = Pieces([])
    assert len(body) == 0 and body.read() == b"" and bool(body)


async def test_s3_stores_the_bytes_of_pieces_sent_as_they_are_with_their_checksum(settings, s3, bucket):
    data = os.urandom(6 * 1024 * 1024 + 17)
    sizes = [250_000] * (len(data) // 250_000) + [len(data) % 250_000]
    crc32 = CHECKSUMS["crc32"]
    assert crc32 is not None
    hasher = crc32.new()
    for piece in pieces_of(data, sizes):
        hasher.update(piece)
    async with open_client(settings) as client:
        send_bodies_as_is(client)
        await client.put_object(
            Bucket=bucket,
            Key="whole",
            Body=Pieces(pieces_of(data, sizes)),
            ChecksumCRC32=crc32.encode(hasher),
            ChecksumAlgorithm="CRC32",  # moto keeps the checksum only when told which it is
        )
        created = await client.create_multipart_upload(Bucket=bucket, Key="parts")
        part = await client.upload_part(
            Bucket=bucket,
            Key="parts",
            UploadId=created["UploadId"],
            PartNumber=1,
            Body=Pieces(pieces_of(data, sizes)),
        )
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key="parts",
            UploadId=created["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
    whole = s3.get_object(Bucket=bucket, Key="whole", ChecksumMode="ENABLED")
    assert whole["Body"].read() == data
    assert whole["ChecksumCRC32"] == base64.b64encode(hasher.digest()).decode()
    assert s3.get_object(Bucket=bucket, Key="parts")["Body"].read() == data
