"""MEMORY_BUDGET against slow and greedy uploaders: reservations by bytes read, served per user
in turn, one upload's share, and parts that move to disk rather than deadlock."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import AsyncIterator

import pytest

from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import GiB, MiB, TiB
from file_uploader.storage.budget import FairBudget
from file_uploader.storage.holding import Holding, PartReader

from ..faultproxy import Fault, FaultProxy
from ..helpers import metric, metric_samples, new_token, open_uploads

PART = 5 * MiB
FEW_SECONDS = 5.0  # "within a few seconds", generous for two busy cores


class Trickler:
    """A PUT that declares `declared` bytes, sends `first` of them at once, then a byte every `every` s."""

    def __init__(self, client, token: str, name: str, declared: int, first: int = 0, every: float = 2.0):
        self.client, self.token, self.name = client, token, name
        self.declared, self.first, self.every = declared, first, every
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        _, self.writer = await asyncio.open_connection(self.client.host, self.client.port)
        self.writer.write(
            f"PUT /api/files/{self.name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {self.token}\r\n"
            f"Content-Length: {self.declared}\r\n\r\n".encode()
        )
        sent = 0
        while sent < self.first:
            piece = min(MiB, self.first - sent)
            self.writer.write(b"a" * piece)
            await self.writer.drain()
            sent += piece
        while True:
            await asyncio.sleep(self.every)
            self.writer.write(b"a")
            await self.writer.drain()


@contextlib.asynccontextmanager
async def trickling(tricklers: list[Trickler]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(t.run()) for t in tricklers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tricklers:
            if t.writer is not None:
                t.writer.transport.abort()


async def victim_put_and_list(client) -> tuple[float, float]:
    """Another user's 1 MiB PUT and listing: how long each took (a stalled one fails the test)."""
    victim = {"X-Auth-Token": new_token()}
    started = time.monotonic()
    response = await asyncio.wait_for(client.put("/api/files/mine", data=os.urandom(MiB), headers=victim), 30)
    assert response.status == 204, await response.text()
    put = time.monotonic() - started
    started = time.monotonic()
    response = await asyncio.wait_for(client.get("/api/files", headers=victim), 30)
    assert await response.json() == ["mine"]
    return put, time.monotonic() - started


@pytest.mark.slow
async def test_64_slow_puts_from_two_users_do_not_stall_a_third_users_put(client):
    """The issue's attack at the defaults: two tokens run 32 PUTs each (the old per-user limit),
    declaring 1 GiB and sending a byte every two seconds."""
    tokens = [new_token(), new_token()]
    tricklers = [Trickler(client, tokens[n % 2], f"slow-{n}", GiB) for n in range(64)]
    async with trickling(tricklers):
        await asyncio.sleep(1.5)  # every slow PUT has started
        put, listing = await victim_put_and_list(client)
        held = client.app[STORAGE].pipeline.memory.held
    print(f"while 64 slow PUTs run: 1 MiB PUT {put:.2f} s, listing {listing:.2f} s, budget held {held} B")
    assert put < FEW_SECONDS and listing < FEW_SECONDS
    assert held < MiB  # bytes actually sent, not the 512 MiB eight-MiB parts would reserve


@pytest.fixture
async def small_budget(aiohttp_client, app_for, settings: Settings):
    """A 40 MiB budget of 5 MiB parts: eight uploads' worth of half-sent parts fill it."""
    tight = dataclasses.replace(settings, part_size=PART, memory_budget=8 * PART)
    client = await aiohttp_client(await app_for(tight))
    client.app[STORAGE].pipeline.parts_in_flight = 2  # the pipeline's own parameter (4 by default)
    return client


@pytest.mark.slow
async def test_uploads_that_send_most_of_a_part_then_trickle_do_not_stall_another_users_put(small_budget):
    """Sixteen uploads send 4.5 MiB each (72 MiB, against a 40 MiB budget), then a byte now and then."""
    tokens = [new_token(), new_token()]
    first = PART - MiB // 2
    tricklers = [Trickler(small_budget, tokens[n % 2], f"greedy-{n}", 100 * MiB, first) for n in range(16)]
    pipeline = small_budget.app[STORAGE].pipeline
    async with trickling(tricklers):
        for _ in range(200):  # until the budget is full of their half-sent parts
            if pipeline.memory.held > 7 * PART and pipeline.memory.waiting:
                break
            await asyncio.sleep(0.05)
        put, listing = await victim_put_and_list(small_budget)
        peak = pipeline.memory.peak
    print(f"with the budget full of half-sent parts: 1 MiB PUT {put:.2f} s, listing {listing:.2f} s")
    assert put < FEW_SECONDS and listing < FEW_SECONDS
    assert peak <= pipeline.memory.limit
    assert metric(await metric_samples(small_budget), "file_uploader_parts_spilled_total") > 0


