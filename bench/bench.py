"""`make bench`: the gateway against a client that talks to S3 itself.

Every line pairs a gateway figure with a baseline measured in the same run and
their ratio; each figure is the median of BENCH_RUNS runs. S3 is either moto's
server or bench/fast_s3.py (which discards bytes, so that only the gateway's
own overhead is measured). The table is printed and written as JSON to
bench/results/. Settings (environment):

    BENCH_RUNS=3                         runs per figure (median)
    BENCH_UPLOAD_SIZES=256MiB,2GiB       single-stream upload sizes
    BENCH_UPLOAD_TARGETS=fast,moto,rgw   S3 servers for the upload lines (rgw: where Ceph is installed)
    BENCH_MEMORY_SIZES=256MiB,1GiB,4GiB  upload sizes for peak memory growth
    BENCH_CONCURRENCY=50,200             concurrent uploads...
    BENCH_CONCURRENT_SIZE=32MiB          ...of this size each
    BENCH_DOWNLOAD_SIZE=1GiB             download size
    BENCH_LIST_FILES=10000               files in the listing line
    BENCH_CPU_SIZE=1GiB                  upload size for the CPU-per-GiB lines...
    BENCH_CHECKSUMS=crc32,crc32c,md5,sha256,off  ...one line per S3_CHECKSUM
    BENCH_FORM_SIZE=1GiB                 file size of the form upload lines
    BENCH_ZIP_SIZES=256MiB,2GiB          folder sizes for the zip download's peak memory growth
    BENCH_PEER_SIZE=512MiB               file size of the tus-node-server peer lines...
    BENCH_PEER_TARGETS=fast,moto,rgw     ...on these S3 servers (npm installs the peer in a scratch dir)
    BENCH_IDLE_CONNECTIONS=10000         idle keep-alive connections in the scale lines
    BENCH_WAITING_UPLOADS=1000           uploads waiting for memory in the waiting line
    BENCH_WORKERS=1,2,4                  gunicorn worker counts for the worker lines...
    BENCH_WORKER_UPLOADS=8               ...each under this many concurrent 64 MiB uploads
    BENCH_SECTIONS=cpu,upload,memory,concurrency,download,list,form,zip,peer,scale,waiting,workers
    BENCH_GATEWAY_DIR=<checkout>         run the gateway from another checkout (say, a
                                         git worktree of an older commit) to compare versions
    BENCH_DEBUG_LOGS=1                   the servers' own logs on stderr (else discarded)

The gateway runs as `python -m file_uploader` with its own defaults (PART_SIZE,
MEMORY_BUDGET, ... from the environment if set); the direct client uses the
same part size, parts in flight (sizes.PARTS_IN_FLIGHT) and S3 client config, and
sends no checksum. The gateway applies the integrity mode its startup probe
chose (docs/s3-engines.md): on RGW that is Content-MD5, whose MD5 it pays for.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.ports import child_server, free_port  # noqa: E402
from devtools.rgw import running_rgw, unavailable_reason  # noqa: E402
from file_uploader.ops.loop import new_event_loop  # noqa: E402
from file_uploader.settings import Settings  # noqa: E402
from file_uploader.sizes import PARTS_IN_FLIGHT, GiB, MiB, parse_size  # noqa: E402
from file_uploader.storage.connection import open_client, send_bodies_as_is  # noqa: E402
from file_uploader.storage.keys import user_id, user_prefix  # noqa: E402

GATEWAY_DIR = Path(os.environ.get("BENCH_GATEWAY_DIR", ROOT)).resolve()
ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
BLOCK = os.urandom(MiB)  # generated bodies repeat one random MiB


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_sizes(name: str, default: str) -> list[int]:
    return [parse_size(item) for item in env_list(name, default)]


def human(size: int) -> str:
    for unit, factor in (("GiB", 1024 * MiB), ("MiB", MiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


@contextlib.contextmanager
def server(
    args: list[str], port: int, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    with child_server(
        args,
        port,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_DEBUG_LOGS") else subprocess.DEVNULL,
        cwd=cwd,
    ) as process:
        yield process


_SERVERS: dict[int, int] = {}  # port -> pid of the S3 servers running now
_KEYS: dict[str, tuple[str, str]] = {}  # S3 URL -> its access key and secret, where not the bench's own
# RGW's OSD keeps objects in RAM: room for a 2 GiB upload through the gateway
# and one direct, and deleted objects reclaimed within seconds, not hours.
RGW_CONFIG = {
    "memstore_device_bytes": str(8 * GiB),
    "rgw_gc_obj_min_wait": "5",
    "rgw_gc_processor_period": "5",
}


def keys(s3_url: str) -> tuple[str, str]:
    return _KEYS.get(s3_url, (ACCESS_KEY, SECRET_KEY))


@contextlib.contextmanager
def s3_server(kind: str) -> Iterator[str]:
    if kind == "rgw":
        with tempfile.TemporaryDirectory(prefix="bench-rgw-") as workdir:
            with running_rgw(Path(workdir) / "rgw", config=RGW_CONFIG) as rgw:
                _KEYS[rgw.http_url] = (rgw.access_key, rgw.secret_key)
                yield rgw.http_url
        return
    port = free_port()
    if kind == "moto":
        args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    else:
        args = [sys.executable, str(ROOT / "bench" / "fast_s3.py"), "--port", str(port)]
    with server(args, port) as process:
        _SERVERS[port] = process.pid
        yield f"http://127.0.0.1:{port}"


def gateway_settings(s3_url: str, bucket: str) -> Settings:
    env = {
        key: value
        for key, value in os.environ.items()
        if key in ("PART_SIZE", "S3_MAX_CONNECTIONS", "MEMORY_BUDGET")
    }
    access_key, secret_key = keys(s3_url)
    return Settings.from_env(
        {
            **env,
            "S3_BUCKET": bucket,
            "S3_ENDPOINT_URL": s3_url,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
        }
    )


@contextlib.contextmanager
def gateway(
    s3_url: str, bucket: str, extra: dict[str, str] | None = None, command: list[str] | None = None
) -> Iterator[tuple[str, int]]:
    """`python -m file_uploader` against `s3_url`; yields its URL and pid."""
    port = free_port()
    access_key, secret_key = keys(s3_url)
    env = {
        "S3_ENDPOINT_URL": s3_url,
        "S3_BUCKET": bucket,
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
        "AWS_REGION": "us-east-1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    env.update(extra or {})
    command = command or os.environ.get("BENCH_GATEWAY", "-m file_uploader").split()
    with server([sys.executable, *command], port, env, cwd=GATEWAY_DIR) as process:
        yield f"http://127.0.0.1:{port}", process.pid


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux: clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def make_file(directory: Path, size: int) -> Path:
    path = directory / f"body-{size}"
    if not path.exists():
        with path.open("wb") as file:
            for _ in range(size // MiB):
                file.write(BLOCK)
            file.write(BLOCK[: size % MiB])
    return path


async def generated(size: int, chunk: int = 256 * 1024) -> AsyncIterator[bytes]:
    view = memoryview(BLOCK)
    sent = 0
    while sent < size:
        for start in range(0, MiB, chunk):
            piece = view[start : start + min(chunk, size - sent)]
            if not piece:
                return
            yield piece
            sent += len(piece)
            if sent >= size:
                return


@contextlib.asynccontextmanager
async def s3_client(settings: Settings) -> AsyncIterator[Any]:
    async with open_client(settings) as client:
        # The direct client gets the gateway's tuning too (same config, bodies
        # sent without botocore's copies), so the ratio is the cost of the hop.
        send_bodies_as_is(client)
        yield client


async def direct_upload(
    client: Any, bucket: str, key: str, path: Path, settings: Settings, *, content_md5: bool = False
) -> None:
    """What a client does without the gateway: multipart, same parts and parts in flight; with
    `content_md5`, each part's MD5 sent as Content-MD5 (hashed in a worker thread, as the gateway
    does), which is what the gateway sends to RGW."""
    created = await client.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = created["UploadId"]
    slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
    tasks = []

    async def send(number: int, data: bytes) -> dict[str, Any]:
        try:
            extra = {}
            if content_md5:
                digest = await asyncio.to_thread(lambda: hashlib.md5(data).digest())
                extra["ContentMD5"] = base64.b64encode(digest).decode()
            response = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **extra
            )
        finally:
            slots.release()
        return {"PartNumber": number, "ETag": response["ETag"]}

    with path.open("rb") as file:
        number = 1
        while True:
            await slots.acquire()
            data = file.read(settings.part_size)
            if not data:
                slots.release()
                break
            tasks.append(asyncio.create_task(send(number, data)))
            number += 1
    parts = await asyncio.gather(*tasks)
    await client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )


async def curl(*args: str) -> tuple[int, float]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    elapsed = time.perf_counter() - started
    return int(out or 0), elapsed


async def timed(action: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await action
    return time.perf_counter() - started


def median(values: list[float]) -> float:
    return statistics.median(values)


class Report:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        line: str,
        gateway: float,
        baseline: float | None,
        unit: str,
        *,
        target: str = "",
        met: bool | None = None,
    ) -> None:
        ratio = gateway / baseline if baseline else None
        row = {"line": line, "gateway": gateway, "baseline": baseline, "ratio": ratio, "unit": unit}
        row.update(target=target, met=met)
        self.rows.append(row)
        print(self.format_row(row), flush=True)

    @staticmethod
    def format_row(row: dict[str, Any]) -> str:
        def num(value: float | None) -> str:
            if value is None:
                return "-"
            return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"

        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        met = {True: "met", False: "NOT met", None: ""}[row["met"]]
        return (
            f"| {row['line']} | {num(row['gateway'])} | {num(row['baseline'])} | {row['unit']} "
            f"| {ratio} | {row['target']} | {met} |"
        )

    def table(self) -> str:
        head = "| line | gateway | baseline | unit | ratio | target | |\n"
        head += "| --- | ---: | ---: | --- | ---: | --- | --- |"
        return "\n".join([head, *(self.format_row(row) for row in self.rows)])


def upload_targets() -> list[str]:
    rgw_missing = unavailable_reason()
    default = "fast,moto" + ("" if rgw_missing else ",rgw")
    targets = env_list("BENCH_UPLOAD_TARGETS", default)
    if rgw_missing:
        print(f"# no upload lines on RGW: {rgw_missing}", flush=True)
        targets = [target for target in targets if target != "rgw"]
    return targets


async def bench_uploads(report: Report, work: Path, runs: int) -> None:
    for kind in upload_targets():
        with s3_server(kind) as s3_url:
            bucket = "bench"
            settings = gateway_settings(s3_url, bucket)
            async with s3_client(settings) as client:
                await client.create_bucket(Bucket=bucket)
                with gateway(s3_url, bucket) as (url, _):
                    token = str(uuid.uuid4())
                    for size in env_sizes("BENCH_UPLOAD_SIZES", "256MiB,2GiB"):
                        path = make_file(work, size)
                        via, direct, direct_md5 = [], [], []
                        for run in range(runs):
                            auth = f"X-Auth-Token: {token}"
                            target_url = f"{url}/api/files/f{run}"
                            status, elapsed = await curl("-H", auth, "--upload-file", str(path), target_url)
                            if status != 204:
                                raise RuntimeError(f"gateway upload answered {status}")
                            via.append(size / MiB / elapsed)
                            seconds = await timed(direct_upload(client, bucket, f"d{run}", path, settings))
                            direct.append(size / MiB / seconds)
                            if kind == "rgw":
                                # The gateway sends Content-MD5 to RGW: beside a client that does too.
                                md5_upload = direct_upload(
                                    client, bucket, f"m{run}", path, settings, content_md5=True
                                )
                                direct_md5.append(size / MiB / await timed(md5_upload))
                                await client.delete_object(Bucket=bucket, Key=f"m{run}")
                            # moto and RGW keep what they store: drop it between runs.
                            prefix = user_prefix(user_id(token))
                            await client.delete_object(Bucket=bucket, Key=f"{prefix}f{run}")
                            await client.delete_object(Bucket=bucket, Key=f"d{run}")
                        target = 0.8 if kind == "fast" else 0.95
                        gw, base = median(via), median(direct)
                        report.add(
                            f"upload {human(size)}, {kind} S3",
                            gw,
                            base,
                            "MiB/s",
                            target=f">= {target}x",
                            met=gw / base >= target,
                        )
                        if direct_md5:
                            base = median(direct_md5)
                            report.add(
                                f"upload {human(size)}, {kind} S3, vs a direct client sending Content-MD5",
                                gw,
                                base,
                                "MiB/s",
                                target=">= 0.9x",
                                met=gw / base >= 0.9,
                            )


async def bench_cpu(report: Report, work: Path, runs: int) -> None:
    """CPU seconds per GiB uploaded: the gateway process, against the floor of a bare aiohttp
    server that only receives the body plus a direct aiobotocore upload of it to S3."""
    size = parse_size(os.environ.get("BENCH_CPU_SIZE", "1GiB"))
    path = make_file(work, size)
    per_gib = GiB / size
    with s3_server("fast") as s3_url, s3_server("fast") as sink_url:
        bucket = "bench"
        settings = gateway_settings(s3_url, bucket)
        sink_pid = _pid_of(sink_url)
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket=bucket)
            await curl("-X", "PUT", f"{sink_url}/{bucket}")

            async def floor_run(run: int) -> float:
                before = cpu_seconds(sink_pid)
                status, _ = await curl("--upload-file", str(path), f"{sink_url}/{bucket}/sink{run}")
                if status != 200:
                    raise RuntimeError(f"the bare server answered {status}")
                received = cpu_seconds(sink_pid) - before
                started = time.process_time()
                await direct_upload(client, bucket, f"d{run}", path, settings)
                return (received + time.process_time() - started) * per_gib

            md5_alone, sha256_alone = hash_alone(path, "md5"), hash_alone(path, "sha256")
            for checksum in env_list("BENCH_CHECKSUMS", "crc32,crc32c,md5,sha256,off"):
                # The named checksum itself: the stand-in verifies none and its parts' ETags are no
                # MD5s, so the gateway falls back to nothing else and sends what it is told (warned).
                only = {"S3_CHECKSUM": checksum}
                with gateway(s3_url, bucket, only) as (url, pid):
                    token = str(uuid.uuid4())
                    spent, speeds, floor = [], [], []
                    for run in range(runs):
                        # Each line's floor is measured in turns with it, run by run: on a shared
                        # machine the load drifts over the minutes a section takes, and a floor
                        # measured once, first, moved a later line's ratio by 0.1-0.2x.
                        floor.append(await floor_run(run))
                        before = cpu_seconds(pid)
                        auth = f"X-Auth-Token: {token}"
                        status, elapsed = await curl(
                            "-H", auth, "--upload-file", str(path), f"{url}/api/files/c{run}"
                        )
                        if status != 204:
                            raise RuntimeError(f"gateway upload answered {status}")
                        spent.append((cpu_seconds(pid) - before) * per_gib)
                        speeds.append(size / MiB / elapsed)
                gw, base = median(spent), median(floor)
                # The targets of issue 23: the floor itself without a checksum or with CRC32C,
                # 1.1x with CRC32, and the floor plus the hash alone for MD5 (SHA-256).
                limit, target = {
                    "crc32": (1.1 * base, "<= 1.1x"),
                    "md5": (base + md5_alone, f"<= floor + md5 alone ({md5_alone:.2f})"),
                    "sha256": (base + sha256_alone, f"<= floor + sha256 alone ({sha256_alone:.2f})"),
                }.get(checksum, (base, "<= 1.0x"))
                report.add(
                    f"CPU per GiB uploaded, S3_CHECKSUM={checksum}",
                    gw,
                    base,
                    "CPU s/GiB",
                    target=target,
                    met=gw <= limit,
                )
                # Wall clock, beside it: on shared cores it moves with the load, CPU time hardly.
                report.add(
                    f"upload {human(size)}, S3_CHECKSUM={checksum}, fast S3", median(speeds), None, "MiB/s"
                )


def hash_alone(path: Path, algorithm: str) -> float:
    """CPU seconds per GiB that hashlib's `algorithm` alone spends on the file, in 8 MiB pieces."""
    hasher = hashlib.new(algorithm)
    spent = 0.0
    with path.open("rb") as file:
        while piece := file.read(8 * MiB):
            started = time.process_time()
            hasher.update(piece)
            spent += time.process_time() - started
    return spent * GiB / path.stat().st_size


