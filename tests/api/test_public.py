"""The public library: X-Public, PATCH, GET /api/public and /p/{id}, without a token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import aiohttp
import pytest
from yarl import URL

from file_uploader.app import create_app
from file_uploader.storage.keys import user_id

from ..faultproxy import Fault, FaultProxy
from ..helpers import new_token, run_gateway


async def put(client, auth, name: str, data: bytes, public: str | None = None) -> None:
    headers = {**auth, **({"X-Public": public} if public is not None else {})}
    response = await client.put(f"/api/files/{name}", data=data, headers=headers)
    assert response.status == 204, await response.text()


async def library(client, **query: str) -> dict:
    response = await client.get("/api/public", params=query)  # no token
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_public_upload_is_listed_for_everyone_and_served_without_a_token(client, auth):
    data = b"0123456789"
    await put(client, auth, "albums/cat.txt", data, public="true")
    await put(client, auth, "private.txt", b"secret")
    files = (await library(client))["files"]
    assert [(f["name"], f["size"], f["type"]) for f in files] == [("cat.txt", 10, "text/plain")]
    url = files[0]["url"]
    token, uid = auth["X-Auth-Token"], user_id(auth["X-Auth-Token"])
    assert "/p/" in url and token not in url and uid not in url
    assert token not in json.dumps(files) and uid not in json.dumps(files)

    path = url.split("://", 1)[1].split("/", 1)[1]
    response = await client.get("/" + path)
    assert response.status == 200 and await response.read() == data
    assert response.headers["Content-Disposition"].startswith('attachment; filename="cat.txt"')
    assert response.headers["ETag"]
    ranged = await client.get("/" + path, headers={"Range": "bytes=2-4"})
    assert ranged.status == 206 and await ranged.read() == b"234"
    inline = await client.get("/" + path, params={"inline": "1"})
    assert inline.headers["Content-Disposition"].startswith("inline;")


async def test_the_library_is_newest_first_and_paginated(client, auth):
    for number in range(5):
        await put(client, auth, f"f{number}.txt", b"x", public="true")
    first = await library(client, limit="2")
    assert [f["name"] for f in first["files"]] == ["f4.txt", "f3.txt"]
    second = await library(client, limit="2", after=first["next"])
    third = await library(client, limit="2", after=second["next"])
    assert [f["name"] for f in second["files"] + third["files"]] == ["f2.txt", "f1.txt", "f0.txt"]
    assert third["next"] is None
    response = await client.get("/api/public", params={"after": "../x"})
    assert response.status == 400


async def test_patch_publishes_and_unpublishes_and_the_listing_says_so(client, auth):
    await put(client, auth, "dir/photo.jpg", b"jpeg?")
    response = await client.patch("/api/files/dir/photo.jpg", json={"public": True}, headers=auth)
    assert response.status == 200
    answer = await response.json()
    assert answer["public"] is True and "/p/" in answer["url"]
    listing = await (await client.get("/api/files", params={"prefix": "dir/"}, headers=auth)).json()
    assert listing["files"][0]["public"] is True
    assert len((await library(client))["files"]) == 1

    response = await client.patch("/api/files/dir/photo.jpg", json={"public": False}, headers=auth)
    assert (await response.json()) == {"name": "dir/photo.jpg", "public": False, "expires_at": None}
    assert (await library(client))["files"] == []
    path = "/" + answer["url"].split("://", 1)[1].split("/", 1)[1]
    assert (await client.get(path)).status == 404

    assert (await client.patch("/api/files/missing", json={"public": True}, headers=auth)).status == 404
    assert (
        await client.patch("/api/files/dir/photo.jpg", json={"public": "yes"}, headers=auth)
    ).status == 400


async def test_replacing_a_public_file_updates_or_removes_its_entry(client, auth):
    await put(client, auth, "a.txt", b"one", public="true")
    url = (await library(client))["files"][0]["url"]
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    await put(client, auth, "a.txt", b"second version", public="true")
    files = (await library(client))["files"]
    assert [(f["url"], f["size"]) for f in files] == [(url, 14)]  # the same link, the new file
    assert await (await client.get(path)).read() == b"second version"
    # A replacement that does not say it is public is private: out of the library.
    await put(client, auth, "a.txt", b"private now")
    assert (await library(client))["files"] == []
    assert (await client.get(path)).status == 404


async def test_deleting_a_public_file_removes_it_from_the_library(client, auth):
    await put(client, auth, "gone.txt", b"x", public="1")
    assert (await client.delete("/api/files/gone.txt", headers=auth)).status == 204
    assert (await library(client))["files"] == []


async def test_a_bad_x_public_is_400(client, auth):
    response = await client.put("/api/files/x", data=b"x", headers={**auth, "X-Public": "maybe"})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_public"


async def test_a_made_up_public_id_is_404(client):
    assert (await client.get("/p/" + "1" * 29)).status == 404
    assert (await client.get("/p/nonsense")).status == 404


@pytest.mark.process
async def test_the_library_is_the_same_on_two_gateway_processes(s3_url, bucket, tmp_path):
    token = new_token()
    with (
        run_gateway(s3_url, bucket, tmp_path / "one") as first,
        run_gateway(s3_url, bucket, tmp_path / "two") as second,
    ):
        async with aiohttp.ClientSession() as session:
            response = await session.put(
                f"{first}/api/files/shared.txt",
                data=b"hello",
                headers={"X-Auth-Token": token, "X-Public": "true"},
            )
            assert response.status == 204
            async with session.get(f"{second}/api/public") as response:
                files = (await response.json())["files"]
            assert [f["name"] for f in files] == ["shared.txt"]
            assert files[0]["url"].startswith(second)
            async with session.get(files[0]["url"]) as answer:  # no token
                assert await answer.read() == b"hello"
            response = await session.patch(
                f"{second}/api/files/shared.txt", json={"public": False}, headers={"X-Auth-Token": token}
            )
            assert response.status == 200
            async with session.get(f"{first}/api/public") as response:
                assert (await response.json())["files"] == []


async def test_make_public_racing_delete_leaves_no_entry_to_serve_the_same_bytes_stored_again_private(
    aiohttp_client, settings, auth, s3_url
):
    """Issue 20, row 5: "make public" writes its marker, then its entry; a DELETE between the two
    took out the marker and an entry not yet there, and the entry then landed without a marker.
    The same bytes stored again as private (same ETag) were then served to anyone at /p/<id>.
    The entry's PutObject is held up by a proxy so that the DELETE lands between the two."""
    proxy = await FaultProxy(s3_url).start()
    try:
        proxy.add(
            Fault(
                "PutObject", "delay", seconds=1.0, times=1, match=lambda request: "/library/" in request.path
            )
        )
        through = dataclasses.replace(settings, s3_endpoint_url=proxy.url)
        gw = await aiohttp_client(await create_app(through))
        data = b"private bytes" * 100
        assert (await gw.put("/api/files/secret.txt", data=data, headers=auth)).status == 204
        publish = asyncio.create_task(gw.patch("/api/files/secret.txt", json={"public": True}, headers=auth))
        await asyncio.sleep(0.5)  # the marker is written, the entry held up
        assert (await gw.delete("/api/files/secret.txt", headers=auth)).status == 204
        published = await publish
        url = (await published.json()).get("url") if published.status == 200 else None
        assert (await gw.put("/api/files/secret.txt", data=data, headers=auth)).status == 204
        assert (await (await gw.get("/api/public")).json())["files"] == []
        if url is not None:
            assert (await gw.get(URL(url).path)).status == 404
    finally:
        await proxy.close()


