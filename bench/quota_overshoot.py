"""How far one user's burst of concurrent uploads gets past USER_QUOTA (docs/quotas-and-webhooks.md).

Two gateway processes on one moto server; a quota of 1,000 KiB; UPLOADS uploads of 100 KiB
sent at once, alternating between the processes, ROUNDS times (a new user each round). Prints
each round's statuses and bytes stored past the quota, then the worst.

    python bench/quota_overshoot.py [CONDITIONAL_WRITES=1|0] [UPLOADS=24] [ROUNDS=10]

With CONDITIONAL_WRITES=0 the gateways reach moto through a proxy that drops If-Match and
If-None-Match (tests/faultproxy.py): the write probe finds them ignored, and the ledger keeps
to the read-back rule.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from file_uploader.sizes import KiB
from file_uploader.storage.keys import user_id, user_prefix
from tests.faultproxy import proxy_process
from tests.helpers import ACCESS_KEY, SECRET_KEY, free_port, run_gateway, start_moto

BUCKET = "quota-overshoot"
QUOTA = 1000 * KiB
SIZE = 100 * KiB


async def burst(gateways: list[str], token: str, uploads: int) -> collections.Counter:
    async with aiohttp.ClientSession() as session:

        async def one(number: int) -> int:
            url = f"{gateways[number % 2]}/api/files/burst-{number}"
            async with session.put(url, data=b"x" * SIZE, headers={"X-Auth-Token": token}) as response:
                await response.read()
                return response.status

        return collections.Counter(await asyncio.gather(*(one(number) for number in range(uploads))))


def main() -> None:
    conditional, uploads, rounds = (sys.argv[1:] + ["1", "24", "10"][len(sys.argv) - 1 :])[:3]
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1"
    )
    port = free_port()
    moto = start_moto(port)
    s3_url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=s3_url)
    s3.create_bucket(Bucket=BUCKET)
    settings = {"USER_QUOTA": str(QUOTA)}
    workdir = Path(tempfile.mkdtemp())
    try:
        with contextlib.ExitStack() as stack:
            endpoint = (
                s3_url
                if conditional == "1"
                else stack.enter_context(proxy_process(s3_url, ignore_conditions=True))
            )
            first = stack.enter_context(run_gateway(endpoint, BUCKET, workdir / "a", **settings))
            second = stack.enter_context(run_gateway(endpoint, BUCKET, workdir / "b", **settings))
            worst = 0
            for number in range(int(rounds)):
                token = str(uuid.uuid4())
                statuses = asyncio.run(burst([first, second], token, int(uploads)))
                listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=user_prefix(user_id(token)))
                stored = sum(item["Size"] for item in listing.get("Contents", []))
                worst = max(worst, stored - QUOTA)
                print(f"round {number}: {dict(statuses)}, {stored - QUOTA} bytes past the quota")
            print(
                f"conditional writes {'on' if conditional == '1' else 'off'}, {uploads} uploads x {rounds} "
                f"rounds: worst {worst} B"
            )
    finally:
        moto.kill()
        moto.wait()


if __name__ == "__main__":
    main()
