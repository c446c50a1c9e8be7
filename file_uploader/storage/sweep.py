"""Sweeps over the bucket: what `gc` and `purge` do, with no argument parsing or printing.

`collect_garbage` aborts the multipart uploads the gateway started and never
finished (a crash, a kill -9, a lost abort) and expires resumable uploads past
their Upload-Expires. S3 keeps (and bills) the parts of an unfinished multipart
upload until it is aborted. Only uploads under the gateway's own prefixes are
touched, and only those started before the cut-off, so uploads in progress are
left alone as long as the age is longer than any upload takes.

`purge_user` removes everything of one user: files, resumable upload state,
unfinished multipart uploads, public library entries, thumbnails and the quota
ledger. Purges emit no `file.deleted` events: they are an operator's
teardown, and a receiver should not be flooded with one event per file.
`purge_all` removes everything of every user: all the gateway's roots (keys.ROOTS),
and nothing else in the bucket. `delete_folder` removes one folder of one user.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import time
from typing import Any

from . import Storage
from .errors import FileNotFound, FolderNotFound
from .keys import (
    FILES_ROOT,
    LIBRARY_ROOT,
    LINK_INDEX_ROOT,
    LINKS_ROOT,
    PUBLIC_ROOT,
    REMOVED_ROOT,
    REQUEST_INDEX_ROOT,
    REQUESTS_ROOT,
    ROOTS,
    split_file_key,
    user_prefix,
    user_prefixes,
)
from .landing import Removed

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StaleUpload:
    key: str
    upload_id: str
    initiated: datetime.datetime
    last_active: datetime.datetime  # its newest part's upload, or `initiated` if it has none


async def stale_uploads(
    storage: Storage, older_than: datetime.timedelta, *, keep: frozenset[str] | set[str] = frozenset()
) -> list[StaleUpload]:
    """Every multipart upload of files with no sign of life for `older_than`, but those in `keep`.

    An upload's age is judged by the later of its Initiated date and its newest
    part's LastModified (ListParts, asked only of uploads initiated before the
    cut-off). A PUT in flight uploads a part every few seconds, so it is never
    taken for abandoned, whatever its Initiated says: moto reports every upload
    as initiated in 2010, and gc there aborted every PUT in flight (issue 20,
    row 18); the parts' dates are real on moto, Ceph RGW and AWS alike.
    """
    cutoff = datetime.datetime.now(datetime.UTC) - older_than
    candidates = [
        upload
        async for page in storage.s3.list_multipart_uploads(FILES_ROOT)
        for upload in page
        if upload["Initiated"] <= cutoff and upload["UploadId"] not in keep
    ]
    stale = []
    for upload in candidates:
        last_active = upload["Initiated"]
        try:
            async for parts in storage.s3.list_parts(upload["Key"], upload["UploadId"]):
                last_active = max([last_active, *(part["LastModified"] for part in parts)])
        except FileNotFound:  # NoSuchUpload: completed or aborted since it was listed
            continue
        if last_active <= cutoff:
            stale.append(StaleUpload(upload["Key"], upload["UploadId"], upload["Initiated"], last_active))
    return stale


async def abort_stale_uploads(
    storage: Storage, older_than: datetime.timedelta, *, keep: frozenset[str] | set[str] = frozenset()
) -> list[StaleUpload]:
    """Abort the uploads `stale_uploads` finds; return those aborted.

    Listed in full first, so that aborting does not shift the pages being read.
    """
    found = await stale_uploads(storage, older_than, keep=keep)
    return [
        upload for upload in found if await storage.s3.abort_multipart_upload(upload.key, upload.upload_id)
    ]


@dataclasses.dataclass(frozen=True)
class Collected:
    expired_tus_uploads: int
    aborted: list[StaleUpload]
    expired_files: int = 0
    expired_grants: int = 0  # share links and upload requests, EXPIRED_GRANTS_KEPT past their expiry


async def collect_garbage(storage: Storage, older_than: datetime.timedelta) -> Collected:
    """Expire tus uploads past their Upload-Expires, then abort other stale multipart uploads.

    A live tus upload's multipart upload may rightly sit idle for up to
    UPLOAD_EXPIRY_SECONDS, whatever `older_than` says, so its id is kept.
    """
    now = time.time()
    expired = await storage.resumable.expire(now)
    live = await storage.resumable.live_multipart_ids(now)
    aborted = await abort_stale_uploads(storage, older_than, keep=live)
    # Direct-to-S3 uploads (direct.py): their multipart uploads were aborted above like any other.
    await storage.direct.forget_abandoned(older_than)
    await _forget_old_removals(storage, now)
    expired_files = await delete_expired_files(storage, now)
    return Collected(expired, aborted, expired_files, await forget_expired_grants(storage, now))


# An expired share link or upload request stays listed (GET /api/links, /api/requests: "expired":
# true) this long, so that its owner sees it ran out (and what it served or took) rather than
# find it gone; then gc deletes its record, as a revoke would.
EXPIRED_GRANTS_KEPT = datetime.timedelta(days=7)


async def forget_expired_grants(storage: Storage, now: float) -> int:
    """Delete the links and upload requests that expired more than EXPIRED_GRANTS_KEPT before
    `now`; how many."""
    before = now - EXPIRED_GRANTS_KEPT.total_seconds()
    return await storage.links.grants.forget_expired(before) + await storage.requests.grants.forget_expired(
        before
    )


async def delete_expired_files(storage: Storage, now: float) -> int:
    """Delete the files whose expiry has come (expiry.py), as a DELETE would (their event, their
    bytes off the quota, the library); the markers of files since replaced or deleted go too."""
    deleted = 0
    for key, expiring in await storage.expiry.due(now):
        uid, name = split_file_key(key)
        try:
            info = await storage.s3.head_object(key)
        except FileNotFound:
            info = None
        if info is not None and info["ETag"] == expiring.etag:
            try:
                await storage.files.delete(key, expired=True)  # the marker goes with the file (landing.py)
                deleted += 1
            except FileNotFound:
                pass
            continue
        if await storage.expiry.of(uid, name) == expiring:  # not written anew meanwhile
            await storage.expiry.forget(uid, name)
    return deleted


# Removal claims (landing.py) are kept this long: any DELETE racing the one that made a claim
# has long finished by then.
REMOVALS_KEPT = datetime.timedelta(days=1)


async def _forget_old_removals(storage: Storage, now: float) -> None:
    cutoff = now - REMOVALS_KEPT.total_seconds()
    old = [
        item["Key"]
        async for page in storage.s3.list_objects(REMOVED_ROOT)
        for item in page
        if item["LastModified"].timestamp() < cutoff
    ]
    await storage.s3.delete_objects(old)


@dataclasses.dataclass(frozen=True)
class Purged:
    objects: int  # files, and the state and tails of resumable uploads
    files: int
    aborted: int  # unfinished multipart uploads


async def _library_entries(storage: Storage, markers: list[str]) -> list[str]:
    """The library entries that the public markers `markers` name."""

    async def entry(marker: str) -> str | None:
        try:
            return LIBRARY_ROOT + json.loads(await storage.s3.read_object(marker))["id"]
        except (FileNotFound, ValueError, KeyError):
            return None

    return [key for key in await asyncio.gather(*(entry(marker) for marker in markers)) if key]


async def purge_user(storage: Storage, uid: str, *, really: bool) -> Purged:
    """Everything the user has under every prefix: deleted if `really`, else only counted."""
    s3 = storage.s3
    keys = [key for prefix in user_prefixes(uid) for key in await s3.keys(prefix)]
    # The user's library entries live under library/, named by their public markers; their
    # share links' records under links/, named by the user's link index.
    keys += await _library_entries(storage, [key for key in keys if key.startswith(PUBLIC_ROOT)])
    keys += [LINKS_ROOT + key.rsplit("/", 1)[1] for key in keys if key.startswith(LINK_INDEX_ROOT)]
    keys += [REQUESTS_ROOT + key.rsplit("/", 1)[1] for key in keys if key.startswith(REQUEST_INDEX_ROOT)]
    files = sum(key.startswith(FILES_ROOT) for key in keys)
    uploads = [
        upload
        for prefix in user_prefixes(uid)
        async for page in s3.list_multipart_uploads(prefix)
        for upload in page
    ]
    if not really:
        return Purged(len(keys), files, len(uploads))
    # Uploads first: a resumable upload whose state is gone could not be aborted by its owner.
    aborted = sum([await s3.abort_multipart_upload(upload["Key"], upload["UploadId"]) for upload in uploads])
    await s3.delete_objects(keys)
    return Purged(len(keys), files, aborted)


async def purge_all(storage: Storage, *, really: bool) -> Purged:
    """Everything of every user, under every root the gateway writes: deleted if `really`,
    else only counted. Keys outside those roots are not the gateway's and stay.

    Deleted a listing page at a time, so a bucket of millions of keys needs no
    more memory than one page.
    """
    s3 = storage.s3
    uploads = [upload for root in ROOTS async for page in s3.list_multipart_uploads(root) for upload in page]
    if not really:
        objects = files = 0
        for root in ROOTS:
            async for page in s3.list_objects(root):
                objects += len(page)
                files += len(page) if root == FILES_ROOT else 0
        return Purged(objects, files, len(uploads))
    aborted = sum([await s3.abort_multipart_upload(upload["Key"], upload["UploadId"]) for upload in uploads])
    objects = files = 0
    for root in ROOTS:
        deleted = await s3.delete_prefix(root)
        objects += deleted
        files += deleted if root == FILES_ROOT else 0
    return Purged(objects, files, aborted)


@dataclasses.dataclass(frozen=True)
class FolderDeleted:
    files: int
    aborted: int  # unfinished uploads (tus and multipart) that would have stored a file there


async def delete_folder(storage: Storage, uid: str, folder: str) -> FolderDeleted:
    """Delete every file of the user under `folder` (a name ending in /), with what goes
    with them: public library entries, thumbnails, unfinished uploads aimed there.

    FolderNotFound if there was nothing to delete.
    """
    s3 = storage.s3
    prefix = user_prefix(uid) + folder
    # Out of the public library first: a file is never public for longer than it exists.
    await storage.library.unpublish_folder(uid, folder)
    aborted = await storage.resumable.terminate_folder(uid, folder)
    uploads = [upload async for page in s3.list_multipart_uploads(prefix) for upload in page]
    aborted += sum([await s3.abort_multipart_upload(upload["Key"], upload["UploadId"]) for upload in uploads])
    gone: list[Removed] = []

    def deleted(page: list[dict[str, Any]]) -> None:
        gone.extend(Removed(item["Key"], item["Size"], item["ETag"], item["LastModified"]) for item in page)

    try:
        files = await s3.delete_prefix(prefix, on_deleted=deleted)
    finally:
        # One file.deleted event per file, its size off the quota: what follows each (landing.py).
        await storage.landing.removed(uid, gone, folder=True)
    await storage.thumbnails.forget_folder(uid, folder, [split_file_key(file.key)[1] for file in gone])
    if not files and not aborted:
        raise FolderNotFound("nothing is stored under this folder")
    return FolderDeleted(files, aborted)
