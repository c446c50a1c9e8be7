"""Resumable (tus) uploads with all their state in S3, so any gateway process can continue one.

An upload is an S3 multipart upload aimed at the final key ``files/<user>/<name>``
(completing it replaces an older file atomically), plus small objects under
``uploads/<user>/<id>.``, as tusd's S3 store keeps them:

- ``<id>.info``: JSON state: name, length (None while deferred), the S3 upload
  id, part size, the committed parts **with the ETag S3 gave each**, the
  committed offset, the tail's key, and the upload's state (open,
  completing, done).
- ``<id>.part.<offset>.<random>``: the tail, the bytes past the last full part
  (less than one part). S3 parts but the last must be at least 5 MiB, while a
  tus PATCH may carry any number of bytes; the tail waits for the next PATCH.
  Its name is new at each commit, so two writers never write the same tail.
- ``<id>.lock``: who is writing to the upload, and until when.

A PATCH takes the lock, streams the old tail and then its body through the
part pipeline (parts.py), which uploads every full part as it fills, and
commits: put the new tail, rewrite the info, delete the old tail. Only the
info says what is committed, so a PATCH that fails midway (S3 error, checksum
mismatch) leaves the upload as it was. A body cut off midway commits what
arrived (as tusd does), unless it carried a checksum that now cannot be
verified; a PATCH cancelled by a graceful stop commits the parts S3 already
has. When the last byte arrives the info first says "completing" (with every
part's ETag), then CompleteMultipartUpload runs, then the info says "done"
and the tail and lock go. A process killed between those steps leaves
"completing": whoever reads the upload next (HEAD, PATCH, DELETE, gc) finishes
the job, and a multipart upload S3 no longer knows (NoSuchUpload) is taken as
completed. A done upload answers HEAD with its full offset until it expires.

**Racing writers.** Two PATCHes at the same offset would each upload the next
part numbers, S3 keeping whichever UploadPart came last for each number: a
file mixed from both bodies. Three things stop that:

1. The lock. With conditional writes, taking it is a PutObject of
   ``<id>.lock`` with ``If-None-Match: *``; a lock whose lease ran out (its
   process died) is taken over with ``If-Match`` on the ETag read, so of two
   takers one wins. The holder renews it every third of its lease (LEASE_SECONDS, cas.py);
   anyone else gets UploadLocked (423). This works across processes and hosts.
2. The info is rewritten with ``If-Match`` on the ETag it was read with, so a
   commit that another commit overtook fails (UploadConflict, 409) instead of
   overwriting it.
3. CompleteMultipartUpload names each part's recorded ETag. If any part in S3
   is not the one committed (another writer overwrote it), S3 refuses with
   InvalidPart: the upload is rolled back to its last part that does match
   (HEAD tells the client where to resume) and nothing is stored.

**Without conditional writes** (S3_CONDITIONAL_WRITES=0, for an S3 that
ignores or refuses them), the lock is written after checking that none is held
and read back to see whose it is; two writers within the same few
milliseconds can both believe they hold it, and the info's last writer wins.
What remains guaranteed is point 3: the stored file is only ever made of the
parts one commit recorded, exactly as their writer sent them; racing writers
may lose their work (409, then resume from HEAD's offset), never mix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ..ops import metrics
from ..sizes import LEASE_SECONDS, MAX_PART_SIZE, MIN_PART_SIZE, format_size, part_size_for
from .cas import HeldLock, LeaseLock, Locked, VersionedJson
from .client import S3
from .errors import (
    ChecksumMismatch,
    FileNotFound,
    LengthConflict,
    OffsetMismatch,
    PartsChanged,
    PreconditionFailed,
    StorageError,
    StorageFailure,
    TooLarge,
    UploadConflict,
    UploadExpired,
    UploadLocked,
    UploadNotFound,
)
from .keys import UPLOADS_ROOT, file_key, validate_name
from .landing import Finish, Landing
from .parts import Part, PartPipeline
from .quotas import NO_RESERVATION, Quotas, Reservation

log = logging.getLogger(__name__)

INFO_SUFFIX = ".info"
LOCK_SUFFIX = ".lock"
_ID_BYTES = 24  # 192 random bits: an upload URL cannot be guessed
_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")
# tus checksum extension: the algorithms a client may name in Upload-Checksum.
UPLOAD_CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}
OPEN, COMPLETING, DONE = "open", "completing", "done"
# What CompleteMultipartUpload wants of each part, besides its number.
_PART_FIELDS = ("ETag", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256")


def _recorded(part: dict[str, Any]) -> dict[str, str]:
    return {name: part[name] for name in _PART_FIELDS if name in part}


@dataclasses.dataclass
class Upload:
    id: str
    user: str
    name: str
    length: int | None  # None: deferred (creation-defer-length)
    metadata: str  # the Upload-Metadata header as created, echoed by HEAD
    s3_upload_id: str
    part_size: int
    grow: bool  # length unknown at creation: parts grow as a chunked PUT's do
    expires: float  # Unix time
    parts: int = 0  # committed full parts
    offset: int = 0  # committed bytes: the parts plus the tail
    # Each committed part's ETag (and checksum), parts 1..parts in order.
    etags: list[dict[str, str]] = dataclasses.field(default_factory=list)
    tail: str | None = None  # key of the tail object, if the offset is past the last part
    state: str = OPEN
    # The upload's own size limit, below MAX_FILE_SIZE, when a pre-create hook lowered it.
    max_size: int | None = None
    # The info's ETag as read: what the next rewrite must still find. Not stored.
    version: str | None = dataclasses.field(default=None, compare=False)

    @property
    def key(self) -> str:
        return file_key(self.user, self.name)

    @property
    def prefix(self) -> str:
        return f"{UPLOADS_ROOT}{self.user}/{self.id}."

    @property
    def info_key(self) -> str:
        return info_key(self.user, self.id)

    @property
    def lock_key(self) -> str:
        return f"{UPLOADS_ROOT}{self.user}/{self.id}{LOCK_SUFFIX}"

    def limit(self, max_size: int) -> int:
        """The most bytes this upload may hold: MAX_FILE_SIZE, or the lower limit it was given."""
        return max_size if self.max_size is None else min(max_size, self.max_size)

    @property
    def done(self) -> bool:
        return self.length is not None and self.offset == self.length

    def size_of_part(self, number: int) -> int:
        return part_size_for(None, self.part_size, number) if self.grow else self.part_size

    def bytes_in_parts(self, parts: int) -> int:
        return sum(self.size_of_part(n) for n in range(1, parts + 1))

    def new_tail_key(self) -> str:
        return f"{self.prefix}part.{self.offset}.{secrets.token_hex(4)}"

    def fields(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["version"]
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any], version: str) -> Upload:
        return cls(**fields, version=version)


def info_key(user: str, upload_id: str) -> str:
    return f"{UPLOADS_ROOT}{user}/{upload_id}{INFO_SUFFIX}"


def new_upload_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def is_upload_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


class _Body:
    """A PATCH body as the store reads it: held to the bytes the upload has room for,
    hashed for Upload-Checksum, and ended rather than failed when the client's
    connection drops, so that what arrived can be kept."""

    def __init__(self, chunks: AsyncIterator[bytes], room: int, checksum: tuple[str, bytes] | None) -> None:
        self._chunks = chunks
        self._room = room
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
                raise TooLarge("the bytes run past the upload's length")
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
    ) -> None:
        self.s3 = s3
        self.pipeline = pipeline
        # USER_QUOTA: an upload's lease (quotas.tus_lease) holds its Upload-Length from creation
        # (or, deferred, the bytes it has) until it completes, is terminated or expires.
        self.quotas = quotas
        self.landing = landing  # what follows a stored file
        self.expiry = expiry
        self.max_size = max_size
        self.lock_seconds = lock_seconds

    # State.

    async def _read(self, user: str, upload_id: str) -> Upload:
        found = await VersionedJson(self.s3, info_key(user, upload_id)).read()
        if found is None:
            raise UploadNotFound("no such upload")
        return Upload.from_fields(*found)

    async def _write(self, upload: Upload, *, new: bool = False) -> None:
        """Rewrite the info, if it is still the version read (compare-and-swap, cas.py)."""
        try:
            upload.version = await VersionedJson(self.s3, upload.info_key).write(
                upload.fields(), None if new else upload.version
            )
        except PreconditionFailed:
            raise UploadConflict("another request changed this upload; ask HEAD for its offset") from None

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
    ) -> Upload:
        """Start an upload of `length` bytes (None: declared later) to be stored as `name`.
        `max_size`: its own limit, below MAX_FILE_SIZE; `finish`: awaited with the file's size
        just before it is stored (a length of 0 is stored at once), and may refuse it by raising."""
        validate_name(name)
        limit = min(self.max_size, max_size) if max_size is not None else self.max_size
        if length is not None and length > limit:
            raise TooLarge(f"the limit is {format_size(limit)}")
        upload = Upload(
            id=new_upload_id(),
            user=user,
            name=name,
            length=length,
            metadata=metadata,
            s3_upload_id="",
            part_size=part_size_for(length, self.pipeline.part_size),
            grow=length is None,
            expires=now + self.expiry,
            max_size=max_size,
        )
        if length == 0:
            # Nothing will ever be PATCHed, and S3 cannot complete a multipart
            # upload without parts: the empty file is stored now, and the
            # upload is done from the start.
            if finish is not None:
                await finish(0)
            replaced, exact = await self._size_before(upload)
            etag = (await self.s3.put_object(upload.key, b""))["ETag"]
            upload.state = DONE
            await self._write(upload, new=True)
            await self._stored(upload, etag, replaced, exact, lease=False)
            return upload
        if length is not None:
            # Before anything is created: an upload that does not fit is refused with nothing to undo.
            replaces = (await self._size_before(upload))[0]
            await self.quotas.reserve_upload(
                user, upload.key, upload.id, length, self._lease_end(now), replaces
            )
        try:
            upload.s3_upload_id = await self.s3.create_multipart_upload(
                upload.key, **self.pipeline.create_params()
            )
            await self._write(upload, new=True)
        except BaseException:
            await asyncio.shield(self.quotas.upload_ended(user, upload.id))
            raise
        return upload

    async def _size_before(self, upload: Upload) -> tuple[int | None, bool]:
        return await self.landing.replaced_size(upload.user, upload.key)

    async def _stored(
        self, upload: Upload, etag: str, replaced: int | None, exact: bool, *, lease: bool = True
    ) -> None:
        """The upload's file is there: landing.py's, with its bytes in the quota."""
        size = upload.length or 0
        counted = self.quotas.upload_stored(
            upload.user, upload.key, upload.id if lease else None, size, replaced, exact=exact
        )
        await self.landing.stored(upload.key, size, etag, counted)

    async def get(self, user: str, upload_id: str, now: float) -> Upload:
        """The user's upload `upload_id`; another user's id is as unknown as a made-up one.

        An upload left "completing" (its process died mid-completion) is finished first.
        """
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        upload = await self._read(user, upload_id)
        if upload.state == COMPLETING:
            await self._finish(upload)
        if upload.state == OPEN and upload.expires < now:
            raise UploadExpired("the upload has expired")
        return upload

    async def terminate(self, upload: Upload) -> None:
        """Forget the upload; an unfinished one is aborted (a finished one's file stays)."""
        lock = await self._lock(upload)
        try:
            if upload.state != DONE:
                await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            await self._delete_state(upload)  # the lock with it
        except BaseException:
            await asyncio.shield(lock.release())
            raise
        if upload.state != DONE:
            await self.quotas.upload_ended(upload.user, upload.id)

    # Locks.

    async def _lock(self, upload: Upload) -> HeldLock:
        """Take the upload's lock (cas.LeaseLock), or raise UploadLocked."""
        try:
            return await LeaseLock(self.s3, upload.lock_key, seconds=self.lock_seconds).take()
        except Locked:
            raise UploadLocked("another request is writing to this upload; try again shortly") from None

    # Appending.

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
        limit = upload.limit(self.max_size)
        if length is not None and length > limit:
            raise TooLarge(f"the limit is {format_size(limit)}")
        self._check(upload, offset, length)
        if upload.state == DONE:
            if await anext(aiter(chunks), b""):
                raise TooLarge("the upload is complete")
            return upload
        with self.pipeline.upload(upload.user, "tus"):
            lock = await self._lock(upload)
            try:
                # Read again under the lock: what was read before may be a commit behind.
                upload = await self._read(upload.user, upload.id)
                if upload.state == COMPLETING:
                    await self._finish(upload)
                self._check(upload, offset, length)
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
            until=self._lease_end(now),
            renew_before=now + self.expiry,
        )

    def _lease_end(self, now: float) -> float:
        """Where a tus upload's lease in the quota is made to end: past the upload's own expiry
        (now + UPLOAD_EXPIRY) by a quarter of it, so that a PATCH renews it at most once in that
        quarter, and an abandoned upload holds its room no longer than that after it expired."""
        return now + 1.25 * self.expiry

    @staticmethod
    def _check(upload: Upload, offset: int, length: int | None) -> None:
        if offset != upload.offset:
            raise OffsetMismatch(upload.offset)
        if length is not None:
            if upload.length is not None and length != upload.length:
                raise LengthConflict(f"the upload's length is {upload.length}")
            if length < upload.offset:
                raise LengthConflict(f"the upload already has {upload.offset} bytes")

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
        body = _Body(chunks, end - upload.offset, checksum)
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
            self._add_parts(upload, sent)
            upload.offset += body.received
            await self._commit(
                upload, tail, old_tail, now, lock, changed=bool(sent or body.received), finish=finish
            )
        finally:
            tail.release()
        if body.cut is not None:
            raise body.cut
        return upload

    @staticmethod
    def _add_parts(upload: Upload, sent: list[dict[str, Any]]) -> None:
        numbers = sorted(part["PartNumber"] for part in sent)
        assert numbers == list(range(upload.parts + 1, upload.parts + 1 + len(sent))), numbers
        upload.etags += [_recorded(part) for part in sorted(sent, key=lambda part: part["PartNumber"])]
        upload.parts += len(sent)

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
            await self._complete(upload, tail, old_tail, finish)
            return
        upload.expires = now + self.expiry
        if not tail.size:
            upload.tail = None
        elif changed or old_tail is None:
            upload.tail = upload.new_tail_key()
            await self.pipeline.put_object(upload.tail, tail)
        await self._write(upload)
        if old_tail and old_tail != upload.tail:
            await self._delete_quietly(old_tail)

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
            self._add_parts(upload, kept)
            upload.offset = upload.bytes_in_parts(upload.parts)
            upload.tail = None
            upload.expires = now + self.expiry
            if upload.done:
                await self._complete(upload, None, old_tail, finish)
                return
            await self._write(upload)
            if old_tail:
                await self._delete_quietly(old_tail)
            log.info("tus upload %s: kept %d parts of a cancelled PATCH", upload.id, len(kept))
        except StorageFailure as exc:
            log.warning("could not commit the parts of a cancelled PATCH: %s", exc)

    # Completion.

    async def _complete(
        self, upload: Upload, tail: Part | None, old_tail: str | None, finish: Finish | None = None
    ) -> None:
        if finish is not None:
            try:
                await finish(upload.offset)
            except Exception:
                # Refused (or its hook failed): nothing is stored, the old file stays, and the
                # upload is forgotten with its multipart upload, tail and room in the quota.
                await asyncio.shield(self._refused(upload, old_tail))
                raise
        if tail is not None and tail.size:
            part = await self.pipeline.upload_part(upload.key, upload.s3_upload_id, upload.parts + 1, tail)
            self._add_parts(upload, [part])
        upload.tail = old_tail  # deleted once done
        upload.state = COMPLETING
        await self._write(upload)  # the intent: a crash from here on is finished by the next reader
        await self._finish(upload, tail, resumed=False)

    async def _refused(self, upload: Upload, old_tail: str | None) -> None:
        """Forget a whole upload whose file may not be stored (its lock's holder is the caller)."""
        try:
            await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            await self._delete_state(upload)  # its info, tails and lock
        finally:
            await self.quotas.upload_ended(upload.user, upload.id)

    async def _finish(self, upload: Upload, tail: Part | None = None, *, resumed: bool = True) -> None:
        """Complete the multipart upload of a "completing" upload, and mark it done.

        `tail`: the last part's bytes, when the caller still has them (see
        `_complete_past_strays`). `resumed`: another request left the upload
        completing (its process died), so the file may be there already and
        the size it replaced is not known for sure.
        """
        replaced, exact = await self._size_before(upload)
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
            await self._write(upload)
        except UploadConflict:
            # Someone else finished it first (a HEAD racing the PATCH that completed it).
            upload_now = await self._read(upload.user, upload.id)
            if upload_now.state != DONE:
                raise
            upload.version = upload_now.version
            return
        if tail_key:
            await self._delete_quietly(tail_key)
        if etag is None:  # completed by a process that died, or trimmed past stray parts
            etag = await self._etag(upload.key)
        await self._stored(upload, etag, replaced, exact)
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
            part["PartNumber"]: {"PartNumber": part["PartNumber"], "Size": part["Size"], **_recorded(part)}
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
            padded = Part(self.pipeline, upload.user, spool=False)
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
            await self._delete_quietly(upload.tail)
        upload.parts = good
        upload.offset = upload.bytes_in_parts(good)
        upload.tail = None
        upload.state = OPEN
        log.warning("tus upload %s: parts overwritten by another writer; back to part %d", upload.id, good)
        with contextlib.suppress(UploadConflict):
            await self._write(upload)

    async def _etag(self, key: str) -> str:
        try:
            return str((await self.s3.head_object(key))["ETag"])
        except StorageFailure:
            return ""

    # Housekeeping.

    async def _delete_quietly(self, key: str) -> None:
        try:
            await self.s3.delete_object(key)
        except StorageFailure as exc:  # only a leftover: gc or the upload's end removes it
            log.warning("could not delete a tus tail: %s", exc)

    async def _delete_state(self, upload: Upload) -> None:
        await self.s3.delete_objects(await self.s3.keys(upload.prefix))

    async def terminate_folder(self, user: str, folder: str) -> int:
        """Terminate the user's uploads that would store a file under `folder`; how many."""
        doomed = [
            upload
            async for upload in self.all_uploads(f"{UPLOADS_ROOT}{user}/")
            if upload.name.startswith(folder)
        ]
        for upload in doomed:
            await self.terminate(upload)
        return len(doomed)

    async def all_uploads(self, prefix: str = UPLOADS_ROOT) -> AsyncIterator[Upload]:
        """Every user's uploads (or those under `prefix`), as their state says (for gc)."""
        async for page in self.s3.list_objects(prefix):
            for item in page:
                if not item["Key"].endswith(INFO_SUFFIX):
                    continue
                found = await VersionedJson(self.s3, item["Key"]).read()
                if found is not None:  # else terminated since the listing
                    yield Upload.from_fields(*found)

    async def expire(self, now: float) -> int:
        """Forget every upload whose expiry is before `now` (aborting unfinished ones); how many."""
        expired = [upload async for upload in self.all_uploads() if upload.expires < now]
        count = 0
        for upload in expired:
            try:
                if upload.state == COMPLETING:
                    await self._finish(upload)
                await self.terminate(upload)
            except UploadLocked:
                continue  # a PATCH is running: it is not expired after all
            count += 1
            log.info("expired tus upload %s", upload.id)
        return count

    async def live_multipart_ids(self, now: float) -> set[str]:
        """The S3 UploadIds of unexpired, unfinished uploads.

        A tus upload's multipart upload may rightly sit idle for up to
        UPLOAD_EXPIRY: a sweep of stale multipart uploads must skip these ids.
        """
        return {
            upload.s3_upload_id
            async for upload in self.all_uploads()
            if upload.state != DONE and upload.expires >= now
        }
