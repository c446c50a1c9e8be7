"""Faults of a distributed engine while uploads run (SeaweedFS: three volume servers, replication
001): what the gateway acknowledged (204) is never lost, what failed says so and leaves nothing
open once `gc` has run, and a resumable (tus) upload resumes after the fault.

Each test starts a dozen uploads whose bodies take a few seconds to send, breaks the engine
while they run, and then reads every acknowledged upload back byte-exact. The line each test
prints (pytest -s) is what docs/scale-out.md quotes.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from .conftest import (
    OCTETS,
    PART,
    TUS,
    attempts,
    check_acknowledged,
    finish_tus,
    no_open_uploads_after_gc,
    report,
    start_tus,
    upload,
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

# The engine is paused longer than every wait of the gateway: CLIENT_TIMEOUT (5 s here), a free
# S3 connection (S3_POOL_WAIT_SECONDS, 10 s), a tus upload's lease (LEASE_SECONDS, 30 s) and
# botocore's read timeout (60 s), after which calls in flight are retried.
PAUSE_SECONDS = 65.0


async def test_a_volume_server_killed_mid_upload_loses_no_acknowledged_upload(
    gateway, auth, seaweed, weed_s3, weed_settings
):
    tus_data = os.urandom(3 * PART + 11)
    tus_url = await start_tus(gateway, auth, tus_data, "tus/killed.bin")
    batch = attempts(12, "killed")
    began = time.monotonic()
    running = [
        asyncio.create_task(upload(gateway, auth, attempt, chunked=number % 2 == 0))
        for number, attempt in enumerate(batch)
    ]
    await asyncio.sleep(1.0)  # every upload has sent some of its body
    seaweed.kill_volume(2)
    done = await asyncio.gather(*running)
    line = report("volume server killed", done, time.monotonic() - began)
    await check_acknowledged(gateway, auth, done)
    assert any(attempt.status == 204 for attempt in done), line

    # After the fault: the tus upload resumes, new uploads are stored, old ones still read.
    await finish_tus(gateway, auth, tus_url, tus_data, "tus/killed.bin")
    after = await asyncio.gather(*(upload(gateway, auth, a, chunked=False) for a in attempts(4, "after")))
    assert [attempt.status for attempt in after] == [204] * 4, after
    await check_acknowledged(gateway, auth, after)
    await no_open_uploads_after_gc(weed_settings, weed_s3)


async def test_the_engine_paused_past_the_gateways_timeouts_loses_no_acknowledged_upload(
    gateway, auth, seaweed, weed_s3, weed_settings
):
    tus_data = os.urandom(3 * PART + 11)
    tus_url = await start_tus(gateway, auth, tus_data, "tus/paused.bin")
    tus_patch = asyncio.create_task(
        gateway.patch(
            tus_url,
            data=tus_data[PART + 3 :],
            headers={**auth, **TUS, **OCTETS, "Upload-Offset": str(PART + 3)},
        )
    )
    batch = attempts(12, "paused")
    began = time.monotonic()
    running = [
        asyncio.create_task(upload(gateway, auth, attempt, chunked=number % 2 == 0))
        for number, attempt in enumerate(batch)
    ]
    await asyncio.sleep(0.5)
    seaweed.pause()
    try:
        await asyncio.sleep(PAUSE_SECONDS)
    finally:
        seaweed.resume()
    done = await asyncio.gather(*running)
    line = report(f"engine paused {PAUSE_SECONDS:.0f} s", done, time.monotonic() - began)
    await check_acknowledged(gateway, auth, done)
    await tus_patch  # whatever it answered, the upload resumes from HEAD's offset
    await finish_tus(gateway, auth, tus_url, tus_data, "tus/paused.bin")
    after = await asyncio.gather(*(upload(gateway, auth, a, chunked=False) for a in attempts(4, "after")))
    assert [attempt.status for attempt in after] == [204] * 4, (line, after)
    await no_open_uploads_after_gc(weed_settings, weed_s3)


async def test_two_volume_servers_lost_fail_uploads_clearly_and_leave_nothing_open(
    gateway, auth, seaweed, weed_s3, weed_settings
):
    """Past what replication 001 tolerates: writes cannot be placed, so uploads in flight fail.
    Each failure must be a JSON error (never a 204); once the servers are back, every upload
    that was answered 204 reads back byte-exact, and `gc` leaves no multipart upload open."""
    batch = attempts(12, "two lost")
    began = time.monotonic()
    running = [asyncio.create_task(upload(gateway, auth, attempt, chunked=True)) for attempt in batch]
    await asyncio.sleep(1.0)
    seaweed.kill_volume(2)
    seaweed.kill_volume(3)
    done = await asyncio.gather(*running)
    line = report("two of three volume servers killed", done, time.monotonic() - began)
    assert any(attempt.status != 204 for attempt in done), line  # the fault was felt
    for attempt in done:
        assert attempt.status is None or attempt.status >= 500 or attempt.status == 204, attempt
    seaweed.restart_volume(2)
    seaweed.restart_volume(3)
    await asyncio.sleep(5)  # the master hears of them again
    await check_acknowledged(gateway, auth, done)
    await no_open_uploads_after_gc(weed_settings, weed_s3)
