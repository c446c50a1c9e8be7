"""Share links as records: passwords, download limits exact across replicas, listing, revocation."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from yarl import URL

from file_uploader.storage import open_storage, sweep
from file_uploader.storage.keys import LINK_INDEX_ROOT, LINKS_ROOT, user_id
from file_uploader.storage.links import FREE_TRIES

from ..helpers import all_keys, new_token


async def put(client, auth, name: str, data: bytes) -> None:
    response = await client.put(URL(f"/api/files/{name}", encoded=True), data=data, headers=auth)
    assert response.status == 204, await response.text()


async def make_link(client, auth, name: str, **options) -> dict:
    response = await client.post(URL(f"/api/files/{name}/share", encoded=True), headers=auth, json=options)
    assert response.status == 200, await response.text()
    return await response.json()


def path_of(link: dict) -> str:
    return URL(link["url"]).path


def basic(password: str, user: str = "") -> dict[str, str]:
    """HTTP Basic credentials, as `curl -u user:password` sends them."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
async def second(aiohttp_client, app_for, settings):
    """A second gateway on the same bucket: another replica."""
    return await aiohttp_client(await app_for(settings))


async def test_a_link_answers_with_its_id_url_and_limits(client, auth):
    await put(client, auth, "f.txt", b"x")
    link = await make_link(client, auth, "f.txt", expires_in=60, max_downloads=3, password="pw")
    assert link["url"].endswith(f"/s/{link['id']}")
    assert (link["name"], link["downloads"], link["max_downloads"]) == ("f.txt", 0, 3)
    assert link["password"] is True and link["expires_in"] == 60 and link["expires_at"].endswith("Z")


async def test_no_password_and_a_wrong_one_are_refused_alike(client, auth):
    await put(client, auth, "secret.txt", b"0123456789")
    path = path_of(await make_link(client, auth, "secret.txt", password="right horse"))
    missing = await client.get(path)
    wrong = await client.get(path, headers=basic("wrong horse"))
    assert missing.status == wrong.status == 401
    assert await missing.json() == await wrong.json()
    assert (await wrong.json())["error"]["code"] == "password_required"
    assert missing.headers["WWW-Authenticate"].startswith("Basic ")


async def test_the_right_password_downloads_with_any_user_name_and_range(client, auth):
    await put(client, auth, "secret.txt", b"0123456789")
    path = path_of(await make_link(client, auth, "secret.txt", password="right horse"))
    whole = await client.get(path, headers=basic("right horse", "anyone"))
    assert whole.status == 200 and await whole.read() == b"0123456789"
    part = await client.get(path, headers={**basic("right horse"), "Range": "bytes=2-4"})
    assert part.status == 206 and await part.read() == b"234"


async def test_curl_dash_u_colon_password_downloads(client, auth, tmp_path):
    await put(client, auth, "c.bin", b"by curl")
    link = await make_link(client, auth, "c.bin", password="p@ss:word")
    out = tmp_path / "c.bin"
    curl = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-f", "-u", ":p@ss:word", "-o", str(out), link["url"], stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(curl.communicate(), 30)
    assert curl.returncode == 0, stderr
    assert out.read_bytes() == b"by curl"


async def test_the_password_is_kept_only_as_a_slow_hash(client, auth, s3, bucket):
    await put(client, auth, "f", b"x")
    link = await make_link(client, auth, "f", password="hunter2-hunter2")
    record = s3.get_object(Bucket=bucket, Key=LINKS_ROOT + link["id"])["Body"].read().decode()
    assert "hunter2" not in record
    assert json.loads(record)["password"].startswith("scrypt$")


async def test_wrong_passwords_past_the_free_tries_block_the_link_on_every_replica(client, second, auth):
    await put(client, auth, "f", b"x")
    path = path_of(await make_link(client, auth, "f", password="right"))
    for attempt in range(FREE_TRIES):
        assert (
            await (client if attempt % 2 else second).get(path, headers=basic(f"guess{attempt}"))
        ).status == 401
    # The failures were counted in the record: the other replica blocks too, even the right password.
    blocked = await second.get(path, headers=basic("right"))
    assert blocked.status == 429
    assert (await blocked.json())["error"]["code"] == "link_blocked"
    assert int(blocked.headers["Retry-After"]) >= 1
    await asyncio.sleep(1.1)
    assert (await client.get(path, headers=basic("right"))).status == 200


