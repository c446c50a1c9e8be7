"""Resumable (tus) uploads with all their state in S3, so any gateway process can continue one.

An upload is an S3 multipart upload aimed at the final key ``files/<user>/<name>``
(completing it replaces an older file atomically), plus small objects under
``uploads/<user>/<id>.``, as tusd's S3 store keeps them:

- ``<id>.info``: JSON state: name, length (None while deferred), the S3 upload
  id, part size, how many parts and bytes are committed, expiry.
- ``<id>.part.<offset>``: the tail, the bytes past the last full part (less
  than one part). S3 parts but the last must be at least 5 MiB, while a tus
  PATCH may carry any number of bytes; the tail waits for the next PATCH.

A PATCH reads the tail, appends its body and uploads every full part as it
fills; then it commits: put the new tail, rewrite the info, delete the old
tail. Only the info says what is committed, so a PATCH that fails midway (S3
error, checksum mismatch) leaves the upload as it was: parts it sent past the
committed count are overwritten by the next PATCH. A body cut off midway
commits what arrived (as tusd does), unless it carried a checksum that now
cannot be verified. When the last byte arrives, the multipart upload is
completed and the state objects are deleted.

Nothing here locks: a PATCH that started from an offset another PATCH has
since moved past gets OffsetMismatch (409) at its offset check, but two that
check at the same moment can interleave; serialising those would need a lock
S3 does not offer cheaply, and is out of scope.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from .keys import file_key, validate_name
from .sizes import LIST_PAGE_SIZE, MAX_PARTS, part_size_for
from .storage import FileNotFound, StorageError, s3_errors

log = logging.getLogger(__name__)

UPLOADS_ROOT = "uploads/"
INFO_SUFFIX = ".info"
_ID_BYTES = 24  # 192 random bits: an upload URL cannot be guessed
_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")
CHECKSUMS: dict[str, Callable[[], Any]] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
}


class TusError(Exception):
    """Base of the errors a tus request can meet besides S3's own."""


class UploadNotFound(TusError):
    pass


class UploadExpired(TusError):
    pass


class OffsetMismatch(TusError):
    def __init__(self, offset: int) -> None:
        super().__init__(f"the upload is at offset {offset}")
        self.offset = offset


class UploadTooLarge(TusError):
    pass


class LengthConflict(TusError):
    """Upload-Length contradicts the upload's length or offset."""


class ChecksumMismatch(TusError):
    pass


@dataclasses.dataclass
class Upload:
    id: str
    user: str
    name: str
    length: int | None  # None: deferred (creation-defer-length)
    metadata: str  # the Upload-Metadata header as created, echoed by HEAD
    s3_upload_id: str
    part_size: int
    grow: bool  # length unknown at creation: parts grow as storage.put's do
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
        return f"{UPLOADS_ROOT}{self.user}/{self.id}{INFO_SUFFIX}"

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


def new_upload_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def is_upload_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


async def _delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    with s3_errors("ListObjectsV2"):
        page = await client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=LIST_PAGE_SIZE)
    for item in page.get("Contents", ()):
        with s3_errors("DeleteObject"):
            await client.delete_object(Bucket=bucket, Key=item["Key"])


async def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        with s3_errors("AbortMultipartUpload"):
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except StorageError:
        # NoSuchUpload: already aborted (a `gc` run, a lifecycle rule); the
        # state still has to go.
        log.info("multipart upload of %s was already gone", key)


async def _remove(client: Any, bucket: str, upload: Upload) -> None:
    await _abort(client, bucket, upload.key, upload.s3_upload_id)
    await _delete_prefix(client, bucket, upload.prefix)