def _pid_of(url: str) -> int:
    """The pid of the child server listening on `url`'s port (see s3_server)."""
    return _SERVERS[int(url.rsplit(":", 1)[1])]


async def upload_generated(session: aiohttp.ClientSession, url: str, token: str, size: int) -> int:
    headers = {"X-Auth-Token": token, "Content-Length": str(size)}
    async with session.put(url, data=generated(size), headers=headers) as response:
        await response.read()
        return response.status


async def peak_growth(pid: int, action: Awaitable[Any]) -> tuple[int, Any]:
    """Await `action`; return how far the process's peak RSS rose above its RSS before."""
    reset_peak(pid)
    before = memory(pid)["VmRSS"]
    result = await action
    return memory(pid)["VmHWM"] - before, result


async def bench_memory(report: Report, runs: int) -> None:
    sizes = env_sizes("BENCH_MEMORY_SIZES", "256MiB,1GiB,4GiB")
    growth: dict[int, float] = {}
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        with gateway(s3_url, "bench") as (url, pid):
            token = str(uuid.uuid4())
            async with aiohttp.ClientSession() as session:
                # Warm up: every code path loaded and every pool filled once.
                await upload_generated(session, f"{url}/api/files/warm", token, 64 * MiB)
                for size in sizes:
                    samples = []
                    for _ in range(runs):
                        upload = upload_generated(session, f"{url}/api/files/m", token, size)
                        grew, status = await peak_growth(pid, upload)
                        if status != 204:
                            raise RuntimeError(f"gateway upload answered {status}")
                        samples.append(grew / MiB)
                    growth[size] = median(samples)
    smallest = min(sizes)
    for size in sizes:
        extra = growth[size] - growth[smallest]
        met = None if size == smallest else extra <= 16
        target = "" if size == smallest else f"<= {growth[smallest]:.1f} + 16"
        line = f"peak RSS growth, {human(size)} upload"
        report.add(line, growth[size], growth[smallest], "MiB", target=target, met=met)


