"""`python -m file_uploader gc --older-than 24h`: abort unfinished multipart uploads,
expire resumable uploads, delete files whose expiry has come, and remove share
links and upload requests a week past their expiry (the work is storage/sweep.py's;
this parses and prints).

An S3 lifecycle rule (AbortIncompleteMultipartUpload, see docs/operations.md)
does the first half of the same job on AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
from typing import Any

from ..settings import Settings
from ..storage import open_storage
from ..storage.errors import StorageFailure
from ..storage.sweep import Collected, collect_garbage

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> datetime.timedelta:
    """`90s`, `30m`, `24h`, `7d` -> a timedelta."""
    match = _AGE_RE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r} (use a number and s, m, h or d, such as 24h)")
    return datetime.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


async def _collect(settings: Settings, older_than: datetime.timedelta) -> Collected:
    async with open_storage(settings) as storage:
        return await collect_garbage(storage, older_than)


def run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        collected = asyncio.run(_collect(settings, args.older_than))
    except StorageFailure as exc:
        print(f"gc: {exc}")
        return 1
    print(f"gc: expired {collected.expired_tus_uploads} resumable (tus) upload(s)")
    now = datetime.datetime.now(datetime.UTC)
    for upload in collected.aborted:
        age = now - upload.last_active
        print(
            f"aborted {upload.key} (upload {upload.upload_id}, last written {age.total_seconds():.0f} s ago)"
        )
    print(f"gc: aborted {len(collected.aborted)} multipart upload(s) older than {args.older_than}")
    print(f"gc: deleted {collected.expired_files} expired file(s)")
    print(f"gc: removed {collected.expired_grants} share link(s) and upload request(s) expired a week ago")
    return 0


def add_parser(commands: Any) -> None:
    """Register `gc` on the subcommands of `python -m file_uploader`."""
    gc = commands.add_parser("gc", help="abort unfinished multipart uploads older than an age")
    gc.add_argument(
        "--older-than",
        type=parse_age,
        default=parse_age("24h"),
        metavar="AGE",
        help="abort uploads not written to for longer than this: 90s, 30m, 24h, 7d (default: 24h)",
    )
    gc.set_defaults(run=run)
