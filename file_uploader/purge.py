"""`python -m file_uploader purge --token UUID --yes`: delete every file of one user.

Also aborts the user's unfinished multipart uploads, so nothing of theirs is
left in the bucket. Without --yes it only counts what it would delete.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from .app import open_s3_client
from .keys import is_valid_token, user_id, user_prefix
from .settings import Settings
from .sizes import LIST_PAGE_SIZE
from .storage import StorageFailure, s3_errors

log = logging.getLogger(__name__)


async def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    with s3_errors("ListObjectsV2"):
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(item["Key"] for item in page.get("Contents", ()))
    return keys


async def _abort_uploads(client: Any, bucket: str, prefix: str) -> int:
    aborted = 0
    paginator = client.get_paginator("list_multipart_uploads")
    with s3_errors("ListMultipartUploads"):
        async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", ()):
                await client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    return aborted


async def purge_user(settings: Settings, token: str, *, really: bool) -> tuple[int, int]:
    """(files, open uploads) of the user: deleted if `really`, else only counted."""
    prefix = user_prefix(user_id(token))
    bucket = settings.s3_bucket
    async with open_s3_client(settings) as client:
        keys = await _keys(client, bucket, prefix)
        if not really:
            return len(keys), 0
        aborted = await _abort_uploads(client, bucket, prefix)
        # DeleteObjects takes at most 1,000 keys, the size of one listing page.
        for start in range(0, len(keys), LIST_PAGE_SIZE):
            batch = keys[start : start + LIST_PAGE_SIZE]
            with s3_errors("DeleteObjects"):
                response = await client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(f"S3 refused to delete {len(response['Errors'])} files ({first['Code']})")
        return len(keys), aborted


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not is_valid_token(args.token):
        print("purge: --token must be a UUID", file=sys.stderr)
        return 2
    try:
        files, aborted = asyncio.run(purge_user(settings, args.token, really=args.yes))
    except (StorageFailure, RuntimeError) as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 1
    if not args.yes:
        print(f"purge: this user has {files} files; run again with --yes to delete them all")
        return 1
    # The user id, never the token, goes to the log.
    log.info("purged user %s: %d files deleted, %d uploads aborted", user_id(args.token), files, aborted)
    print(f"purge: deleted {files} files and aborted {aborted} unfinished uploads")
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("purge", help="delete every file of one user")
    parser.add_argument("--token", required=True, metavar="UUID", help="the user's token")
    parser.add_argument("--yes", action="store_true", help="really delete (without it: only count)")
    parser.set_defaults(run=run)
