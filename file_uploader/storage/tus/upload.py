"""Appending to a tus upload: a PATCH's bytes through the part pipeline, then one commit.

A PATCH takes the upload's lock (lock.py), streams the old tail and then its
body through the part pipeline (parts.py), which uploads every full part as it
fills, and commits: put the new tail, rewrite the record, delete the old tail.

The tail is the bytes past the last full part (less than one part): S3 parts
but the last must be at least 5 MiB, while a tus PATCH may carry any number of
bytes, so the tail (``<id>.part.<offset>.<random>``) waits for the next PATCH.
Its name is new at each commit, so two writers never write the same tail.

Only the record says what is committed, so a PATCH that fails midway (S3
error, checksum mismatch) leaves the upload as it was. A body cut off midway
commits what arrived (as tusd does), unless it carried a checksum that now
cannot be verified; a PATCH cancelled by a graceful stop commits the parts S3
already has. The upload's last byte hands it to completion.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ...sizes import format_size
from ..cas import HeldLock
from ..checksums import Crc32, Crc32c, Hasher
from ..client import S3
from ..errors import (
    ChecksumMismatch,
    FileNotFound,
    FinalUpload,
    LengthConflict,
    OffsetMismatch,
    StorageFailure,
    TooLarge,
    UploadConflict,
)
from ..landing import Finish
from ..parts import Part, PartPipeline
from ..quotas import NO_RESERVATION, Quotas, Reservation
from .completion import Completion
from .info import COMPLETING, DONE, OPEN, Records, Upload
from .lock import Locks

log = logging.getLogger(__name__)

# tus checksum extension: the algorithms a client may name in Upload-Checksum, each digest
# base64-encoded there (a CRC as its 4 bytes, big-endian, as S3's x-amz-checksum-crc32 has it).
# crc32, crc32c and sha512 are what tuspy adds; the CRCs are those of the part pipeline's checksums.
UPLOAD_CHECKSUMS: dict[str, Callable[[], Hasher]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "md5": hashlib.md5,
    "crc32": Crc32,
    "crc32c": Crc32c,
}


def lease_end(now: float, expiry: float) -> float:
    """Where a tus upload's lease in the quota is made to end: past the upload's own expiry
    (now + UPLOAD_EXPIRY_SECONDS) by a quarter of it, so that a PATCH renews it at most once in that
    quarter, and an abandoned upload holds its room no longer than that after it expired."""
    return now + 1.25 * expiry


FINAL_TAKES_NO_PATCH = (
    "a final upload (Upload-Concat: final) takes no PATCH: its bytes are its partial uploads'"
)


class Body:
    """A PATCH body as the store reads it: held to the bytes the upload has room for,
    hashed for Upload-Checksum, and ended rather than failed when the client's
    connection drops, so that what arrived can be kept."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        room: int,
        checksum: tuple[str, bytes] | None,
        past_room: str = "the bytes run past the upload's length",
    ) -> None:
        self._chunks = chunks
        self._room = room
        self._past_room = past_room
        self.digest = UPLOAD_CHECKSUMS[checksum[0]]() if checksum else None
        self.received = 0
        self.cut: Exception | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        iterator = self._chunks.__aiter__()
        while True:
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except Exception as exc:  # the body ended early: keep what arrived
                self.cut = exc
                return
            self.received += len(chunk)
            if self.received > self._room:
                raise TooLarge(self._past_room)
            if self.digest is not None:
                self.digest.update(chunk)
            yield chunk


