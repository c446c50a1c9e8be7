"""`python -m file_uploader gc --older-than 24h`: abort the multipart uploads the
gateway started and never finished (a crash, a kill -9, a lost abort).

S3 keeps (and bills) the parts of an unfinished multipart upload until it is
aborted. Only uploads under the gateway's own prefix are touched, and only
those started before the cut-off, so uploads in progress are left alone as
long as the age is longer than any upload takes. An S3 lifecycle rule
(AbortIncompleteMultipartUpload, see the README) does the same job on AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from .app import open_s3_client
from .keys import FILES_ROOT
from .settings import Settings
from .storage import Storage, StorageFailure, s3_errors
from .tus_store import expire_uploads, live_multipart_ids

log = logging.getLogger(__name__)

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> datetime.timedelta:
    """`90s`, `30m`, `24h`, `7d` -> a timedelta."""
    match = _AGE_RE.match(text)
    if not match:
        raise ValueError(f"not an age: {text!r} (use a number and s, m, h or d, such as 24h)")
    return datetime.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@dataclasses.dataclass(frozen=True)
class StaleUpload:
    key: str
    upload_id: str
    initiated: datetime.datetime


async def stale_uploads(
    client: Any,
    bucket: str,
    older_than: datetime.timedelta,
    *,
    prefix: str = FILES_ROOT,
    keep: frozenset[str] | set[str] = frozenset(),
) -> AsyncIterator[StaleUpload]:
    """Every multipart upload under `prefix` initiated more than `older_than` ago, but those in `keep`."""
    cutoff = datetime.datetime.now(datetime.UTC) - older_than
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        with s3_errors("ListMultipartUploads"):
            page = await client.list_multipart_uploads(**request)
        for upload in page.get("Uploads", ()):
            if upload["Initiated"] <= cutoff and upload["UploadId"] not in keep:
                yield StaleUpload(upload["Key"], upload["UploadId"], upload["Initiated"])
        if not page.get("IsTruncated"):
            return
        request["KeyMarker"] = page["NextKeyMarker"]
        request["UploadIdMarker"] = page["NextUploadIdMarker"]


async def abort_stale_uploads(
    storage: Storage,
    older_than: datetime.timedelta,
    *,
    prefix: str = FILES_ROOT,
    keep: frozenset[str] | set[str] = frozenset(),
) -> list[StaleUpload]:
    """Abort the uploads `stale_uploads` finds; return those aborted.

    Listed in full first, so that aborting does not shift the pages being read.
    """
    listing = stale_uploads(storage.client, storage.bucket, older_than, prefix=prefix, keep=keep)
    found = [upload async for upload in listing]
    aborted = []
    for upload in found:
        try:
            with s3_errors("AbortMultipartUpload"):
                await storage.client.abort_multipart_upload(
                    Bucket=storage.bucket, Key=upload.key, UploadId=upload.upload_id
                )
        except StorageFailure as exc:
            log.warning("could not abort the upload of %s: %s", upload.key, exc)
            continue
        aborted.append(upload)
    return aborted


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """A Storage with its own S3 client, for a command run outside the server."""
    async with open_s3_client(settings) as client:
        yield Storage(
            client, settings.s3_bucket, part_size=settings.part_size, parts_in_flight=settings.parts_in_flight
        )


@dataclasses.dataclass(frozen=True)
class Collected:
    expired_tus_uploads: int
    aborted: list[StaleUpload]


async def collect_garbage(storage: Storage, older_than: datetime.timedelta) -> Collected:
    """Expire tus uploads past their Upload-Expires, then abort other stale multipart uploads.

    A live tus upload's multipart upload may rightly sit idle for up to
    UPLOAD_EXPIRY, whatever `older_than` says, so its id is kept.
    """
    now = time.time()
    with s3_errors("tus expiry"):
        expired = await expire_uploads(storage.client, storage.bucket, now)
        live = await live_multipart_ids(storage.client, storage.bucket, now)
    return Collected(expired, await abort_stale_uploads(storage, older_than, keep=live))


async def _collect(settings: Settings, older_than: datetime.timedelta) -> Collected:
    async with open_storage(settings) as storage:
        return await collect_garbage(storage, older_than)


def gc_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        collected = asyncio.run(_collect(settings, args.older_than))
    except StorageFailure as exc:
        print(f"gc: {exc}")
        return 1
    aborted = collected.aborted
    print(f"gc: expired {collected.expired_tus_uploads} resumable (tus) upload(s)")
    now = datetime.datetime.now(datetime.UTC)
    for upload in aborted:
        age = now - upload.initiated
        print(f"aborted {upload.key} (upload {upload.upload_id}, started {age.total_seconds():.0f} s ago)")
    print(
        f"gc: aborted {len(aborted)} multipart upload(s) older than {args.older_than} in {settings.s3_bucket}"
    )
    return 0


def add_parser(commands: Any) -> None:
    """Register `gc` on the subcommands of `python -m file_uploader`."""
    gc = commands.add_parser("gc", help="abort unfinished multipart uploads older than an age")
    gc.add_argument(
        "--older-than",
        type=parse_age,
        default=parse_age("24h"),
        metavar="AGE",
        help="abort uploads started longer ago than this: 90s, 30m, 24h, 7d (default: 24h)",
    )
    gc.set_defaults(run=gc_command)
