"""MEMORY_BUDGET: the part data of all uploads together stays under one cap, and
uploads over it wait instead of failing."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os

import aiohttp
import pytest

from file_uploader.api.tus import OFFSET_OCTET_STREAM
from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings, SettingsError
from file_uploader.sizes import MAX_OBJECT_SIZE, MiB
from file_uploader.storage.budget import FairBudget

from ..helpers import chunked, new_token, open_uploads, rss_bytes, run_gateway

PART = 5 * MiB


def filename(name: str) -> dict[str, str]:
    return {"Upload-Metadata": "filename " + base64.b64encode(name.encode()).decode()}


@pytest.fixture
async def tight_client(aiohttp_client, app_for, settings: Settings):
    """A gateway whose budget holds three parts, while six uploads of three parts come at once."""
    tight = dataclasses.replace(settings, part_size=PART, memory_budget=3 * PART)
    client = await aiohttp_client(await app_for(tight))
    client.app[STORAGE].pipeline.parts_in_flight = 2  # the pipeline's own parameter (4 by default)
    return client


@pytest.mark.slow
async def test_concurrent_uploads_over_the_budget_wait_and_all_arrive_intact(tight_client, s3, bucket):
    bodies = {f"file-{i}": os.urandom(2 * PART + 1000 * i + 1) for i in range(6)}
    tokens = {name: new_token() for name in bodies}

    async def upload(name: str) -> int:
        # Half declare their length, half are chunked: both paths reserve parts.
        data = bodies[name] if name[-1] in "024" else chunked(bodies[name])
        headers = {"X-Auth-Token": tokens[name]}
        response = await tight_client.put(f"/api/files/{name}", data=data, headers=headers)
        return response.status

    statuses = await asyncio.gather(*(upload(name) for name in bodies))

    assert statuses == [204] * len(bodies)
    for name, data in bodies.items():
        response = await tight_client.get(f"/api/files/{name}", headers={"X-Auth-Token": tokens[name]})
        assert await response.read() == data
    budget = tight_client.server.app[STORAGE].pipeline.memory
    assert budget.peak <= 3 * PART  # never more part data held than the cap...
    assert budget.peak > 2 * PART  # ...which the uploads really filled...
    assert budget.waits > 0  # ...and had to wait for
    assert budget.held == 0  # every reservation was given back
    assert open_uploads(s3, bucket) == []


async def test_a_failed_upload_gives_its_reservations_back(tight_client, auth):
    async def broken():
        yield os.urandom(PART + 10)
        raise ConnectionResetError("client went away")

    with pytest.raises(Exception):  # noqa: B017 (the client sees its own body fail)
        await tight_client.put("/api/files/broken", data=broken(), headers=auth)
    budget = tight_client.server.app[STORAGE].pipeline.memory
    for _ in range(50):  # the server notices the cut connection a moment later
        if budget.held == 0:
            break
        await asyncio.sleep(0.1)
    assert budget.held == 0


async def test_a_waiter_cancelled_in_the_queue_does_not_block_the_next():
    budget = FairBudget(10)
    await budget.acquire("a", 8)
    cancelled = asyncio.create_task(budget.acquire("a", 5))
    behind = asyncio.create_task(budget.acquire("b", 2))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.wait_for(behind, 1)
    assert budget.held == 10
    budget.release("a", 8)
    budget.release("b", 2)
    assert budget.held == 0


def test_the_budget_must_hold_at_least_one_part():
    with pytest.raises(SettingsError, match="MEMORY_BUDGET"):
        Settings.from_env({"S3_BUCKET": "b", "PART_SIZE": "8MiB", "MEMORY_BUDGET": "4MiB"})


@pytest.mark.slow
@pytest.mark.process
async def test_tus_patches_into_huge_uploads_stay_within_the_memory_budget(s3_url, bucket, tmp_path):
    """Three 300 MiB PATCHes into uploads that declare 5 TiB, whose parts must be 525 MiB
    (S3's 10,000-part rule): the parts go through temporary files, not memory."""
    budget, sent = 64 * MiB, 300 * MiB
    block = os.urandom(MiB)

    async def body():
        for _ in range(sent // MiB):
            yield block

    with run_gateway(s3_url, bucket, tmp_path, MEMORY_BUDGET=str(budget)) as base:
        async with aiohttp.ClientSession(base) as session:
            headers = {"X-Auth-Token": new_token(), "Tus-Resumable": "1.0.0"}
            assert (await session.get("/api/files", headers=headers)).status == 200  # warmed up
            before = rss_bytes(base.pid)

            async def upload(number: int) -> int:
                response = await session.post(
                    "/api/uploads",
                    headers={**headers, "Upload-Length": str(MAX_OBJECT_SIZE), **filename(f"huge-{number}")},
                )
                assert response.status == 201, await response.text()
                response = await session.patch(
                    response.headers["Location"],
                    data=body(),
                    headers={**headers, "Upload-Offset": "0", "Content-Type": OFFSET_OCTET_STREAM},
                )
                assert response.status == 204, await response.text()
                return int(response.headers["Upload-Offset"])

            offsets = await asyncio.gather(*(upload(number) for number in range(3)))
            growth = rss_bytes(base.pid, "VmHWM") - before
    assert offsets == [sent] * 3
    print(f"peak RSS growth {growth / MiB:.0f} MiB")
    assert growth < budget + 150 * MiB, f"the gateway grew by {growth / MiB:.0f} MiB"
