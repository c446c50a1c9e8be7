"""`make soak`: a bounded mixed workload against a real gateway process and moto.

Each simulated user works alone on its own token, so it always knows exactly
which files it should have: uploads of assorted sizes (declared length and
chunked), listings, downloads, deletes, and uploads it abandons midway. At
the end it checks every stored file byte for byte, that S3 holds no open
multipart upload, that no request got an answer it did not provoke, and that
the gateway's memory is back near where it was after warm-up. It prints its
figures and exits non-zero on any failure.

Environment: SOAK_SECONDS (default 180), SOAK_USERS (default 8).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.ports import free_port, wait_for_port  # noqa: E402

MiB = 1024 * 1024
PART_SIZE = 5 * MiB
SIZES = [0, 1, 1000, 100_000, MiB, PART_SIZE - 1, PART_SIZE + 1, 2 * PART_SIZE + 7, 3 * PART_SIZE]
RSS_SLACK_MIB = 64  # allocator noise; a leak per request would pass this within minutes
KEYS = ("testing", "testing")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Figures:
    def __init__(self) -> None:
        self.ops: collections.Counter[str] = collections.Counter()
        self.bytes_up = 0
        self.bytes_down = 0
        self.unexpected: list[str] = []

    def bad(self, what: str) -> None:
        self.unexpected.append(what)
        if len(self.unexpected) <= 20:
            print("UNEXPECTED:", what, flush=True)


async def chunks(data: bytes, piece: int):
    for start in range(0, len(data), piece):
        yield data[start : start + piece]
        await asyncio.sleep(0)


class User:
    def __init__(
        self, base: str, session: aiohttp.ClientSession, figures: Figures, rng: random.Random
    ) -> None:
        self.base = base
        self.session = session
        self.figures = figures
        self.rng = rng
        self.headers = {"X-Auth-Token": str(uuid.uuid4())}
        self.files: dict[str, str] = {}  # name -> sha256 of what it should hold
        self.counter = 0

    def url(self, name: str) -> str:
        return f"{self.base}/api/files/{name}"

    async def upload(self) -> None:
        self.counter += 1
        name = f"dir/f{self.rng.randrange(12)}.bin"  # reuses names: replacements too
        data = self.rng.randbytes(self.rng.choice(SIZES))
        chunked = self.rng.random() < 0.4
        body = chunks(data, self.rng.choice([4096, 65_536, MiB])) if chunked else data
        async with self.session.put(self.url(name), data=body, headers=self.headers) as response:
            if response.status != 204:
                self.figures.bad(f"PUT {name} ({len(data)} bytes): {response.status} {await response.text()}")
                return
        self.files[name] = hashlib.sha256(data).hexdigest()
        self.figures.ops["upload chunked" if chunked else "upload"] += 1
        self.figures.bytes_up += len(data)

    async def abandon(self) -> None:
        """Start an upload of a fresh name, send part of it, hang up."""
        self.counter += 1
        host, port = self.base.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        declared = 4 * PART_SIZE
        writer.write(
            f"PUT /api/files/abandoned-{self.counter} HTTP/1.1\r\nHost: x\r\n"
            f"X-Auth-Token: {self.headers['X-Auth-Token']}\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        sent = self.rng.choice([1000, PART_SIZE + 1000, 2 * PART_SIZE + 5])
        writer.write(self.rng.randbytes(sent))
        await writer.drain()
        await asyncio.sleep(self.rng.random() * 0.3)
        writer.transport.abort()
        self.figures.ops["abandoned upload"] += 1

    async def listing(self) -> None:
        async with self.session.get(f"{self.base}/api/files", headers=self.headers) as response:
            names = await response.json() if response.status == 200 else None
        if names != sorted(self.files):
            self.figures.bad(f"list: {response.status} {names} != {sorted(self.files)}")
        self.figures.ops["list"] += 1

    async def download(self, name: str | None = None) -> None:
        if not self.files:
            return
        name = name or self.rng.choice(sorted(self.files))
        digest = hashlib.sha256()
        async with self.session.get(self.url(name), headers=self.headers) as response:
            if response.status != 200:
                self.figures.bad(f"GET {name}: {response.status}")
                return
            async for piece in response.content.iter_chunked(256 * 1024):
                digest.update(piece)
                self.figures.bytes_down += len(piece)
        if digest.hexdigest() != self.files[name]:
            self.figures.bad(f"GET {name}: the bytes differ from what was stored")
        self.figures.ops["download"] += 1

    async def delete(self) -> None:
        if not self.files:
            return
        name = self.rng.choice(sorted(self.files))
        async with self.session.delete(self.url(name), headers=self.headers) as response:
            if response.status != 204:
                self.figures.bad(f"DELETE {name}: {response.status}")
                return
        del self.files[name]
        self.figures.ops["delete"] += 1

    async def run(self, deadline: float) -> None:
        actions = [self.upload] * 4 + [self.listing] * 3 + [self.download] * 4 + [self.delete, self.abandon]
        while time.monotonic() < deadline:
            try:
                await self.rng.choice(actions)()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.figures.bad(f"client error: {exc!r}")

    async def verify(self) -> None:
        await self.listing()
        for name in sorted(self.files):
            await self.download(name)


async def workload(base: str, users: int, seconds: float, figures: Figures, pid: int) -> tuple[float, float]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        crowd = [User(base, session, figures, random.Random(n)) for n in range(users)]
        warm_up = min(15.0, seconds / 4)
        await asyncio.gather(*(user.run(time.monotonic() + warm_up) for user in crowd))
        start_rss = rss_mib(pid)
        print(f"warm-up done after {warm_up:.0f} s; gateway RSS {start_rss:.1f} MiB", flush=True)
        await asyncio.gather(*(user.run(time.monotonic() + seconds - warm_up) for user in crowd))
        await asyncio.sleep(2)  # let the aborts of the last abandoned uploads land
        await asyncio.gather(*(user.verify() for user in crowd))
        stored = sum(len(user.files) for user in crowd)
        print(f"verified {stored} stored files byte for byte", flush=True)
    await asyncio.sleep(2)
    return start_rss, rss_mib(pid)


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "180"))
    users = int(os.environ.get("SOAK_USERS", "8"))
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    moto_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": KEYS[0],
        "AWS_SECRET_ACCESS_KEY": KEYS[1],
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=(workdir / "moto.log").open("w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    gateway = None
    try:
        wait_for_port(moto_port, moto)
        s3_url = f"http://127.0.0.1:{moto_port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name="us-east-1",
            aws_access_key_id=KEYS[0],
            aws_secret_access_key=KEYS[1],
        )
        bucket = "soak"
        gateway_env = {
            **env,
            "S3_ENDPOINT_URL": s3_url,
            "S3_BUCKET": bucket,
            "HOST": "127.0.0.1",
            "PORT": str(gateway_port),
            "PART_SIZE": "5MiB",
            "CLIENT_TIMEOUT": "10",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        gateway_log = workdir / "gateway.log"
        gateway = subprocess.Popen(
            [sys.executable, "-m", "file_uploader"],
            cwd=workdir,
            env=gateway_env,
            stdout=gateway_log.open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_for_port(gateway_port, gateway)
        print(f"soak: {users} users for {seconds:.0f} s against gateway pid {gateway.pid}", flush=True)
        figures = Figures()
        began = time.monotonic()
        start_rss, end_rss = asyncio.run(
            workload(f"http://127.0.0.1:{gateway_port}", users, seconds, figures, gateway.pid)
        )
        elapsed = time.monotonic() - began
        left_open = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        errors_logged = [line for line in gateway_log.read_text().splitlines() if " ERROR " in line]
    finally:
        for process in (gateway, moto):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)

    total = sum(figures.ops.values())
    print(f"\n{'operation':<20}{'count':>8}")
    for name, count in sorted(figures.ops.items()):
        print(f"{name:<20}{count:>8}")
    print(f"{'total':<20}{total:>8}   ({total / elapsed:.1f} ops/s over {elapsed:.0f} s)")
    print(f"uploaded {figures.bytes_up / MiB:.1f} MiB, downloaded {figures.bytes_down / MiB:.1f} MiB")
    print(f"gateway RSS after warm-up {start_rss:.1f} MiB, at the end {end_rss:.1f} MiB")
    print(f"open multipart uploads left: {len(left_open)}")
    print(f"unexpected answers: {len(figures.unexpected)}; gateway log ERROR lines: {len(errors_logged)}")
    print(f"logs in {workdir}")
    failed = bool(figures.unexpected or left_open or errors_logged) or end_rss > start_rss + RSS_SLACK_MIB
    print("SOAK FAILED" if failed else "SOAK PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