async def test_a_put_declaring_5_tib_and_trickling_holds_only_what_it_sent(client):
    """S3's 10,000-part rule gives it 525 MiB parts: they go to disk, a byte at a time."""
    async with trickling([Trickler(client, new_token(), "huge", 5 * TiB, first=1000, every=1.0)]):
        await asyncio.sleep(1.5)
        put, _ = await victim_put_and_list(client)
        pipeline = client.app[STORAGE].pipeline
        memory, disk = pipeline.memory.held, pipeline.disk.held
    print(
        f"beside a trickling 5 TiB PUT: 1 MiB PUT {put:.2f} s; "
        f"it holds {memory} B of memory, {disk} B of disk"
    )
    assert put < FEW_SECONDS
    assert memory == 0 and 1000 <= disk < 1100


@pytest.mark.slow
async def test_uploads_each_holding_half_a_part_do_not_deadlock(aiohttp_client, app_for, settings):
    """Four uploads each send 4 MiB of a 5 MiB part (16 MiB against a 10 MiB budget) and only then
    the rest: taken a chunk at a time, that deadlocks unless a part that waits moves to disk."""
    tight = dataclasses.replace(settings, part_size=PART, memory_budget=2 * PART)
    client = await aiohttp_client(await app_for(tight))
    client.app[STORAGE].pipeline.parts_in_flight = 1  # the pipeline's own parameter (4 by default)
    everyone_sent_4_mib = asyncio.Barrier(4)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield os.urandom(MiB)
        with contextlib.suppress(asyncio.TimeoutError):
            # Waits for the others, as long as they can get their first 4 MiB in.
            await asyncio.wait_for(everyone_sent_4_mib.wait(), 5)
        for _ in range(6):
            yield os.urandom(MiB)

    async def upload(n: int) -> int:
        response = await client.put(
            f"/api/files/half-{n}", data=body(), headers={"X-Auth-Token": new_token()}
        )
        return response.status

    statuses = await asyncio.wait_for(asyncio.gather(*(upload(n) for n in range(4))), 60)
    assert statuses == [204] * 4
    pipeline = client.app[STORAGE].pipeline
    assert pipeline.memory.peak <= pipeline.memory.limit
    assert pipeline.memory.held == 0 and pipeline.disk.held == 0


@pytest.fixture
async def slow_parts(s3_url):
    proxy = await FaultProxy(s3_url).start()
    proxy.add(Fault("UploadPart", action="delay", seconds=0.5))
    yield proxy
    await proxy.close()


@pytest.mark.slow
async def test_one_upload_never_holds_more_than_its_share(
    aiohttp_client, app_for, settings, slow_parts, s3, bucket
):
    """An 80 MiB budget gives one upload 10 MiB: two 5 MiB parts, although four may be in flight."""
    share = dataclasses.replace(
        settings, s3_endpoint_url=slow_parts.url, part_size=PART, memory_budget=16 * PART
    )
    client = await aiohttp_client(await app_for(share))
    data = os.urandom(8 * PART)
    response = await client.put("/api/files/alone", data=data, headers={"X-Auth-Token": new_token()})
    assert response.status == 204
    pipeline = client.app[STORAGE].pipeline
    print(
        f"one upload's peak: {pipeline.memory.peak / MiB:.1f} MiB of a {pipeline.share / MiB:.0f} MiB share"
    )
    assert pipeline.memory.peak <= pipeline.share == 2 * PART
    assert open_uploads(s3, bucket) == []


