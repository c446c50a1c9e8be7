"""An S3 that stops taking a request body (storage/pieces.py): the send is dropped within its bound.

Ceph RGW stopped reading an UploadPart body mid-part and an upload hung for over 8 minutes:
aiohttp's read timeout starts only once a body is sent. The proxy's "stall" fault reads a
part's first bytes, then neither reads nor answers. The parts here are larger than what the
sockets' buffers take in (a few MiB on loopback), so that the gateway's writes do stop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from pathlib import Path

import pytest

from file_uploader.app import create_app
from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import MiB
from file_uploader.storage.connection import Lane

from ..faultproxy import Fault, FaultProxy
from ..helpers import all_keys, metric, metric_samples, new_token, open_uploads

STALL = 0.5  # S3_SEND_STALL_SECONDS, shortened
PART = 16 * MiB  # far more than the socket buffers between the gateway and a stalled S3 take in
SIZE = PART + 1234  # two parts
ATTEMPTS = 2  # AWS_MAX_ATTEMPTS: one retry
# The longest a stalled PUT may take: each attempt's stall, botocore's backoff before its retry
# (standard mode: at most 1 s), and room for two busy cores.
BOUND = ATTEMPTS * STALL + 1 + 2.5


@pytest.fixture(autouse=True)
def _two_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(ATTEMPTS))


@pytest.fixture
async def proxy(s3_url):
    proxy = await FaultProxy(s3_url).start()
    yield proxy
    await proxy.close()


async def through_proxy(aiohttp_client, settings: Settings, proxy: FaultProxy, **changes):
    """A gateway whose S3 is behind the proxy, with large parts and a short stall bound (the
    storage layer's own parameter, set before the first request)."""
    values = {"s3_endpoint_url": proxy.url, "part_size": PART, **changes}
    gateway = await aiohttp_client(await create_app(dataclasses.replace(settings, **values)))
    gateway.app[STORAGE].s3.send_stall = STALL
    proxy.calls.clear()  # the startup's write probe is not what these tests count
    return gateway


@pytest.fixture
async def gateway(aiohttp_client, settings, proxy):
    return await through_proxy(aiohttp_client, settings, proxy)


def named(name: str):
    """A fault's match: requests for the file `name` only (other users go on unharmed)."""
    return lambda request: request.path.endswith(f"/{name}")


def gateway_holds_socket(client_port: int) -> bool:
    """Whether a socket of this process (the gateway runs in it) is still open from `client_port`.

    /proc/net/tcp lists every TCP socket with the inode of its file; a closed socket that the
    kernel still flushes (an orphan) has inode 0.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == client_port and fields[9] != "0":
            return True
    return False


async def assert_nothing_left(s3, bucket):
    for _ in range(100):  # the abort can land just after the response
        if not open_uploads(s3, bucket):
            break
        await asyncio.sleep(0.05)
    assert open_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


async def timed_put(gateway, name: str, data: bytes, auth: dict[str, str]):
    """PUT `data` as `name`: the response, its body, and the seconds it took (a PUT that hangs
    fails the test after four bounds instead of holding it for ever)."""
    started = time.monotonic()
    async with asyncio.timeout(4 * BOUND):
        response = await gateway.put(f"/api/files/{name}", data=data, headers=auth)
        body = await response.read()
    return response, body, time.monotonic() - started


async def stalls_counted(gateway) -> float:
    """UploadParts this process dropped for a stall so far (counters are the process's own)."""
    samples = await metric_samples(gateway)
    return metric(samples, "file_uploader_s3_send_stalls_total", operation="UploadPart")


def first_part(request) -> bool:
    return request.query.get("partNumber") == "1"


async def until_held(stall: Fault) -> None:
    """Until the proxy holds a connection for `stall`: S3 stopped taking a body."""
    async with asyncio.timeout(BOUND):
        while not stall.held:
            await asyncio.sleep(0.01)


async def test_a_part_s3_stops_taking_ends_in_503_within_the_bound_and_leaves_nothing(
    gateway, proxy, auth, s3, bucket
):
    proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, match=first_part))
    response, body, elapsed = await timed_put(gateway, "stuck.bin", os.urandom(SIZE), auth)
    assert response.status == 503, body
    assert (await response.json())["error"]["code"] == "storage_unavailable"
    assert response.headers["Retry-After"]
    assert STALL < elapsed < BOUND
    assert proxy.count("AbortMultipartUpload") == 1
    await assert_nothing_left(s3, bucket)


async def test_a_part_s3_stops_taking_is_sent_again_by_botocore_alone_each_time_on_a_new_connection(
    gateway, proxy, auth
):
    before = await stalls_counted(gateway)
    stall = proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, match=first_part))
    response, body, _ = await timed_put(gateway, "stuck.bin", os.urandom(SIZE), auth)
    assert response.status == 503, body
    # Once per botocore attempt: aiohttp's own resend of an idempotent request is declined.
    assert stall.hits == ATTEMPTS
    assert len(set(stall.held)) == ATTEMPTS
    assert await stalls_counted(gateway) - before == ATTEMPTS


