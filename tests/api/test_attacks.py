"""Hostile clients: each test is one attack, and says what the gateway must do about it.

Attacks already covered elsewhere are not repeated here: the classic traversal
and control-byte names (test_files.py), a token under Authorization and other
header names, and two X-Auth-Token headers on a listing (test_auth.py).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import posixpath
import resource

import pytest
from yarl import URL

from file_uploader.storage.keys import MAX_NAME_BYTES, user_id, user_prefix

from ..helpers import all_keys, new_token, open_uploads, raw_request


async def send_raw(client, data: bytes, timeout: float = 10) -> bytes:
    """Write `data` as-is on a new connection; return everything the gateway answers."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# --- Path traversal in the encodings test_files.py does not try -------------------------

TRAVERSALS = [
    "%252e%252e%252fetc",  # double-encoded: decodes once, to the literal text %2e%2e%2fetc
    "%2e%2E/x",  # mixed-case escapes for ..
    "..%5c..%5cwindows",  # backslashes are not separators in S3 keys
    "..\\..\\x",
    "%EF%BC%8E%EF%BC%8E/x",  # fullwidth dots: look like .. but are not
    "%E2%80%A5/x",  # two-dot leader
    "a/.%2e/b",
    "%2e./b",
    "x/%2e",
    "%2f%2e%2e%2fx",  # leading slash, then ..
    "%2fetc%2fpasswd",  # an absolute path
    "a;/../b",
    "a%3B%2F..%2Fb",
    "..%00/x",
    "%C0%AF",  # overlong UTF-8 for /
    "%E0%80%AE%E0%80%AE",  # overlong 3-byte UTF-8 for ..
]


async def test_traversal_in_other_encodings_never_leaves_the_users_prefix(client, auth, s3, bucket):
    for url_name in TRAVERSALS:
        status, body = await raw_request(client, "PUT", f"/api/files/{url_name}", auth, b"attack")
        assert status in (204, 400), (url_name, body)
        if status == 400:
            assert json.loads(body)["error"]["code"] == "invalid_name", url_name
    prefix = user_prefix(user_id(auth["X-Auth-Token"]))
    for key in all_keys(s3, bucket):
        assert key.startswith(prefix)
        assert posixpath.normpath(key) == key


async def test_a_dot_dot_request_target_cannot_reach_another_route_or_user(client, auth):
    victim = {"X-Auth-Token": new_token()}
    assert (await client.put("/api/files/secret", data=b"s", headers=victim)).status == 204
    targets = ["/api/files/../files/secret", "/api/files/%2e%2e/%2e%2e/api/files/secret", "/../api/files"]
    for target in targets:
        status, body = await raw_request(client, "GET", target, auth)
        if status == 200:
            assert json.loads(body) == [], target  # at most the attacker's own (empty) listing
        else:
            assert 400 <= status < 500, target


# --- NUL, control bytes and overlong input in places other than the name ------------------


CONTROL_HEADS = [
    b"GET /api/files/a\x00b HTTP/1.1\r\n",  # raw NUL in the target
    b"GET /api/files/a\x01b HTTP/1.1\r\n",
    b"GET /api/files/a b HTTP/1.1\r\n",  # raw space: three parts turned into four
    b"GET /api/files HTTP/1.1\r\nX-Auth-Token: 18ce71ad-1391-46c7-91de-56948fda0d8a\x00\r\n",
    b"GET /api/files HTTP/1.1\r\nX-Evil: a\rb\r\n",  # bare CR in a value
    b"GET /api/files HTTP/1.1\r\nX-Auth-Token : 18ce71ad-1391-46c7-91de-56948fda0d8a\r\n",
    b"GET /api/files HTTP/1.1\r\n X-Auth-Token: 18ce71ad-1391-46c7-91de-56948fda0d8a\r\n",  # folded
]


async def test_control_bytes_and_malformed_heads_are_refused(client):
    for head in CONTROL_HEADS:
        response = await send_raw(client, head + b"Host: x\r\nConnection: close\r\n\r\n")
        assert 400 <= status_of(response) < 500, head


