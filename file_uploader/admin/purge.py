"""`python -m file_uploader purge --token UUID --yes`: delete everything of one user;
`purge --all --yes`: of every user (the work is storage/sweep.py's; this parses and prints).

Files, the state of resumable uploads, unfinished multipart uploads, public
library entries and thumbnails: nothing of the user (or, with --all, of anyone)
is left in the bucket. --all touches only the gateway's own prefixes
(storage/keys.py's ROOTS): anything else in the bucket stays. Without --yes it
only counts.
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
from ..storage.sweep import Purged, purge_all, purge_user

log = logging.getLogger(__name__)


async def _purge(settings: Settings, uid: str | None, really: bool) -> Purged:
    async with open_storage(settings) as storage:
        if uid is None:
            return await purge_all(storage, really=really)
        return await purge_user(storage, uid, really=really)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.all:
        return _run_all(settings, args.yes)
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


def _run_all(settings: Settings, really: bool) -> int:
    try:
        purged = asyncio.run(_purge(settings, None, really))
    except StorageFailure as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 1
    others = purged.objects - purged.files
    if not really:
        print(
            f"purge: the gateway's prefixes hold {purged.files} files, {others} other objects "
            f"(upload state, public library, thumbnails) and {purged.aborted} unfinished uploads "
            "of every user; run again with --all --yes to delete them all"
        )
        return 1
    log.info("purged every user: %d objects deleted, %d uploads aborted", purged.objects, purged.aborted)
    print(
        f"purge: deleted {purged.files} files and {others} other objects of every user, "
        f"and aborted {purged.aborted} unfinished uploads"
    )
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("purge", help="delete every file of one user (or of all: --all)")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--token", metavar="UUID", help="the user's token")
    who.add_argument("--all", action="store_true", help="every user: the whole of the gateway's prefixes")
    parser.add_argument("--yes", action="store_true", help="really delete (without it: only count)")
    parser.set_defaults(run=run)