async def test_a_link_limited_to_3_downloads_serves_exactly_3_of_20_concurrent_over_two_replicas(
    client, second, auth
):
    await put(client, auth, "limited.bin", b"L" * 50_000)
    link = await make_link(client, auth, "limited.bin", max_downloads=3)
    path = path_of(link)

    async def download(index: int) -> int:
        response = await (client if index % 2 else second).get(path)
        if response.status == 200:
            assert await response.read() == b"L" * 50_000
        else:
            assert (await response.json())["error"]["code"] == "link_used_up"
        return response.status

    statuses = await asyncio.gather(*(download(index) for index in range(20)))
    assert sorted(statuses) == [200] * 3 + [410] * 17
    listed = await (await client.get("/api/links", headers=auth)).json()
    assert [(item["id"], item["downloads"], item["used_up"]) for item in listed] == [(link["id"], 3, True)]


async def test_the_list_shows_each_link_with_its_use_count(client, auth):
    await put(client, auth, "a", b"a")
    await put(client, auth, "b", b"b")
    first = await make_link(client, auth, "a")
    second = await make_link(client, auth, "b", max_downloads=5, expires_in=120)
    await client.get(path_of(first))
    await client.get(path_of(first))
    listed = await (await client.get("/api/links", headers=auth)).json()
    assert [(item["id"], item["name"], item["downloads"], item["max_downloads"]) for item in listed] == [
        (first["id"], "a", 2, None),
        (second["id"], "b", 0, 5),
    ]
    assert all(item["url"] and item["expires_at"] for item in listed)
    other = {"X-Auth-Token": new_token()}
    assert await (await client.get("/api/links", headers=other)).json() == []


async def test_a_revoked_link_is_refused_at_once_on_every_replica(client, second, auth, s3, bucket):
    await put(client, auth, "f", b"x")
    link = await make_link(client, auth, "f")
    assert (await second.get(path_of(link))).status == 200
    assert (await client.delete(f"/api/links/{link['id']}", headers=auth)).status == 204
    for replica in (client, second):
        response = await replica.get(path_of(link))
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
    assert await (await client.get("/api/links", headers=auth)).json() == []
    assert not [key for key in all_keys(s3, bucket) if key.startswith((LINKS_ROOT, LINK_INDEX_ROOT))]


async def test_only_the_owner_revokes_a_link(client, auth):
    await put(client, auth, "f", b"x")
    link = await make_link(client, auth, "f")
    response = await client.delete(f"/api/links/{link['id']}", headers={"X-Auth-Token": new_token()})
    assert response.status == 404
    assert (await client.get(path_of(link))).status == 200
    assert (await client.delete("/api/links/nonsense", headers=auth)).status == 404


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"max_downloads": 0}, "invalid_max_downloads"),
        ({"max_downloads": 2.5}, "invalid_max_downloads"),
        ({"max_downloads": True}, "invalid_max_downloads"),
        ({"password": ""}, "invalid_password"),
        ({"password": 1234}, "invalid_password"),
        ({"password": "x" * 1025}, "invalid_password"),
        ({"expires_in": 0}, "invalid_expiry"),
    ],
)
async def test_bad_link_options_are_refused_and_make_no_link(client, auth, s3, bucket, options, code):
    await put(client, auth, "f", b"x")
    response = await client.post("/api/files/f/share", headers=auth, json=options)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code
    assert not [key for key in all_keys(s3, bucket) if key.startswith((LINKS_ROOT, LINK_INDEX_ROOT))]


async def test_an_expired_link_is_gone(client, auth):
    await put(client, auth, "f", b"x")
    link = await make_link(client, auth, "f", expires_in=1)
    assert (await client.get(path_of(link))).status == 200
    await asyncio.sleep(1.1)
    response = await client.get(path_of(link))
    assert response.status == 410
    assert (await response.json())["error"]["code"] == "link_expired"
    assert (await (await client.get("/api/links", headers=auth)).json())[0]["expired"] is True


async def test_purging_a_user_removes_their_link_records(client, auth, token, settings, s3, bucket):
    await put(client, auth, "f", b"x")
    await make_link(client, auth, "f")
    async with open_storage(settings) as storage:
        await sweep.purge_user(storage, user_id(token), really=True)
    assert not [key for key in all_keys(s3, bucket) if key.startswith((LINKS_ROOT, LINK_INDEX_ROOT))]
