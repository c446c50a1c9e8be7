"""Sweeps over the bucket: what `gc` and `purge` do, with no argument parsing or printing.

`collect_garbage` aborts the multipart uploads the gateway started and never
finished (a crash, a kill -9, a lost abort) and expires resumable uploads past
their Upload-Expires. S3 keeps (and bills) the parts of an unfinished multipart
upload until it is aborted. Only uploads under the gateway's own prefixes are
touched, and only those started before the cut-off, so uploads in progress are
left alone as long as the age is longer than any upload takes.

`purge_user` removes everything of one user: files, resumable upload state and
unfinished multipart uploads.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time

from . import Storage
from .keys import FILES_ROOT, user_prefixes

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StaleUpload:
    key: str
    upload_id: str
    initiated: datetime.datetime


async def stale_uploads(
    storage: Storage, older_than: datetime.timedelta, *, keep: frozenset[str] | set[str] = frozenset()
) -> list[StaleUpload]:
    """Every multipart upload of files initiated more than `older_than` ago, but those in `keep`."""
    cutoff = datetime.datetime.now(datetime.UTC) - older_than
    return [
        StaleUpload(upload["Key"], upload["UploadId"], upload["Initiated"])
        async for page in storage.s3.list_multipart_uploads(FILES_ROOT)
        for upload in page
        if upload["Initiated"] <= cutoff and upload["UploadId"] not in keep
    ]


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


async def collect_garbage(storage: Storage, older_than: datetime.timedelta) -> Collected:
    """Expire tus uploads past their Upload-Expires, then abort other stale multipart uploads.

    A live tus upload's multipart upload may rightly sit idle for up to
    UPLOAD_EXPIRY, whatever `older_than` says, so its id is kept.
    """
    now = time.time()
    expired = await storage.resumable.expire(now)
    live = await storage.resumable.live_multipart_ids(now)
    return Collected(expired, await abort_stale_uploads(storage, older_than, keep=live))


@dataclasses.dataclass(frozen=True)
class Purged:
    objects: int  # files, and the state and tails of resumable uploads
    files: int
    aborted: int  # unfinished multipart uploads


async def purge_user(storage: Storage, uid: str, *, really: bool) -> Purged:
    """Everything the user has under every prefix: deleted if `really`, else only counted."""
    s3 = storage.s3
    keys = [key for prefix in user_prefixes(uid) for key in await s3.keys(prefix)]
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
