"""A SeaweedFS cluster per test (devtools/seaweed.py: master, three volume servers with
replication 001, filer, S3 gateway; about six seconds to start), and the gateway in front of it.

These tests break the engine while uploads run, so each gets a cluster of its own. They are
`distributed` tests: `make test-distributed` runs them (CI runs it after `make test`); plain
`pytest` leaves them out. Where the weed binary is missing they skip, saying why; under CI
they fail instead.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import boto3
import pytest

from devtools.seaweed import SeaweedCluster, running_seaweed, unavailable_reason
from file_uploader.settings import Settings
from file_uploader.sizes import MIN_PART_SIZE
from file_uploader.storage import open_storage
from file_uploader.storage.sweep import collect_garbage

from ..helpers import path_of

PART = MIN_PART_SIZE
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture
def seaweed(tmp_path: Path) -> Iterator[SeaweedCluster]:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the distributed tests: {reason}")
        pytest.skip(reason)
    with running_seaweed(tmp_path / "seaweed") as cluster:
        yield cluster


@pytest.fixture
def weed_s3(seaweed: SeaweedCluster):
    """A plain boto3 client on the cluster, to see what it holds."""
    return boto3.client(
        "s3",
        endpoint_url=seaweed.url,
        region_name="us-east-1",
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
    )


@pytest.fixture
def weed_settings(seaweed: SeaweedCluster, weed_s3) -> Settings:
    bucket = f"gw-{uuid.uuid4().hex[:12]}"
    weed_s3.create_bucket(Bucket=bucket)
    return Settings(
        s3_bucket=bucket,
        s3_endpoint_url=seaweed.url,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        part_size=PART,
        client_timeout=5,
    )


@pytest.fixture
async def gateway(aiohttp_client, app_for, weed_settings: Settings):
    """The gateway in-process on a real socket, in front of the cluster."""
    return await aiohttp_client(await app_for(weed_settings))


# What the fault tests share.


@dataclasses.dataclass
class Attempt:
    """One upload and what the gateway answered."""

    name: str
    data: bytes
    status: int | None = None
    error: str | None = None  # the JSON error's code, for a refusal
    seconds: float = 0.0


async def paced(data: bytes, piece: int = 256 * 1024, pause: float = 0.05) -> AsyncIterator[bytes]:
    """`data` as a chunked body sent over a few seconds, so that a fault lands in the middle."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        await asyncio.sleep(pause)


async def upload(gateway, auth, attempt: Attempt, *, chunked: bool) -> Attempt:
    began = time.monotonic()
    body = paced(attempt.data) if chunked else attempt.data
    try:
        response = await gateway.put(f"/api/files/{attempt.name}", data=body, headers=auth)
    except Exception as exc:  # the connection itself failed: never a 204
        attempt.error = type(exc).__name__
        return attempt
    attempt.status = response.status
    if response.status != 204:
        # A clear refusal: the one JSON error shape, with its code.
        attempt.error = (await response.json())["error"]["code"]
    attempt.seconds = time.monotonic() - began
    return attempt


def attempts(count: int, seed: str) -> list[Attempt]:
    """Uploads of mixed sizes: a small PutObject, multipart ones of 2-3 parts."""
    sizes = [1000, 2 * PART + 17, 3 * PART - 1, PART + 5]
    return [
        Attempt(f"{seed}/{number:02d}.bin", os.urandom(sizes[number % len(sizes)])) for number in range(count)
    ]


async def check_acknowledged(gateway, auth, done: list[Attempt]) -> None:
    """Every upload answered 204 reads back byte-exact; every other one said why (JSON error)."""
    for attempt in done:
        if attempt.status == 204:
            response = await gateway.get(f"/api/files/{attempt.name}", headers=auth)
            assert response.status == 200, (attempt.name, await response.text())
            got = await response.read()
            assert hashlib.sha256(got).digest() == hashlib.sha256(attempt.data).digest(), attempt.name
        else:
            assert attempt.error, attempt


async def no_open_uploads_after_gc(settings: Settings, weed_s3) -> None:
    """`gc` aborts what failed uploads left (nothing, if they aborted their own), and then none is open."""
    async with open_storage(settings) as storage:
        await collect_garbage(storage, datetime.timedelta(0))
    assert weed_s3.list_multipart_uploads(Bucket=settings.s3_bucket).get("Uploads", []) == []


def report(title: str, done: list[Attempt], seconds: float) -> str:
    ok = [attempt for attempt in done if attempt.status == 204]
    failed = [attempt for attempt in done if attempt.status != 204]
    codes = sorted({str(attempt.error) for attempt in failed})
    line = (
        f"{title}: {len(ok)} of {len(done)} uploads acknowledged (all read back byte-exact), "
        f"{len(failed)} refused {codes}, {seconds:.1f} s"
    )
    print(line)
    return line


async def start_tus(gateway, auth, data: bytes, name: str) -> str:
    encoded = base64.b64encode(name.encode()).decode()
    created = await gateway.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {encoded}"},
    )
    assert created.status == 201, await created.text()
    url = path_of(created.headers["Location"])
    first = await gateway.patch(
        url, data=data[: PART + 3], headers={**auth, **TUS, **OCTETS, "Upload-Offset": "0"}
    )
    assert first.status == 204, await first.text()
    return url


async def finish_tus(gateway, auth, url: str, data: bytes, name: str) -> int:
    """Resume from HEAD's offset until the upload is whole (a PATCH cut by the fault is retried);
    how many PATCHes it took."""
    patches = 0
    for _ in range(20):
        head = await gateway.head(url, headers={**auth, **TUS})
        if head.status != 200:
            await asyncio.sleep(1)
            continue
        offset = int(head.headers["Upload-Offset"])
        if offset == len(data):
            break
        patches += 1
        response = await gateway.patch(
            url, data=data[offset:], headers={**auth, **TUS, **OCTETS, "Upload-Offset": str(offset)}
        )
        if response.status != 204:
            await asyncio.sleep(1)  # 423 while a lost PATCH's lock runs out, 5xx while the engine heals
    got = await (await gateway.get(f"/api/files/{name}", headers=auth)).read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    return patches
