"""Webhooks: a real receiver on a real socket gets each file.stored and file.deleted event, signed,
at least once, even when it was down for a while; a receiver that hangs never slows an upload."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from file_uploader.app import create_app
from file_uploader.hooks.webhooks import SENDERS
from file_uploader.settings import Settings
from file_uploader.storage.keys import user_id

from ..helpers import free_port, metric, metric_samples

SECRET = "a webhook secret"


class Receiver:
    """An HTTP server on a real port that checks each event's signature and keeps the events;
    it can be stopped and started again on the same port, or made to hang."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        self.events: list[dict] = []
        self.bad_signatures = 0
        self.hang = False
        self.released = asyncio.Event()  # ends the hang
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Webhook-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.hang:
            await self.released.wait()
        self.events.append(json.loads(body))
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 15) -> list[dict]:
        """The events, once there are at least `count` distinct ones."""
        deadline = time.monotonic() + timeout
        while len({event["id"] for event in self.events}) < count:
            assert time.monotonic() < deadline, f"{len(self.events)} events of {count}: {self.events}"
            await asyncio.sleep(0.05)
        return self.events


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(free_port())
    yield receiver
    await receiver.stop()


def hooked(settings: Settings, receiver: Receiver, **extra) -> Settings:
    return dataclasses.replace(settings, webhook_url=receiver.url, webhook_secret=SECRET, **extra)


@pytest.fixture
async def gw(aiohttp_client, settings, receiver):
    return await aiohttp_client(await create_app(hooked(settings, receiver)))


def distinct(events: list[dict]) -> list[dict]:
    """Each event once (delivery is at least once), in the order first seen."""
    return list({event["id"]: event for event in reversed(events)}.values())[::-1]


async def test_a_stored_and_a_deleted_file_are_posted_signed_with_the_one_way_user(gw, receiver, auth):
    await receiver.start()
    put = await gw.put("/api/files/notes.txt", data=b"hello", headers=auth)
    assert put.status == 204
    head = await gw.head("/api/files/notes.txt", headers=auth)
    assert (await gw.delete("/api/files/notes.txt", headers=auth)).status == 204
    stored, deleted = distinct(await receiver.wait_for(2))
    expected = {"user": user_id(auth["X-Auth-Token"]), "name": "notes.txt", "size": 5}
    assert stored.items() >= {"type": "file.stored", **expected}.items()
    assert deleted.items() >= {"type": "file.deleted", **expected}.items()
    assert stored["etag"] == deleted["etag"] == head.headers["ETag"].strip('"')
    assert datetime.datetime.fromisoformat(stored["time"]).tzinfo is not None
    assert auth["X-Auth-Token"] not in json.dumps(receiver.events)
    assert receiver.bad_signatures == 0


async def test_a_form_upload_and_a_finished_tus_upload_are_posted_as_stored(gw, receiver, auth):
    await receiver.start()
    form = aiohttp.FormData()
    form.add_field("file", b"form bytes", filename="form.txt")
    assert (await gw.post("/api/files", data=form, headers=auth)).status == 200
    metadata = "filename " + base64.b64encode(b"tus.bin").decode()
    created = await gw.post(
        "/api/uploads/",
        data=b"tus bytes!",
        headers={
            **auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "10",
            "Upload-Metadata": metadata,
            "Content-Type": "application/offset+octet-stream",
        },
    )
    assert created.status == 201
    events = distinct(await receiver.wait_for(2))
    assert sorted((event["type"], event["name"], event["size"]) for event in events) == [
        ("file.stored", "form.txt", 10),
        ("file.stored", "tus.bin", 10),
    ]


@pytest.mark.slow
async def test_events_reach_a_receiver_that_starts_late_and_one_that_was_down(gw, receiver, auth):
    # Nobody listens yet: the first events are retried until the receiver comes up.
    for number in range(3):
        assert (await gw.put(f"/api/files/early-{number}", data=b"e", headers=auth)).status == 204
    await asyncio.sleep(1.0)
    await receiver.start()
    await receiver.wait_for(3)
    # Down again for a while: the next events wait for it to come back.
    await receiver.stop()
    for number in range(3):
        assert (await gw.put(f"/api/files/late-{number}", data=b"l", headers=auth)).status == 204
    assert (await gw.delete("/api/files/early-0", headers=auth)).status == 204
    await asyncio.sleep(1.5)
    await receiver.start()
    events = distinct(await receiver.wait_for(7))
    assert sorted((event["type"], event["name"]) for event in events) == [
        ("file.deleted", "early-0"),
        *[("file.stored", f"early-{number}") for number in range(3)],
        *[("file.stored", f"late-{number}") for number in range(3)],
    ]
    assert receiver.bad_signatures == 0


async def test_a_full_queue_drops_events_and_counts_them(aiohttp_client, settings, receiver, auth, caplog):
    # The receiver is down: each sender holds one event it retries, and the queue holds two.
    gw = await aiohttp_client(await create_app(hooked(settings, receiver, webhook_queue=2)))
    before = metric(await metric_samples(gw), "file_uploader_webhooks_dropped_total", reason="queue_full")
    uploads = SENDERS + 2 + 4
    for number in range(uploads):
        assert (await gw.put(f"/api/files/f{number}", data=b"x", headers=auth)).status == 204
        await asyncio.sleep(0.02)  # time for a free sender to take the event
    after = metric(await metric_samples(gw), "file_uploader_webhooks_dropped_total", reason="queue_full")
    assert after - before == uploads - SENDERS - 2
    assert "dropped" in caplog.text and "webhook" in caplog.text


async def test_a_hanging_receiver_does_not_slow_uploads(aiohttp_client, settings, receiver, auth):
    await receiver.start()
    receiver.hang = True  # it takes each event and never answers
    gw = await aiohttp_client(await create_app(hooked(settings, receiver)))
    started = time.monotonic()
    for number in range(2 * SENDERS):
        response = await gw.put(f"/api/files/f{number}", data=b"x" * 1000, headers=auth)
        assert response.status == 204
    # Each delivery would wait ATTEMPT_SECONDS (10 s) for an answer; the uploads do not.
    assert time.monotonic() - started < 3
    receiver.released.set()
    await receiver.wait_for(2 * SENDERS)


async def test_deleting_a_folder_posts_one_event_per_file_after_its_answer(gw, receiver, auth):
    await receiver.start()
    for name in ("dir/a", "dir/b", "dir/sub/c"):
        assert (await gw.put(f"/api/files/{name}", data=b"abc", headers=auth)).status == 204
    response = await gw.delete("/api/files/dir/?recursive=1", headers=auth)
    assert response.status == 200
    assert (await response.json())["deleted"] == 3
    events = distinct(await receiver.wait_for(6))
    deleted = sorted(event["name"] for event in events if event["type"] == "file.deleted")
    assert deleted == ["dir/a", "dir/b", "dir/sub/c"]
