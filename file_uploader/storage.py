"""S3 storage: streamed multipart uploads, listing, download and delete.

Knows nothing of HTTP. An upload takes an async iterator of byte chunks and
cuts it into parts as they arrive: a body smaller than one part goes up with
a single PutObject; a larger one becomes a multipart upload with up to
`parts_in_flight` UploadPart calls running while the next part is read, so
one upload holds at most about ``part_size * (parts_in_flight + 1)`` bytes.
S3 makes an object visible only when CompleteMultipartUpload succeeds, which
is what makes a replacement atomic; on any failure (the body's iterator
raising, S3 failing, cancellation) the upload is aborted, so nothing is left
behind and an older object under the same key is untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import convert_body_to_file_like_object

from . import metrics
from .budget import ByteBudget
from .sizes import LIST_PAGE_SIZE, MAX_PARTS, part_size_for

log = logging.getLogger(__name__)

# aiohttp warns when a request body over 1 MB is handed over in memory,
# suggesting a BytesIO; for parts that is the fast path (send_bodies_as_is).
warnings.filterwarnings("ignore", "Sending a large body directly", ResourceWarning, "aiohttp")


class StorageFailure(Exception):
    """Base of every error this module raises."""


class FileNotFound(StorageFailure):
    pass


class RangeNotSatisfiable(StorageFailure):
    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the file's {size} bytes")
        self.size = size


class StorageUnavailable(StorageFailure):
    """S3 could not be reached, or asked us to slow down: worth retrying later."""


class StorageError(StorageFailure):
    """S3 answered with an error."""


_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_BUSY_CODES = {"SlowDown", "ServiceUnavailable", "503", "RequestTimeout"}


@contextlib.contextmanager
def s3_errors(operation: str) -> Any:
    """Translate what botocore and aiohttp raise into this module's errors; time the call."""
    with metrics.s3_call(operation), _translated(operation):
        yield


@contextlib.contextmanager
def _translated(operation: str) -> Any:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        if code in _NOT_FOUND_CODES:
            raise FileNotFound("no such file") from exc
        if code == "InvalidRange":
            raise RangeNotSatisfiable(int(error.get("ActualObjectSize", 0) or 0)) from exc
        if code in _BUSY_CODES:
            raise StorageUnavailable(f"S3 is busy ({code} on {operation})") from exc
        raise StorageError(f"S3 refused {operation} ({code})") from exc
    except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
        raise StorageUnavailable(f"S3 is unreachable ({operation})") from exc


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: datetime.datetime


@dataclasses.dataclass
class Download:
    """An open GetObject: its headers now, its bytes as they are read."""

    info: ObjectInfo
    length: int  # of this response: the slice for a range
    content_range: str | None
    _body: Any

    async def chunks(self) -> AsyncIterator[bytes]:
        # The chunks aiohttp received, as received: reading fixed-size pieces
        # (the body's iter_chunks) would join buffered chunks into new bytes
        # objects first, one more copy of every byte on its way to the client.
        with s3_errors("GetObject"):
            async for chunk, _ in self._body.raw_stream.content.iter_chunks():
                yield chunk

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Releases the S3 connection even when the client went away midway.
        self._body.close()