async def test_a_stalled_send_drops_its_connection_and_frees_its_lane(gateway, proxy, auth):
    stall = proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, match=first_part))
    stuck = asyncio.create_task(timed_put(gateway, "stuck.bin", os.urandom(SIZE), auth))
    await until_held(stall)
    assert gateway_holds_socket(stall.held[0][1])  # the gateway's side of the stalled send
    response, body, _ = await stuck
    assert response.status == 503, body
    # Aborted: a closed socket would stay open until S3 took the megabytes it still holds.
    for _, port in stall.held:
        assert not gateway_holds_socket(port)
    assert gateway.app[STORAGE].s3.lanes.in_use[Lane.UPLOAD] == 0


async def test_another_users_upload_listing_and_download_go_on_while_a_part_is_stalled(
    gateway, proxy, auth, s3, bucket
):
    stall = proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, match=named("stuck.bin")))
    stuck = asyncio.create_task(timed_put(gateway, "stuck.bin", os.urandom(SIZE), auth))
    await until_held(stall)
    other = {"X-Auth-Token": new_token()}
    data = os.urandom(SIZE)
    response, body, elapsed = await timed_put(gateway, "mine.bin", data, other)
    assert response.status == 204, body
    assert elapsed < BOUND
    assert await (await gateway.get("/api/files", headers=other)).json() == ["mine.bin"]
    download = await gateway.get("/api/files/mine.bin", headers=other)
    assert hashlib.sha256(await download.read()).digest() == hashlib.sha256(data).digest()
    assert not stuck.done()  # all of that while the stalled part was still held
    response, _, _ = await stuck
    assert response.status == 503
    assert open_uploads(s3, bucket) == []


async def test_a_part_s3_stops_taking_once_is_stored_byte_exact_through_a_new_connection(
    gateway, proxy, auth
):
    stall = proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, times=1, match=first_part))
    data = os.urandom(SIZE)
    response, body, elapsed = await timed_put(gateway, "f.bin", data, auth)
    assert response.status == 204, body
    assert stall.hits == 1 and elapsed < BOUND
    download = await gateway.get("/api/files/f.bin", headers=auth)
    assert hashlib.sha256(await download.read()).digest() == hashlib.sha256(data).digest()


async def test_a_small_file_whose_put_object_s3_stops_taking_ends_in_503_and_stores_nothing(
    aiohttp_client, settings, proxy, auth, s3, bucket
):
    # Parts of 32 MiB, so that a 20 MiB file is one PutObject, still more than the buffers take.
    gateway = await through_proxy(aiohttp_client, settings, proxy, part_size=32 * MiB)
    stall = proxy.add(Fault("PutObject", action="stall", after_bytes=256 * 1024, match=named("small.bin")))
    response, body, elapsed = await timed_put(gateway, "small.bin", os.urandom(20 * MiB), auth)
    assert response.status == 503, body
    assert (await response.json())["error"]["code"] == "storage_unavailable"
    assert stall.hits == ATTEMPTS and elapsed < BOUND
    await assert_nothing_left(s3, bucket)


async def test_a_part_sent_from_disk_that_s3_stops_taking_ends_in_503_and_leaves_nothing(
    aiohttp_client, settings, proxy, auth, s3, bucket
):
    # At most 2 parts (S3_MAX_PARTS): a declared 32 MiB is two parts of 16 MiB, more than one
    # upload's share of a 40 MiB budget (5 MiB), so each goes to a temporary file and from there.
    gateway = await through_proxy(
        aiohttp_client, settings, proxy, part_size=5 * MiB, s3_max_parts=2, memory_budget=40 * MiB
    )
    stall = proxy.add(Fault("UploadPart", action="stall", after_bytes=256 * 1024, match=first_part))
    stuck = asyncio.create_task(timed_put(gateway, "stuck.bin", os.urandom(32 * MiB), auth))
    await until_held(stall)
    assert gateway.app[STORAGE].pipeline.disk.held > 0  # the part is on disk
    response, body, elapsed = await stuck
    assert response.status == 503, body
    assert stall.hits == ATTEMPTS and elapsed < BOUND
    await assert_nothing_left(s3, bucket)


async def test_a_slow_but_steady_s3_is_not_cut(gateway, proxy, auth):
    # 8 MiB a second: a 16 MiB part takes 2 s to send, four stall bounds, each piece a few ms.
    before = await stalls_counted(gateway)
    proxy.add(Fault("UploadPart", action="throttle", rate=8 * MiB))
    response, body, elapsed = await timed_put(gateway, "slow.bin", os.urandom(SIZE), auth)
    assert response.status == 204, body
    assert elapsed > 3 * STALL
    assert await stalls_counted(gateway) == before


async def test_s3_slow_to_answer_once_it_took_the_whole_part_is_not_cut(gateway, proxy, auth):
    # The whole body taken, then 3 stall bounds before the answer: botocore's read timeout's to judge.
    before = await stalls_counted(gateway)
    proxy.add(Fault("UploadPart", action="throttle", rate=256 * MiB, seconds=3 * STALL))
    response, body, elapsed = await timed_put(gateway, "slow.bin", os.urandom(SIZE), auth)
    assert response.status == 204, body
    assert elapsed > 3 * STALL
    assert await stalls_counted(gateway) == before
