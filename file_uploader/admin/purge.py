"""`python -m file_uploader purge --token UUID --yes`: delete everything of one user
(the work is storage/sweep.py's; this parses and prints).

Files, the state of resumable uploads and unfinished multipart uploads: nothing
of the user is left in the bucket. Without --yes it only counts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from ..settings import Settings
from ..storage import open_storage
from ..storage.errors import StorageFailure
from ..storage.keys import is_valid_token, user_id
from ..storage.sweep import Purged, purge_user

log = logging.getLogger(__name__)


async def _purge(settings: Settings, uid: str, really: bool) -> Purged:
    async with open_storage(settings) as storage:
        return await purge_user(storage, uid, really=really)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if not is_valid_token(args.token):
        print("purge: --token must be a UUID", file=sys.stderr)
        return 2
    uid = user_id(args.token)
    try:
        purged = asyncio.run(_purge(settings, uid, args.yes))
    except StorageFailure as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 1
    if not args.yes:
        print(
            f"purge: this user has {purged.files} files and {purged.aborted} unfinished uploads; "
            "run again with --yes to delete them all"
        )
        return 1
    # The user id, never the token, goes to the log.
    log.info("purged user %s: %d objects deleted, %d uploads aborted", uid, purged.objects, purged.aborted)
    print(
        f"purge: deleted {purged.files} files and aborted {purged.aborted} unfinished uploads "
        f"({purged.objects - purged.files} objects of resumable uploads removed with them)"
    )
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("purge", help="delete every file of one user")
    parser.add_argument("--token", required=True, metavar="UUID", help="the user's token")
    parser.add_argument("--yes", action="store_true", help="really delete (without it: only count)")
    parser.set_defaults(run=run)
