"""`Resumable`: the tus store, as the rest of the gateway sees it (create, get, terminate, and what
gc asks; `appender` and `concatenation` write an upload's bytes), composed of this package's rooms."""

from __future__ import annotations

import asyncio

from ...sizes import LEASE_SECONDS, format_size
from ..client import S3
from ..errors import TooLarge, UploadExpired, UploadNotFound
from ..keys import validate_name
from ..landing import Finish, Landing
from ..parts import PartPipeline
from ..quotas import Quotas
from .completion import Completion, Released
from .concat import Concatenation
from .housekeeping import Housekeeping
from .info import COMPLETING, DONE, OPEN, Records, Upload, is_upload_id
from .lock import Locks
from .upload import Appender, lease_end


class Resumable:
    """tus uploads in one bucket, through the process's part pipeline."""

    def __init__(
        self,
        s3: S3,
        pipeline: PartPipeline,
        *,
        expiry: float,
        max_size: int,
        quotas: Quotas,
        landing: Landing,
        lock_seconds: float = LEASE_SECONDS,
        released: Released | None = None,
    ) -> None:
        self.s3 = s3
        self.pipeline = pipeline
        # USER_QUOTA: an upload's lease (quotas.tus_lease) holds its Upload-Length from creation
        # (or, deferred, the bytes it has) until it completes, is terminated or expires.
        self.quotas = quotas
        self.expiry = expiry
        self.max_size = max_size
        self.records = Records(s3)
        self.locks = Locks(s3, lock_seconds)
        # `released`: an upload request's room back, when an upload made under it ends unfinished.
        self.completion = Completion(s3, pipeline, self.records, quotas, landing, released)
        # Writing an upload's bytes: PATCH (upload.py) and final uploads (concat.py), which the
        # handlers call directly.
        writer = (s3, pipeline, self.records, self.locks, self.completion, quotas)
        self.appender = Appender(*writer, expiry=expiry, max_size=max_size)
        self.concatenation = Concatenation(*writer, expiry=expiry, max_size=max_size)
        self.housekeeping = Housekeeping(s3, self.records, self.locks, self.completion, quotas)

    @property
    def lock_seconds(self) -> float:
        """How long a writer's lock lasts unless renewed (LEASE_SECONDS)."""
        return self.locks.seconds

    @lock_seconds.setter
    def lock_seconds(self, seconds: float) -> None:
        self.locks.seconds = seconds

    async def create(
        self,
        user: str,
        name: str,
        length: int | None,
        metadata: str,
        now: float,
        *,
        max_size: int | None = None,
        finish: Finish | None = None,
        partial: bool = False,
        grant: str | None = None,
    ) -> Upload:
        """Start an upload of `length` bytes (None: declared later) to be stored as `name`.
        `max_size`: its own limit, below MAX_FILE_SIZE; `finish`: awaited with the file's size
        just before it is stored (a length of 0 is stored at once), and may refuse it by raising.
        `partial`: one whose bytes wait for a final upload to name it (concat.py; no name).
        `grant`: the upload request it is made under, which has taken its room (requests.py)."""
        if partial:
            name = ""
        else:
            validate_name(name)
        limit = min(self.max_size, max_size) if max_size is not None else self.max_size
        if length is not None and length > limit:
            raise TooLarge(f"the limit is {format_size(limit)}")
        plan = self.pipeline.plan
        if length is not None and length > plan.capacity(length):
            raise self.pipeline.too_many_parts(length)
        upload = Upload.new(
            user,
            name,
            length,
            metadata,
            expires=now + self.expiry,
            part_size=plan.first(length),
            grow=length is None and plan.grows,
            step=plan.step,
            max_size=max_size,
            partial=partial,
            grant=grant,
        )
        if length == 0:
            # Nothing will ever be PATCHed, and S3 cannot complete a multipart
            # upload without parts: the empty file is stored now, and the
            # upload is done from the start.
            if finish is not None:
                await finish(0)
            replaced, exact = await self.completion.size_before(upload)
            etag = (await self.s3.put_object(upload.key, b""))["ETag"]
            upload.state = DONE
            await self.records.write(upload, new=True)
            if not partial:
                await self.completion.stored(upload, etag, replaced, exact, lease=False)
            return upload
        if length is not None:
            # Before anything is created: an upload that does not fit is refused with nothing to undo.
            replaces = (await self.completion.size_before(upload))[0]
            await self.quotas.reserve_upload(
                user, upload.key, upload.id, length, lease_end(now, self.expiry), replaces
            )
        try:
            upload.s3_upload_id = await self.s3.create_multipart_upload(
                upload.key, **self.pipeline.create_params()
            )
            await self.records.write(upload, new=True)
        except BaseException:
            await asyncio.shield(self.quotas.upload_ended(user, upload.id))
            raise
        return upload

    async def get(self, user: str, upload_id: str, now: float, *, grant: str | None = None) -> Upload:
        """The user's upload `upload_id`; another user's id is as unknown as a made-up one.
        `grant`: only an upload made under that upload request (any other is as unknown).

        An upload left "completing" (its process died mid-completion) is finished first.
        """
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        upload = await self.records.read(user, upload_id)
        if grant is not None and upload.grant != grant:
            raise UploadNotFound("no such upload")
        if upload.state == COMPLETING:
            await self.completion.finish(upload)
        if upload.state == OPEN and upload.expires < now:
            raise UploadExpired("the upload has expired")
        return upload

    async def terminate(self, upload: Upload) -> None:
        """Forget the upload; an unfinished one is aborted (a finished one's file stays)."""
        await self.housekeeping.terminate(upload)

    async def terminate_folder(self, user: str, folder: str) -> int:
        return await self.housekeeping.terminate_folder(user, folder)

    async def expire(self, now: float) -> int:
        return await self.housekeeping.expire(now)

    async def live_multipart_ids(self, now: float) -> set[str]:
        return await self.housekeeping.live_multipart_ids(now)