async def bench_concurrency(report: Report, runs: int) -> None:
    size = parse_size(os.environ.get("BENCH_CONCURRENT_SIZE", "32MiB"))
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        budget = settings.memory_budget
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        with gateway(s3_url, "bench") as (url, pid):
            connector = aiohttp.TCPConnector(limit=0)
            no_timeout = aiohttp.ClientTimeout(None)
            async with aiohttp.ClientSession(connector=connector, timeout=no_timeout) as session:
                await upload_generated(session, f"{url}/api/files/warm", str(uuid.uuid4()), 64 * MiB)
                for count in (int(item) for item in env_list("BENCH_CONCURRENCY", "50,200")):
                    speeds, failures, peaks = [], [], []
                    for _ in range(runs):
                        uploads = (
                            upload_generated(session, f"{url}/api/files/c{i}", str(uuid.uuid4()), size)
                            for i in range(count)
                        )
                        started = time.perf_counter()
                        burst = asyncio.gather(*uploads, return_exceptions=True)
                        grew, statuses = await peak_growth(pid, burst)
                        elapsed = time.perf_counter() - started
                        speeds.append(count * size / MiB / elapsed)
                        failed = [status for status in statuses if status != 204]
                        failures.append(len(failed))
                        if failed:  # what they were: a status, or what the client raised
                            kinds = collections.Counter(
                                status if isinstance(status, int) else type(status).__name__
                                for status in failed
                            )
                            print(f"{count} concurrent: {dict(kinds)}", file=sys.stderr)
                        peaks.append(grew / MiB)
                    limit = budget / MiB + 100
                    label = f"{count} x {human(size)} concurrent"
                    report.add(f"{label}: aggregate upload", median(speeds), None, "MiB/s")
                    worst = max(failures)
                    report.add(f"{label}: failures", worst, None, "uploads", target="0", met=worst == 0)
                    report.add(
                        f"{label}: peak RSS growth",
                        max(peaks),
                        limit,
                        "MiB",
                        target="<= MEMORY_BUDGET + 100 MiB",
                        met=max(peaks) <= limit,
                    )


