"""The part pipeline: how the bytes of every upload, PUT or resumable, become S3 parts.

A body arrives as an async iterator of chunks of any size. `PartReader` cuts it
into parts of exact sizes, hashing each byte once as it passes
(checksums.py), and `PartPipeline.send` keeps up to PARTS_IN_FLIGHT UploadPart
calls running while the next part is read. One pipeline serves the whole
process, so one memory budget, one checksum rule, one slot count per user and
one set of upload metrics cover both kinds of upload.

Where a part's bytes wait until S3 has them:

- In memory, for a part of at most `memory_part_limit` bytes (an eighth of
  MEMORY_BUDGET, and never less than PART_SIZE). The whole part is reserved
  from the process's `ByteBudget` before its first byte is read, so a part
  once begun can always be finished; at the cap, uploads wait before reading
  and TCP slows their clients down. Each byte is copied once: when the part
  is joined from the chunks aiohttp received.
- In a temporary file, for a larger part. S3's 10,000-part rule makes parts
  grow with the file: a declared 5 TiB needs 525 MiB parts, more than a whole
  budget. Such parts are written to disk as they arrive and sent from there,
  so memory stays bounded whatever the file's size; disk holds at most
  PARTS_IN_FLIGHT + 1 such parts per upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import IO, Any

from ..ops import metrics
from ..sizes import MAX_PARTS
from .budget import ByteBudget, UploadSlots
from .checksums import Checksum, Hasher, Integrity
from .client import S3, Body
from .errors import StorageError, TransferCorrupted

log = logging.getLogger(__name__)

# No single part may hold more than this fraction of MEMORY_BUDGET in memory.
MEMORY_PART_SHARE = 8


class Part:
    """One part's bytes, from the first chunk until S3 has them (or the upload failed)."""

    def __init__(self, hasher: Hasher | None, budget: ByteBudget | None, reserved: int, spool: bool) -> None:
        self.size = 0
        self._hasher = hasher
        self._budget = budget
        self._reserved = reserved  # bytes of the budget this part holds
        self._pieces: list[bytes | memoryview] = []
        self._data: bytes | None = None
        self._file: IO[bytes] | None = tempfile.TemporaryFile() if spool else None

    def add(self, piece: bytes | memoryview) -> None:
        if self._hasher is not None:
            self._hasher.update(piece)
        if self._file is not None:
            # A plain write: the kernel's page cache takes it at memory speed,
            # and a thread per chunk would cost more than it saves.
            self._file.write(piece)
        else:
            self._pieces.append(piece)
        self.size += len(piece)

    def finish(self) -> None:
        """Every byte is in: join the pieces (the one copy) and give back the unused reservation."""
        if self._file is not None:
            return
        self._data = b"".join(self._pieces)
        self._pieces = []
        if self._budget is not None and self._reserved > self.size:
            self._budget.release(self._reserved - self.size)
            self._reserved = self.size

    def body(self) -> Body:
        """What botocore sends: the bytes, or the spool file from its start (again on a retry)."""
        if self._file is not None:
            self._file.seek(0)
            return self._file
        assert self._data is not None, "finish() the part before sending it"
        return self._data

    def digest(self) -> bytes:
        """The checksum's digest of the part's bytes (an MD5 when ETags are compared)."""
        assert self._hasher is not None, "a part without a checksum has no digest"
        return self._hasher.digest()

    def checksum(self, checksum: Checksum | None) -> dict[str, str]:
        """The botocore parameter carrying this part's checksum, if any."""
        if checksum is None or self._hasher is None:
            return {}
        params = {checksum.param: checksum.encode(self._hasher)}
        if checksum.algorithm:
            # x-amz-sdk-checksum-algorithm: says which header holds the checksum
            # (moto stores and checks it only then); botocore adds no checksum
            # of its own since one is already there.
            params["ChecksumAlgorithm"] = checksum.algorithm
        return params

    def release(self) -> None:
        """Drop the bytes and give their memory back; safe to call more than once."""
        self._pieces = []
        self._data = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._budget is not None and self._reserved:
            self._budget.release(self._reserved)
        self._reserved = 0


