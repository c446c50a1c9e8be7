"""Share links: expiring, token-free URLs to a file; and the older stateless links, signed for one
version of one file, still served until their expiry (links with passwords, limits and revocation:
test_links.py)."""

from __future__ import annotations

import dataclasses
import datetime
import io
import time
import urllib.parse

import pytest
from PIL import Image
from yarl import URL

from file_uploader.api.share import sign
from file_uploader.app import create_app
from file_uploader.storage.keys import THUMBNAILS_ROOT, file_key, user_id

from ..helpers import all_keys, free_port, new_token, start_moto

SECRET = "test-share-secret"


@pytest.fixture
async def client(aiohttp_client, app_for, settings):
    """The gateway with a known SHARE_SECRET, so tests can sign links of their own."""
    return await aiohttp_client(await app_for(dataclasses.replace(settings, share_secret=SECRET)))


def picture(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "teal").save(out, format="PNG")
    return out.getvalue()


async def put(client, auth, name, data: bytes):
    response = await client.put(URL(f"/api/files/{name}", encoded=True), data=data, headers=auth)
    assert response.status == 204


async def share(client, auth, name, **kwargs):
    return await client.post(URL(f"/api/files/{name}/share", encoded=True), headers=auth, **kwargs)


async def link_path(client, auth, name, **kwargs) -> str:
    response = await share(client, auth, name, **kwargs)
    assert response.status == 200, await response.text()
    return URL((await response.json())["url"]).path_qs


async def old_link_path(client, auth, token, name, seconds: int = 60) -> str:
    """A stateless link to the file's current version, as the gateway made them before links were
    records (and as such links already handed out still are)."""
    etag = (await client.head(URL(f"/api/files/{name}", encoded=True), headers=auth)).headers["ETag"]
    key = file_key(user_id(token), urllib.parse.unquote(name))
    return f"/s/{sign(SECRET.encode(), key, etag, int(time.time()) + seconds)}"


async def test_a_share_link_serves_the_file_without_a_token(client, auth, token):
    await put(client, auth, "report.pdf", b"%PDF contents")
    response = await share(client, auth, "report.pdf")
    body = await response.json()
    assert response.status == 200
    url = URL(body["url"])
    assert url.path.startswith("/s/") and url.host == "127.0.0.1"
    assert token not in body["url"] and token.upper() not in body["url"]
    fetched = await client.get(url.path)
    assert fetched.status == 200
    assert await fetched.read() == b"%PDF contents"
    assert fetched.headers["Content-Type"] == "application/pdf"
    assert fetched.headers["Content-Disposition"].startswith('attachment; filename="report.pdf"')


