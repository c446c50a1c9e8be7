"""USER_QUOTA across gateway processes: one user's burst of concurrent uploads, spread over two
processes sharing one bucket, never stores more than the quota (docs/quotas-and-webhooks.md)."""

from __future__ import annotations

import asyncio
import collections

import aiohttp
import pytest

from file_uploader.sizes import KiB, MiB
from file_uploader.storage.keys import user_id, user_prefix

from ..helpers import chunked, new_token, open_uploads, run_gateway

pytestmark = pytest.mark.process

UPLOADS = 24  # twelve on each process, all at once
SIZE = 100 * KiB
QUOTA = 1000 * KiB  # room for exactly ten of them


def stored_bytes(s3, bucket: str, token: str) -> int:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=user_prefix(user_id(token))).get("Contents", [])
    return sum(item["Size"] for item in listing)


async def burst(gateways: list[str], token: str, body) -> collections.Counter:
    """UPLOADS uploads of one user at once, alternating between `gateways`; their statuses."""
    async with aiohttp.ClientSession() as session:

        async def one(number: int) -> int:
            url = f"{gateways[number % len(gateways)]}/api/files/burst-{number}"
            async with session.put(url, data=body(), headers={"X-Auth-Token": token}) as response:
                if response.status != 204:
                    assert (await response.json())["error"]["code"] == "quota_exceeded"
                return response.status

        return collections.Counter(await asyncio.gather(*(one(number) for number in range(UPLOADS))))


@pytest.fixture
def two_gateways(s3_url, bucket, tmp_path, request):
    settings = {"USER_QUOTA": str(QUOTA), "PART_SIZE": str(5 * MiB), **getattr(request, "param", {})}
    with (
        run_gateway(s3_url, bucket, tmp_path / "a", **settings) as first,
        run_gateway(s3_url, bucket, tmp_path / "b", **settings) as second,
    ):
        yield [first, second]


async def test_a_burst_of_declared_lengths_across_two_processes_never_passes_the_quota(
    two_gateways, s3, bucket
):
    token = new_token()
    statuses = await burst(two_gateways, token, lambda: b"d" * SIZE)
    overshoot = stored_bytes(s3, bucket, token) - QUOTA
    assert overshoot <= 0, f"stored {overshoot} bytes past the quota"
    # Nothing failed, so exactly what fits was admitted, and the usage agrees with S3.
    assert statuses == {204: QUOTA // SIZE, 413: UPLOADS - QUOTA // SIZE}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{two_gateways[1]}/api/usage", headers={"X-Auth-Token": token}) as response:
            usage = await response.json()
    assert usage == {"used": QUOTA, "quota": QUOTA, "files": QUOTA // SIZE, "reserved": 0}


async def test_a_burst_of_chunked_bodies_across_two_processes_never_passes_the_quota(
    two_gateways, s3, bucket
):
    token = new_token()
    statuses = await burst(two_gateways, token, lambda: chunked(b"c" * SIZE, 10 * KiB))
    assert stored_bytes(s3, bucket, token) <= QUOTA
    assert statuses[204] >= 1 and statuses[204] + statuses[413] == UPLOADS
    assert open_uploads(s3, bucket) == []


NO_CONDITIONAL_WRITES = {"S3_CONDITIONAL_WRITES": "0"}


@pytest.mark.slow
@pytest.mark.parametrize("two_gateways", [NO_CONDITIONAL_WRITES], indirect=True, ids=["read-back"])
async def test_without_conditional_writes_a_burst_overshoots_by_little(two_gateways, s3, bucket):
    """Read-back instead of compare-and-swap has no hard bound (quotas.py); measured 0 in 60 bursts
    (docs/quotas-and-webhooks.md). Without its second read-back, a whole quota got through."""
    worst = 0
    for _ in range(5):
        token = new_token()
        await burst(two_gateways, token, lambda: b"n" * SIZE)
        worst = max(worst, stored_bytes(s3, bucket, token) - QUOTA)
    assert worst <= 2 * SIZE, f"stored {worst} bytes past the quota"