class PartReader:
    """Cuts a stream of chunks of any size into `Part`s of exact sizes."""

    def __init__(self, pipeline: PartPipeline, chunks: AsyncIterator[bytes]) -> None:
        self._pipeline = pipeline
        self._chunks = chunks.__aiter__()
        self._rest: memoryview | None = None
        self._eof = False
        self.received = 0  # bytes taken from `chunks` so far

    async def read(self, size: int) -> Part:
        """The next `size` bytes as a part; fewer only at the end of the stream."""
        part = await self._pipeline.new_part(size)
        try:
            await self._fill(part, size)
        except BaseException:
            part.release()
            raise
        part.finish()
        return part

    async def _fill(self, part: Part, size: int) -> None:
        if self._rest is not None:
            piece, self._rest = self._rest[:size], self._rest[size:] or None
            part.add(piece)
        while part.size < size and not self._eof:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                break
            self.received += len(chunk)
            need = size - part.size
            if len(chunk) > need:
                view = memoryview(chunk)
                part.add(view[:need])
                self._rest = view[need:]
            else:
                part.add(chunk)

    async def read_to_end(self) -> None:
        """Read on to the end of the stream, which must hold nothing more.

        Reaching the end is what runs the stream's own final checks (a length
        or digest the caller verifies once the last chunk is through), so a
        body read to an exact declared size must still get here before it is
        stored.
        """
        if not self._eof and self._rest is None:
            async for chunk in self._chunks:
                self.received += len(chunk)
                if chunk:
                    self._rest = memoryview(chunk)
                    break
            else:
                self._eof = True
        if self._rest is not None:
            raise ValueError("the body is longer than its declared size")


