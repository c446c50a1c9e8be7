"""What many tests share: tokens, what S3 holds, a gateway process, raw requests.

Fixtures live in conftest.py; plain functions live here, imported by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from devtools.ports import child_server, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots the browser tests leave for a person to look at
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"

__all__ = ["free_port", "wait_for_port"]

CHROMIUM = Path("/usr/bin/chromium")
# The switches Debian's chromium needs to run headless as root in a container,
# and to keep it from phoning home during a test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NO_CHROMIUM = "no browser at /usr/bin/chromium: `apt-get install chromium` (.ci/run does it in CI)"


def new_token() -> str:
    return str(uuid.uuid4())


def open_uploads(s3, bucket: str) -> list[dict]:
    """The multipart uploads S3 holds open in `bucket`."""
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def all_keys(s3, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def chunked(data: bytes, piece: int = 250_000) -> AsyncIterator[bytes]:
    """`data` as a request body of unknown length (sent chunked)."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


def reset_moto(url: str) -> None:
    """Forget everything moto's server at `url` holds (buckets, objects, uploads), in one request."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request) as answer:
        answer.read()


def start_moto(port: int) -> subprocess.Popen:
    """moto's S3 server on `port`, for a test that stops and starts S3 itself."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.moto_s3", "-H", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, process)
    return process


class Gateway(str):
    """A gateway process's base URL, which also knows the process's id."""

    pid: int


@contextlib.contextmanager
def run_gateway(
    s3_url: str, bucket: str, workdir: Path, *, open_files: int | None = None, **settings: str
) -> Iterator[Gateway]:
    """`python -m file_uploader` as its own process, logging to workdir/gateway.log; yields its URL.

    `open_files` caps the process's open-file limit, soft and hard (the usual
    default is a soft limit of 1,024).
    """
    port = free_port()
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": s3_url,
        "S3_BUCKET": bucket,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        # Run from an empty folder (no .env of the checkout's) on this checkout's code.
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "file_uploader"]

    def limit_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with (
        (workdir / "gateway.log").open("w") as log,
        child_server(
            command, port, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_files
        ) as process,
    ):
        url = Gateway(f"http://127.0.0.1:{port}")
        url.pid = process.pid
        yield url


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory now (VmRSS), or its peak so far (VmHWM), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def reset_peak(pid: int) -> int:
    """Restart a process's VmHWM from its VmRSS; its resident memory now."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_bytes(pid)


async def raw_request(
    client, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """Send a request line exactly as written (no client-side path cleaning); return status and body."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


async def metric_samples(client) -> dict[tuple[str, tuple], float]:
    """Every sample /metrics reports, by name and labels."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric(samples: dict, name: str, **labels: str) -> float:
    """One sample of `metric_samples`; 0 when it was never reported."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def csp_violations(page) -> list[str]:
    """Collects, from now on, what the Content-Security-Policy blocked, and script errors."""
    seen: list[str] = []
    page.on(
        "console",
        lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.on("pageerror", lambda error: seen.append(str(error)))
    return seen


def path_of(location: str) -> str:
    """The path of an absolute Location (tus), for a test client that takes paths."""
    return urllib.parse.urlsplit(location).path


def run_admin(
    s3_url: str, bucket: str, cwd: Path, *args: str, **settings: str
) -> subprocess.CompletedProcess:
    """`python -m file_uploader <args>` (gc, purge, probe) on this checkout's code, run to its end."""
    env = {**os.environ, **settings, "S3_ENDPOINT_URL": s3_url, "S3_BUCKET": bucket, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "file_uploader", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
