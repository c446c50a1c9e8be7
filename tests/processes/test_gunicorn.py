"""The gateway as operators run it: under gunicorn, and stopped with SIGTERM mid-upload."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.ports import free_port, wait_for_port
from file_uploader.sizes import MiB
from file_uploader.storage.keys import file_key, user_id

from ..helpers import ROOT, all_keys, open_uploads

pytestmark = pytest.mark.process

PART = 5 * MiB  # the smallest part S3 takes: a 6 MiB upload is a multipart one


def _gateway_env(s3_url: str, bucket: str, port: int, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "S3_ENDPOINT_URL": s3_url,
        "S3_BUCKET": bucket,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PART_SIZE": str(PART),
        **extra,
    }


def _start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    log = (cwd / "gateway.log").open("w")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    wait_for_port(int(env["PORT"]), process, timeout=30)
    return process


GUNICORN = [str(Path(sys.executable).parent / "gunicorn"), "file_uploader.app:create_app", "-c"]
GUNICORN.append(str(ROOT / "gunicorn.conf.py"))
PYTHON_M = [sys.executable, "-m", "file_uploader"]


@pytest.fixture
def stop() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _put(port: int, token: str, name: str, body: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        head = (
            f"PUT /api/files/{name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        return int(sock.makefile("rb").readline().split()[1])


def _get(port: int, path: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return sock.makefile("rb").read().decode()


def test_gunicorn_with_two_workers_serves_uploads(s3_url, bucket, s3, tmp_path, stop) -> None:
    port = free_port()
    env = _gateway_env(s3_url, bucket, port, WORKERS="2", GRACEFUL_TIMEOUT="5", LOG_FORMAT="json")
    master = _start(GUNICORN, env, tmp_path)
    stop.append(master)
    token = str(uuid.uuid4())
    for number in range(6):  # a new connection each: the kernel spreads them over the workers
        assert _put(port, token, f"f{number}", b"%d" % number * 1000) == 204
    assert _put(port, token, "big", b"b" * (6 * MiB)) == 204
    uid = user_id(token)
    assert sorted(all_keys(s3, bucket)) == sorted(
        file_key(uid, n) for n in ["big", *(f"f{i}" for i in range(6))]
    )
    workers = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    for _ in range(4):  # whichever worker answers, it reports both workers' counts
        assert '\nfile_uploader_uploads_completed_total{kind="put"} 7.0\n' in _get(port, "/metrics")
    master.send_signal(signal.SIGTERM)
    assert master.wait(timeout=20) == 0
    assert open_uploads(s3, bucket) == []
    requests = [
        json.loads(line)
        for line in (tmp_path / "gateway.log").read_text().splitlines()
        if '"file_uploader.access"' in line
    ]
    uploads = [r for r in requests if r["method"] == "PUT"]
    assert [r["status"] for r in uploads] == ["204"] * 7
    assert {r["route"] for r in uploads} == {"/api/files/{name}"}
    assert {r["user"] for r in uploads} == {uid}
    assert {(r["route"], r["user"]) for r in requests if r["method"] == "GET"} == {("/metrics", "-")}


def _start_slow_upload(port: int, token: str, name: str, total: int, first: int) -> socket.socket:
    """Send the head and the first `first` bytes of a `total`-byte upload; the caller sends the rest."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"PUT /api/files/{name} HTTP/1.1\r\nHost: x\r\nX-Auth-Token: {token}\r\n"
        f"Content-Length: {total}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + b"a" * first)
    return sock


def _wait_for_open_upload(s3, bucket: str) -> None:
    deadline = time.monotonic() + 20
    while not open_uploads(s3, bucket):
        assert time.monotonic() < deadline, "the multipart upload never started"
        time.sleep(0.05)


@pytest.mark.parametrize("command", [PYTHON_M, GUNICORN], ids=["python-m", "gunicorn"])
def test_sigterm_lets_an_upload_in_flight_finish(command, s3_url, bucket, s3, tmp_path, stop) -> None:
    port = free_port()
    process = _start(
        command, _gateway_env(s3_url, bucket, port, WORKERS="1", GRACEFUL_TIMEOUT="20"), tmp_path
    )
    stop.append(process)
    token = str(uuid.uuid4())
    total = 7 * MiB
    sock = _start_slow_upload(port, token, "kept", total, 6 * MiB)
    _wait_for_open_upload(s3, bucket)

    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with pytest.raises(OSError):  # no new connections while it drains
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sock.sendall(b"a" * (total - 6 * MiB))
    status = int(sock.makefile("rb").readline().split()[1])
    sock.close()
    assert status == 204
    assert process.wait(timeout=30) == 0
    assert all_keys(s3, bucket) == [file_key(user_id(token), "kept")]
    assert s3.head_object(Bucket=bucket, Key=file_key(user_id(token), "kept"))["ContentLength"] == total
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("command", [PYTHON_M, GUNICORN], ids=["python-m", "gunicorn"])
def test_sigterm_aborts_an_upload_that_cannot_finish_in_time(
    command, s3_url, bucket, s3, tmp_path, stop
) -> None:
    port = free_port()
    process = _start(command, _gateway_env(s3_url, bucket, port, WORKERS="1", GRACEFUL_TIMEOUT="1"), tmp_path)
    stop.append(process)
    sock = _start_slow_upload(port, str(uuid.uuid4()), "lost", 20 * MiB, 6 * MiB)
    _wait_for_open_upload(s3, bucket)

    process.send_signal(signal.SIGTERM)  # and the client sends nothing more
    process.wait(timeout=30)
    sock.close()
    assert all_keys(s3, bucket) == []
    assert open_uploads(s3, bucket) == []
