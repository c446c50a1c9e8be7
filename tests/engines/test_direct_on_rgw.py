"""Direct-to-S3 uploads (DIRECT_UPLOADS) on Ceph RGW 16, which checks what moto does not: the
presigned URL's SigV4 signature, and a signed Content-MD5 against the bytes of the PUT.

RGW 16 ignores x-amz-checksum-sha256 (devtools/ENGINES.md): there the part's `md5` is what makes
S3 itself refuse a part whose bytes do not match what was signed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator

import aiohttp
import pytest

from devtools.rgw import RgwEngine
from file_uploader.settings import Settings
from file_uploader.sizes import MiB
from file_uploader.storage.direct import part_checksum
from file_uploader.storage.keys import file_key, user_id

from .conftest import own_bucket, rgw_s3, rgw_settings


@pytest.fixture
def direct_settings(rgw: RgwEngine) -> Iterator[Settings]:
    with own_bucket(rgw_s3(rgw), "direct") as bucket:
        yield rgw_settings(rgw, bucket, part_size=5 * MiB, client_timeout=5, direct_uploads=True)


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def test_rgw_refuses_a_part_whose_bytes_do_not_match_the_signed_checksum(
    aiohttp_client, app_for, rgw, direct_settings, auth, token
):
    client = await aiohttp_client(await app_for(direct_settings))
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
    s3 = rgw_s3(rgw)
    key = file_key(user_id(token), "rgw.bin")
    assert s3.get_object(Bucket=direct_settings.s3_bucket, Key=key)["Body"].read() == meant
