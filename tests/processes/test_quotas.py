"""USER_QUOTA across gateway processes: one user's burst of concurrent uploads, spread over two
processes sharing one bucket, never stores more than the quota (docs/quotas-and-webhooks.md)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import os
import signal

import aiohttp
import pytest

from file_uploader.sizes import LEASE_SECONDS, KiB, MiB
from file_uploader.storage.keys import user_id, user_prefix
from file_uploader.storage.quotas import ledger_key

from ..faultproxy import proxy_process
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
    """Two gateway processes on one bucket; with the parameter READ_BACK, in front of an S3 that
    ignores conditional writes (the write probe finds so, and the ledger keeps to the read-back rule)."""
    settings = {"USER_QUOTA": str(QUOTA), "PART_SIZE": str(5 * MiB)}
    with contextlib.ExitStack() as stack:
        if getattr(request, "param", None) == READ_BACK:
            s3_url = stack.enter_context(proxy_process(s3_url, ignore_conditions=True))
        first = stack.enter_context(run_gateway(s3_url, bucket, tmp_path / "a", **settings))
        second = stack.enter_context(run_gateway(s3_url, bucket, tmp_path / "b", **settings))
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


READ_BACK = "read-back"


@pytest.mark.slow
@pytest.mark.parametrize("two_gateways", [READ_BACK], indirect=True, ids=[READ_BACK])
async def test_without_conditional_writes_a_burst_overshoots_by_little(two_gateways, s3, bucket):
    """Read-back instead of compare-and-swap has no hard bound (quotas.py); measured 0 in 60 bursts
    (docs/quotas-and-webhooks.md). Without its second read-back, a whole quota got through."""
    async with aiohttp.ClientSession() as session:
        for gateway in two_gateways:
            async with session.get(f"{gateway}/readyz") as response:
                found = (await response.json())["s3"]["capabilities"]
            assert (found["if_none_match"], found["if_match"]) == (False, False)  # so: read-back
    worst = 0
    for _ in range(5):
        token = new_token()
        await burst(two_gateways, token, lambda: b"n" * SIZE)
        worst = max(worst, stored_bytes(s3, bucket, token) - QUOTA)
    assert worst <= 2 * SIZE, f"stored {worst} bytes past the quota"


@pytest.mark.slow
async def test_the_room_held_by_a_killed_process_comes_back_after_its_lease(s3_url, s3, bucket, tmp_path):
    token = new_token()
    settings = {"USER_QUOTA": str(QUOTA)}
    with (
        run_gateway(s3_url, bucket, tmp_path / "dies", **settings) as dying,
        run_gateway(s3_url, bucket, tmp_path / "lives", **settings) as living,
    ):
        # An upload of 800 KiB sends 1 KiB of its body, and its process is killed.
        host, port = dying.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"PUT /api/files/cut HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
            f"Content-Length: {800 * KiB}\r\n\r\n".encode()
            + b"c" * KiB
        )
        await writer.drain()
        ledger = ledger_key(user_id(token))
        for _ in range(100):  # until its lease is in the ledger
            if ledger in {item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}:
                break
            await asyncio.sleep(0.05)
        os.kill(dying.pid, signal.SIGKILL)
        writer.close()
        async with aiohttp.ClientSession() as session:
            put = functools.partial(session.put, f"{living}/api/files/next", headers={"X-Auth-Token": token})
            async with put(data=b"n" * (300 * KiB)) as refused:
                assert refused.status == 413  # 800 + 300 KiB > 1000 KiB while the lease holds
            await asyncio.sleep(LEASE_SECONDS + 0.5)  # the real lease, waited out
            async with put(data=b"n" * (300 * KiB)) as stored:
                assert stored.status == 204
    assert stored_bytes(s3, bucket, token) == 300 * KiB
    assert open_uploads(s3, bucket) == []


async def test_expect_continue_on_one_process_sees_what_another_stored(two_gateways, s3, bucket):
    token = new_token()
    first, second = two_gateways
    async with aiohttp.ClientSession() as session:
        for url, name, size in ((second, "small", SIZE), (first, "big", QUOTA - SIZE)):
            async with session.put(
                f"{url}/api/files/{name}", data=b"f" * size, headers={"X-Auth-Token": token}
            ) as r:
                assert r.status == 204
    # The second process last saw the ledger with 100 KiB used; the first has filled it since.
    host, port = second.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PUT /api/files/more HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\nContent-Length: 1\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 413 ") and b"quota_exceeded" in answer
