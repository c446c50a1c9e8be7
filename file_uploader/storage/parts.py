"""The part pipeline: how the bytes of every upload, PUT or resumable, become S3 parts.

A body arrives as an async iterator of chunks of any size. `PartReader` cuts it
into parts of exact sizes; each part is hashed (checksums.py: a CRC as its
pieces arrive, MD5 or SHA-256 once, in a worker thread, by the task that sends
it: `Part.prepare`) and sent as the pieces it arrived in (pieces.py), while
`PartPipeline.send` keeps up to PARTS_IN_FLIGHT UploadPart calls running and
reads the next part. One pipeline serves the whole process, so one memory
budget, one checksum rule, one slot count per user and one set of upload
metrics cover both kinds of upload.

How long a part's bytes may wait and where (memory by bytes read, disk when
short) is holding.py's; this module sends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..ops import metrics
from ..sizes import PartPlan, format_size
from .budget import UploadSlots
from .checksums import Checksum, Integrity
from .client import S3
from .connection import Lane
from .errors import TooLarge, TransferCorrupted
from .holding import Holding, Part, PartReader

log = logging.getLogger(__name__)


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
        spool_budget: int = 8 << 30,
        spill_after: float = 1.0,
        wait_timeout: float = 60.0,
        plan: PartPlan | None = None,
    ) -> None:
        self.s3 = s3
        self.part_size = part_size
        # How bodies are cut into parts on this engine (S3_MAX_PARTS, S3_EQUAL_PARTS).
        self.plan = plan or PartPlan(part_size)
        self.parts_in_flight = parts_in_flight
        self.holding = Holding(
            part_size=part_size,
            memory_budget=memory_budget,
            spool_budget=spool_budget,
            spill_after=spill_after,
            wait_timeout=wait_timeout,
        )
        # What tests and thumbnails look at: the budgets, and one upload's share of memory.
        self.memory, self.disk, self.share = self.holding.memory, self.holding.disk, self.holding.share
        # Set again once the write probe found what S3 enforces (probe.py).
        self.integrity = integrity
        self.slots = UploadSlots(max_uploads_per_user)

    def use(self, integrity: Integrity) -> None:
        """Send parts with `integrity` from now on: what the write probe found S3 to check."""
        self.integrity = integrity

    @property
    def checksum(self) -> Checksum | None:
        return self.integrity.checksum

    @contextlib.contextmanager
    def upload(self, user: str, kind: str) -> Iterator[None]:
        """One upload request of `user` (`kind`: put, form or tus): its slot and its metrics.
        (USER_QUOTA is checked before the body by the upload's reservation: quotas.py.)"""
        with self.slots.hold(user):
            metrics.UPLOADS_IN_FLIGHT.labels(kind).inc()
            try:
                yield
            except BaseException as exc:
                metrics.UPLOADS_ABORTED.labels(kind, _reason(exc)).inc()
                raise
            finally:
                metrics.UPLOADS_IN_FLIGHT.labels(kind).dec()

    def reader(self, chunks: AsyncIterator[bytes], owner: str) -> PartReader:
        """A reader of `chunks` whose memory is counted against `owner` (a user id)."""
        return PartReader(self.holding, self.checksum, chunks, owner)

    def new_part(self, owner: str) -> Part:
        """An empty part in memory, to be filled by hand (`Part.add`)."""
        return Part(self.holding, owner, self.checksum, spool=False)

    def part_params(self, part: Part) -> dict[str, str]:
        return part.checksum(self.checksum)

    async def put_object(self, key: str, part: Part, **params: str) -> str:
        """PutObject of one part's bytes (a small file, a tus tail), with their checksum; its ETag.

        Where the gateway compares ETags, a mismatch means S3 stored other
        bytes: they are deleted at once (and with them any older object under
        the key, which S3 replaced already) rather than served.
        """
        await part.prepare()
        response = await self.s3.put_object(
            key, part.body(), lane=Lane.UPLOAD, **params, **self.part_params(part)
        )
        try:
            self._check_etag("PutObject", part, response["ETag"])
        except TransferCorrupted:
            await self.s3.delete_object(key)
            raise
        return str(response["ETag"])

    async def upload_part(self, key: str, upload_id: str, number: int, part: Part) -> dict[str, Any]:
        """UploadPart of `part`, with its checksum; the part as CompleteMultipartUpload wants it.

        A part whose ETag shows other bytes is refused here; the multipart
        upload it belongs to is aborted by the caller, so it never shows.
        """
        await part.prepare()  # in this part's own task: beside the reading of the next
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
        sent: list[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], Part | None]:
        """Send what `reader` yields as parts `number`, `number + 1`, ... of a multipart upload.

        `size_of(n)` is the size of part n. At the end of the stream, a part
        shorter than its size is the tail: with `keep_tail` (resumable uploads,
        whose next request continues it) it is returned, and the caller must
        release it; otherwise it is sent as the last part. Returns the parts
        sent, as CompleteMultipartUpload wants them, in no particular order;
        they are also added to `sent` as they finish, so that a caller whose
        call failed midway (cancelled by a graceful stop, say) knows which
        parts S3 has. On any failure, parts in flight are cancelled and every
        reservation is given back; aborting the multipart upload is the caller's.
        """
        in_flight: dict[asyncio.Task[dict[str, Any]], int] = {}  # task -> memory its part holds
        sent = [] if sent is None else sent
        part = first
        try:
            while True:
                if part is None:
                    await self._wait_for_memory(in_flight, sent, size_of(number))
                    part = await reader.read(size_of(number))
                short = part.size < size_of(number)
                if part.size == 0 or (short and keep_tail):
                    break
                if number > self.plan.max_parts:
                    # Before part max + 1 is sent: the engine would refuse it, and the caller
                    # aborts the multipart upload, so nothing of the body is stored.
                    raise self.too_many_parts(None)
                await self._wait_for_room(in_flight, sent)
                in_flight[self._start(key, upload_id, number, part)] = part.memory
                part = None  # the task owns it now
                number += 1
                if short:
                    break
            sent.extend(await asyncio.gather(*in_flight))
            in_flight.clear()
        except BaseException:
            if part is not None:
                part.release()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            sent.extend(
                task.result() for task in in_flight if not task.cancelled() and task.exception() is None
            )
            raise
        if part is not None and not keep_tail:
            part.release()  # the empty read that found the end
            part = None
        return sent, part

    def too_many_parts(self, total: int | None) -> TooLarge:
        """The error for a body of `total` bytes (None: unknown) that needs more than S3_MAX_PARTS parts."""
        plan = self.plan
        return TooLarge(
            f"the file needs more than the {plan.max_parts:,} parts S3 takes (S3_MAX_PARTS): at most "
            f"{format_size(plan.capacity(total))} "
            + ("with its declared length" if total is not None else "without a declared length")
        )

    def _start(self, key: str, upload_id: str, number: int, part: Part) -> asyncio.Task[dict[str, Any]]:
        task = asyncio.create_task(self.upload_part(key, upload_id, number, part))
        memory, owner = part.memory, part.owner
        self.holding.sent_off(part)

        def done(_: object) -> None:
            self.holding.landed(owner, memory)
            part.release()

        # A done callback runs even for a task cancelled before it started.
        task.add_done_callback(done)
        return task

    def _collect(
        self, in_flight: dict[asyncio.Task[dict[str, Any]], int], sent: list[dict[str, Any]]
    ) -> None:
        # Every finished part now, so a failed one stops the upload at once
        # instead of after the whole body was read.
        for task in [task for task in in_flight if task.done()]:
            del in_flight[task]
            sent.append(task.result())

    async def _wait_for_memory(
        self, in_flight: dict[asyncio.Task[dict[str, Any]], int], sent: list[dict[str, Any]], size: int
    ) -> None:
        """Before reading a part of `size` bytes: wait for this upload's own parts until it fits its share."""
        self._collect(in_flight, sent)
        while in_flight and size <= self.share and sum(in_flight.values()) + size > self.share:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            self._collect(in_flight, sent)

    async def _wait_for_room(
        self, in_flight: dict[asyncio.Task[dict[str, Any]], int], sent: list[dict[str, Any]]
    ) -> None:
        if len(in_flight) >= self.parts_in_flight:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        self._collect(in_flight, sent)


def _reason(exc: BaseException) -> str:
    """A short label for why an upload failed: an error's code if it has one, else its kind."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return str(getattr(exc, "code", None) or type(exc).__name__)
