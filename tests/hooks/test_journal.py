"""Events that survive a crash: each webhook event is in the bucket's journal before the response,
delivered at least once by any gateway process (a process killed with kill -9 included), kept
while the receiver is down, bounded, and counted in /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest

from file_uploader.storage.events import JOURNAL_PREFIX

from ..helpers import metric, metric_samples, run_gateway
from .test_webhooks import SECRET, Receiver, distinct, gw, hooked, receiver  # noqa: F401 (fixtures)


def journal(s3, bucket: str) -> list[str]:
    found = s3.list_objects_v2(Bucket=bucket, Prefix=JOURNAL_PREFIX).get("Contents", [])
    return [item["Key"] for item in found]


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def test_an_event_is_in_the_bucket_before_the_response_and_leaves_it_once_delivered(
    gw,  # noqa: F811
    receiver,  # noqa: F811
    auth,
    token,
    s3,
    bucket,
):
    response = await gw.put("/api/files/kept.txt", data=b"kept", headers=auth)  # the receiver is down
    assert response.status == 204
    [key] = journal(s3, bucket)
    event = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert (event["type"], event["name"], event["size"]) == ("file.stored", "kept.txt", 4)
    await receiver.start()
    [delivered] = distinct(await receiver.wait_for(1))
    assert delivered["id"] == event["id"]
    await until(lambda: journal(s3, bucket) == [], 10, "the delivered event left the journal")


async def test_the_journal_is_bounded_and_the_rest_is_kept_in_memory(
    aiohttp_client,
    app_for,
    settings,
    receiver,  # noqa: F811
    auth,
    s3,
    bucket,
    caplog,
):
    client = await aiohttp_client(await app_for(hooked(settings, receiver, webhook_backlog=2)))
    for name in "abc":
        assert (await client.put(f"/api/files/{name}", data=b"x", headers=auth)).status == 204
    assert len(journal(s3, bucket)) == 2
    assert "WEBHOOK_BACKLOG" in caplog.text
    await receiver.start()
    assert len(distinct(await receiver.wait_for(3))) == 3  # the third from memory


@pytest.mark.slow
async def test_a_receiver_down_for_a_minute_receives_every_event_afterwards(
    gw,  # noqa: F811
    receiver,  # noqa: F811
    auth,
    s3,
    bucket,
):
    for name in ("a", "b", "c", "d"):
        assert (await gw.put(f"/api/files/{name}", data=name.encode(), headers=auth)).status == 204
    assert (await gw.delete("/api/files/a", headers=auth)).status == 204
    await asyncio.sleep(60)  # long past the in-memory queue's retries: the journal holds them
    assert len(journal(s3, bucket)) == 5
    assert metric(await metric_samples(gw), "file_uploader_webhook_backlog") == 5
    await receiver.start()
    events = distinct(await receiver.wait_for(5, timeout=60))
    assert sorted((event["type"], event["name"]) for event in events) == [
        ("file.deleted", "a"),
        ("file.stored", "a"),
        ("file.stored", "b"),
        ("file.stored", "c"),
        ("file.stored", "d"),
    ]
    a = [event["type"] for event in events if event["name"] == "a"]
    assert a == ["file.stored", "file.deleted"]  # in the order they happened, per file
    await until(lambda: journal(s3, bucket) == [], 20, "every delivered event left the journal")
    await asyncio.sleep(6)  # one more round of the recovery loop counts the journal again
    assert metric(await metric_samples(gw), "file_uploader_webhook_backlog") == 0


@pytest.mark.slow
@pytest.mark.process
async def test_a_gateway_killed_right_after_204_has_its_event_delivered_by_another_process(
    receiver,  # noqa: F811
    s3_url,
    bucket,
    s3,
    auth,
    tmp_path,
):
    env = {"WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": SECRET}
    with run_gateway(s3_url, bucket, tmp_path / "first", **env) as first:
        async with aiohttp.ClientSession() as session:
            async with session.put(
                f"{first}/api/files/last-words.txt", data=b"bye", headers=auth
            ) as response:
                assert response.status == 204
        os.kill(first.pid, signal.SIGKILL)  # with its event queued: the receiver is down
    assert len(journal(s3, bucket)) == 1
    await receiver.start()
    with run_gateway(s3_url, bucket, tmp_path / "second", **env):
        [event] = distinct(await receiver.wait_for(1, timeout=90))
        await until(lambda: journal(s3, bucket) == [], 10, "the delivered event left the journal")
    assert (event["type"], event["name"]) == ("file.stored", "last-words.txt")