async def _uploads(client: Any, bucket: str) -> AsyncIterator[Upload]:
    """Every tus upload's state in the bucket."""
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": UPLOADS_ROOT, "MaxKeys": LIST_PAGE_SIZE}
    while True:
        with s3_errors("ListObjectsV2"):
            page = await client.list_objects_v2(**request)
        for item in page.get("Contents", ()):
            if not item["Key"].endswith(INFO_SUFFIX):
                continue
            try:
                with s3_errors("GetObject"):
                    response = await client.get_object(Bucket=bucket, Key=item["Key"])
                    yield Upload(**json.loads(await response["Body"].read()))
            except FileNotFound:
                continue  # completed or terminated since the listing
        if not page.get("IsTruncated"):
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


async def expire_uploads(client: Any, bucket: str, now: float) -> int:
    """Abort every tus upload whose expiry is before `now` and remove its state; return how many."""
    expired = 0
    async for upload in _uploads(client, bucket):
        if upload.expires < now:
            await _remove(client, bucket, upload)
            log.info("expired tus upload %s of %s", upload.id, upload.key)
            expired += 1
    return expired


async def live_multipart_ids(client: Any, bucket: str, now: float) -> set[str]:
    """The S3 UploadIds of unexpired tus uploads.

    A tus upload's multipart upload may rightly sit idle for up to
    UPLOAD_EXPIRY: a sweep of stale multipart uploads must skip these ids.
    """
    return {upload.s3_upload_id async for upload in _uploads(client, bucket) if upload.expires >= now}


