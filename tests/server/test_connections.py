"""The server's own connection handling, against `python -m file_uploader`: what a client may put
in a request head, and what aiohttp's own answers to malformed requests write to the log."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import pytest
import requests

from file_uploader.server.connections import MAX_HEAD_BYTES
from file_uploader.sizes import KiB, MiB

from ..helpers import new_token, rss_bytes, run_gateway

pytestmark = pytest.mark.process


def exchange(base: str, raw: bytes) -> bytes:
    """Send `raw` on a new connection; the gateway's answer, up to its closing the connection."""
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=5) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_malformed_requests_log_no_token_no_file_name_and_no_traceback(s3_url, bucket, tmp_path):
    """A token read from a file with Windows line endings, a request line with a space or a control
    character in the name: a 400 each, and at LOG_LEVEL=DEBUG not one log line with the token, the
    name, an ERROR or a traceback."""
    token = new_token()
    name = "secret-plans"
    attacks = [
        f"GET /api/files HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\r\n\r\n".encode(),
        f"GET /api/files/{name} v2.txt HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n\r\n".encode(),
        f"PUT /api/files/{name}\x01.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx".encode(),
        f"{name} /api/files HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ]
    with run_gateway(s3_url, bucket, tmp_path, LOG_LEVEL="DEBUG") as base:
        # aiohttp logs a bad first request of a connection apart from a bad later one.
        for first in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"):
            for raw in attacks:
                answer = exchange(base, first + raw)
                assert b" 400 Bad Request\r\n" in answer, answer
        assert requests.get(f"{base}/healthz", timeout=5).status_code in (200, 503)
    log = (tmp_path / "gateway.log").read_text()
    assert token not in log and token.upper() not in log
    assert name not in log
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "malformed request" in log  # said once per request, at INFO, without its content


def test_a_request_head_over_the_limit_is_refused_with_a_json_431(gateway_process):
    """aiohttp alone takes 128 header lines of 8 KiB each (1 MiB); the gateway stops at MAX_HEAD_BYTES."""
    filler = "".join(f"X-Filler-{n}: {'a' * 8000}\r\n" for n in range(MAX_HEAD_BYTES // 8000 + 2))
    answer = exchange(gateway_process, f"GET /api/files HTTP/1.1\r\nHost: x\r\n{filler}\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code": "headers_too_large"' in body


def test_a_large_but_fair_request_head_is_served(gateway_process):
    """What browsers and proxies send at most: a few KiB of cookies, 40 headers, a long name."""
    headers = {"X-Auth-Token": new_token(), "Cookie": "; ".join(f"c{n}={'v' * 200}" for n in range(30))}
    headers.update({f"X-Forwarded-Extra-{n}": "x" * 100 for n in range(36)})
    name = "n" * 900
    put = requests.put(f"{gateway_process}/api/files/{name}", data=b"x", headers=headers, timeout=10)
    assert put.status_code == 204, put.text


HEAVY = 200  # connections


@pytest.mark.slow
async def test_connections_with_a_megabyte_of_headers_cost_little_memory(gateway_process):
    """200 connections each send 1 MiB of request head (128 lines of 8 KiB, what aiohttp alone
    accepts), then trickle a body: the gateway's memory grows by little, and comes back."""
    port = int(gateway_process.rsplit(":", 1)[1])
    filler = "".join(f"X-Filler-{n}: {'a' * 8100}\r\n" for n in range(120)).encode()  # with 3 more: under 128
    head = b"PUT /api/files/heavy HTTP/1.1\r\nHost: x\r\nX-Auth-Token: " + new_token().encode()
    head += b"\r\nContent-Length: 10485760\r\n" + filler + b"\r\n"
    before = rss_bytes(gateway_process.pid)
    writers = []
    for _ in range(HEAVY):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        writers.append(writer)
    for _ in range(3):  # trickle the body
        await asyncio.sleep(1)
        for writer in writers:
            if not writer.transport.is_closing():
                writer.write(b"b")
    peak = rss_bytes(gateway_process.pid, "VmHWM") - before
    for writer in writers:
        writer.transport.abort()
    await asyncio.sleep(1)
    after = rss_bytes(gateway_process.pid) - before
    print(
        f"{HEAVY} connections with 1 MiB heads: peak RSS +{peak / MiB:.0f} MiB, after +{after / MiB:.0f} MiB"
    )
    assert peak < HEAVY * 256 * KiB
    assert after < 64 * MiB
    async with aiohttp.ClientSession() as session, session.get(f"{gateway_process}/healthz") as health:
        assert health.status in (200, 503)
