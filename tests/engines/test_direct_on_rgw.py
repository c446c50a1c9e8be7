"""Direct-to-S3 uploads (DIRECT_UPLOADS) on Ceph RGW 16, which checks what moto does not: the
presigned URL's SigV4 signature, and a signed Content-MD5 against the bytes of the PUT.

RGW 16 ignores x-amz-checksum-sha256 (devtools/ENGINES.md): there the part's `md5` is what makes
S3 itself refuse a part whose bytes do not match what was signed.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator

import aiohttp
import boto3
import pytest

from devtools.rgw import RgwEngine
from file_uploader.settings import Settings
from file_uploader.sizes import MiB
from file_uploader.storage.direct import part_checksum
from file_uploader.storage.keys import file_key, user_id


@pytest.fixture
def rgw_settings(rgw: RgwEngine) -> Iterator[Settings]:
    bucket = f"direct-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=rgw.http_url,
        region_name="us-east-1",
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
    )
    s3.create_bucket(Bucket=bucket)
    yield Settings(
        s3_bucket=bucket,
        s3_endpoint_url=rgw.http_url,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        part_size=5 * MiB,
        client_timeout=5,
        direct_uploads=True,
    )
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_rgw_refuses_a_part_whose_bytes_do_not_match_the_signed_checksum(
    aiohttp_client, app_for, rgw_settings, auth, token
):
    client = await aiohttp_client(await app_for(rgw_settings))
    meant = b"what the client meant to store\n" * 100
    flipped = meant[:-2] + b"!\n"
    created = await client.post("/api/direct", json={"name": "rgw.bin", "size": len(meant)}, headers=auth)
    assert created.status == 201, await created.text()
    plan = await created.json()
    answer = await client.post(
        f"/api/direct/{plan['uploadId']}/parts/1",
        json={"checksum": part_checksum(meant), "md5": _md5(meant)},
        headers=auth,
    )
    signed = await answer.json()
    async with aiohttp.ClientSession() as session:
        async with session.put(signed["url"], data=flipped, headers=signed["headers"]) as refused:
            assert refused.status == 400
            assert "BadDigest" in await refused.text()
        # Another length than signed: the signature no longer holds.
        async with session.put(signed["url"], data=meant + b"x", headers=signed["headers"]) as refused:
            assert refused.status == 403
        async with session.put(signed["url"], data=meant, headers=signed["headers"]) as stored:
            assert stored.status == 200
    done = await client.post(f"/api/direct/{plan['uploadId']}/complete", headers=auth)
    assert done.status == 200, await done.text()
    s3 = boto3.client(
        "s3",
        endpoint_url=rgw_settings.s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=rgw_settings.aws_access_key_id,
        aws_secret_access_key=rgw_settings.aws_secret_access_key,
    )
    key = file_key(user_id(token), "rgw.bin")
    assert s3.get_object(Bucket=rgw_settings.s3_bucket, Key=key)["Body"].read() == meant
