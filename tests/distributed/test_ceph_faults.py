"""Faults of Ceph while uploads run: three OSDs (pools of three replicas, serving with two) and
two RGW instances behind a balancer the test starts (tests/balancer.py), all on loopback
(devtools/rgw.py's running_rgw_cluster: about 5 s to start).

- An OSD killed mid-upload: RADOS re-peers on the two left and the writes go on.
- An RGW instance killed while parts are in flight to it: its connections drop, and the S3
  client's retries reach the other instance through the balancer.

As for SeaweedFS (test_faults.py): every upload answered 204 reads back byte-exact, a refusal
is the JSON error, the tus upload resumes after the fault, and `gc` leaves nothing open.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest

from devtools.rgw import running_rgw_cluster
from file_uploader.settings import Settings

from ..balancer import Balancer
from ..engines.conftest import require_ceph
from .conftest import (
    PART,
    attempts,
    check_acknowledged,
    finish_tus,
    no_open_uploads_after_gc,
    report,
    start_tus,
    upload,
)

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]


@pytest.fixture
def ceph(tmp_path: Path) -> Iterator:
    require_ceph()
    with running_rgw_cluster(tmp_path / "ceph", osds=3, rgws=2) as cluster:
        yield cluster


@pytest.fixture
async def balancer(ceph) -> AsyncIterator[Balancer]:
    backends = []
    for url in ceph.engine.rgw_http_urls:
        parsed = urllib.parse.urlsplit(url)
        backends.append((parsed.hostname, parsed.port))
    found = Balancer(backends)
    await found.start()
    yield found
    await found.close()


@pytest.fixture
def ceph_s3(ceph):
    engine = ceph.engine
    return boto3.client(
        "s3",
        endpoint_url=engine.http_url,
        region_name="us-east-1",
        aws_access_key_id=engine.access_key,
        aws_secret_access_key=engine.secret_key,
    )


@pytest.fixture
async def ceph_gateway(aiohttp_client, app_for, ceph, ceph_s3, balancer):
    bucket = f"gw-{uuid.uuid4().hex[:12]}"
    ceph_s3.create_bucket(Bucket=bucket)
    settings = Settings(
        s3_bucket=bucket,
        s3_endpoint_url=balancer.url,
        aws_access_key_id=ceph.engine.access_key,
        aws_secret_access_key=ceph.engine.secret_key,
        part_size=PART,
        client_timeout=5,
    )
    return await aiohttp_client(await app_for(settings)), settings


async def run_fault(gateway, auth, seed: str, fault) -> tuple[list, str]:
    batch = attempts(12, seed)
    began = time.monotonic()
    running = [
        asyncio.create_task(upload(gateway, auth, attempt, chunked=number % 2 == 0))
        for number, attempt in enumerate(batch)
    ]
    await asyncio.sleep(1.0)  # every upload has sent some of its body
    fault()
    done = await asyncio.gather(*running)
    return done, report(seed, done, time.monotonic() - began)


async def test_an_osd_killed_mid_upload_loses_no_acknowledged_upload(ceph_gateway, auth, ceph, ceph_s3):
    gateway, settings = ceph_gateway
    tus_data = os.urandom(3 * PART + 11)
    tus_url = await start_tus(gateway, auth, tus_data, "tus/osd.bin")
    done, line = await run_fault(gateway, auth, "osd killed", lambda: ceph.kill("osd.1"))
    await check_acknowledged(gateway, auth, done)
    assert any(attempt.status == 204 for attempt in done), line
    await finish_tus(gateway, auth, tus_url, tus_data, "tus/osd.bin")
    after = await asyncio.gather(*(upload(gateway, auth, a, chunked=False) for a in attempts(4, "after")))
    assert [attempt.status for attempt in after] == [204] * 4, (line, after)
    await no_open_uploads_after_gc(settings, ceph_s3)


async def test_an_rgw_killed_with_parts_in_flight_is_stepped_around_through_the_balancer(
    ceph_gateway, auth, ceph, ceph_s3, balancer
):
    gateway, settings = ceph_gateway
    tus_data = os.urandom(3 * PART + 11)
    tus_url = await start_tus(gateway, auth, tus_data, "tus/rgw.bin")
    second = balancer.backends[1]
    done, line = await run_fault(gateway, auth, "rgw killed", lambda: ceph.kill("client.rgw.2"))
    assert balancer.connections[second] > 0, "parts were in flight to the killed instance"
    await check_acknowledged(gateway, auth, done)
    assert any(attempt.status == 204 for attempt in done), line
    await finish_tus(gateway, auth, tus_url, tus_data, "tus/rgw.bin")
    to_second = balancer.connections[second]
    after = await asyncio.gather(*(upload(gateway, auth, a, chunked=False) for a in attempts(4, "after")))
    assert [attempt.status for attempt in after] == [204] * 4, (line, after)
    assert balancer.connections[second] == to_second  # all went to the instance left
    await no_open_uploads_after_gc(settings, ceph_s3)