async def test_the_budget_serves_users_in_turn_not_uploads():
    """One user with ten waiting requests and another with one: the other is second in line."""
    budget = FairBudget(2)
    await budget.acquire("first", 1)
    await budget.acquire("first", 1)
    order: list[str] = []

    async def take(owner: str) -> None:
        await budget.acquire(owner, 1)
        order.append(owner)

    greedy = [asyncio.create_task(take("greedy")) for _ in range(10)]
    await asyncio.sleep(0)
    modest = asyncio.create_task(take("modest"))
    await asyncio.sleep(0)
    for _ in range(2):
        budget.release("first", 1)
        await asyncio.sleep(0.01)
    assert order == ["greedy", "modest"]
    for task in [*greedy, modest]:
        task.cancel()


async def test_a_user_over_its_cap_is_passed_over_even_with_bytes_free():
    """Ten bytes, two users: each may hold five (plus one of slack) while the other wants some."""
    budget = FairBudget(10, slack=1)
    await budget.acquire("greedy", 6)  # alone: its cap is the whole budget (and slack)
    await budget.acquire("modest", 3)
    more = asyncio.create_task(budget.acquire("greedy", 1))
    await asyncio.sleep(0.05)
    assert not more.done()  # a byte is free, but greedy holds its share
    budget.release("modest", 3)  # modest is done: greedy alone again
    await asyncio.wait_for(more, 1)
    assert budget.held_by == {"greedy": 7}


async def test_a_large_request_is_not_passed_by_smaller_ones_in_its_turn():
    budget = FairBudget(10)
    await budget.acquire("a", 8)
    large = asyncio.create_task(budget.acquire("b", 5))
    await asyncio.sleep(0)
    small = asyncio.create_task(budget.acquire("c", 1))
    await asyncio.sleep(0)
    assert not small.done()  # it would fit, but b's turn comes first
    budget.release("a", 8)
    await asyncio.gather(large, small)
    assert budget.held == 6


async def test_a_wait_that_times_out_takes_nothing():
    budget = FairBudget(10)
    await budget.acquire("a", 10)
    with pytest.raises(TimeoutError):
        await budget.acquire("b", 1, within=0.05)
    assert not budget.waiting
    budget.release("a", 10)
    assert budget.held == 0


async def test_a_part_whose_first_piece_finds_no_memory_goes_to_disk_whole():
    """Another user holds the whole budget and nothing is on its way to S3: a new upload's part
    gets no memory for its first piece, so it goes to disk, every byte of it. Before: moving a
    part that held no memory yet gave 0 bytes back for a user who held none, a KeyError, and a
    500 (62 of 200 concurrent 32 MiB uploads in `make bench`)."""
    holding = Holding(
        part_size=PART, memory_budget=2 * PART, spool_budget=4 * PART, spill_after=0.05, wait_timeout=5
    )
    await holding.memory.acquire("other", 2 * PART)
    pieces = [bytes([n]) * MiB for n in range(5)]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    part = await PartReader(holding, None, chunks(), "newcomer").read(PART)
    assert (part.spooled, part.size, part.memory, part.disk) == (True, PART, 0, PART)
    assert part.body().read() == b"".join(pieces)  # what botocore sends
    part.release()
    assert (holding.disk.held, holding.memory.held_by) == (0, {"other": 2 * PART})


async def test_taking_or_giving_back_nothing_leaves_no_trace():
    budget = FairBudget(10, slack=2)
    await budget.acquire("a", 0)
    budget.release("b", 0)  # b holds nothing: giving back nothing is no error
    assert (budget.held, budget.held_by, budget.cap()) == (0, {}, 12)


async def test_one_users_parts_on_disk_and_in_memory_land_in_any_order():
    """A part on disk holds no memory: its landing after the user's last part in memory has
    landed takes nothing back. Before: a KeyError in the part's done callback, which then never
    gave its disk back; 253 of 500 concurrent 32 MiB uploads in `make bench` failed."""
    holding = Holding(
        part_size=PART, memory_budget=4 * PART, spool_budget=4 * PART, spill_after=5, wait_timeout=5
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * PART

    reader = PartReader(holding, None, chunks(), "user")
    on_disk = await reader.read(2 * PART)  # more than one upload's share: straight to disk
    in_memory = await reader.read(PART)
    assert (on_disk.spooled, on_disk.memory, in_memory.spooled, in_memory.memory) == (True, 0, False, PART)
    for part in (on_disk, in_memory):
        holding.sent_off(part)
    for part in (in_memory, on_disk):
        holding.landed(part.owner, part.memory)
        part.release()
    assert (holding.sending, holding.sending_by, holding.memory.held, holding.disk.held) == (0, {}, 0, 0)