class TusStore:
    """tus uploads in one bucket. `client` is the gateway's aiobotocore S3 client."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        part_size: int,
        parts_in_flight: int,
        expiry: float,
        max_size: int,
    ) -> None:
        self.client = client
        self.max_size = max_size
        self.bucket = bucket
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.expiry = expiry

    async def create(self, user: str, name: str, length: int | None, metadata: str, now: float) -> Upload:
        """Start an upload of `length` bytes (None: declared later) to be stored as `name`."""
        validate_name(name)
        upload = Upload(
            id=new_upload_id(),
            user=user,
            name=name,
            length=length,
            metadata=metadata,
            s3_upload_id="",
            part_size=part_size_for(length, self.part_size),
            grow=length is None,
            expires=now + self.expiry,
        )
        if length == 0:
            # Nothing will ever be PATCHed, and S3 cannot complete a multipart
            # upload without parts: the empty file is stored now.
            with s3_errors("PutObject"):
                await self.client.put_object(Bucket=self.bucket, Key=upload.key, Body=b"")
            return upload
        with s3_errors("CreateMultipartUpload"):
            created = await self.client.create_multipart_upload(Bucket=self.bucket, Key=upload.key)
        upload.s3_upload_id = created["UploadId"]
        await self._put(upload.info_key, upload.to_json())
        return upload

    async def get(self, user: str, upload_id: str, now: float) -> Upload:
        """The user's upload `upload_id`; another user's id is as unknown as a made-up one."""
        if not is_upload_id(upload_id):
            raise UploadNotFound("no such upload")
        key = f"{UPLOADS_ROOT}{user}/{upload_id}{INFO_SUFFIX}"
        try:
            with s3_errors("GetObject"):
                response = await self.client.get_object(Bucket=self.bucket, Key=key)
                upload = Upload(**json.loads(await response["Body"].read()))
        except FileNotFound:
            raise UploadNotFound("no such upload") from None
        if upload.expires < now:
            raise UploadExpired("the upload has expired")
        return upload

    async def terminate(self, upload: Upload) -> None:
        await _remove(self.client, self.bucket, upload)

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
        old_tail = upload.tail_key if upload.tail_size() else None
        pending: list[bytes | memoryview] = []
        if old_tail:
            pending.append(await self._read(old_tail))
        have = sum(len(piece) for piece in pending)
        digest = CHECKSUMS[checksum[0]]() if checksum else None
        number = upload.parts + 1
        received = 0
        cut: Exception | None = None
        in_flight: set[asyncio.Task[None]] = set()
        iterator = chunks.__aiter__()
        try:
            while True:
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except Exception as exc:  # the body ended early: keep what arrived
                    cut = exc
                    break
                received += len(chunk)
                end = self.max_size if upload.length is None else upload.length
                if upload.offset + received > end:
                    raise UploadTooLarge(f"the upload cannot pass byte {end}")
                if digest:
                    digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    need = upload.size_of_part(number) - have
                    pending.append(view[:need])
                    have += len(pending[-1])
                    view = view[need:]
                    if have == upload.size_of_part(number):
                        if number > MAX_PARTS:
                            raise StorageError(f"the upload needs more than S3's {MAX_PARTS} parts")
                        await self._wait_for_room(in_flight)
                        part = b"".join(pending)
                        in_flight.add(asyncio.create_task(self._upload_part(upload, number, part)))
                        number += 1
                        pending, have = [], 0
            await asyncio.gather(*in_flight)
            in_flight.clear()
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        if cut is not None and digest:
            raise cut  # the checksum covers the whole body: nothing to commit
        if digest and checksum and digest.digest() != checksum[1]:
            raise ChecksumMismatch(f"the body's {checksum[0]} does not match Upload-Checksum")
        upload.parts = number - 1
        upload.offset += received
        tail = b"".join(pending)
        if upload.done:
            await self._complete(upload, tail)
        else:
            upload.expires = now + self.expiry
            if tail:
                await self._put(upload.tail_key, tail)
            await self._put(upload.info_key, upload.to_json())
            if old_tail and old_tail != upload.tail_key:
                with s3_errors("DeleteObject"):
                    await self.client.delete_object(Bucket=self.bucket, Key=old_tail)
        if cut is not None:
            raise cut
        return upload

    async def _complete(self, upload: Upload, tail: bytes) -> None:
        if tail:
            upload.parts += 1
            await self._upload_part(upload, upload.parts, tail)
        parts = await self._list_parts(upload)
        with s3_errors("CompleteMultipartUpload"):
            await self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.s3_upload_id,
                MultipartUpload={"Parts": parts},
            )
        await _delete_prefix(self.client, self.bucket, upload.prefix)
        log.info("tus upload %s completed as %s", upload.id, upload.key)

    async def _list_parts(self, upload: Upload) -> list[dict[str, Any]]:
        """Parts 1..upload.parts; any past them are leftovers of an uncommitted PATCH."""
        parts: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": upload.key,
            "UploadId": upload.s3_upload_id,
        }
        while True:
            with s3_errors("ListParts"):
                page = await self.client.list_parts(**request)
            for part in page.get("Parts", ()):
                if part["PartNumber"] <= upload.parts:
                    parts.append({"PartNumber": part["PartNumber"], "ETag": part["ETag"]})
            if not page.get("IsTruncated"):
                break
            request["PartNumberMarker"] = page["NextPartNumberMarker"]
        if len(parts) != upload.parts:
            raise StorageError(f"S3 lists {len(parts)} of the upload's {upload.parts} parts")
        return sorted(parts, key=lambda part: part["PartNumber"])

    async def _wait_for_room(self, in_flight: set[asyncio.Task[None]]) -> None:
        if len(in_flight) >= self.parts_in_flight:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        # Collect finished parts now, so a failed one stops the PATCH at once.
        for task in [task for task in in_flight if task.done()]:
            in_flight.discard(task)
            task.result()

    async def _upload_part(self, upload: Upload, number: int, data: bytes) -> None:
        with s3_errors("UploadPart"):
            await self.client.upload_part(
                Bucket=self.bucket,
                Key=upload.key,
                UploadId=upload.s3_upload_id,
                PartNumber=number,
                Body=data,
            )

    async def _put(self, key: str, body: bytes) -> None:
        with s3_errors("PutObject"):
            await self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    async def _read(self, key: str) -> bytes:
        with s3_errors("GetObject"):
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
            return await response["Body"].read()
