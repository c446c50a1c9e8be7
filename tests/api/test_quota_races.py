"""USER_QUOTA against hostile clients (issue 20, rows 1, 2 and 17), over HTTP against moto, the
storage checked against the bucket, never against the ledger: racing DELETEs of one file, many tus
uploads aimed at one existing name, chunked uploads when the room left is under one part.

Racing requests go to two gateways (two apps, each with its own S3 client) on one bucket, as two
gateway processes would."""

from __future__ import annotations

import asyncio
import collections
import dataclasses

import pytest

from file_uploader.settings import Settings
from file_uploader.sizes import KiB, MiB

from ..helpers import chunked, new_token
from ..hooks import test_webhooks
from ..hooks.test_webhooks import Receiver, distinct, hooked
from .test_quotas import stored

receiver = test_webhooks.receiver  # the webhook receiver's fixture

PART = 5 * MiB
TUS = {"Tus-Resumable": "1.0.0"}


async def two_gateways(
    aiohttp_client, app_for, settings: Settings, quota: int, receiver: Receiver | None = None
):
    tuned = dataclasses.replace(settings, user_quota=quota, part_size=PART)
    if receiver is not None:
        tuned = hooked(tuned, receiver)
    return [await aiohttp_client(await app_for(tuned)) for _ in range(2)]


@pytest.mark.slow
async def test_racing_deletes_of_one_file_count_once_and_say_so_once(
    aiohttp_client, app_for, settings, receiver, s3, bucket
):
    """Fill the quota, DELETE one file with 8 requests at once (over two gateways), fill again;
    five times. Before: each DELETE that succeeded took the size off again."""
    await receiver.start()
    size, quota = 20 * KiB, 100 * KiB
    gws = await two_gateways(aiohttp_client, app_for, settings, quota, receiver)
    token = new_token()
    auth = {"X-Auth-Token": token}
    number = 0
    deletions = 0
    for cycle in range(5):
        while True:  # fill the quota to the brim
            number += 1
            response = await gws[number % 2].put(f"/api/files/f{number}", data=b"q" * size, headers=auth)
            if response.status == 413:
                break
            assert response.status == 204
        assert sum(stored(s3, bucket, token).values()) <= quota, f"cycle {cycle}"
        victim = next(iter(stored(s3, bucket, token)))
        statuses = await asyncio.gather(
            *(gws[n % 2].delete(f"/api/files/{victim}", headers=auth) for n in range(8))
        )
        assert 204 in {response.status for response in statuses}
        deletions += 1
    assert sum(stored(s3, bucket, token).values()) <= quota
    await asyncio.sleep(1)  # every event sent by now
    deleted = [event for event in distinct(receiver.events) if event["type"] == "file.deleted"]
    assert len(deleted) == deletions, collections.Counter(event["name"] for event in deleted)


async def test_tus_uploads_aimed_at_one_existing_name_share_one_credit(
    aiohttp_client, app_for, settings, auth
):
    """20 tus uploads to replace one file of 999,999 bytes under a 1 MiB quota: one may count only
    what it adds to the file, the others count in full. Before: all 20 were created."""
    quota, size = 1 * MiB, 999_999
    gws = await two_gateways(aiohttp_client, app_for, settings, quota)
    assert (await gws[0].put("/api/files/target", data=b"t" * size, headers=auth)).status == 204
    metadata = "filename dGFyZ2V0"  # base64 of "target"
    headers = {**auth, **TUS, "Upload-Length": str(size), "Upload-Metadata": metadata}
    created = collections.Counter(
        response.status
        for response in await asyncio.gather(
            *(gws[n % 2].post("/api/uploads/", headers=headers) for n in range(20))
        )
    )
    assert created == {201: 1, 413: 19}
    usage = await (await gws[1].get("/api/usage", headers=auth)).json()
    assert usage["used"] <= quota  # the credited upload counts only what it adds: nothing


async def test_small_chunked_uploads_when_less_than_a_part_is_left_are_not_refused_too_early(
    aiohttp_client, app_for, settings, s3, bucket
):
    """640 KiB of room, ten chunked bodies of 50 KiB at once: all fit. Before: the first to come
    took all the room left (its first grant was a whole part) and 2 or 3 of them were stored."""
    quota, size = 640 * KiB, 50 * KiB
    gws = await two_gateways(aiohttp_client, app_for, settings, quota)
    token = new_token()
    auth = {"X-Auth-Token": token}
    statuses = await asyncio.gather(
        *(
            gws[n % 2].put(f"/api/files/small-{n}", data=chunked(b"s" * size, 10 * KiB), headers=auth)
            for n in range(10)
        )
    )
    assert [response.status for response in statuses] == [204] * 10
    assert sum(stored(s3, bucket, token).values()) == 10 * size
