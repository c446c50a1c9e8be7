"""POST /api/files with multipart/form-data: aiohttp's FormData, curl -F, raw bodies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess

import aiohttp
import pytest

from file_uploader.sizes import MiB
from file_uploader.storage.keys import file_key, user_id

from ..helpers import all_keys, new_token, open_uploads, rss_bytes, run_gateway


def form(*files: tuple[str, str, bytes], **fields: str) -> aiohttp.FormData:
    # quote_fields=False: file names as browsers and curl send them (aiohttp would percent-encode /).
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    for name, value in fields.items():
        data.add_field(name, value)
    for field, filename, content in files:
        data.add_field(field, content, filename=filename, content_type="application/octet-stream")
    return data


async def stored(client, auth, name: str) -> bytes | None:
    response = await client.get(f"/api/files/{name}", headers=auth)
    return await response.read() if response.status == 200 else None


async def test_a_form_with_several_files_stores_each_under_its_filename(client, auth):
    response = await client.post(
        "/api/files", data=form(("a", "one.txt", b"first"), ("b", "dir/two.bin", b"second")), headers=auth
    )
    assert response.status == 200, await response.text()
    answer = await response.json()
    assert [(f["field"], f["name"], f["status"], f["size"]) for f in answer["files"]] == [
        ("a", "one.txt", 201, 5),
        ("b", "dir/two.bin", 201, 6),
    ]
    assert await stored(client, auth, "one.txt") == b"first"
    assert await stored(client, auth, "dir/two.bin") == b"second"


async def test_a_name_field_names_the_next_file_only(client, auth):
    data = aiohttp.FormData(quote_fields=False)
    data.add_field("name", "renamed/report.pdf")
    data.add_field("file", b"1", filename="original.pdf")
    data.add_field("file", b"2", filename="second.pdf")
    response = await client.post("/api/files", data=data, headers=auth)
    assert response.status == 200
    assert [f["name"] for f in (await response.json())["files"]] == ["renamed/report.pdf", "second.pdf"]
    assert await stored(client, auth, "renamed/report.pdf") == b"1"
    assert await stored(client, auth, "original.pdf") is None


async def test_a_token_field_before_the_files_authenticates(client, s3, bucket):
    token = new_token()
    response = await client.post("/api/files", data=form(("f", "x.txt", b"x"), token=token))
    assert response.status == 200, await response.text()
    assert all_keys(s3, bucket) == [file_key(user_id(token), "x.txt")]


async def test_a_file_before_the_token_field_is_refused_and_nothing_is_stored(client, s3, bucket):
    data = aiohttp.FormData()
    data.add_field("f", b"x", filename="x.txt")
    data.add_field("token", new_token())
    response = await client.post("/api/files", data=data)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "missing_token"
    assert all_keys(s3, bucket) == []


async def test_a_bad_token_field_is_401(client):
    response = await client.post("/api/files", data=form(("f", "x", b"x"), token="not-a-uuid"))
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"


async def test_one_failing_file_is_reported_and_the_others_are_stored(client, auth):
    data = aiohttp.FormData(quote_fields=False)
    data.add_field("a", b"good", filename="good.txt")
    data.add_field("b", b"bad name", filename="a/../b")
    response = await client.post("/api/files", data=data, headers=auth)
    assert response.status == 207
    files = (await response.json())["files"]
    assert [(f["name"], f["status"]) for f in files] == [("good.txt", 201), ("a/../b", 400)]
    assert files[1]["error"]["code"] == "invalid_name"
    assert await stored(client, auth, "good.txt") == b"good"


def raw_form(boundary: str, parts: list[tuple[dict[str, str], bytes]]) -> bytes:
    body = b""
    for headers, content in parts:
        body += f"--{boundary}\r\n".encode()
        body += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n" + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def test_a_part_whose_content_md5_does_not_match_stores_nothing_of_it(client, auth, s3, bucket):
    boundary = "xyzzy"
    good, bad = b"kept bytes", b"corrupted bytes"
    body = raw_form(
        boundary,
        [
            ({"Content-Disposition": 'form-data; name="a"; filename="kept.txt"'}, good),
            (
                {
                    "Content-Disposition": 'form-data; name="b"; filename="lost.txt"',
                    "Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode(),
                },
                bad,
            ),
            (
                {
                    "Content-Disposition": 'form-data; name="c"; filename="checked.txt"',
                    "Content-MD5": base64.b64encode(hashlib.md5(good).digest()).decode(),
                },
                good,
            ),
        ],
    )
    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = await client.post("/api/files", data=body, headers=headers)
    assert response.status == 207
    files = (await response.json())["files"]
    assert [(f["name"], f["status"]) for f in files] == [
        ("kept.txt", 201),
        ("lost.txt", 400),
        ("checked.txt", 201),
    ]
    assert files[1]["error"]["code"] == "digest_mismatch"
    uid = user_id(auth["X-Auth-Token"])
    assert sorted(all_keys(s3, bucket)) == [file_key(uid, "checked.txt"), file_key(uid, "kept.txt")]


@pytest.mark.parametrize("size", [12, 9 * MiB], ids=["small", "multipart"])
async def test_a_form_ending_without_its_closing_boundary_stores_nothing_of_its_last_file(
    client, auth, s3, bucket, size
):
    boundary = "xyzzy"
    complete = raw_form(
        boundary, [({"Content-Disposition": 'form-data; name="a"; filename="kept.txt"'}, b"kept")]
    )
    cut = raw_form(
        boundary, [({"Content-Disposition": 'form-data; name="b"; filename="cut.bin"'}, os.urandom(size))]
    )
    body = complete.removesuffix(f"--{boundary}--\r\n".encode()) + cut.removesuffix(
        f"--{boundary}--\r\n".encode()
    )
    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    response = await client.post("/api/files", data=body, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_form"
    assert all_keys(s3, bucket) == [file_key(user_id(auth["X-Auth-Token"]), "kept.txt")]
    assert open_uploads(s3, bucket) == []


async def test_when_every_file_fails_the_status_is_the_first_failure_with_the_error_shape(client, auth):
    response = await client.post("/api/files", data=form(("a", "bad//name", b"x")), headers=auth)
    assert response.status == 400
    answer = await response.json()
    assert answer["error"]["code"] == "invalid_name"
    assert answer["files"][0]["status"] == 400


async def test_a_form_without_files_or_not_a_form_is_refused(client, auth):
    response = await client.post("/api/files", data=form(public="true"), headers=auth)
    assert response.status == 400 and (await response.json())["error"]["code"] == "no_files"
    response = await client.post("/api/files", data=b"raw", headers={**auth, "Content-Type": "text/plain"})
    assert response.status == 415


async def test_a_file_over_max_file_size_is_413_leaves_nothing_and_the_next_file_is_stored(
    aiohttp_client, app_for, settings, s3, bucket
):
    import dataclasses

    client = await aiohttp_client(await app_for(dataclasses.replace(settings, max_file_size=10 * MiB)))
    auth = {"X-Auth-Token": new_token()}
    big = os.urandom(12 * MiB)  # past the limit, and more than a part: a multipart upload is aborted
    response = await client.post(
        "/api/files", data=form(("a", "big.bin", big), ("b", "small.txt", b"small")), headers=auth
    )
    assert response.status == 207
    files = (await response.json())["files"]
    assert [(f["name"], f["status"]) for f in files] == [("big.bin", 413), ("small.txt", 201)]
    assert all_keys(s3, bucket) == [file_key(user_id(auth["X-Auth-Token"]), "small.txt")]
    assert open_uploads(s3, bucket) == []


@pytest.mark.slow
async def test_a_large_form_file_is_streamed_as_a_multipart_upload(client, auth, s3, bucket):
    data = os.urandom(20 * MiB + 3)
    response = await client.post("/api/files", data=form(("f", "large.bin", data)), headers=auth)
    assert response.status == 200, await response.text()
    key = file_key(user_id(auth["X-Auth-Token"]), "large.bin")
    assert s3.head_object(Bucket=bucket, Key=key, PartNumber=1)["PartsCount"] == 3  # 8 MiB parts
    assert await stored(client, auth, "large.bin") == data


async def test_a_browser_gets_a_page_not_json(client, auth):
    headers = {**auth, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = await client.post("/api/files", data=form(("f", "<b>x</b>.txt", b"x")), headers=headers)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert "Stored 1 of 1 files" in page and "&lt;b&gt;x&lt;/b&gt;.txt" in page and "<b>" not in page
    assert "<script" not in page and "style=" not in page


async def expect_then(client, headers: dict[str, str]) -> bytes:
    """Send only the head of a large form with Expect: 100-continue; the gateway's first answer."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = "POST /api/files HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\nExpect: 100-continue\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(head.encode() + b"\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 10)
    writer.close()
    return answer