class _PartReader:
    """Cuts a stream of chunks of any size into parts of exact sizes.

    Each byte is copied once on its way from the socket to S3: when a part is
    joined from aiohttp's chunks (a chunk that straddles a part boundary is
    split with memoryview slices, not copied twice). From there the part goes
    to the socket as it is; see `send_bodies_as_is`.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks.__aiter__()
        self._rest: bytes | memoryview = b""
        self._eof = False

    async def read(self, size: int) -> bytes:
        pieces: list[bytes | memoryview] = []
        have = 0
        if self._rest:
            piece = memoryview(self._rest)
            pieces.append(piece[:size])
            self._rest = piece[size:]
            have = len(pieces[0])
        while have < size and not self._eof:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                break
            need = size - have
            if len(chunk) > need:
                view = memoryview(chunk)
                pieces.append(view[:need])
                self._rest = view[need:]
                have = size
            else:
                pieces.append(chunk)
                have += len(chunk)
        return b"".join(pieces)

    async def read_to_end(self) -> None:
        """Read on to the end of the stream, which must hold nothing more.

        Reaching the end is what runs the stream's own final checks (a length
        or digest the caller verifies once the last chunk is through), so a
        part read to an exact declared size must still get here before it is
        stored.
        """
        if not self._eof and not self._rest:
            async for chunk in self._chunks:
                if chunk:
                    self._rest = chunk
                    break
            else:
                self._eof = True
        if self._rest:
            raise ValueError("the body is longer than its declared size")


def send_bodies_as_is(client: Any) -> None:
    """Let PutObject and UploadPart send a `bytes` body without botocore's copies.

    By default botocore wraps such a body in a BytesIO. aiohttp then copies
    the BytesIO's buffer whole, botocore reads it back in slices to checksum
    it, and the request waits for `Expect: 100-continue`: a round trip per
    part. Handed over as plain bytes, the body is checksummed in place and
    written to the socket as it is. The profile of an upload through the
    gateway put these copies at about a third of its CPU time.
    """
    for operation in ("UploadPart", "PutObject"):
        client.meta.events.unregister(
            f"before-parameter-build.s3.{operation}", convert_body_to_file_like_object
        )


def _info(response: dict[str, Any], size: int) -> ObjectInfo:
    modified = response["LastModified"].astimezone(datetime.UTC)
    return ObjectInfo(size=size, etag=response["ETag"], last_modified=modified)


class Storage:
    """One bucket, as the gateway uses it. `client` is an aiobotocore S3 client."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        part_size: int,
        parts_in_flight: int,
        memory_budget: int | None = None,
    ) -> None:
        self.client = client  # public: admin commands make other S3 calls
        self.bucket = bucket
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        # Part data held by all uploads at once (None: no cap beyond each
        # upload's own parts in flight).
        self.budget = ByteBudget(memory_budget) if memory_budget else None
        send_bodies_as_is(client)

    async def _read_part(self, parts: _PartReader, size: int) -> bytes:
        """The next part, at most `size` bytes, read once the budget has room for it.

        The caller owns ``len(result)`` bytes of the budget and must release them.
        """
        if self.budget is None:
            return await parts.read(size)
        await self.budget.acquire(size)
        try:
            data = await parts.read(size)
        except BaseException:
            self.budget.release(size)
            raise
        self.budget.release(size - len(data))
        return data

    def _release(self, size: int) -> None:
        if self.budget is not None:
            self.budget.release(size)

    async def _bucket_exists(self) -> bool:
        try:
            with s3_errors("HeadBucket"):
                await self.client.head_bucket(Bucket=self.bucket)
        except FileNotFound:
            return False
        return True

    async def check(self) -> None:
        """Raise a StorageFailure unless the bucket answers (for readiness probes)."""
        if not await self._bucket_exists():
            raise StorageError(f"bucket {self.bucket!r} does not exist")

    async def ensure_bucket(self, *, create: bool) -> None:
        """Check the bucket exists; create it if it does not and `create` is set."""
        if await self._bucket_exists():
            return
        if not create:
            raise StorageError(f"bucket {self.bucket!r} does not exist")
        request: dict[str, Any] = {"Bucket": self.bucket}
        region = self.client.meta.region_name
        if region != "us-east-1":  # S3 rejects us-east-1 as a LocationConstraint
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with s3_errors("CreateBucket"):
            await self.client.create_bucket(**request)
        log.info("created bucket %s", self.bucket)

    async def list_names(self, prefix: str) -> AsyncIterator[list[str]]:
        """The names under `prefix`, a page at a time, in S3's (UTF-8 byte) order."""
        async for page in self.list_entries(prefix):
            yield [name for name, _ in page]

    async def list_entries(self, prefix: str) -> AsyncIterator[list[tuple[str, ObjectInfo]]]:
        """The names under `prefix` with their size, ETag and date, a page at a time."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
        while True:
            with s3_errors("ListObjectsV2"):
                page = await self.client.list_objects_v2(**request)
            items = page.get("Contents", ())
            yield [(item["Key"][len(prefix) :], _info(item, item["Size"])) for item in items]
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    async def stat(self, key: str) -> ObjectInfo:
        with s3_errors("HeadObject"):
            response = await self.client.head_object(Bucket=self.bucket, Key=key)
        return _info(response, response["ContentLength"])

    async def open(self, key: str, byte_range: str | None = None) -> Download:
        """Start a GetObject; `byte_range` is an HTTP range such as ``bytes=0-99``."""
        request = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            request["Range"] = byte_range
        try:
            with s3_errors("GetObject"):
                response = await self.client.get_object(**request)
        except RangeNotSatisfiable as exc:
            if exc.size:
                raise
            raise RangeNotSatisfiable((await self.stat(key)).size) from None
        content_range = response.get("ContentRange") if byte_range else None
        size = int(content_range.rsplit("/", 1)[1]) if content_range else response["ContentLength"]
        return Download(
            info=_info(response, size),
            length=response["ContentLength"],
            content_range=content_range,
            _body=response["Body"],
        )

    async def delete(self, key: str) -> None:
        # S3's DeleteObject succeeds for a missing key; the API promises 404.
        await self.stat(key)
        with s3_errors("DeleteObject"):
            await self.client.delete_object(Bucket=self.bucket, Key=key)

    async def put(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str = "application/octet-stream",
    ) -> None:
        """Store the bytes of `chunks` under `key`; `size` is their length if known."""
        parts = _PartReader(chunks)
        part_size = part_size_for(size, self.part_size, 1)
        # A declared length smaller than a part reserves only what it needs.
        first = await self._read_part(parts, part_size if size is None else min(part_size, size))
        if len(first) < part_size:
            try:
                await parts.read_to_end()
                with s3_errors("PutObject"):
                    await self.client.put_object(
                        Bucket=self.bucket, Key=key, Body=first, ContentType=content_type
                    )
            finally:
                self._release(len(first))
            return
        try:
            with s3_errors("CreateMultipartUpload"):
                created = await self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, ContentType=content_type
                )
        except BaseException:
            self._release(len(first))
            raise
        upload_id = created["UploadId"]
        # Handed over in a list and dropped here: once S3 has the first part
        # its bytes must be freed, not kept alive by this frame until the end
        # of the upload (8 MiB per upload beyond MEMORY_BUDGET otherwise).
        pending = [first]
        del first
        try:
            await self._upload_parts(key, upload_id, pending, parts, size)
        except BaseException:
            # Shielded: a cancelled request must still leave no open upload.
            await asyncio.shield(self._abort(key, upload_id))
            raise

    async def _upload_parts(
        self, key: str, upload_id: str, pending: list[bytes], parts: _PartReader, size: int | None
    ) -> None:
        data = pending.pop()
        in_flight: set[asyncio.Task[dict[str, Any]]] = set()
        done: list[dict[str, Any]] = []
        number = 1
        try:
            while data:
                if number > MAX_PARTS:
                    raise StorageError(f"the upload needs more than S3's {MAX_PARTS} parts")
                if len(in_flight) >= self.parts_in_flight:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                # Collect every finished part now, so a failed one stops the
                # upload at once instead of after the whole body was read.
                for task in [task for task in in_flight if task.done()]:
                    in_flight.discard(task)
                    done.append(task.result())
                task = asyncio.create_task(self._upload_part(key, upload_id, number, data))
                # A done callback runs even for a task cancelled before it started.
                held = len(data)
                task.add_done_callback(lambda _, held=held: self._release(held))
                in_flight.add(task)
                number += 1
                data = b""  # owned by the task now
                data = await self._read_part(parts, part_size_for(size, self.part_size, number))
            done.extend(await asyncio.gather(*in_flight))
            in_flight.clear()
        finally:
            self._release(len(data))  # a part read but not handed to a task
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        done.sort(key=lambda part: part["PartNumber"])
        with s3_errors("CompleteMultipartUpload"):
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        with s3_errors("UploadPart"):
            response = await self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
        part = {"PartNumber": number, "ETag": response["ETag"]}
        for name in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256"):
            if name in response:
                part[name] = response[name]
        return part

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            with s3_errors("AbortMultipartUpload"):
                await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageFailure:
            # The original failure is what the caller needs to hear about; the
            # stale upload is left to the `gc` command or a lifecycle rule.
            log.warning("could not abort multipart upload of %s", key, exc_info=True)
