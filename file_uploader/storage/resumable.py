"""Resumable (tus) uploads with all their state in S3, so any gateway process can continue one.

An upload is an S3 multipart upload aimed at the final key ``files/<user>/<name>``
(completing it replaces an older file atomically), plus small objects under
``uploads/<user>/<id>.``, as tusd's S3 store keeps them:

- ``<id>.info``: JSON state: name, length (None while deferred), the S3 upload
  id, part size, how many parts and bytes are committed, expiry.
- ``<id>.part.<offset>``: the tail, the bytes past the last full part (less
  than one part). S3 parts but the last must be at least 5 MiB, while a tus
  PATCH may carry any number of bytes; the tail waits for the next PATCH.

A PATCH streams the old tail and then its body through the part pipeline
(parts.py), which uploads every full part as it fills; then it commits: put
the new tail, rewrite the info, delete the old tail. Only the info says what
is committed, so a PATCH that fails midway (S3 error, checksum mismatch)
leaves the upload as it was: parts it sent past the committed count are
overwritten by the next PATCH. A body cut off midway commits what arrived (as
tusd does), unless it carried a checksum that now cannot be verified. When the
last byte arrives, the multipart upload is completed and the state objects are
deleted.

Nothing here locks: a PATCH that started from an offset another PATCH has
since moved past gets OffsetMismatch (409) at its offset check, but two that
check at the same moment can interleave.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..ops import metrics
from ..sizes import MAX_PART_SIZE, MIN_PART_SIZE, part_size_for
from .client import S3
from .errors import (
    ChecksumMismatch,
    FileNotFound,
    LengthConflict,
    OffsetMismatch,
    StorageError,
    TooLarge,
    UploadExpired,
    UploadNotFound,
)
from .keys import UPLOADS_ROOT, file_key, validate_name
from .parts import Part, PartPipeline

log = logging.getLogger(__name__)

INFO_SUFFIX = ".info"
_ID_BYTES = 24  # 192 random bits: an upload URL cannot be guessed
_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")
# tus checksum extension: the algorithms a client may name in Upload-Checksum.
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}


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
    def tail_key(self) -> str:
        return f"{self.prefix}part.{self.offset}"

    @property
    def done(self) -> bool:
        return self.length is not None and self.offset == self.length

    def size_of_part(self, number: int) -> int:
        return part_size_for(None, self.part_size, number) if self.grow else self.part_size

    def tail_size(self) -> int:
        return self.offset - sum(self.size_of_part(n) for n in range(1, self.parts + 1))

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


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
        self.digest = CHECKSUMS[checksum[0]]() if checksum else None
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


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing


# What CompleteMultipartUpload wants of each part that ListParts reports.
_PART_FIELDS = {"PartNumber", "ETag", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256"}


class Resumable:
    """tus uploads in one bucket, through the process's part pipeline."""

    def __init__(
        self,
        s3: S3,
        pipeline: PartPipeline,
        *,
        expiry: float,
        max_size: int,
        on_stored: Callable[[str], Awaitable[None]],
    ) -> None:
        self.s3 = s3
        self.pipeline = pipeline
        # Called with a file's key once an upload has stored it (Files.stored: library, thumbnails).
        self.on_stored = on_stored
        self.expiry = expiry
        self.max_size = max_size

    async def create(self, user: str, name: str, length: int | None, metadata: str, now: float) -> Upload:
        """Start an upload of `length` bytes (None: declared later) to be stored as `name`."""
        validate_name(name)
        if length is not None and length > self.max_size:
            raise TooLarge(f"the limit is {self.max_size} bytes")
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
        )
        if length == 0:
            # Nothing will ever be PATCHed, and S3 cannot complete a multipart
            # upload without parts: the empty file is stored now.
            await self.s3.put_object(upload.key, b"")
            await self.on_stored(upload.key)
            return upload
        upload.s3_upload_id = await self.s3.create_multipart_upload(
            upload.key, **self.pipeline.create_params()
        )
        await self.s3.put_object(upload.info_key, upload.to_json())
        return upload

    async def get(self, user: str, upload_id: str, now: float) -> Upload:
        """The user's upload `upload_id`; another user's id is as unknown as a made-up one."""
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        try:
            upload = Upload(**json.loads(await self.s3.read_object(info_key(user, upload_id))))
        except FileNotFound:
            raise UploadNotFound("no such upload") from None
        if upload.expires < now:
            raise UploadExpired("the upload has expired")
        return upload

    async def terminate(self, upload: Upload) -> None:
        await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
        await self._delete_state(upload)

    async def append(
        self,
        upload: Upload,
        offset: int,
        chunks: AsyncIterator[bytes],
        *,
        now: float,
        length: int | None = None,
        checksum: tuple[str, bytes] | None = None,
    ) -> Upload:
        """Append `chunks` at `offset`; commit, or complete the upload if it is whole.

        `length` declares a deferred length; `checksum` is (algorithm, digest)
        of the whole body, checked before anything is committed.
        """
        if offset != upload.offset:
            raise OffsetMismatch(upload.offset)
        if length is not None:
            if upload.length is not None and length != upload.length:
                raise LengthConflict(f"the upload's length is {upload.length}")
            if length < upload.offset:
                raise LengthConflict(f"the upload already has {upload.offset} bytes")
            upload.length = length
        end = self.max_size if upload.length is None else upload.length
        with self.pipeline.upload(upload.user, "tus"):
            body = _Body(chunks, end - upload.offset, checksum)
            old_tail = upload.tail_key if upload.tail_size() else None
            head = self.s3.stream_object(old_tail) if old_tail else _nothing()
            reader = self.pipeline.reader(_chain(head, body.chunks()))
            sent, tail = await self.pipeline.send(
                upload.key,
                upload.s3_upload_id,
                reader,
                number=upload.parts + 1,
                size_of=upload.size_of_part,
                keep_tail=True,
            )
            assert tail is not None
            try:
                if body.cut is not None and body.digest is not None:
                    raise body.cut  # the checksum covers the whole body: nothing to commit
                if body.digest is not None and checksum and body.digest.digest() != checksum[1]:
                    raise ChecksumMismatch(f"the body's {checksum[0]} does not match Upload-Checksum")
                upload.parts += len(sent)
                upload.offset += body.received
                await self._commit(upload, tail, old_tail, now)
            finally:
                tail.release()
        if body.cut is not None:
            raise body.cut
        return upload

    async def _commit(self, upload: Upload, tail: Part, old_tail: str | None, now: float) -> None:
        if upload.done:
            await self._complete(upload, tail)
            return
        upload.expires = now + self.expiry
        if tail.size and upload.tail_key != old_tail:
            await self.pipeline.put_object(upload.tail_key, tail)
        await self.s3.put_object(upload.info_key, upload.to_json())
        if old_tail and old_tail != upload.tail_key:
            await self.s3.delete_object(old_tail)

    async def _complete(self, upload: Upload, tail: Part) -> None:
        if tail.size:
            upload.parts += 1
            await self.pipeline.upload_part(upload.key, upload.s3_upload_id, upload.parts, tail)
        if upload.parts:
            parts = await self._committed_parts(upload)
            await self._complete_past_strays(upload, parts, tail)
        else:
            # A deferred length that ended at 0 bytes: S3 cannot complete a
            # multipart upload without parts, so the empty file is put instead.
            await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
            await self.s3.put_object(upload.key, b"")
        await self._delete_state(upload)
        await self.on_stored(upload.key)
        metrics.UPLOADS_COMPLETED.labels("tus").inc()
        log.info("tus upload %s completed", upload.id)

    async def _committed_parts(self, upload: Upload) -> list[dict[str, Any]]:
        """Parts 1..upload.parts; any past them are leftovers of an uncommitted PATCH."""
        parts = [
            {name: value for name, value in part.items() if name in _PART_FIELDS}
            async for page in self.s3.list_parts(upload.key, upload.s3_upload_id)
            for part in page
            if part["PartNumber"] <= upload.parts
        ]
        if len(parts) != upload.parts:
            raise StorageError(f"S3 lists {len(parts)} of the upload's {upload.parts} parts")
        return parts

    async def _complete_past_strays(self, upload: Upload, parts: list[dict[str, Any]], tail: Part) -> None:
        """Complete the multipart upload from `parts`, even where S3 insists on parts left past them.

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
        passes through the gateway again. A tail under 5 MiB, no longer the
        last part, is sent again padded to 5 MiB (S3's minimum for every part
        but the last); its bytes stay where the trimmed object wants them.
        Between the two completions a reader may see the longer object.
        """
        try:
            await self.s3.complete_multipart_upload(upload.key, upload.s3_upload_id, parts)
            return
        except StorageError as exc:
            if exc.s3_code != "InvalidPart":
                raise
            refused = exc
        every = [
            {name: value for name, value in part.items() if name in _PART_FIELDS}
            async for page in self.s3.list_parts(upload.key, upload.s3_upload_id)
            for part in page
        ]
        length = upload.length
        if len(every) <= len(parts) or not length:
            raise refused
        log.info("tus upload %s: completing past %d stray parts", upload.id, len(every) - len(parts))
        if 0 < tail.size < MIN_PART_SIZE:
            padded = await self.pipeline.new_part(MIN_PART_SIZE)
            try:
                body = tail.body()
                padded.add(body if isinstance(body, bytes) else body.read())
                padded.add(bytes(MIN_PART_SIZE - tail.size))
                padded.finish()
                sent = await self.pipeline.upload_part(upload.key, upload.s3_upload_id, upload.parts, padded)
            finally:
                padded.release()
            every = [sent if part["PartNumber"] == upload.parts else part for part in every]
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
                try:
                    yield Upload(**json.loads(await self.s3.read_object(item["Key"])))
                except FileNotFound:
                    continue  # completed or terminated since the listing

    async def expire(self, now: float) -> int:
        """Abort every upload whose expiry is before `now` and remove its state; return how many."""
        expired = [upload async for upload in self.all_uploads() if upload.expires < now]
        for upload in expired:
            await self.terminate(upload)
            log.info("expired tus upload %s", upload.id)
        return len(expired)

    async def live_multipart_ids(self, now: float) -> set[str]:
        """The S3 UploadIds of unexpired uploads.

        A tus upload's multipart upload may rightly sit idle for up to
        UPLOAD_EXPIRY: a sweep of stale multipart uploads must skip these ids.
        """
        return {upload.s3_upload_id async for upload in self.all_uploads() if upload.expires >= now}