async def test_expect_100_continue_refusals_come_before_the_body(client, auth):
    multipart = {"Content-Type": "multipart/form-data; boundary=b"}
    assert (await expect_then(client, {**multipart, "X-Auth-Token": "nope"})).startswith(b"HTTP/1.1 401")
    assert (await expect_then(client, {**auth, "Content-Type": "text/plain"})).startswith(b"HTTP/1.1 415")
    assert (await expect_then(client, {**auth, **multipart})).startswith(b"HTTP/1.1 100 Continue")
    # Without the header, the token is in the body: nothing to check before it.
    assert (await expect_then(client, multipart)).startswith(b"HTTP/1.1 100 Continue")


def test_curl_f_uploads_several_files(gateway_process, tmp_path):
    token = new_token()
    (tmp_path / "a.txt").write_bytes(b"alpha\n")
    (tmp_path / "b.bin").write_bytes(os.urandom(3 * MiB))
    result = subprocess.run(
        [
            "curl", "-sS", "-f", "-H", f"X-Auth-Token: {token}",
            "-F", f"a=@{tmp_path / 'a.txt'}", "-F", "public=true", "-F", f"b=@{tmp_path / 'b.bin'}",
            f"{gateway_process}/api/files",
        ],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)["files"]
    assert [(f["name"], f["status"], f["public"]) for f in files] == [
        ("a.txt", 201, False),
        ("b.bin", 201, True),
    ]
    for name in ("a.txt", "b.bin"):
        got = subprocess.run(
            ["curl", "-sS", "-f", "-H", f"X-Auth-Token: {token}", f"{gateway_process}/api/files/{name}"],
            capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        assert got.stdout == (tmp_path / name).read_bytes()


@pytest.mark.slow
@pytest.mark.process
async def test_a_1_gib_form_upload_keeps_memory_bounded(s3_url, bucket, tmp_path):
    size, block = 1024 * MiB, os.urandom(MiB)

    async def body():
        for _ in range(size // MiB):
            yield block

    with run_gateway(s3_url, bucket, tmp_path, MEMORY_BUDGET=str(64 * MiB)) as base:
        token = new_token()
        async with aiohttp.ClientSession(base, timeout=aiohttp.ClientTimeout(total=600)) as session:
            assert (await session.get("/api/files", headers={"X-Auth-Token": token})).status == 200
            before = rss_bytes(base.pid)
            data = aiohttp.FormData()
            data.add_field("token", token)
            data.add_field("file", body(), filename="huge.bin", content_type="application/octet-stream")
            async with session.post("/api/files", data=data) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["files"][0]["size"] == size
            growth = rss_bytes(base.pid, "VmHWM") - before
    print(f"peak RSS growth {growth / MiB:.0f} MiB")
    assert growth < 64 * MiB + 100 * MiB, f"the gateway grew by {growth / MiB:.0f} MiB"
