"""CLIENT_TIMEOUT counts only the time spent waiting for the client's bytes (api/body.py)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from file_uploader.api.body import ClientWaits
from file_uploader.settings import Settings
from file_uploader.sizes import MiB

from .test_uploads import wait_until_no_uploads


async def test_a_wait_for_the_client_longer_than_the_timeout_cancels_the_reader():
    waits = ClientWaits(0.2)
    try:
        for _ in range(3):
            waits.start()
            await asyncio.sleep(0.1)  # the client answers within the timeout...
            waits.stop()
            await asyncio.sleep(0.3)  # ...and the upload's own waits (for memory, say) do not count
        waits.start()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(5)
        assert waits.timed_out()
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0  # the cancel was ours, taken back
    finally:
        waits.close()


async def test_a_cancel_from_elsewhere_is_no_timeout():
    waits = ClientWaits(5)
    reader = asyncio.current_task()
    assert reader is not None
    try:
        waits.start()
        asyncio.get_running_loop().call_later(0.05, reader.cancel)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(5)
        assert not waits.timed_out()
        reader.uncancel()
    finally:
        waits.close()


async def test_a_client_that_pauses_often_but_never_for_the_timeout_is_not_cut_off(
    aiohttp_client, app_for, settings, auth
):
    quick = Settings(**{**settings.__dict__, "client_timeout": 0.5})
    client = await aiohttp_client(await app_for(quick))
    data = os.urandom(MiB)

    async def paused() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 128 * 1024):
            await asyncio.sleep(0.2)  # 8 pauses, 1.6 s in all
            yield data[start : start + 128 * 1024]

    response = await client.put("/api/files/paused", data=paused(), headers=auth)
    assert response.status == 204
    response = await client.get("/api/files/paused", headers=auth)
    assert await response.read() == data


async def test_a_tus_patch_that_stops_sending_is_cut_off(aiohttp_client, app_for, settings, auth, s3, bucket):
    quick = Settings(**{**settings.__dict__, "client_timeout": 0.5})
    client = await aiohttp_client(await app_for(quick))
    created = await client.post(
        "/api/uploads/",
        headers={
            **auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(8 * MiB),
            "Upload-Metadata": "filename Zg==",
        },
    )
    assert created.status == 201
    path = created.headers["Location"].split("://", 1)[-1].split("/", 1)[-1]
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PATCH /{path} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
        f"Content-Length: {8 * MiB}\r\n\r\n".encode()
        + os.urandom(MiB)
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    assert response.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in response
    writer.close()


async def test_a_form_upload_that_stops_sending_is_cut_off(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    quick = Settings(**{**settings.__dict__, "client_timeout": 0.5})
    client = await aiohttp_client(await app_for(quick))
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"POST /api/files HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {8 * MiB}\r\n\r\n".encode()
        + head
        + os.urandom(MiB)
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    assert response.startswith(b"HTTP/1.1 408")
    assert b'"body_timeout"' in response
    assert await wait_until_no_uploads(s3, bucket) == []
    writer.close()
