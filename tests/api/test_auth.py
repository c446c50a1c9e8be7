"""X-Auth-Token: who may do what, and what a refusal looks like."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ..helpers import new_token

ROUTES = [
    ("GET", "/api/files"),
    ("PUT", "/api/files/a.txt"),
    ("GET", "/api/files/a.txt"),
    ("HEAD", "/api/files/a.txt"),
    ("DELETE", "/api/files/a.txt"),
    ("GET", "/api/no-such-route"),
    ("POST", "/api/files"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_missing_token_is_refused_on_every_route(client, method, path):
    response = await client.request(method, path, data=b"x" if method == "PUT" else None)
    assert response.status == 401
    if method != "HEAD":
        body = await response.json()
        assert body["error"]["code"] == "missing_token"
    assert "WWW-Authenticate" in response.headers


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not-a-uuid",
        "18ce71ad139146c791de56948fda0d8a",  # no hyphens
        "{18ce71ad-1391-46c7-91de-56948fda0d8a}",
        "urn:uuid:18ce71ad-1391-46c7-91de-56948fda0d8a",
        "18ce71ad-1391-46c7-91de-56948fda0d8",  # one digit short
        "18ce71ad-1391-46c7-91de-56948fda0d8g",  # not hex
        "18ce71ad-1391-46c7-91de-56948fda0d8a0",
    ],
)
async def test_malformed_token_gets_401_json(client, value):
    response = await client.get("/api/files", headers={"X-Auth-Token": value})
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] in ("missing_token", "invalid_token")
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer 18ce71ad-1391-46c7-91de-56948fda0d8a"},
        {"X-Auth": "18ce71ad-1391-46c7-91de-56948fda0d8a"},
        {"X-Auth-Token-": "18ce71ad-1391-46c7-91de-56948fda0d8a"},
        {"Token": "18ce71ad-1391-46c7-91de-56948fda0d8a"},
    ],
)
async def test_token_under_another_header_name_is_not_accepted(client, headers):
    response = await client.get("/api/files", headers=headers)
    assert response.status == 401


async def test_header_name_is_case_insensitive_as_http_says(client, token):
    response = await client.get("/api/files", headers={"x-auth-token": token})
    assert response.status == 200


async def test_two_token_headers_are_refused(client):
    headers = [("X-Auth-Token", new_token()), ("X-Auth-Token", new_token())]
    response = await client.get("/api/files", headers=headers)
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"


async def test_upper_case_token_is_the_same_user(client, token):
    response = await client.put("/api/files/a.txt", data=b"hello", headers={"X-Auth-Token": token.lower()})
    assert response.status == 204
    response = await client.get("/api/files", headers={"X-Auth-Token": token.upper()})
    assert await response.json() == ["a.txt"]


async def test_token_never_reaches_a_log_line_or_the_bucket(client, token, s3, bucket, caplog):
    caplog.set_level(logging.DEBUG)
    await client.put("/api/files/a.txt", data=b"hello", headers={"X-Auth-Token": token})
    await client.get("/api/files", headers={"X-Auth-Token": token})
    await client.get("/api/files/missing", headers={"X-Auth-Token": token})
    assert token not in caplog.text
    assert token.lower() not in caplog.text
    keys = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert len(keys) == 1
    assert token not in keys[0]["Key"] and token.replace("-", "") not in keys[0]["Key"]


async def test_bad_token_with_expect_continue_is_refused_before_the_body(client):
    """A 1 GiB upload announced with Expect: 100-continue gets 401, not 100."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"PUT /api/files/big HTTP/1.1\r\n"
        b"Host: localhost\r\n"
        b"X-Auth-Token: not-a-uuid\r\n"
        b"Content-Length: 1073741824\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 401"), status_line
    rest = await asyncio.wait_for(reader.read(), 5)  # the gateway closes the connection
    assert b'"invalid_token"' in rest
    assert b"100 Continue" not in status_line + rest
    writer.close()


async def test_bad_token_without_expect_is_refused_without_reading_the_body(client):
    """No Expect header: the refusal comes at once and the connection is closed,
    so the gateway does not drain a body it will never store."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        b"PUT /api/files/big HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1073741824\r\n\r\n" + b"x" * 65536
    )
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 5)
    assert response.startswith(b"HTTP/1.1 401")
    assert b"Connection: close" in response
    writer.close()
