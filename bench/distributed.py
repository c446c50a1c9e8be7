"""Upload throughput against distributed engines: one and several gateway processes in front of
a SeaweedFS cluster (devtools/seaweed.py: three volume servers, replication 001) and a Ceph
cluster (devtools/rgw.py: three OSDs, two RGW instances behind tests/balancer.py), beside a
client that writes to the cluster itself (boto3's managed upload, same part size) in the same run.

    .venv/bin/python bench/distributed.py      # BENCH_FILES=16 BENCH_SIZE=32MiB BENCH_CONCURRENCY=8
                                               # BENCH_ENGINES=seaweed,ceph

Every process (the cluster's six, the gateways, this client) shares the machine: on the 2-core
build machine the figures say what the gateway costs next to the engine, not what either
reaches on its own hardware. docs/scale-out.md quotes them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import boto3
from boto3.s3.transfer import TransferConfig

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.rgw import running_rgw_cluster  # noqa: E402
from devtools.seaweed import running_seaweed  # noqa: E402
from file_uploader.sizes import MiB, parse_size  # noqa: E402
from tests.balancer import Balancer  # noqa: E402
from tests.helpers import run_gateway  # noqa: E402

FILES = int(os.environ.get("BENCH_FILES", "16"))
SIZE = parse_size(os.environ.get("BENCH_SIZE", "32MiB"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
ENGINES = os.environ.get("BENCH_ENGINES", "seaweed,ceph").split(",")
PART = 8 * MiB


async def through_gateways(urls: list[str], data: bytes) -> float:
    token = "0b6f3c2e-5d4a-4f1b-9c8e-7a6d5e4f3b2a"
    limit = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def one(number: int) -> None:
            async with limit:
                url = f"{urls[number % len(urls)]}/api/files/bench/{number}.bin"
                async with session.put(url, data=data, headers={"X-Auth-Token": token}) as response:
                    assert response.status == 204, await response.text()

        began = time.monotonic()
        await asyncio.gather(*(one(number) for number in range(FILES)))
        return time.monotonic() - began


def direct(client, bucket: str, data: bytes) -> float:
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4)

    def one(number: int) -> None:
        client.upload_fileobj(io.BytesIO(data), bucket, f"direct/{number}.bin", Config=config)

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(one, range(FILES)))
    return time.monotonic() - began


@contextlib.contextmanager
def seaweed(workdir: Path) -> Iterator[tuple[str, str, str]]:
    with running_seaweed(workdir / "seaweed") as cluster:
        yield cluster.url, cluster.access_key, cluster.secret_key


@contextlib.contextmanager
def ceph(workdir: Path) -> Iterator[tuple[str, str, str]]:
    """Three OSDs, two RGWs, and the tests' balancer in front of them (in a thread of its own)."""
    with running_rgw_cluster(workdir / "ceph", osds=3, rgws=2, timeout=120) as cluster:
        engine = cluster.engine
        backends = [(urllib.parse.urlsplit(url).hostname or "", urllib.parse.urlsplit(url).port or 0)
                    for url in engine.rgw_http_urls]  # fmt: skip
        balancer = Balancer(backends)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(balancer.start(), loop).result()
        try:
            yield balancer.url, engine.access_key, engine.secret_key
        finally:
            asyncio.run_coroutine_threadsafe(balancer.close(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()


def measure(name: str, url: str, access_key: str, secret_key: str, workdir: Path, data: bytes) -> list:
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )
    client.create_bucket(Bucket="bench")
    rows = [(f"{name}: direct client (boto3, 8 MiB parts)", direct(client, "bench", data))]
    for count in (1, 2):
        with ExitStack() as stack:
            env = {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
            gateways = [
                stack.enter_context(run_gateway(url, "bench", workdir / f"{name}-gw{count}-{n}", **env))
                for n in range(count)
            ]
            seconds = asyncio.run(through_gateways([str(gateway) for gateway in gateways], data))
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="files/"):
            for item in page.get("Contents", []):  # room for the next row
                client.delete_object(Bucket="bench", Key=item["Key"])
        rows.append((f"{name}: {count} gateway process{'es' if count > 1 else ''}", seconds))
    return rows


def main() -> None:
    data = os.urandom(SIZE)
    total_mb = FILES * SIZE / 1e6
    workdir = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    rows = []
    clusters = {"seaweed": seaweed, "ceph": ceph}
    for name in ENGINES:
        with clusters[name](workdir) as (url, access_key, secret_key):
            rows += measure(name, url, access_key, secret_key, workdir, data)
    shutil.rmtree(workdir)  # the clusters' volumes: gigabytes
    print(f"{FILES} uploads of {SIZE // MiB} MiB, {CONCURRENCY} at a time")
    print(f"{'':48} {'seconds':>8} {'MB/s':>8}")
    for name, seconds in rows:
        print(f"{name:48} {seconds:8.1f} {total_mb / seconds:8.1f}")


if __name__ == "__main__":
    main()