OVERLONG_HEADS = [
    "GET /api/files/" + "a" * 9000 + " HTTP/1.1\r\n",  # request line over 8190 bytes
    "GET /api/files HTTP/1.1\r\nX-Auth-Token: " + "1" * 9000 + "\r\n",  # one huge header
    "GET /api/files HTTP/1.1\r\nX-Big: " + "b" * 100_000 + "\r\n",
    "GET /api/files HTTP/1.1\r\n" + "".join(f"X-H{n}: {'v' * 100}\r\n" for n in range(200)),
]


async def test_overlong_request_lines_and_headers_get_4xx(client):
    for head in OVERLONG_HEADS:
        response = await send_raw(client, (head + "Host: x\r\nConnection: close\r\n\r\n").encode())
        assert response, f"no answer to {head[:40]!r}"
        assert 400 <= status_of(response) < 500, head[:40]


# --- The token anywhere but in one X-Auth-Token header --------------------------------------


ELSEWHERE = [
    ("/api/files?X-Auth-Token={token}", {}),
    ("/api/files?token={token}", {}),
    ("/api/files", {"Cookie": "X-Auth-Token={token}"}),
    ("/api/files", {"X_Auth_Token": "{token}"}),  # underscores: a different header name
    ("/api/files", {"X-Auth-Token\t": "{token}"}),
    ("/api/files", {"Proxy-Authorization": "{token}"}),
    ("/api/files", {"X-Forwarded-Auth-Token": "{token}"}),
]


async def test_a_token_anywhere_else_is_not_accepted(client):
    token = new_token()
    for target, headers in ELSEWHERE:
        headers = {name: value.format(token=token) for name, value in headers.items()}
        status, _ = await raw_request(client, "GET", target.format(token=token), headers)
        assert status in (400, 401), (target, headers)


TWO_TOKENS = [
    ["{a}", "{a}"],  # the same token twice
    ["{a}, {b}"],  # two tokens folded into one value
    ["{a},{a}"],
    ["{a}", ""],
]


async def test_more_than_one_token_is_refused(client):
    a, b = new_token(), new_token()
    for values in TWO_TOKENS:
        headers = [("X-Auth-Token", value.format(a=a, b=b)) for value in values]
        response = await client.get("/api/files", headers=headers)
        assert response.status == 401, values


async def test_a_second_token_on_an_upload_is_refused_before_the_body(client):
    a, b = new_token(), new_token()
    response = await send_raw(
        client,
        f"PUT /api/files/x HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {a}\r\nX-Auth-Token: {b}\r\n"
        f"Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n".encode(),
        timeout=5,
    )
    assert response.startswith(b"HTTP/1.1 401")
    assert b"100 Continue" not in response


# --- Content-Length that lies ------------------------------------------------------------


async def test_a_body_longer_than_its_content_length_stores_only_the_declared_bytes(client, auth):
    token = auth["X-Auth-Token"]
    smuggled = (
        f"DELETE /api/files/kept HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {new_token()}\r\n"
        "Connection: close\r\n\r\n"
    )
    assert (await client.put("/api/files/kept", data=b"keep me", headers=auth)).status == 204
    response = await send_raw(
        client,
        f"PUT /api/files/short HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\nContent-Length: 5\r\n\r\n"
        f"hello{smuggled}".encode(),
        timeout=5,
    )
    assert response.startswith(b"HTTP/1.1 204")
    assert await (await client.get("/api/files/short", headers=auth)).read() == b"hello"
    # What followed was a request of its own, by another user: it cannot touch this one's files.
    assert await (await client.get("/api/files/kept", headers=auth)).read() == b"keep me"


async def test_a_body_shorter_than_its_content_length_stores_nothing(client, auth, s3, bucket):
    token = auth["X-Auth-Token"]
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"PUT /api/files/long HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f"Content-Length: 1000\r\n\r\nonly this".encode()
    )
    await writer.drain()
    writer.write_eof()  # half-close: no more body will come
    await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await asyncio.sleep(0.2)
    assert all_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []


