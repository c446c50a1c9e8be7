"""Files that expire: gone from every read at their time on every replica, their bytes deleted by gc."""

from __future__ import annotations

import asyncio
import base64
import datetime
import time

import aiohttp
import pytest
from yarl import URL

from file_uploader.storage import open_storage
from file_uploader.storage.keys import EXPIRY_ROOT, FILES_ROOT
from file_uploader.storage.sweep import collect_garbage

from ..helpers import all_keys


@pytest.fixture
async def second(aiohttp_client, app_for, settings):
    """A second gateway on the same bucket: another replica."""
    return await aiohttp_client(await app_for(settings))


async def put(client, auth, name: str, data: bytes, **headers: str) -> None:
    response = await client.put(f"/api/files/{name}", data=data, headers={**auth, **headers})
    assert response.status == 204, await response.text()


async def visible(replica, auth, name: str, link: str, public_url: str) -> dict[str, bool]:
    """Where the file can be seen from `replica`."""
    flat = await (await replica.get("/api/files", headers=auth)).json()
    page = await (await replica.get("/api/files", params={"prefix": ""}, headers=auth)).json()
    library = await (await replica.get("/api/public")).json()
    return {
        "listing": name in flat,
        "page": name in [item["name"] for item in page["files"]],
        "get": (await replica.get(f"/api/files/{name}", headers=auth)).status == 200,
        "head": (await replica.head(f"/api/files/{name}", headers=auth)).status == 200,
        "link": (await replica.get(link)).status == 200,
        "library": any(item["url"].endswith(public_url) for item in library["files"]),
        "public": (await replica.get(public_url)).status == 200,
    }


@pytest.mark.slow  # waits out the 3 s expiry
async def test_a_file_with_a_3_second_expiry_is_gone_everywhere_on_two_replicas_and_gc_deletes_it(
    client, second, auth, settings, s3, bucket
):
    await put(client, auth, "soon.txt", b"short-lived", **{"X-Expires-In": "3", "X-Public": "1"})
    stored = time.time()
    await put(client, auth, "kept.txt", b"stays")
    link = URL((await (await client.post("/api/files/soon.txt/share", headers=auth)).json())["url"]).path
    public = (await (await client.patch("/api/files/soon.txt", json={"public": True}, headers=auth)).json())[
        "url"
    ]
    public_path = URL(public).path
    everywhere = dict.fromkeys(["listing", "page", "get", "head", "link", "library", "public"], True)
    for replica in (client, second):
        assert await visible(replica, auth, "soon.txt", link, public_path) == everywhere
    await asyncio.sleep(max(0.0, stored + 3 + 1 - time.time()))  # within a second of its time
    nowhere = dict.fromkeys(everywhere, False)
    for replica in (client, second):
        assert await visible(replica, auth, "soon.txt", link, public_path) == nowhere
        assert (await replica.get("/api/files/kept.txt", headers=auth)).status == 200
    # The bytes are still there, and counted, until gc deletes them.
    assert any(key.endswith("/soon.txt") for key in all_keys(s3, bucket) if key.startswith(FILES_ROOT))
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, older_than=datetime.timedelta(days=1))
    assert collected.expired_files == 1
    keys = all_keys(s3, bucket)
    assert not [key for key in keys if key.endswith("soon.txt") or key.startswith(EXPIRY_ROOT)]
    assert any(key.endswith("/kept.txt") for key in keys)


async def test_an_expiry_can_be_set_later_and_taken_away(client, auth):
    await put(client, auth, "f", b"x")
    answer = await (await client.patch("/api/files/f", json={"expires_in": 1}, headers=auth)).json()
    assert answer["expires_at"] and answer["public"] is False
    kept = await (await client.patch("/api/files/f", json={"expires_in": None}, headers=auth)).json()
    assert kept["expires_at"] is None
    await asyncio.sleep(1.2)
    assert (await client.get("/api/files/f", headers=auth)).status == 200
    await client.patch("/api/files/f", json={"expires_in": 1}, headers=auth)
    await asyncio.sleep(1.2)
    assert (await client.get("/api/files/f", headers=auth)).status == 404


async def test_a_replacement_without_an_expiry_keeps(client, auth):
    await put(client, auth, "f", b"first", **{"X-Expires-In": "1"})
    await put(client, auth, "f", b"second")
    await asyncio.sleep(1.2)
    response = await client.get("/api/files/f", headers=auth)
    assert response.status == 200 and await response.read() == b"second"


async def test_a_form_field_gives_the_files_after_it_an_expiry(client, auth):
    form = aiohttp.FormData()
    form.add_field("expires_in", "1")
    form.add_field("file", b"form bytes", filename="form.txt")
    response = await client.post("/api/files", data=form, headers=auth)
    assert response.status in (200, 201), await response.text()
    assert (await client.get("/api/files/form.txt", headers=auth)).status == 200
    await asyncio.sleep(1.2)
    assert (await client.get("/api/files/form.txt", headers=auth)).status == 404


async def test_tus_metadata_expires_in_gives_the_file_an_expiry(client, auth):
    metadata = (
        f"filename {base64.b64encode(b'tus.txt').decode()},expires_in {base64.b64encode(b'1').decode()}"
    )
    tus = {"Tus-Resumable": "1.0.0"}
    created = await client.post(
        "/api/uploads", headers={**auth, **tus, "Upload-Length": "5", "Upload-Metadata": metadata}
    )
    assert created.status == 201, await created.text()
    patched = await client.patch(
        URL(created.headers["Location"]).path,
        data=b"hello",
        headers={**auth, **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status == 204, await patched.text()
    assert (await client.get("/api/files/tus.txt", headers=auth)).status == 200
    await asyncio.sleep(1.2)
    assert (await client.get("/api/files/tus.txt", headers=auth)).status == 404


@pytest.mark.parametrize("value", ["0", "-1", "soon", "1.5", str(10 * 365 * 24 * 3600 + 1)])
async def test_a_bad_expiry_is_refused_and_nothing_is_stored(client, auth, s3, bucket, value):
    response = await client.put("/api/files/f", data=b"x", headers={**auth, "X-Expires-In": value})
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_expiry"
    assert all_keys(s3, bucket) == []


@pytest.mark.parametrize("body", [{"expires_in": 0}, {"expires_in": "60"}, {"expires_in": True}, {}])
async def test_a_bad_patch_is_refused(client, auth, body):
    await put(client, auth, "f", b"x")
    response = await client.patch("/api/files/f", json=body, headers=auth)
    assert response.status == 400