async def bench_download(report: Report, runs: int) -> None:
    """A download by curl through the gateway: MiB/s against a direct aiobotocore read of the
    object, and CPU seconds per GiB against the floor of a bare aiohttp relay (bench/relay.py)
    of the same object from the same S3, measured in the same run."""
    size = parse_size(os.environ.get("BENCH_DOWNLOAD_SIZE", "1GiB"))
    per_gib = GiB / size
    token = str(uuid.uuid4())
    key = user_prefix(user_id(token)) + "big"
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
            # The stand-in serves generated bytes of the recorded size.
            await direct_upload_sized(client, key, size, settings)
            relay_port = free_port()
            relay_args = [sys.executable, str(ROOT / "bench" / "relay.py"), "--port", str(relay_port)]
            with (
                gateway(s3_url, "bench") as (url, pid),
                server([*relay_args, "--s3", s3_url], relay_port) as relay,
            ):
                via, direct, relayed, spent, floor = [], [], [], [], []

                async def read_direct() -> None:
                    response = await client.get_object(Bucket="bench", Key=key)
                    async with response["Body"] as body:
                        async for _ in body.iter_chunks(256 * 1024):
                            pass

                for _ in range(runs):
                    before = cpu_seconds(pid)
                    status, elapsed = await curl("-H", f"X-Auth-Token: {token}", f"{url}/api/files/big")
                    if status != 200:
                        raise RuntimeError(f"gateway download answered {status}")
                    spent.append((cpu_seconds(pid) - before) * per_gib)
                    via.append(size / MiB / elapsed)
                    direct.append(size / MiB / await timed(read_direct()))
                    before = cpu_seconds(relay.pid)
                    status, elapsed = await curl(f"http://127.0.0.1:{relay_port}/bench/{key}")
                    if status != 200:
                        raise RuntimeError(f"the bare relay answered {status}")
                    floor.append((cpu_seconds(relay.pid) - before) * per_gib)
                    relayed.append(size / MiB / elapsed)
    gw, base = median(via), median(direct)
    report.add(f"download {human(size)}", gw, base, "MiB/s", target=">= 0.9x", met=gw / base >= 0.9)
    report.add(f"download {human(size)}: bare relay", median(relayed), base, "MiB/s")
    gw, base = median(spent), median(floor)
    report.add(
        "CPU per GiB downloaded (vs the bare relay)",
        gw,
        base,
        "CPU s/GiB",
        target="<= 1.1x",
        met=gw / base <= 1.1,
    )


