"""The end of tus uploads: terminated (DELETE, a folder deleted), or expired (gc).

An upload that nobody PATCHes past its expiry (UPLOAD_EXPIRY_SECONDS) is aborted by
gc; until then its multipart upload may rightly sit idle, so gc's sweep of
stale multipart uploads must skip it (`live_multipart_ids`).
"""

from __future__ import annotations

import asyncio
import logging

from ..client import S3
from ..errors import UploadLocked
from ..keys import UPLOADS_ROOT
from ..quotas import Quotas
from .completion import Completion
from .info import COMPLETING, DONE, Records, Upload
from .lock import Locks

log = logging.getLogger(__name__)


class Housekeeping:
    """Forgetting uploads: one, a folder's, or every expired one."""

    def __init__(
        self, s3: S3, records: Records, locks: Locks, completion: Completion, quotas: Quotas
    ) -> None:
        self.s3 = s3
        self.records = records
        self.locks = locks
        self.completion = completion
        self.quotas = quotas

    async def terminate(self, upload: Upload) -> None:
        """Forget the upload; an unfinished one is aborted (a finished one's file stays; a finished
        partial upload's bytes go with it)."""
        lock = await self.locks.take(upload)
        try:
            if upload.state != DONE:
                await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            await self.records.delete_all(upload)  # the lock with it
        except BaseException:
            await asyncio.shield(lock.release())
            raise
        if upload.state != DONE or upload.partial:  # a partial upload's lease holds its bytes until now
            await self.quotas.upload_ended(upload.user, upload.id)
        await self.completion.released(upload)

    async def terminate_folder(self, user: str, folder: str) -> int:
        """Terminate the user's uploads that would store a file under `folder`; how many."""
        doomed = [
            upload
            async for upload in self.records.all(f"{UPLOADS_ROOT}{user}/")
            if upload.name.startswith(folder)
        ]
        for upload in doomed:
            await self.terminate(upload)
        return len(doomed)

    async def expire(self, now: float) -> int:
        """Forget every upload whose expiry is before `now` (aborting unfinished ones); how many."""
        expired = [upload async for upload in self.records.all() if upload.expires < now]
        count = 0
        for upload in expired:
            try:
                if upload.state == COMPLETING:
                    await self.completion.finish(upload)
                await self.terminate(upload)
            except UploadLocked:
                continue  # a PATCH is running: it is not expired after all
            count += 1
            log.info("expired tus upload %s", upload.id)
        return count

    async def live_multipart_ids(self, now: float) -> set[str]:
        """The S3 UploadIds of unexpired, unfinished uploads.

        A tus upload's multipart upload may rightly sit idle for up to
        UPLOAD_EXPIRY_SECONDS: a sweep of stale multipart uploads must skip these ids.
        """
        return {
            upload.s3_upload_id
            async for upload in self.records.all()
            if upload.state != DONE and upload.expires >= now
        }
