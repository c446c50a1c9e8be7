"""What the gateway asks S3 to check: one CRC32 per request body, no SHA-256 payload hash."""

from __future__ import annotations

import base64
import os
import zlib


async def test_the_gateway_sends_a_crc32_that_s3_checks_and_keeps(client, auth, s3, bucket):
    """Integrity stays checked by S3 although the SHA-256 payload signature is off."""
    data = os.urandom(1000)
    response = await client.put("/api/files/checked", data=data, headers=auth)
    assert response.status == 204
    key = s3.list_objects_v2(Bucket=bucket)["Contents"][0]["Key"]
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    expected = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    assert head.get("ChecksumCRC32") == expected