async def direct_upload_sized(client: Any, key: str, size: int, settings: Settings) -> None:
    created = await client.create_multipart_upload(Bucket="bench", Key=key)
    parts = []
    number, left = 1, size
    while left > 0:
        length = min(settings.part_size, left)
        body = BLOCK * (length // MiB) + BLOCK[: length % MiB]
        response = await client.upload_part(
            Bucket="bench", Key=key, UploadId=created["UploadId"], PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"]})
        number += 1
        left -= length
    await client.complete_multipart_upload(
        Bucket="bench", Key=key, UploadId=created["UploadId"], MultipartUpload={"Parts": parts}
    )


async def bench_list(report: Report, runs: int) -> None:
    count = int(os.environ.get("BENCH_LIST_FILES", "10000"))
    token = str(uuid.uuid4())
    prefix = user_prefix(user_id(token))
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
            slots = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with slots:
                    await client.put_object(Bucket="bench", Key=f"{prefix}dir/file-{i:06d}.txt", Body=b"x")

            await asyncio.gather(*(put(i) for i in range(count)))
            with gateway(s3_url, "bench") as (url, _):
                via, direct = [], []

                async def list_direct() -> None:
                    names = []
                    paginator = client.get_paginator("list_objects_v2")
                    async for page in paginator.paginate(Bucket="bench", Prefix=prefix):
                        names.extend(item["Key"][len(prefix) :] for item in page.get("Contents", ()))
                    assert len(names) == count

                async with aiohttp.ClientSession() as session:

                    async def list_gateway() -> None:
                        headers = {"X-Auth-Token": token}
                        async with session.get(f"{url}/api/files", headers=headers) as response:
                            names = json.loads(await response.read())
                        assert len(names) == count, len(names)

                    for _ in range(runs):
                        via.append(count / await timed(list_gateway()))
                        direct.append(count / await timed(list_direct()))
    gw, base = median(via), median(direct)
    report.add(f"list {count} files", gw, base, "files/s", target=">= 0.9x", met=gw / base >= 0.9)


async def bench_form(report: Report, work: Path, runs: int) -> None:
    """The same file sent as multipart/form-data (curl -F) and by PUT (curl --upload-file):
    throughput, and the gateway's peak RSS growth during each."""
    size = parse_size(os.environ.get("BENCH_FORM_SIZE", "1GiB"))
    path = make_file(work, size)
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        with gateway(s3_url, "bench") as (url, pid):
            auth = f"X-Auth-Token: {uuid.uuid4()}"
            speeds: dict[str, list[float]] = {"form": [], "put": []}
            growth: dict[str, list[float]] = {"form": [], "put": []}
            uploads = {
                "form": ("-H", auth, "-F", f"file=@{path};filename=form.bin", f"{url}/api/files"),
                "put": ("-H", auth, "--upload-file", str(path), f"{url}/api/files/put.bin"),
            }
            await curl(*uploads["put"])  # warm up
            for _ in range(runs):
                for kind, args in uploads.items():
                    grew, (status, elapsed) = await peak_growth(pid, curl(*args))
                    if status not in (200, 204):
                        raise RuntimeError(f"gateway {kind} upload answered {status}")
                    speeds[kind].append(size / MiB / elapsed)
                    growth[kind].append(grew / MiB)
    label = f"{human(size)} upload as a form (vs PUT), fast S3"
    form_speed, put_speed = median(speeds["form"]), median(speeds["put"])
    report.add(
        f"{label}: throughput",
        form_speed,
        put_speed,
        "MiB/s",
        target=">= 0.8x",
        met=form_speed / put_speed >= 0.8,
    )
    form_rss, put_rss = median(growth["form"]), median(growth["put"])
    report.add(
        f"{label}: peak RSS growth",
        form_rss,
        put_rss,
        "MiB",
        target="<= PUT + 16",
        met=form_rss <= put_rss + 16,
    )


async def idle_connection(host: str, port: int) -> asyncio.StreamWriter:
    """A connection that has made one request (GET /healthz) and now sits idle, kept alive."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return writer


async def bench_scale(report: Report, runs: int) -> None:
    """RSS per idle keep-alive connection, BENCH_IDLE_CONNECTIONS of them on one process (its
    MAX_CONNECTIONS and the open-file limit raised as a deployment would), and another
    client's upload while they are open against the same upload without them."""
    count = int(os.environ.get("BENCH_IDLE_CONNECTIONS", "10000"))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 1000:
        print(f"# no scale lines: the open-file limit ({hard}) is below {count} connections", flush=True)
        return
    # The bench's own sockets, and the gateway's, which inherits the limit.
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    size = 64 * MiB
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        with gateway(s3_url, "bench", {"MAX_CONNECTIONS": str(count + 500)}) as (url, pid):
            host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
            token = str(uuid.uuid4())
            async with aiohttp.ClientSession() as session:

                async def speed() -> float:
                    started = time.perf_counter()
                    status = await upload_generated(session, f"{url}/api/files/other", token, size)
                    if status != 204:
                        raise RuntimeError(f"gateway upload answered {status}")
                    return size / MiB / (time.perf_counter() - started)

                await speed()  # warm up
                alone = median([await speed() for _ in range(runs)])
                before = memory(pid)["VmRSS"]
                writers: list[asyncio.StreamWriter] = []
                try:
                    for start in range(0, count, 500):
                        batch = range(start, min(start + 500, count))
                        writers += await asyncio.gather(*(idle_connection(host, port) for _ in batch))
                    await asyncio.sleep(1)
                    grown = memory(pid)["VmRSS"] - before
                    during = median([await speed() for _ in range(runs)])
                finally:
                    for writer in writers:
                        writer.close()
    report.add(f"RSS per idle keep-alive connection, {count} open", grown / count / 1024, None, "KiB")
    report.add(
        f"{human(size)} upload while {count} idle connections are open (vs none)",
        during,
        alone,
        "MiB/s",
        target=">= 0.9x",
        met=during / alone >= 0.9,
    )


async def stalled_upload(host: str, port: int, token: str, sent: int) -> asyncio.StreamWriter:
    """A PUT that declares 1 GiB, sends `sent` bytes of it and then nothing, its connection kept open."""
    _, writer = await asyncio.open_connection(host, port)
    head = (
        f"PUT /api/files/w HTTP/1.1\r\nHost: bench\r\nX-Auth-Token: {token}\r\nContent-Length: {GiB}\r\n\r\n"
    )
    writer.write(head.encode())
    async for piece in generated(sent):
        writer.write(piece)
        await writer.drain()
    return writer


async def uploads_in_flight(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("file_uploader_uploads_in_flight{")
    )


async def bench_waiting(report: Report, runs: int) -> None:
    """RSS per upload waiting for memory (BENCH_WAITING_UPLOADS of them, one user each), beside
    the one 64 KiB read each holds while it waits.

    The gateway gets MEMORY_BUDGET = 8 parts, no disk to spill to (SPOOL_BUDGET=0) and a long
    CLIENT_TIMEOUT; eight uploads of their own users send one byte short of a part each and
    stall, so the budget is full and stays full. Each waiting upload then sends 64 KiB of a
    declared 1 GiB: the gateway reads it, asks for its memory and waits, holding the chunk."""
    count = int(os.environ.get("BENCH_WAITING_UPLOADS", "1000"))
    sent = 64 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        part = settings.part_size
        extra = {
            "MEMORY_BUDGET": str(8 * part),
            "SPOOL_BUDGET": "0",
            "CLIENT_TIMEOUT": "600",
            "MAX_CONNECTIONS": str(count + 500),
        }
        samples = []
        for _ in range(runs):
            with gateway(s3_url, "bench", extra) as (url, pid):
                host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
                writers: list[asyncio.StreamWriter] = []
                async with aiohttp.ClientSession() as session:
                    try:
                        # Warm up: every code path of an upload loaded and pools filled once.
                        await upload_generated(session, f"{url}/api/files/warm", str(uuid.uuid4()), 4 * part)
                        for _ in range(8):
                            writers.append(await stalled_upload(host, port, str(uuid.uuid4()), part - 1))
                        rss: list[int] = []
                        in_flight: list[float] = []
                        # Two halves, RSS read after each: the second half's growth is the figure,
                        # once the first has used up the free memory the process kept from before.
                        for half in range(2):
                            for start in range(0, count // 2, 250):
                                batch = range(start, min(start + 250, count // 2))
                                writers += await asyncio.gather(
                                    *(stalled_upload(host, port, str(uuid.uuid4()), sent) for _ in batch)
                                )
                            expected = 8 + (half + 1) * (count // 2)
                            for _ in range(20):  # until every one has read its 64 KiB and waits
                                await asyncio.sleep(0.5)
                                if (waiting := await uploads_in_flight(session, url)) == expected:
                                    break
                            else:
                                print(f"# {waiting:.0f} uploads in flight, not {expected}", flush=True)
                            await asyncio.sleep(1)
                            rss.append(memory(pid)["VmRSS"])
                            in_flight.append(waiting)
                    finally:
                        for writer in writers:
                            writer.close()
                samples.append(((rss[1] - rss[0]) / (in_flight[1] - in_flight[0]) - sent) / 1024)
    report.add(
        f"RSS per upload waiting for memory, {count} waiting, beside its 64 KiB read",
        median(samples),
        None,
        "KiB",
        target="<= 64",
        met=median(samples) <= 64,
    )


async def bench_workers(report: Report, work: Path, runs: int) -> None:
    """Aggregate upload throughput of gunicorn with 1, 2 and 4 workers (BENCH_WORKERS):
    BENCH_WORKER_UPLOADS concurrent curl uploads of 64 MiB each, to the fast stand-in."""
    path = make_file(work, 64 * MiB)
    uploads = int(os.environ.get("BENCH_WORKER_UPLOADS", "8"))
    counts = [int(item) for item in env_list("BENCH_WORKERS", "1,2,4")]
    speeds: dict[int, float] = {}
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
        gunicorn = ["-m", "gunicorn", "file_uploader.app:create_app", "-c", "gunicorn.conf.py"]
        for count in counts:
            with gateway(s3_url, "bench", {"WORKERS": str(count)}, gunicorn) as (url, _):
                auth = f"X-Auth-Token: {uuid.uuid4()}"

                async def burst(auth: str = auth, url: str = url) -> float:
                    started = time.perf_counter()
                    done = await asyncio.gather(
                        *(
                            curl("-H", auth, "--upload-file", str(path), f"{url}/api/files/w{i}")
                            for i in range(uploads)
                        )
                    )
                    if any(status != 204 for status, _ in done):
                        raise RuntimeError(f"gateway uploads answered {[status for status, _ in done]}")
                    return uploads * 64 / (time.perf_counter() - started)

                await burst()  # warm up every worker
                speeds[count] = median([await burst() for _ in range(runs)])
    for count in counts:
        report.add(
            f"{uploads} x 64 MiB concurrent, gunicorn with {count} worker(s): aggregate upload",
            speeds[count],
            speeds[counts[0]],
            "MiB/s",
        )


TUS_NODE_PACKAGES = ("@tus/server@2.4.5", "@tus/s3-store@2.0.7")


def tus_node(work: Path) -> Path:
    """A scratch directory with tus-node-server installed from npm and bench/tus_node/server.mjs."""
    where = work / "tus-node"
    if not (where / "node_modules").exists():
        where.mkdir(exist_ok=True)
        (where / "package.json").write_text('{"private": true, "type": "module"}')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *TUS_NODE_PACKAGES],
            cwd=where,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    shutil.copy(ROOT / "bench" / "tus_node" / "server.mjs", where)
    return where


async def tus_create(url: str, size: int, *headers: str) -> str:
    """POST a tus upload of `size` bytes; its URL."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "-D", "-", "-X", "POST", "-H", "Tus-Resumable: 1.0.0",
        "-H", f"Upload-Length: {size}", "-H", "Upload-Metadata: filename cGVlci5iaW4=",
        *headers, url, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    for line in out.decode().splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "location":
            return str(URL(url).join(URL(value.strip())))
    raise RuntimeError(f"the tus server created no upload: {out.decode()[:200]}")


def tree_size(path: Path) -> int:
    total = 0
    for entry in path.rglob("*"):
        with contextlib.suppress(OSError):
            if entry.is_file():
                total += entry.stat().st_size
    return total


async def watched(pid: int, tmp: Path, action: Awaitable[Any]) -> tuple[float, int, int, Any]:
    """Await `action`: the CPU seconds `pid` spent, its peak RSS and the peak bytes under `tmp`."""
    reset_peak(pid)
    before = cpu_seconds(pid)
    task = asyncio.ensure_future(action)
    peak_disk = 0
    while not task.done():
        peak_disk = max(peak_disk, tree_size(tmp))
        await asyncio.wait([task], timeout=0.05)
    return cpu_seconds(pid) - before, memory(pid)["VmHWM"], peak_disk, task.result()


async def peer_figures(
    kind: str, work: Path, path: Path, size: int, runs: int
) -> dict[str, dict[str, float]]:
    """The peer section's figures on one S3 server: per server line, the median of each measure."""
    per_gib = GiB / size
    installed = work / "tus-node"
    with s3_server(kind) as s3_url:
        bucket = "bench"
        settings = gateway_settings(s3_url, bucket)
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket=bucket)
        access_key, secret_key = keys(s3_url)
        tmp = {name: work / f"tmp-{name}" for name in ("gateway", "peer")}
        for directory in tmp.values():
            directory.mkdir(exist_ok=True)
        port = free_port()
        node = ["node", str(installed / "server.mjs"), str(port), s3_url, bucket, access_key, secret_key]
        with (
            gateway(s3_url, bucket, {"TMPDIR": str(tmp["gateway"])}) as (url, pid),
            server(node, port, {"TMPDIR": str(tmp["peer"])}, cwd=installed) as peer,
        ):
            auth = ("-H", f"X-Auth-Token: {uuid.uuid4()}")
            patch = ("-X", "PATCH", "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0")
            patch += ("-H", "Content-Type: application/offset+octet-stream", "--upload-file", str(path))

            async def tus(create_url: str, *headers: str) -> tuple[int, float]:
                started = time.perf_counter()
                upload_url = await tus_create(create_url, size, *headers)
                status, _ = await curl(*headers, *patch, upload_url)
                return status, time.perf_counter() - started

            lines = {
                "gateway tus": (pid, tmp["gateway"], lambda: tus(f"{url}/api/uploads", *auth)),
                "gateway PUT": (
                    pid,
                    tmp["gateway"],
                    lambda: curl(*auth, "--upload-file", str(path), f"{url}/api/files/put.bin"),
                ),
                "tus-node-server": (peer.pid, tmp["peer"], lambda: tus(f"http://127.0.0.1:{port}/files")),
            }
            figures: dict[str, dict[str, list[float]]] = {
                name: {"speed": [], "cpu": [], "rss": [], "disk": []} for name in lines
            }
            order = list(lines)
            for run in range(runs):
                # Each run starts with the next line: no line always follows the same one (say, the
                # gateway's tus right after the peer's upload, while RGW still digests it).
                for name in order[run % len(order) :] + order[: run % len(order)]:
                    process, scratch, upload = lines[name]
                    spent, rss, disk, (status, elapsed) = await watched(process, scratch, upload())
                    if status not in (200, 204):
                        raise RuntimeError(f"{name} upload answered {status}")
                    figures[name]["speed"].append(size / MiB / elapsed)
                    figures[name]["cpu"].append(spent * per_gib)
                    figures[name]["rss"].append(rss / MiB)
                    figures[name]["disk"].append(disk / MiB)
    return {
        name: {key: median(values) for key, values in measured.items()} for name, measured in figures.items()
    }


async def bench_peer(report: Report, work: Path, runs: int) -> None:
    """One file uploaded by curl through the gateway (tus and PUT) and through tus-node-server,
    to the same S3: MiB/s, CPU s/GiB, peak RSS and peak temporary disk of each server."""
    if not shutil.which("npm"):
        print("# no peer lines: npm is not installed", flush=True)
        return
    size = parse_size(os.environ.get("BENCH_PEER_SIZE", "512MiB"))
    path = make_file(work, size)
    tus_node(work)
    for kind in env_list("BENCH_PEER_TARGETS", ",".join(upload_targets())):
        figures = await peer_figures(kind, work, path, size, runs)
        gw, put, node_figures = figures["gateway tus"], figures["gateway PUT"], figures["tus-node-server"]
        label = f"tus {human(size)}, {kind} S3, gateway vs tus-node-server"
        speed_ok = gw["speed"] / node_figures["speed"] >= 2
        cpu_ok = gw["cpu"] / node_figures["cpu"] <= 0.3
        report.add(
            f"{label}: upload", gw["speed"], node_figures["speed"], "MiB/s", target=">= 2x", met=speed_ok
        )
        report.add(f"{label}: CPU", gw["cpu"], node_figures["cpu"], "CPU s/GiB", target="<= 0.3x", met=cpu_ok)
        report.add(f"{label}: peak RSS", gw["rss"], node_figures["rss"], "MiB")
        report.add(
            f"{label}: peak temporary disk",
            gw["disk"],
            node_figures["disk"],
            "MiB",
            target="0",
            met=gw["disk"] == 0,
        )
        near = abs(gw["speed"] / put["speed"] - 1) <= 0.05
        report.add(
            f"{human(size)}, {kind} S3: gateway tus vs PUT",
            gw["speed"],
            put["speed"],
            "MiB/s",
            target="within 5 %",
            met=near,
        )


async def bench_zip(report: Report, runs: int) -> None:
    """Peak RSS growth while a folder downloads as one zip (storage/zips.py), for folders of
    BENCH_ZIP_SIZES in four files each: it must not grow with the folder's size."""
    sizes = env_sizes("BENCH_ZIP_SIZES", "256MiB,2GiB")
    token = str(uuid.uuid4())
    growth: dict[int, float] = {}
    rate: dict[int, float] = {}
    with s3_server("fast") as s3_url:
        settings = gateway_settings(s3_url, "bench")
        async with s3_client(settings) as client:
            await client.create_bucket(Bucket="bench")
            for size in sizes:
                for index in range(4):
                    key = user_prefix(user_id(token)) + f"zip{size}/part{index}.bin"
                    await direct_upload_sized(client, key, size // 4, settings)
        with gateway(s3_url, "bench") as (url, pid):
            async with aiohttp.ClientSession() as session:

                async def download(size: int) -> int:
                    got = 0
                    address = f"{url}/api/files/zip{size}/?format=zip"
                    async with session.get(address, headers={"X-Auth-Token": token}) as response:
                        if response.status != 200:
                            raise RuntimeError(f"zip download answered {response.status}")
                        async for chunk in response.content.iter_chunked(256 * 1024):
                            got += len(chunk)
                    return got

                await download(min(sizes))  # warm up: the zip threads and every pool
                for size in sizes:
                    samples, speeds = [], []
                    for _ in range(runs):
                        started = time.monotonic()
                        grew, _ = await peak_growth(pid, download(size))
                        speeds.append(size / MiB / (time.monotonic() - started))
                        samples.append(grew / MiB)
                    growth[size], rate[size] = median(samples), median(speeds)
    smallest = min(sizes)
    for size in sizes:
        met = None if size == smallest else growth[size] - growth[smallest] <= 16
        target = "" if size == smallest else f"<= {growth[smallest]:.1f} + 16"
        report.add(
            f"peak RSS growth, zip of a {human(size)} folder",
            growth[size],
            growth[smallest],
            "MiB",
            target=target,
            met=met,
        )
        report.add(f"zip of a {human(size)} folder", rate[size], None, "MiB/s")


SECTIONS = {
    "cpu": bench_cpu,
    "upload": bench_uploads,
    "memory": bench_memory,
    "concurrency": bench_concurrency,
    "download": bench_download,
    "list": bench_list,
    "form": bench_form,
    "zip": bench_zip,
    "peer": bench_peer,
    "scale": bench_scale,
    "waiting": bench_waiting,
    "workers": bench_workers,
}


async def main() -> None:
    runs = int(os.environ.get("BENCH_RUNS", "3"))
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    print(f"median of {runs} runs; {os.cpu_count()} CPUs", flush=True)
    print(report.table(), flush=True)
    try:
        for name in env_list("BENCH_SECTIONS", ",".join(SECTIONS)):
            if name in ("cpu", "upload", "form", "peer", "workers"):
                await SECTIONS[name](report, work, runs)
            else:
                await SECTIONS[name](report, runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(report.table())
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = results / f"bench-{stamp}.json"
    settings = gateway_settings("http://unused", "bench")
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "runs": runs,
                "cpus": os.cpu_count(),
                "part_size": settings.part_size,
                "parts_in_flight": PARTS_IN_FLIGHT,
                "memory_budget": settings.memory_budget,
                "rows": report.rows,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    # The direct client runs on the gateway's event loop too (uvloop when installed).
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
