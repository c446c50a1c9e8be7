"""The /api/files API: list, upload, download, HEAD, Range, delete, names, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest
from aiohttp import web

from file_uploader.sizes import MiB
from file_uploader.storage.keys import MAX_NAME_BYTES

from ..helpers import new_token, raw_request


async def put(client, auth, name, data: bytes, **kwargs):
    return await client.put(f"/api/files/{name}", data=data, headers=auth, **kwargs)


async def names(client, auth) -> list[str]:
    response = await client.get("/api/files", headers=auth)
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


async def test_a_new_user_has_no_files(client, auth):
    assert await names(client, auth) == []


async def test_put_then_list_shows_the_file(client, auth):
    response = await put(client, auth, "file1", b"hello")
    assert response.status == 204
    assert await names(client, auth) == ["file1"]


async def test_list_is_sorted(client, auth):
    for name in ["b", "a", "dir/inner.txt", "C", "ä"]:
        assert (await put(client, auth, name, b"x")).status == 204
    assert await names(client, auth) == ["C", "a", "b", "dir/inner.txt", "ä"]


@pytest.mark.slow
async def test_list_is_complete_past_one_s3_page(client, auth):
    wanted = [f"f{n:04d}" for n in range(1050)]
    gate = asyncio.Semaphore(32)

    async def upload(name):
        async with gate:
            assert (await put(client, auth, name, b"")).status == 204

    await asyncio.gather(*(upload(name) for name in wanted))
    assert await names(client, auth) == wanted


async def test_put_replaces_an_existing_file(client, auth):
    await put(client, auth, "f", b"old contents")
    await put(client, auth, "f", b"new")
    response = await client.get("/api/files/f", headers=auth)
    assert await response.read() == b"new"
    assert await names(client, auth) == ["f"]


async def test_get_sends_the_file_with_its_headers(client, auth):
    data = b'{"a": 1}'
    await put(client, auth, "doc.json", data)
    response = await client.get("/api/files/doc.json", headers=auth)
    assert response.status == 200
    assert await response.read() == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert response.headers["Last-Modified"].endswith(" GMT")
    assert response.headers["Accept-Ranges"] == "bytes"


async def test_content_type_is_guessed_from_the_name(client, auth):
    for name, kind in [("a.txt", "text/plain"), ("b.png", "image/png"), ("c", "application/octet-stream")]:
        await put(client, auth, name, b"x")
        response = await client.get(f"/api/files/{name}", headers=auth)
        assert response.content_type == kind


async def test_head_gives_the_headers_of_get_without_a_body(client, auth):
    await put(client, auth, "a.txt", b"0123456789")
    get = await client.get("/api/files/a.txt", headers=auth)
    head = await client.head("/api/files/a.txt", headers=auth)
    assert head.status == 200
    for name in ("Content-Length", "ETag", "Last-Modified", "Content-Type"):
        assert head.headers[name] == get.headers[name]
    assert await head.read() == b""


async def test_head_of_a_missing_file_is_404(client, auth):
    response = await client.head("/api/files/missing", headers=auth)
    assert response.status == 404


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=2-5", 2, 5), ("bytes=7-", 7, 9), ("bytes=-3", 7, 9), ("bytes=0-0", 0, 0), ("bytes=5-100", 5, 9)],
)
async def test_range_gets_206_with_the_slice(client, auth, spec, start, end):
    data = b"0123456789"
    await put(client, auth, "r", data)
    response = await client.get("/api/files/r", headers={**auth, "Range": spec})
    assert response.status == 206
    assert await response.read() == data[start : end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/10"
    assert response.headers["Content-Length"] == str(end - start + 1)


async def test_range_past_the_end_gets_416_json(client, auth):
    await put(client, auth, "r", b"0123456789")
    response = await client.get("/api/files/r", headers={**auth, "Range": "bytes=50-60"})
    assert response.status == 416
    assert response.headers["Content-Range"] == "bytes */10"
    assert (await response.json())["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("spec", ["bytes=0-1,4-5", "items=0-1", "bytes=5-2", "bytes=-", "nonsense"])
async def test_a_range_we_do_not_serve_is_ignored(client, auth, spec):
    await put(client, auth, "r", b"0123456789")
    response = await client.get("/api/files/r", headers={**auth, "Range": spec})
    assert response.status == 200
    assert await response.read() == b"0123456789"


async def test_range_reads_across_part_boundaries_of_a_multipart_file(client, auth):
    data = os.urandom(8 * MiB + 100)
    await put(client, auth, "big", data)
    start, end = 8 * MiB - 10, 8 * MiB + 9
    response = await client.get("/api/files/big", headers={**auth, "Range": f"bytes={start}-{end}"})
    assert response.status == 206
    assert await response.read() == data[start : end + 1]


async def test_delete_removes_the_file(client, auth):
    await put(client, auth, "f", b"x")
    response = await client.delete("/api/files/f", headers=auth)
    assert response.status == 204
    assert await names(client, auth) == []
    assert (await client.get("/api/files/f", headers=auth)).status == 404


async def test_delete_of_a_missing_file_is_404_json(client, auth):
    response = await client.delete("/api/files/never-was", headers=auth)
    assert response.status == 404
    assert await response.json() == {"error": {"code": "not_found", "message": "no such file"}}


async def test_get_of_a_missing_file_is_404_json(client, auth):
    response = await client.get("/api/files/never-was", headers=auth)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_users_are_isolated(client):
    alice, bob = {"X-Auth-Token": new_token()}, {"X-Auth-Token": new_token()}
    await put(client, alice, "secret.txt", b"alice's")
    assert await names(client, bob) == []
    assert (await client.get("/api/files/secret.txt", headers=bob)).status == 404
    assert (await client.head("/api/files/secret.txt", headers=bob)).status == 404
    assert (await client.delete("/api/files/secret.txt", headers=bob)).status == 404
    await put(client, bob, "secret.txt", b"bob's")
    assert await (await client.get("/api/files/secret.txt", headers=alice)).read() == b"alice's"
    assert await (await client.get("/api/files/secret.txt", headers=bob)).read() == b"bob's"


@pytest.mark.parametrize(
    ("url_name", "name"),
    [
        ("dir/inner.txt", "dir/inner.txt"),
        ("with%20space", "with space"),
        ("%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82.txt", "привет.txt"),
        ("a+b", "a+b"),
        ("a%2Bb", "a+b"),
        ("a&b", "a&b"),
        ("it's", "it's"),
        ("100%25", "100%"),
        ("q%3Fx%23y", "q?x#y"),
        ("a%2Fb", "a/b"),
    ],
)
async def test_percent_encoded_names_round_trip(client, auth, url_name, name):
    response = await client.put(f"/api/files/{url_name}", data=name.encode(), headers=auth)
    assert response.status == 204, await response.text()
    assert await names(client, auth) == [name]
    response = await client.get(f"/api/files/{url_name}", headers=auth)
    assert await response.read() == name.encode()
    assert (await client.delete(f"/api/files/{url_name}", headers=auth)).status == 204


@pytest.mark.parametrize(
    "url_name",
    [
        "..",
        "%2E%2E",
        "a/../b",
        "a/%2e%2e/b",
        "a%2F..%2Fb",
        "..%2F..%2Fetc%2Fpasswd",
        "./a",
        "a//b",
        "a/",
        "a%00b",
        "a%0Ab",
        "a%7Fb",
        "%FF",
        "%C0%AE%C0%AE",  # overlong UTF-8 for ".."
        "x" * (MAX_NAME_BYTES + 1),
        "%D1%8F" * (MAX_NAME_BYTES // 2 + 1),
        # Characters S3's XML answers cannot carry (XML 1.0's Char production): noncharacters.
        "a%EF%BF%BFb",  # U+FFFF
        "a%EF%BF%BEb",  # U+FFFE
        "a%EF%B7%90b",  # U+FDD0
        "a%F0%9F%BF%BFb",  # U+1FFFF
        "a%C2%85b",  # U+0085, a C1 control
        "a%ED%A0%80b",  # a surrogate, in UTF-8 (invalid)
    ],
)
async def test_hostile_names_are_refused_with_400(client, auth, url_name, s3, bucket):
    status, body = await raw_request(client, "PUT", f"/api/files/{url_name}", auth, b"x")
    assert status == 400, url_name
    assert json.loads(body)["error"]["code"] == "invalid_name"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


async def test_the_longest_name_is_accepted(client, auth):
    name = "x" * MAX_NAME_BYTES
    assert (await put(client, auth, name, b"x")).status == 204
    assert await names(client, auth) == [name]


async def test_unknown_route_gets_404_json(client, auth):
    response = await client.get("/nowhere", headers=auth)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_unknown_method_gets_405_json_with_allow(client, auth):
    response = await client.post("/api/files/x", headers=auth)
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert "PUT" in response.headers["Allow"]


async def test_an_unexpected_error_is_a_bare_500_and_logged(aiohttp_client, app_for, settings, auth, caplog):
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail")

    app = await app_for(settings)
    app.router.add_get("/api/broken", broken)
    client = await aiohttp_client(app)
    response = await client.get("/api/broken", headers=auth)
    assert response.status == 500
    assert await response.json() == {"error": {"code": "internal_error", "message": "internal server error"}}
    assert "secret internal detail" in caplog.text  # the traceback is logged, not sent
