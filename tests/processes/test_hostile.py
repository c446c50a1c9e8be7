"""Hostile clients against `python -m file_uploader` itself: what only a real server process shows
(its own runner and connection handling, signals, kill -9, its open-file limit and its memory)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import requests

from file_uploader.server.connections import HEAD_SECONDS
from file_uploader.sizes import MiB

from ..faultproxy import Fault, proxy_in_a_thread
from ..helpers import metric, new_token, open_uploads, path_of, rss_bytes, run_gateway

pytestmark = pytest.mark.process

PART = 5 * MiB
TUS = {"Tus-Resumable": "1.0.0"}
FEW_SECONDS = 5.0  # "within a few seconds", generous for two busy cores


def exited(pid: int, within: float) -> bool:
    """Wait for process `pid` (a child not yet reaped) to end; whether it did in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def metrics_of(base: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{base}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# A client that stops reading ------------------------------------------------------------------


def test_a_download_its_client_abandons_is_an_info_line_not_a_5xx(gateway_process, tmp_path):
    auth = {"X-Auth-Token": new_token()}
    assert (
        requests.put(f"{gateway_process}/api/files/big", data=b"\0" * (8 * MiB), headers=auth).status_code
        == 204
    )
    with socket.create_connection(("127.0.0.1", int(gateway_process.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            f"GET /api/files/big HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n\r\n".encode()
        )
        received = b""
        while len(received) < 1000:  # `curl ... | head -c 1000`
            received += sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a reset
    log = tmp_path / "gateway.log"
    deadline = time.monotonic() + 10
    while "method=GET route=/api/files/{name}" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    text = log.read_text()
    line = next(line for line in text.splitlines() if "method=GET route=/api/files/{name}" in line)
    assert "status=499" in line and " INFO " in line, line
    assert "ERROR" not in text and "Traceback" not in text, text
    samples = metrics_of(gateway_process)
    route = "/api/files/{name}"
    assert metric(samples, "file_uploader_http_requests_total", method="GET", route=route, status="499") == 1
    assert not [key for key in samples if dict(key[1]).get("status", "").startswith("5")]


def test_aiohttps_own_answers_to_malformed_requests_name_no_versions(gateway_process):
    with socket.create_connection(("127.0.0.1", int(gateway_process.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"GARBAGE\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n", 1)[0]
    assert b"aiohttp" not in answer and b"Python" not in answer
    assert b"Server: file_uploader" in answer


# Connections that never finish their request head ---------------------------------------------------

HALF_SENT = 1100


@pytest.mark.slow
def test_a_thousand_half_sent_request_heads_are_dropped_in_seconds(s3_url, bucket, tmp_path):
    """1,100 of them, against the usual limit of 1,024 open files: the gateway keeps room for S3
    and new clients, and drops the half-sent heads after HEAD_SECONDS."""
    with run_gateway(s3_url, bucket, tmp_path, open_files=1024) as base:
        port = int(base.rsplit(":", 1)[1])
        half_sent = []
        for _ in range(HALF_SENT):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/files HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            half_sent.append(sock)
        started = time.monotonic()
        auth = {"X-Auth-Token": new_token()}
        while True:
            with contextlib.suppress(requests.RequestException):
                response = requests.get(f"{base}/api/files", headers=auth, timeout=2)
                if response.status_code == 200:
                    break
                assert response.status_code == 503 and response.json()["error"]["code"] == "busy"
            assert time.monotonic() - started < 20, "a new client was never served"
            time.sleep(0.2)
        served_after = time.monotonic() - started
        closed = 0
        for sock in half_sent:
            sock.settimeout(max(0.1, HEAD_SECONDS + 4 - (time.monotonic() - started)))
            with contextlib.suppress(OSError):
                answer = sock.recv(4096)
                if answer == b"" or answer.startswith(b"HTTP/1.1 503"):
                    closed += 1
            sock.close()
        samples = metrics_of(base)
    cut = metric(samples, "file_uploader_clients_cut_off_total", reason="header_timeout")
    refused = metric(samples, "file_uploader_clients_cut_off_total", reason="max_connections")
    print(
        f"{HALF_SENT} half-sent heads: a new client served after {served_after:.1f} s; {closed} closed "
        f"by the gateway ({cut:.0f} at HEAD_SECONDS, {refused:.0f} at once for MAX_CONNECTIONS)"
    )
    assert served_after < HEAD_SECONDS + FEW_SECONDS
    assert closed == HALF_SENT
    assert cut + refused >= HALF_SENT


def test_connections_over_max_connections_get_a_json_503_at_once(s3_url, bucket, tmp_path):
    with run_gateway(s3_url, bucket, tmp_path, MAX_CONNECTIONS="50") as base:
        port = int(base.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]
        time.sleep(1)
        refused = []
        for sock in idle:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                refused.append(sock.recv(4096))
        assert len(refused) == 10
        for answer in refused:
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in head
            assert json.loads(body)["error"]["code"] == "busy"
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 503
        for sock in idle:
            sock.close()
        deadline = time.monotonic() + 10
        while requests.get(f"{base}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


# SIGTERM and kill -9 in the middle of a tus upload ------------------------------------------------


def tus_create(base: str, auth: dict, name: str, length: int) -> str:
    encoded = base64.b64encode(name.encode()).decode()
    response = requests.post(
        f"{base}/api/uploads",
        headers={**auth, **TUS, "Upload-Length": str(length), "Upload-Metadata": f"filename {encoded}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return path_of(response.headers["Location"])


def parts_in_s3(s3, bucket: str) -> int:
    uploads = open_uploads(s3, bucket)
    if not uploads:
        return 0
    (upload,) = uploads
    return len(s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))


@pytest.mark.slow
def test_sigterm_during_a_tus_patch_keeps_the_parts_already_in_s3(s3_url, bucket, s3, tmp_path):
    auth = {"X-Auth-Token": new_token()}
    settings = {"PART_SIZE": str(PART), "GRACEFUL_TIMEOUT": "4"}
    with run_gateway(s3_url, bucket, tmp_path / "first", **settings) as first:
        location = tus_create(first, auth, "long.bin", 10 * PART)
        sock = socket.create_connection(("127.0.0.1", int(first.rsplit(":", 1)[1])))
        sock.sendall(
            f"PATCH {location} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {auth['X-Auth-Token']}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {10 * PART}\r\n\r\n".encode()
        )
        sock.sendall(os.urandom(6 * PART + PART // 2))  # six parts and half of the seventh, then a pause
        deadline = time.monotonic() + 30
        while parts_in_s3(s3, bucket) < 6:
            assert time.monotonic() < deadline, "the parts never reached S3"
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGTERM)
        assert exited(first.pid, 15)
        sock.close()
    with run_gateway(s3_url, bucket, tmp_path / "second", **settings) as second:
        head = requests.head(f"{second}{location}", headers={**auth, **TUS}, timeout=10)
    print(
        f"after SIGTERM with 6 parts in S3, HEAD says offset {int(head.headers['Upload-Offset']) // MiB} MiB"
    )
    assert head.status_code == 200
    assert int(head.headers["Upload-Offset"]) == 6 * PART


@pytest.mark.slow
def test_a_kill_9_just_after_s3_completed_a_tus_upload_is_recognised(s3_url, bucket, s3, tmp_path):
    auth = {"X-Auth-Token": new_token()}
    data = os.urandom(PART + 1234)
    with proxy_in_a_thread(s3_url) as proxy:
        # Every S3 call after CompleteMultipartUpload hangs: the process is killed in that window.
        completed = lambda request: proxy.count("CompleteMultipartUpload") > 0  # noqa: E731
        for operation in ("PUT other", "POST other", "GET other", "DELETE other"):
            proxy.add(Fault(operation, action="delay", seconds=15, match=completed))
        with run_gateway(proxy.url, bucket, tmp_path / "first", PART_SIZE=str(PART)) as first:
            location = tus_create(first, auth, "crashed.bin", len(data))

            def patch_all() -> None:
                headers = {
                    **auth,
                    **TUS,
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                }
                with contextlib.suppress(requests.RequestException):  # its gateway is killed under it
                    requests.patch(f"{first}{location}", data=data, headers=headers, timeout=30)

            threading.Thread(target=patch_all, daemon=True).start()
            deadline = time.monotonic() + 30
            while not proxy.count("CompleteMultipartUpload"):
                assert time.monotonic() < deadline, "the upload never completed"
                time.sleep(0.05)
            time.sleep(0.5)  # S3 answered; the gateway's next call hangs in the proxy
            os.kill(first.pid, signal.SIGKILL)
            assert exited(first.pid, 10)
    with run_gateway(s3_url, bucket, tmp_path / "second", PART_SIZE=str(PART)) as second:
        head = requests.head(f"{second}{location}", headers={**auth, **TUS}, timeout=10)
        offset = int(head.headers.get("Upload-Offset", -1))
        resumed = requests.patch(
            f"{second}{location}",
            data=data[offset:] if offset >= 0 else data,
            headers={
                **auth,
                **TUS,
                "Upload-Offset": str(max(offset, 0)),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=30,
        )
        stored = requests.get(f"{second}/api/files/crashed.bin", headers=auth, timeout=30)
    print(
        f"after kill -9: HEAD {head.status_code} offset {offset} of {len(data)}; resume {resumed.status_code}"
    )
    assert head.status_code == 200 and offset == len(data) == int(head.headers["Upload-Length"])
    assert resumed.status_code == 204
    assert stored.content == data
    assert open_uploads(s3, bucket) == []


# Memory under greedy uploads ----------------------------------------------------------------------


@pytest.mark.slow
async def test_memory_stays_within_the_budget_while_uploads_hold_half_sent_parts(s3_url, bucket, tmp_path):
    """32 uploads from two users send 4.5 MiB of a 5 MiB part each (144 MiB against a 64 MiB
    budget), then a byte every two seconds; meanwhile another user uploads and lists."""
    budget = 64 * MiB
    settings = {"MEMORY_BUDGET": str(budget), "PART_SIZE": str(PART)}
    with run_gateway(s3_url, bucket, tmp_path, **settings) as base:
        port = int(base.rsplit(":", 1)[1])
        victim = {"X-Auth-Token": new_token()}
        async with aiohttp.ClientSession(base) as session:
            assert (await session.put("/api/files/warm", data=b"x" * MiB, headers=victim)).status == 204
            before = rss_bytes(base.pid)
            tokens = [new_token(), new_token()]
            writers = []
            for n in range(32):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(
                    f"PUT /api/files/greedy-{n} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {tokens[n % 2]}\r\n"
                    f"Content-Length: {100 * MiB}\r\n\r\n".encode()
                    + os.urandom(PART - MiB // 2)
                )  # not drained: what the gateway does not read stays in the socket buffers
                writers.append(writer)

            async def trickle() -> None:
                while True:
                    await asyncio.sleep(2)
                    for writer in writers:
                        writer.write(b"a")

            trickling = asyncio.create_task(trickle())
            await asyncio.sleep(3)  # their bytes are in: the budget is full, the rest went to disk
            started = time.monotonic()
            put = await asyncio.wait_for(
                session.put("/api/files/mine", data=os.urandom(MiB), headers=victim), 30
            )
            put_seconds = time.monotonic() - started
            started = time.monotonic()
            listing = await asyncio.wait_for(session.get("/api/files", headers=victim), 30)
            list_seconds = time.monotonic() - started
            growth = rss_bytes(base.pid, "VmHWM") - before
            trickling.cancel()
            for writer in writers:
                writer.transport.abort()
            assert put.status == 204 and listing.status == 200
    print(
        f"32 greedy uploads: 1 MiB PUT {put_seconds:.2f} s, listing {list_seconds:.2f} s, "
        f"peak RSS growth {growth / MiB:.0f} MiB for a {budget // MiB} MiB budget"
    )
    assert put_seconds < FEW_SECONDS and list_seconds < FEW_SECONDS
    assert growth < budget + 64 * MiB
