"""Completing a tus upload, and recovering one whose completion was cut off.

When the last byte arrives the record first says "completing" (with every
part's ETag), then CompleteMultipartUpload runs, then the record says "done"
and the tail and lock go. A process killed between those steps leaves
"completing": whoever reads the upload next (HEAD, PATCH, DELETE, gc) finishes
the job, and a multipart upload S3 no longer knows (NoSuchUpload) is taken as
completed.

CompleteMultipartUpload names each part's recorded ETag. If any part in S3 is
not the one committed (another writer overwrote it: possible without
conditional writes, or past a lost lock), S3 refuses with InvalidPart: the
upload is rolled back to its last part that does match (HEAD tells the client
where to resume) and nothing is stored. So the stored file is only ever made
of the parts one commit recorded, exactly as their writer sent them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ...ops import metrics
from ...sizes import MAX_PART_SIZE, MIN_PART_SIZE
from ..client import S3
from ..errors import FileNotFound, PartsChanged, StorageError, StorageFailure, UploadConflict
from ..landing import Finish, Landing
from ..parts import Part, PartPipeline
from ..quotas import Quotas
from .info import COMPLETING, DONE, OPEN, Records, Upload, recorded

log = logging.getLogger(__name__)

# Told when an upload made under an upload request ends unfinished (terminated, expired, refused
# at its end): the request's id and the bytes it held, which the request takes back (requests.py).
Released = Callable[[str, int], Awaitable[None]]


@dataclasses.dataclass(eq=False)
class Completion:
    """Turns a whole upload into its file, and says so (landing.py, the quota)."""

    s3: S3
    pipeline: PartPipeline
    records: Records
    quotas: Quotas
    landing: Landing
    _released: Released | None = None

    async def released(self, upload: Upload) -> None:
        """An unfinished upload is forgotten: the upload request it was made under (if any) gets
        its room back, one file and its length."""
        if upload.grant is not None and self._released is not None and upload.state != DONE:
            await self._released(upload.grant, upload.length or 0)

    async def size_before(self, upload: Upload) -> tuple[int | None, bool]:
        """The size of the file the upload will replace, and whether that is known for sure."""
        return await self.landing.replaced_size(upload.user, upload.key)

    async def stored(
        self, upload: Upload, etag: str, replaced: int | None, exact: bool, *, lease: bool = True
    ) -> None:
        """The upload's file is there: landing.py's, with its bytes in the quota."""
        size = upload.length or 0
        counted = self.quotas.upload_stored(
            upload.user, upload.key, upload.id if lease else None, size, replaced, exact=exact
        )
        # A file sent to an upload request keeps: its sender has no say in how long the owner keeps
        # it (as PUT /r/... ignores X-Expires-In).
        seconds = expires_in(upload.metadata) if upload.grant is None else None
        expires = time.time() + seconds if seconds is not None else None
        await self.landing.stored(upload.key, size, etag, counted, expires=expires)

    async def complete(
        self, upload: Upload, tail: Part | None, old_tail: str | None, vet: Finish | None = None
    ) -> None:
        """Complete a whole upload: `vet` (the pre-finish hook) may refuse it first; then its
        tail becomes the last part, then the record says "completing", then `finish`."""
        if vet is not None:
            try:
                await vet(upload.offset)
            except Exception:
                # Refused (or its hook failed): nothing is stored, the old file stays, and the
                # upload is forgotten with its multipart upload, tails and room in the quota.
                await asyncio.shield(self._refused(upload))
                raise
        if tail is not None and tail.size:
            part = await self.pipeline.upload_part(upload.key, upload.s3_upload_id, upload.parts + 1, tail)
            upload.add_parts([part])
        upload.tail = old_tail  # deleted once done
        upload.state = COMPLETING
        await self.records.write(upload)  # the intent: a crash from here on is finished by the next reader
        await self.finish(upload, tail, resumed=False)

    async def _refused(self, upload: Upload) -> None:
        """Forget a whole upload whose file may not be stored (the caller holds its lock)."""
        try:
            await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            await self.records.delete_all(upload)  # its info, tails and lock
        finally:
            await self.quotas.upload_ended(upload.user, upload.id)
        await self.released(upload)  # once it is surely gone: else gc's terminate gives it back

    async def finish(self, upload: Upload, tail: Part | None = None, *, resumed: bool = True) -> None:
        """Complete the multipart upload of a "completing" upload, and mark it done.

        `tail`: the last part's bytes, when the caller still has them (see
        `_complete_past_strays`). `resumed`: another request left the upload
        completing (its process died), so the file may be there already and
        the size it replaced is not known for sure.
        """
        replaced, exact = (None, True) if upload.partial else await self.size_before(upload)
        exact = exact and not resumed
        etag: str | None = None
        if upload.parts:
            parts = [{"PartNumber": n, **part} for n, part in enumerate(upload.etags, start=1)]
            try:
                etag = (await self.s3.complete_multipart_upload(upload.key, upload.s3_upload_id, parts))[
                    "ETag"
                ]
            except FileNotFound:
                pass  # NoSuchUpload: it was completed, and the process died before saying so
            except PartsChanged:
                if not await self._complete_past_strays(upload, parts, tail):
                    await self._roll_back(upload)
                    raise UploadConflict(
                        "another request overwrote part of this upload; resume from HEAD's offset"
                    ) from None
        else:
            # A deferred length that ended at 0 bytes: S3 cannot complete a
            # multipart upload without parts, so the empty file is put instead.
            await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            etag = (await self.s3.put_object(upload.key, b""))["ETag"]
        tail_key, upload.tail, upload.state = upload.tail, None, DONE
        try:
            await self.records.write(upload)
        except UploadConflict:
            # Someone else finished it first (a HEAD racing the PATCH that completed it).
            upload_now = await self.records.read(upload.user, upload.id)
            if upload_now.state != DONE:
                raise
            upload.version = upload_now.version
            return
        if tail_key:
            await self.records.delete_quietly(tail_key)
        if upload.partial:  # its bytes wait, under its lease, for a final upload (concat.py)
            log.info("tus partial upload %s completed", upload.id)
            return
        if etag is None:  # completed by a process that died, or trimmed past stray parts
            etag = await self._etag(upload.key)
        # A final upload has no lease of its own: its partial uploads' leases hold its bytes until
        # they are removed just after this (concat.py).
        await self.stored(upload, etag, replaced, exact, lease=not upload.partials)
        metrics.UPLOADS_COMPLETED.labels("tus").inc()
        log.info("tus upload %s completed", upload.id)

    async def _complete_past_strays(
        self, upload: Upload, parts: list[dict[str, Any]], tail: Part | None
    ) -> bool:
        """Complete the multipart upload from `parts`, where S3 insists on parts left past them;
        False if the parts S3 holds are not those recorded (another writer's: roll back instead).

        A PATCH that failed after sending parts (an Upload-Checksum mismatch,
        say) leaves them in the multipart upload. The next PATCHes overwrite
        them, unless the upload ends before their numbers: a deferred length
        declared shorter than what the failed PATCH sent. AWS, MinIO and moto
        drop the parts a completion leaves out; Ceph RGW 16 refuses such a
        completion (InvalidPart, "total parts mismatch"), and S3 has no call
        to delete one part. Then the upload is completed with every part, so
        that the object holds the stray bytes past its length, and rewritten
        at once from its first `length` bytes by a new multipart upload of
        server-side copies (UploadPartCopy, at most 5 GiB a part): no byte
        passes through the gateway again. A last part under 5 MiB, no longer
        the last, is sent again padded to 5 MiB (S3's minimum for every part
        but the last) from `tail`; its bytes stay where the trimmed object
        wants them. Between the two completions a reader may see the longer
        object.
        """
        listed = {
            part["PartNumber"]: {"PartNumber": part["PartNumber"], "Size": part["Size"], **recorded(part)}
            async for page in self.s3.list_parts(upload.key, upload.s3_upload_id)
            for part in page
        }
        if any(listed.get(part["PartNumber"], {}).get("ETag") != part["ETag"] for part in parts):
            return False
        length = upload.length
        if len(listed) <= len(parts) or not length:
            return False
        log.info("tus upload %s: completing past %d stray parts", upload.id, len(listed) - len(parts))
        last = len(parts)
        if listed[last]["Size"] < MIN_PART_SIZE:
            if tail is None or tail.size != listed[last]["Size"]:
                raise StorageError("the upload's last part is not at hand to complete it past stray parts")
            padded = self.pipeline.new_part(upload.user)
            try:
                body = tail.body()
                await padded.add(body if isinstance(body, bytes) else body.read())
                await padded.add(bytes(MIN_PART_SIZE - tail.size))
                padded.finish()
                listed[last] = await self.pipeline.upload_part(upload.key, upload.s3_upload_id, last, padded)
            finally:
                padded.release()
        every = [{k: v for k, v in listed[n].items() if k != "Size"} for n in sorted(listed)]
        await self.s3.complete_multipart_upload(upload.key, upload.s3_upload_id, every)
        trim_id = await self.s3.create_multipart_upload(upload.key)
        try:
            copies = [
                await self.s3.upload_part_copy(
                    upload.key, trim_id, number, upload.key, first, min(first + MAX_PART_SIZE, length) - 1
                )
                for number, first in enumerate(range(0, length, MAX_PART_SIZE), start=1)
            ]
            await self.s3.complete_multipart_upload(upload.key, trim_id, copies)
        except BaseException:
            await asyncio.shield(self.s3.abort_multipart_upload(upload.key, trim_id))
            raise
        return True

    async def _roll_back(self, upload: Upload) -> None:
        """Back to the last part S3 holds as recorded: what a writer that lost a race overwrote
        (only possible without conditional writes, or past a lost lock) is given up."""
        listed = {
            part["PartNumber"]: part["ETag"]
            async for page in self.s3.list_parts(upload.key, upload.s3_upload_id)
            for part in page
        }
        good = 0
        for number, part in enumerate(upload.etags, start=1):
            if listed.get(number) != part["ETag"]:
                break
            good = number
        upload.etags = upload.etags[:good]
        if upload.tail:
            await self.records.delete_quietly(upload.tail)
        upload.parts = good
        upload.offset = upload.bytes_in_parts(good)
        upload.tail = None
        upload.state = OPEN
        log.warning("tus upload %s: parts overwritten by another writer; back to part %d", upload.id, good)
        with contextlib.suppress(UploadConflict):
            await self.records.write(upload)

    async def _etag(self, key: str) -> str:
        try:
            return str((await self.s3.head_object(key))["ETag"])
        except StorageFailure:
            return ""


def expires_in(metadata: str) -> int | None:
    """The `expires_in` of an upload's Upload-Metadata (checked when the upload was created):
    seconds the file lives once stored; None without one."""
    for item in metadata.split(","):
        key, _, encoded = item.strip().partition(" ")
        if key == "expires_in" and encoded.strip():
            try:
                return int(base64.b64decode(encoded.strip()).decode("ascii"))
            except (ValueError, UnicodeDecodeError):
                return None
    return None