FRAMINGS = [
    "Content-Length: 5\r\nContent-Length: 6\r\n",
    "Content-Length: -5\r\n",
    "Content-Length: +5\r\n",
    "Content-Length: 5, 5\r\n",
    "Content-Length: 0x5\r\n",
    "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    "Transfer-Encoding: chunked, identity\r\n",
    "Transfer-Encoding: xchunked\r\n",
]


async def test_ambiguous_body_framing_is_refused(client, auth, s3, bucket):
    for framing in FRAMINGS:
        response = await send_raw(
            client,
            f"PUT /api/files/f HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n{framing}\r\n"
            "5\r\nhello\r\n0\r\n\r\n".encode(),
            timeout=5,
        )
        assert 400 <= status_of(response) < 500, framing
    assert all_keys(s3, bucket) == []


# --- Floods --------------------------------------------------------------------------------


TOO_LONG = "/api/files/" + "x" * (MAX_NAME_BYTES + 1)


def rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.slow  # 2,000 requests
async def test_a_burst_of_2000_tiny_requests_is_answered_without_errors_or_memory_growth(client, auth):
    """Mostly requests the gateway refuses without S3 (the cheap attack), some real listings."""
    gate = asyncio.Semaphore(50)
    statuses: dict[int, int] = {}

    async def one(n: int) -> None:
        async with gate:
            if n % 50 == 0:  # a real listing, to S3, now and then
                response = await client.get("/api/files", headers=auth)
            elif n % 2:
                response = await client.get("/api/files")  # no token
            else:
                response = await client.get(TOO_LONG, headers=auth)  # refused before S3
            await response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1

    await asyncio.gather(*(one(n) for n in range(500)))  # warm up: caches, pools, buffers
    gc.collect()
    before = rss_kib()
    await asyncio.gather(*(one(n) for n in range(2000)))
    gc.collect()
    grown_mib = (rss_kib() - before) / 1024
    assert statuses == {200: 50, 401: 1250, 400: 1200}
    assert grown_mib < 20, f"peak RSS grew by {grown_mib:.1f} MiB over 2000 requests"


# --- Bad numbers and unusual request targets ------------------------------------------------


BAD_EXPIRIES = [1e400, -1e400, float("nan"), 1.5, "3600s", "1e3", True, [], 10**400]


async def test_a_share_expiry_that_is_not_a_whole_number_is_400(client, auth):
    assert (await client.put("/api/files/f", data=b"x", headers=auth)).status == 204
    for value in BAD_EXPIRIES:
        text = json.dumps({"expires_in": value}) if value == value else '{"expires_in": NaN}'
        response = await client.post(
            "/api/files/f/share", data=text, headers={**auth, "Content-Type": "application/json"}
        )
        assert response.status == 400, value
        assert (await response.json())["error"]["code"] == "invalid_expiry"
    assert (await client.post("/api/files/f/share?expires_in=1e400", headers=auth)).status == 400


async def test_an_absolute_form_target_names_the_file_by_its_path(client, auth, s3, bucket):
    status, _ = await raw_request(client, "PUT", "http://host/api/files/report.txt", auth, b"report")
    assert status == 204
    assert await (await client.get("/api/files", headers=auth)).json() == ["report.txt"]
    prefix = user_prefix(user_id(auth["X-Auth-Token"]))
    assert all_keys(s3, bucket) == [prefix + "report.txt"]
    status, body = await raw_request(client, "GET", "http://host/api/files/report.txt", auth)
    assert (status, body) == (200, b"report")


# --- What the gateway tells strangers ----------------------------------------------------------


async def test_no_version_in_the_server_header(client, auth):
    for response in [
        await client.get("/healthz"),
        await client.get("/api/files"),
        await client.get("/api/files", headers=auth),
        await client.get("/nowhere"),
    ]:
        assert response.headers["Server"] == "file_uploader"


