"""`make run` on a checkout with no .env: a local in-memory S3, the README's curl commands, a clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from devtools.ports import free_port, wait_for_port
from file_uploader.storage.keys import file_key, user_id

from ..helpers import ACCESS_KEY, ROOT, SECRET_KEY, all_keys

pytestmark = pytest.mark.process

# What a fresh checkout holds that `make run` uses; .venv is shared so that no install runs.
CHECKOUT = (
    "Makefile",
    "requirements.txt",
    "requirements-dev.txt",
    "setup.cfg",
    "pyproject.toml",
    "file_uploader",
    "devtools",
    ".venv",
)


def _bare_environment(port: int) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "S3_", "PYTEST_")) and name not in ("BUCKET", "MAKEFLAGS", "MFLAGS")
    }
    return {**env, "HOST": "127.0.0.1", "PORT": str(port)}


def _curl(*args: str) -> str:
    command = ["curl", "-sS", "--fail-with-body", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def _is_listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _start_make_run(checkout: Path, port: int, **settings: str) -> subprocess.Popen:
    """`make run` in `checkout`, in its own process group (as from a terminal), logging to make-run.log."""
    with (checkout / "make-run.log").open("w") as log:
        # Its own process group stands for a terminal: Ctrl-C signals make, the gateway and moto together.
        make = subprocess.Popen(
            ["make", "run"],
            cwd=checkout,
            env={**_bare_environment(port), **settings},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, make, timeout=60)
    except BaseException:
        os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=10)
        raise
    return make


def _link_checkout(tmp_path: Path) -> None:
    # Linked file by file, so that a developer's own ROOT/.env is not part of this checkout.
    for name in CHECKOUT:
        (tmp_path / name).symlink_to(ROOT / name)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_run_without_env_serves_curl_and_stops_cleanly(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    _link_checkout(tmp_path)
    port = free_port()
    make = _start_make_run(tmp_path, port)
    try:
        output = (tmp_path / "make-run.log").read_text()
        assert "in-memory S3" in output and "GONE when `make run` stops" in output
        upload = f"--upload-file README.md http://localhost:{port}/api/files/README.md"
        assert upload in output
        moto_port = int(re.search(r"in-memory S3 server is running at\s+http://127.0.0.1:(\d+)", output)[1])
        assert _is_listening(moto_port)

        base = f"http://127.0.0.1:{port}/api/files"
        token = ["-H", f"X-Auth-Token: {uuid.uuid4()}"]
        source = tmp_path / "hello.txt"
        source.write_bytes(b"hello from make run\n")
        _curl(*token, "--upload-file", str(source), f"{base}/hello.txt")
        assert _curl(*token, base) == '["hello.txt"]'
        assert _curl(*token, f"{base}/hello.txt") == "hello from make run\n"
        _curl(*token, "-X", "DELETE", f"{base}/hello.txt")
        assert _curl(*token, base) == "[]"
    finally:
        os.killpg(make.pid, stop_signal)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            make.poll()  # reap make itself, or it stays in the group as a zombie
            if _group_is_gone(make.pid):
                break
            time.sleep(0.1)
        gone = _group_is_gone(make.pid)
        if not gone:
            os.killpg(make.pid, signal.SIGKILL)
        make.wait(timeout=10)
    assert gone, "make, the gateway or moto outlived the stop signal"
    assert not _is_listening(port)
    assert not _is_listening(moto_port)


def test_make_run_with_env_uses_that_s3_and_starts_nothing_else(tmp_path: Path, s3_url, bucket, s3) -> None:
    _link_checkout(tmp_path)
    (tmp_path / ".env").write_text(
        f"S3_ENDPOINT_URL={s3_url}\nS3_BUCKET={bucket}\n"
        f"AWS_ACCESS_KEY_ID={ACCESS_KEY}\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n"
    )
    port = free_port()
    make = _start_make_run(tmp_path, port)
    try:
        children = subprocess.run(["pgrep", "-g", str(make.pid)], capture_output=True, text=True).stdout
        assert len(children.split()) == 2  # make and the gateway: no moto
        token = str(uuid.uuid4())
        source = tmp_path / "kept.txt"
        source.write_bytes(b"into the configured S3\n")
        _curl(
            "-H",
            f"X-Auth-Token: {token}",
            "--upload-file",
            str(source),
            f"http://127.0.0.1:{port}/api/files/k",
        )
        assert all_keys(s3, bucket) == [file_key(user_id(token), "k")]
    finally:
        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=20)
    assert "in-memory" not in (tmp_path / "make-run.log").read_text()


def test_configured_s3_means_no_local_server() -> None:
    from devtools.localrun import wants_local_s3

    assert wants_local_s3({})
    assert wants_local_s3({"S3_BUCKET": "b", "S3_ENDPOINT_URL": ""})
    assert not wants_local_s3({"S3_ENDPOINT_URL": "http://127.0.0.1:9000"})
    assert not wants_local_s3({"AWS_ACCESS_KEY_ID": "AKIA..."})
    assert not wants_local_s3({"AWS_PROFILE": "prod"})


def test_make_run_reports_a_bad_setting_in_one_line_before_its_banner(tmp_path: Path) -> None:
    _link_checkout(tmp_path)
    env = {**_bare_environment(free_port()), "PORT": "70000"}
    done = subprocess.run(["make", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "file_uploader: PORT must be a TCP port from 1 to 65535, got 70000" in done.stderr
    assert "in-memory S3" not in done.stdout + done.stderr  # no banner, no moto started
    assert "Traceback" not in done.stderr


def test_make_run_keeps_s3_create_bucket_as_given(tmp_path: Path) -> None:
    """S3_CREATE_BUCKET=0 is not overwritten: the in-memory S3's bucket is made by make run itself."""
    _link_checkout(tmp_path)
    port = free_port()
    make = _start_make_run(tmp_path, port, S3_CREATE_BUCKET="0")
    try:
        ready = subprocess.run(
            ["curl", "-sS", f"http://127.0.0.1:{port}/readyz"], capture_output=True, text=True, timeout=30
        )
        assert '"status": "ready"' in ready.stdout, ready.stdout
        assert "created the bucket" not in (tmp_path / "make-run.log").read_text()
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