@pytest.mark.slow
@pytest.mark.process
async def test_anonymous_pollers_of_the_library_leave_other_users_fast(gateway_process):
    """50 anonymous clients poll a full page of the library (100 entries) as fast as they can:
    another user's listing, HEAD, PUT and DELETE each still finish within 2 s."""
    owner = {"X-Auth-Token": new_token()}
    async with aiohttp.ClientSession(gateway_process) as session:
        gate = asyncio.Semaphore(8)

        async def publish(number: int) -> None:
            async with gate:
                url = f"/api/files/shown/{number}.txt"
                async with session.put(url, data=b"x", headers={**owner, "X-Public": "true"}) as response:
                    assert response.status == 204

        await asyncio.gather(*(publish(number) for number in range(100)))
        polling = True
        polls = 0

        async def poll() -> None:
            nonlocal polls
            while polling:
                async with session.get("/api/public", params={"limit": "100"}) as response:
                    await response.read()
                    polls += 1

        pollers = [asyncio.ensure_future(poll()) for _ in range(50)]
        try:
            await asyncio.sleep(2)
            user = {"X-Auth-Token": new_token()}
            took = {}
            for what, method, url, data in [
                ("put", "PUT", "/api/files/mine.txt", b"mine"),
                ("list", "GET", "/api/files", None),
                ("head", "HEAD", "/api/files/mine.txt", None),
                ("delete", "DELETE", "/api/files/mine.txt", None),
            ]:
                started = time.monotonic()
                async with session.request(method, url, data=data, headers=user) as response:
                    assert response.status < 300, await response.text()
                took[what] = time.monotonic() - started
        finally:
            polling = False
            await asyncio.gather(*pollers, return_exceptions=True)
    assert max(took.values()) < 2, took
    assert polls > 100  # the pollers were served meanwhile