async def test_no_bucket_endpoint_or_file_name_reaches_strangers_or_info_logs(client, auth, settings, caplog):
    caplog.set_level(logging.INFO)
    secret_name = "quarterly-secret-plan.txt"
    answers = []
    assert (await client.put(f"/api/files/{secret_name}", data=b"x", headers=auth)).status == 204
    link = (await (await client.post(f"/api/files/{secret_name}/share", headers=auth)).json())["url"]
    answers.append(await (await client.get(URL(link).path)).text())
    await client.delete(f"/api/files/{secret_name}", headers=auth)
    for path in ["/readyz", "/api/files", f"/api/files/{secret_name}", URL(link).path, "/s/x.y", "/nope"]:
        answers.append(await (await client.get(path)).text())
    answers.append(await (await client.get(f"/api/files/{secret_name}", headers=auth)).text())
    endpoint = URL(settings.s3_endpoint_url)
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        # aiohttp's own access log, which the test server keeps and the gateway turns off.
        if record.levelno >= logging.INFO and record.name != "aiohttp.access"
    )
    for text in [*answers, logged]:
        assert settings.s3_bucket not in text
        assert f"{endpoint.host}:{endpoint.port}" not in text
    assert secret_name not in logged


# --- The web page, and share links -------------------------------------------------------------


async def test_the_page_forbids_framing_sniffing_and_foreign_code(client):
    for path in ["/", "/static/app.js", "/static/style.css"]:
        response = await client.get(path)
        assert response.status == 200, path
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_files_are_served_with_nosniff_and_a_sandbox(client, auth):
    assert (
        await client.put("/api/files/x.html", data=b"<script>alert(1)</script>", headers=auth)
    ).status == 204
    response = await client.get("/api/files/x.html", headers=auth)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response.headers["Content-Security-Policy"]


def respell(link: str) -> list[str]:
    """The same link in spellings a lenient base64 decoder reads as the same bytes."""
    payload, signature = link.split(".")
    return [
        f"{payload}.{signature}=",
        f"{payload}==.{signature}",
        f"{payload}.{signature[:5]}!{signature[5:]}",
        f"{payload}.{signature[:5]}*{signature[5:]}",
        f"{payload[:3]}!{payload[3:]}.{signature}",
    ]


async def test_a_stateless_link_has_one_spelling(client, auth):
    assert (await client.put("/api/files/f", data=b"x", headers=auth)).status == 204
    link = URL((await (await client.post("/api/files/f/download-link", headers=auth)).json())["url"]).path
    assert (await client.get(link)).status == 200
    for variant in respell(link.removeprefix("/s/")):
        response = await client.get(URL("/s/" + variant, encoded=True))
        assert response.status == 403, variant


async def test_a_share_link_has_one_spelling(client, auth):
    assert (await client.put("/api/files/f", data=b"x", headers=auth)).status == 204
    link = URL((await (await client.post("/api/files/f/share", headers=auth)).json())["url"]).path
    assert (await client.get(link)).status == 200
    link_id = link.removeprefix("/s/")
    for variant in [
        link_id + "=",
        link_id + "%20",
        link_id[:-1],
        link_id + "A",
        f"{link_id[:3]}!{link_id[3:]}",
    ]:
        response = await client.get(URL("/s/" + variant, encoded=True))
        assert response.status == 404, variant


# --- Ordinary parallel clients ---------------------------------------------------------------


async def test_fifty_parallel_uploads_of_one_user_all_succeed(client, auth):
    """What `xargs -P 50 curl --upload-file` does: fifty at once, none told to come back later."""
    started = asyncio.Barrier(51)

    async def body():
        yield b"first half "
        await started.wait()
        yield b"second half"

    async def upload(n: int) -> int:
        return (await client.put(f"/api/files/p{n}", data=body(), headers=auth)).status

    uploads = [asyncio.create_task(upload(n)) for n in range(50)]
    await asyncio.wait_for(started.wait(), 30)
    assert await asyncio.gather(*uploads) == [204] * 50