class PartPipeline:
    """The one way bytes go to S3 as parts, shared by every upload of the process."""

    def __init__(
        self,
        s3: S3,
        *,
        part_size: int,
        parts_in_flight: int,
        memory_budget: int,
        integrity: Integrity,
        max_uploads_per_user: int,
    ) -> None:
        self.s3 = s3
        self.part_size = part_size
        self.parts_in_flight = parts_in_flight
        self.budget = ByteBudget(memory_budget)
        self.memory_part_limit = max(part_size, memory_budget // MEMORY_PART_SHARE)
        # Set again once the write probe found what S3 enforces (probe.py).
        self.integrity = integrity
        self.slots = UploadSlots(max_uploads_per_user)

    @property
    def checksum(self) -> Checksum | None:
        return self.integrity.checksum

    @contextlib.contextmanager
    def upload(self, user: str, kind: str) -> Iterator[None]:
        """One upload request of `user` (`kind`: put, form or tus): its slot and its metrics.

        Every upload, whatever its protocol, starts here: the one place where a
        per-user check before the first byte (a storage quota, USER_QUOTA) belongs.
        """
        with self.slots.hold(user):
            metrics.UPLOADS_IN_FLIGHT.labels(kind).inc()
            try:
                yield
            except BaseException as exc:
                metrics.UPLOADS_ABORTED.labels(kind, _reason(exc)).inc()
                raise
            finally:
                metrics.UPLOADS_IN_FLIGHT.labels(kind).dec()

    def reader(self, chunks: AsyncIterator[bytes]) -> PartReader:
        return PartReader(self, chunks)

    async def new_part(self, size: int) -> Part:
        """An empty part that will hold up to `size` bytes, in memory (reserved now) or on disk."""
        hasher = self.checksum.new() if self.checksum is not None else None
        if size > self.memory_part_limit:
            return Part(hasher, None, 0, spool=True)
        await self.budget.acquire(size)
        return Part(hasher, self.budget, size, spool=False)

    def part_params(self, part: Part) -> dict[str, str]:
        return part.checksum(self.checksum)

    async def put_object(self, key: str, part: Part, **params: str) -> None:
        """PutObject of one part's bytes (a small file, a tus tail), with their checksum.

        Where the gateway compares ETags, a mismatch means S3 stored other
        bytes: they are deleted at once (and with them any older object under
        the key, which S3 replaced already) rather than served.
        """
        response = await self.s3.put_object(key, part.body(), **params, **self.part_params(part))
        try:
            self._check_etag("PutObject", part, response["ETag"])
        except TransferCorrupted:
            await self.s3.delete_object(key)
            raise

    async def upload_part(self, key: str, upload_id: str, number: int, part: Part) -> dict[str, Any]:
        """UploadPart of `part`, with its checksum; the part as CompleteMultipartUpload wants it.

        A part whose ETag shows other bytes is refused here; the multipart
        upload it belongs to is aborted by the caller, so it never shows.
        """
        sent = await self.s3.upload_part(key, upload_id, number, part.body(), **self.part_params(part))
        self._check_etag("UploadPart", part, sent["ETag"])
        return sent

    def _check_etag(self, operation: str, part: Part, etag: str) -> None:
        if not self.integrity.compare_etags:
            return
        if etag.strip('"').lower() != part.digest().hex():
            metrics.S3_ERRORS.labels(operation, TransferCorrupted.__name__, "ETagMismatch").inc()
            log.warning(
                "S3 stored other bytes than sent: %s answered an ETag that is not their MD5", operation
            )
            raise TransferCorrupted(
                f"S3 stored other bytes than sent ({operation}: the ETag is not their MD5)"
            )

    def create_params(self) -> dict[str, str]:
        """CreateMultipartUpload's parameters for parts that carry our checksum."""
        if self.checksum is None or self.checksum.algorithm is None:
            return {}
        return {"ChecksumAlgorithm": self.checksum.algorithm}

    async def send(
        self,
        key: str,
        upload_id: str,
        reader: PartReader,
        *,
        number: int,
        size_of: Callable[[int], int],
        keep_tail: bool,
        first: Part | None = None,
    ) -> tuple[list[dict[str, Any]], Part | None]:
        """Send what `reader` yields as parts `number`, `number + 1`, ... of a multipart upload.

        `size_of(n)` is the size of part n. At the end of the stream, a part
        shorter than its size is the tail: with `keep_tail` (resumable uploads,
        whose next request continues it) it is returned, and the caller must
        release it; otherwise it is sent as the last part. Returns the parts
        sent, as CompleteMultipartUpload wants them. On any failure, parts in
        flight are cancelled and every reservation is given back; aborting the
        multipart upload is the caller's.
        """
        in_flight: set[asyncio.Task[dict[str, Any]]] = set()
        sent: list[dict[str, Any]] = []
        part = first
        try:
            while True:
                if part is None:
                    part = await reader.read(size_of(number))
                short = part.size < size_of(number)
                if part.size == 0 or (short and keep_tail):
                    break
                if number > MAX_PARTS:
                    raise StorageError(f"the upload needs more than S3's {MAX_PARTS} parts")
                await self._wait_for_room(in_flight, sent)
                in_flight.add(self._start(key, upload_id, number, part))
                part = None  # the task owns it now
                number += 1
                if short:
                    break
            sent.extend(await asyncio.gather(*in_flight))
            in_flight.clear()
        except BaseException:
            if part is not None:
                part.release()
            raise
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        if part is not None and not keep_tail:
            part.release()  # the empty read that found the end
            part = None
        return sent, part

    def _start(self, key: str, upload_id: str, number: int, part: Part) -> asyncio.Task[dict[str, Any]]:
        task = asyncio.create_task(self.upload_part(key, upload_id, number, part))
        # A done callback runs even for a task cancelled before it started.
        task.add_done_callback(lambda _: part.release())
        return task

    async def _wait_for_room(
        self, in_flight: set[asyncio.Task[dict[str, Any]]], sent: list[dict[str, Any]]
    ) -> None:
        if len(in_flight) >= self.parts_in_flight:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        # Collect every finished part now, so a failed one stops the upload at
        # once instead of after the whole body was read.
        for task in [task for task in in_flight if task.done()]:
            in_flight.discard(task)
            sent.append(task.result())


def _reason(exc: BaseException) -> str:
    """A short label for why an upload failed: an error's code if it has one, else its kind."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return str(getattr(exc, "code", None) or type(exc).__name__)