async def test_a_share_link_expires_in_an_hour_by_default(client, auth):
    await put(client, auth, "f", b"x")
    body = await (await share(client, auth, "f")).json()
    assert body["expires_in"] == 3600
    expires = datetime.datetime.fromisoformat(body["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 3600)) < 5


async def test_expires_in_is_taken_from_json_or_the_query(client, auth):
    await put(client, auth, "f", b"x")
    assert (await (await share(client, auth, "f", json={"expires_in": 60})).json())["expires_in"] == 60
    assert (await (await share(client, auth, "f", params={"expires_in": "120"})).json())["expires_in"] == 120


@pytest.mark.parametrize("value", [0, -5, 7 * 24 * 3600 + 1, "soon", True, None])
async def test_expires_in_outside_one_second_to_the_maximum_is_refused(client, auth, value):
    await put(client, auth, "f", b"x")
    response = await share(client, auth, "f", json={"expires_in": value} if value is not None else None)
    if value is None:
        assert response.status == 200
        return
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_expiry"


async def test_a_share_link_honours_range(client, auth):
    await put(client, auth, "digits", b"0123456789")
    path = await link_path(client, auth, "digits")
    response = await client.get(path, headers={"Range": "bytes=2-4"})
    assert response.status == 206
    assert await response.read() == b"234"
    assert response.headers["Content-Range"] == "bytes 2-4/10"


async def test_a_unicode_name_gets_an_rfc_6266_filename(client, auth):
    await put(client, auth, "dir/r%C3%A9sum%C3%A9%20final.txt", b"cv")
    path = await link_path(client, auth, "dir/r%C3%A9sum%C3%A9%20final.txt")
    disposition = (await client.get(path)).headers["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"r_sum_ final.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20final.txt"
    )


async def test_an_old_stateless_link_is_still_served_until_its_expiry(client, auth, token):
    await put(client, auth, "f", b"old link")
    response = await client.get(await old_link_path(client, auth, token, "f"))
    assert response.status == 200
    assert await response.read() == b"old link"


async def test_a_tampered_old_link_is_refused_with_403(client, auth, token):
    await put(client, auth, "f", b"secret")
    await put(client, auth, "g", b"other")
    path = await old_link_path(client, auth, token, "f")
    payload, signature = path.removeprefix("/s/").split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    for bad in [f"{flipped}.{signature}", f"{payload}.{signature[:-1]}", "x.y", "%FF.x"]:
        response = await client.get(URL(f"/s/{bad}", encoded=True))
        assert response.status == 403, bad
        assert (await response.json())["error"]["code"] == "invalid_link"
    # Without a '.', it would be a link record's id: there is no such link.
    for unknown in [payload, "%FF"]:
        assert (await client.get(URL(f"/s/{unknown}", encoded=True))).status == 404


async def test_a_link_signed_with_another_secret_is_refused(client, auth, token):
    await put(client, auth, "f", b"x")
    etag = (await client.head("/api/files/f", headers=auth)).headers["ETag"]
    link = sign(b"another-secret", file_key(user_id(token), "f"), etag, int(time.time()) + 60)
    assert (await client.get(f"/s/{link}")).status == 403


async def test_an_expired_link_is_gone(client, auth, token):
    await put(client, auth, "f", b"x")
    etag = (await client.head("/api/files/f", headers=auth)).headers["ETag"]
    key = file_key(user_id(token), "f")
    assert (await client.get(f"/s/{sign(SECRET.encode(), key, etag, int(time.time()) + 60)}")).status == 200
    response = await client.get(f"/s/{sign(SECRET.encode(), key, etag, int(time.time()) - 1)}")
    assert response.status == 410
    assert (await response.json())["error"]["code"] == "link_expired"


async def test_an_old_link_stops_working_when_the_file_is_replaced(client, auth, token):
    await put(client, auth, "f", b"first version")
    path = await old_link_path(client, auth, token, "f")
    await put(client, auth, "f", b"second version")
    response = await client.get(path)
    assert response.status == 410
    assert (await response.json())["error"]["code"] == "file_changed"


async def test_a_link_serves_the_file_that_is_at_its_name_now(client, auth):
    await put(client, auth, "f", b"first version")
    path = await link_path(client, auth, "f")
    await put(client, auth, "f", b"second version")
    response = await client.get(path)
    assert response.status == 200
    assert await response.read() == b"second version"


async def test_a_link_stops_working_when_the_file_is_deleted(client, auth):
    await put(client, auth, "f", b"x")
    path = await link_path(client, auth, "f")
    assert (await client.delete("/api/files/f", headers=auth)).status == 204
    response = await client.get(path)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_sharing_needs_the_token_and_an_existing_file(client, auth):
    assert (await client.post("/api/files/f/share")).status == 401
    response = await share(client, auth, "missing")
    assert response.status == 404


async def test_names_ending_in_share_are_still_plain_files(client, auth):
    await put(client, auth, "a/share", b"named share")
    assert (await client.get("/api/files/a/share", headers=auth)).status == 200
    assert await (await client.get("/api/files/a/share", headers=auth)).read() == b"named share"
    path = await link_path(client, auth, "a/share")
    assert await (await client.get(path)).read() == b"named share"
    response = await client.post("/api/files/a", headers=auth)
    assert response.status == 405


async def test_the_detailed_list_gives_size_and_date(client, auth):
    await put(client, auth, "b", b"12345")
    await put(client, auth, "a", b"")
    response = await client.get("/api/files?details=1", headers=auth)
    items = await response.json()
    assert [(item["name"], item["size"]) for item in items] == [("a", 0), ("b", 5)]
    assert all(item["modified"].endswith("Z") for item in items)
    assert await (await client.get("/api/files", headers=auth)).json() == ["a", "b"]


async def test_a_share_link_is_the_first_request_after_s3_comes_back(aiohttp_client, settings, monkeypatch):
    """/s/ links check (and create) the bucket like every other route that needs S3."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    port = free_port()
    late = dataclasses.replace(settings, s3_endpoint_url=f"http://127.0.0.1:{port}", share_secret=SECRET)
    client = await aiohttp_client(await create_app(late))  # S3 is down: the gateway starts anyway
    moto = start_moto(port)
    try:
        link = sign(SECRET.encode(), file_key(user_id(new_token()), "gone"), '"etag"', int(time.time()) + 60)
        response = await client.get(f"/s/{link}")
        assert response.status == 404, await response.text()
        assert (await response.json())["error"]["code"] == "not_found"
    finally:
        moto.terminate()
        moto.wait(timeout=10)


@pytest.mark.parametrize("replacement", ["not an image", "an image"])
async def test_a_thumbnail_by_an_old_link_is_gone_and_nothing_of_the_new_file_is_rendered(
    client, auth, token, s3, bucket, replacement
):
    await put(client, auth, "pic.png", picture((40, 20)))
    path = await old_link_path(client, auth, token, "pic.png")
    await put(client, auth, "pic.png", b"plain text" if replacement == "not an image" else picture((20, 40)))
    response = await client.get(path, params={"thumbnail": "64"})
    assert response.status == 410
    assert (await response.json())["error"]["code"] == "file_changed"
    assert not [key for key in all_keys(s3, bucket) if key.startswith(THUMBNAILS_ROOT)]


async def test_a_download_link_is_stateless_and_never_listed(client, auth, s3, bucket):
    await put(client, auth, "f", b"for the page")
    response = await client.post("/api/files/f/download-link", headers=auth)
    body = await response.json()
    assert response.status == 200 and body["expires_in"] == 60
    assert "." in URL(body["url"]).path
    assert await (await client.get(URL(body["url"]).path)).read() == b"for the page"
    assert await (await client.get("/api/links", headers=auth)).json() == []
    assert not [key for key in all_keys(s3, bucket) if key.startswith(("links/", "linked/"))]