async def _chain(*streams: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for stream in streams:
        async for chunk in stream:
            yield chunk


async def _nothing() -> AsyncGenerator[bytes]:
    return
    yield  # an async generator that yields nothing


def check_offset(upload: Upload, offset: int, length: int | None) -> None:
    """The PATCH is at the upload's offset, and a length it declares fits what is there."""
    if offset != upload.offset:
        raise OffsetMismatch(upload.offset)
    if length is not None:
        if upload.length is not None and length != upload.length:
            raise LengthConflict(f"the upload's length is {upload.length}")
        if length < upload.offset:
            raise LengthConflict(f"the upload already has {upload.offset} bytes")


@dataclasses.dataclass(eq=False)
class Writer:
    """What writes an upload's bytes needs, the same for PATCH (Appender) and for joining
    partial uploads (concat.Concatenation): S3, the part pipeline, the records, their locks,
    completion, quotas, and the limits on an upload's life and size."""

    s3: S3
    pipeline: PartPipeline
    records: Records
    locks: Locks
    completion: Completion
    quotas: Quotas
    _: dataclasses.KW_ONLY
    expiry: float
    max_size: int


class Appender(Writer):
    """PATCH: the bytes appended and committed under the upload's lock."""

    async def append(
        self,
        upload: Upload,
        offset: int,
        chunks: AsyncIterator[bytes],
        *,
        now: float,
        length: int | None = None,
        checksum: tuple[str, bytes] | None = None,
        finish: Finish | None = None,
    ) -> Upload:
        """Append `chunks` at `offset`; commit, or complete the upload if it is whole.

        `length` declares a deferred length; `checksum` is (algorithm, digest)
        of the whole body, checked before anything is committed. `finish` is awaited with the
        file's size before a whole upload is completed; should it raise, the upload is
        forgotten (its multipart upload aborted, nothing stored) and the error raised.
        """
        if upload.partials:
            raise FinalUpload(FINAL_TAKES_NO_PATCH)
        limit = upload.limit(self.max_size)
        if length is not None and length > limit:
            raise TooLarge(f"the limit is {format_size(limit)}")
        check_offset(upload, offset, length)
        if length is not None and length > upload.capacity(self.pipeline.plan.max_parts):
            raise self.pipeline.too_many_parts(None)
        if upload.state == DONE:
            if await anext(aiter(chunks), b""):
                raise TooLarge("the upload is complete")
            return upload
        with self.pipeline.upload(upload.user, "tus"):
            lock = await self.locks.take(upload)
            try:
                # Read again under the lock: what was read before may be a commit behind.
                upload = await self.records.read(upload.user, upload.id)
                if upload.state == COMPLETING:
                    await self.completion.finish(upload)
                check_offset(upload, offset, length)
                if length is not None:
                    upload.length = length
                room = await self._room(upload, now)
                keeper = asyncio.create_task(lock.keep())
                try:
                    if upload.length is None:  # its lease grows with the bytes, as far as the quota goes
                        chunks = room.meter(chunks, start=upload.offset)
                    return await self._append(upload, chunks, now, checksum, lock, finish)
                finally:
                    keeper.cancel()
                    await asyncio.gather(keeper, return_exceptions=True)
            finally:
                await asyncio.shield(lock.release())

    async def _room(self, upload: Upload, now: float) -> Reservation:
        """With a quota: the upload's lease holds its length (deferred: its offset) and lasts past
        its next expiry; QuotaExceeded before the body when it cannot."""
        if not self.quotas.enabled_for(upload.user) or upload.state != OPEN:
            return NO_RESERVATION
        need = upload.length if upload.length is not None else upload.offset
        return await self.quotas.resume_upload(
            upload.user,
            upload.key,
            upload.id,
            need,
            until=lease_end(now, self.expiry),
            renew_before=now + self.expiry,
        )

    async def _append(
        self,
        upload: Upload,
        chunks: AsyncIterator[bytes],
        now: float,
        checksum: tuple[str, bytes] | None,
        lock: HeldLock,
        finish: Finish | None = None,
    ) -> Upload:
        end = upload.limit(self.max_size) if upload.length is None else upload.length
        capacity = upload.capacity(self.pipeline.plan.max_parts)
        past = "the bytes run past the upload's length"
        if capacity < end:  # its parts hold less than its length may reach (S3_MAX_PARTS)
            end, past = capacity, str(self.pipeline.too_many_parts(None))
        body = Body(chunks, end - upload.offset, checksum, past)
        old_tail = upload.tail
        head: AsyncGenerator[bytes] = self.s3.stream_object(old_tail) if old_tail else _nothing()
        reader = self.pipeline.reader(_chain(head, body.chunks()), upload.user)
        sent: list[dict[str, Any]] = []
        try:
            _, tail = await self.pipeline.send(
                upload.key,
                upload.s3_upload_id,
                reader,
                number=upload.parts + 1,
                size_of=upload.size_of_part,
                keep_tail=True,
                sent=sent,
            )
        except asyncio.CancelledError:
            if body.digest is None:  # a checksum covers the whole body: nothing to keep
                await asyncio.shield(self._commit_sent(upload, sent, old_tail, now, lock, finish))
            raise
        except FileNotFound:
            # NoSuchUpload, or the old tail gone: another writer completed or
            # moved the upload on under us (only without conditional writes).
            raise UploadConflict("another request changed this upload; ask HEAD for its offset") from None
        finally:
            await head.aclose()  # gives back its S3 connection if the body failed midway
        assert tail is not None
        try:
            if body.cut is not None and body.digest is not None:
                raise body.cut  # the checksum covers the whole body: nothing to commit
            if body.digest is not None and checksum and body.digest.digest() != checksum[1]:
                raise ChecksumMismatch(f"the body's {checksum[0]} does not match Upload-Checksum")
            upload.add_parts(sent)
            upload.offset += body.received
            await self._commit(
                upload, tail, old_tail, now, lock, changed=bool(sent or body.received), finish=finish
            )
        finally:
            tail.release()
        if body.cut is not None:
            raise body.cut
        return upload

    async def _commit(
        self,
        upload: Upload,
        tail: Part,
        old_tail: str | None,
        now: float,
        lock: HeldLock,
        *,
        changed: bool,
        finish: Finish | None = None,
    ) -> None:
        if lock.lost:
            raise UploadConflict("the upload's lock was lost while writing; ask HEAD for its offset")
        if upload.done:
            await self.completion.complete(upload, tail, old_tail, finish)
            return
        upload.expires = now + self.expiry
        if not tail.size:
            upload.tail = None
        elif changed or old_tail is None:
            upload.tail = upload.new_tail_key()
            await self.pipeline.put_object(upload.tail, tail)
        await self.records.write(upload)
        if old_tail and old_tail != upload.tail:
            await self.records.delete_quietly(old_tail)

    async def _commit_sent(
        self,
        upload: Upload,
        sent: list[dict[str, Any]],
        old_tail: str | None,
        now: float,
        lock: HeldLock,
        finish: Finish | None = None,
    ) -> None:
        """A cancelled PATCH (a graceful stop): commit the parts S3 already has, in order from the
        first, and nothing past a gap (parts in flight complete in any order)."""
        if lock.lost:
            return
        by_number = {part["PartNumber"]: part for part in sent}
        kept: list[dict[str, Any]] = []
        while upload.parts + len(kept) + 1 in by_number:
            kept.append(by_number[upload.parts + len(kept) + 1])
        if not kept:
            return
        try:
            upload.add_parts(kept)
            upload.offset = upload.bytes_in_parts(upload.parts)
            upload.tail = None
            upload.expires = now + self.expiry
            if upload.done:
                await self.completion.complete(upload, None, old_tail, finish)
                return
            await self.records.write(upload)
            if old_tail:
                await self.records.delete_quietly(old_tail)
            log.info("tus upload %s: kept %d parts of a cancelled PATCH", upload.id, len(kept))
        except StorageFailure as exc:
            log.warning("could not commit the parts of a cancelled PATCH: %s", exc)
