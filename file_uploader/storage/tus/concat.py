"""tus concatenation: partial uploads joined into one file by a final upload, inside S3.

A client (tus-js-client's `parallelUploads`, Uppy with it) uploads pieces of
one file at once as partial uploads (``Upload-Concat: partial``), each an
ordinary tus upload of this store, whose multipart upload completes into an
object of its own (``uploads/<user>/<id>.data``) instead of a file. Any
gateway process may take any of them: their state is in S3 as every upload's.
Then it creates the final upload (``Upload-Concat: final;<url> <url>...``),
which this module assembles at once into the file, as tusd's S3 store does:

- a new multipart upload aimed at the file, whose parts are the partial
  uploads' objects copied inside S3 (UploadPartCopy: their bytes never pass
  through the gateway), each cut in pieces of at most 5 GiB;
- S3 wants every part but the last to be at least 5 MiB, and a partial upload
  may be smaller (a 1 KiB one, or the last bytes of a file cut in four). Such
  bytes are read back and joined with what follows them, up to 5 MiB, into a
  part sent from the gateway (the part pipeline, in MEMORY_BUDGET): at most
  5 MiB through the gateway for each short partial upload;
- on an engine whose parts must all be one size (S3_EQUAL_PARTS, Cloudflare
  R2), the file is cut into equal parts: those that lie inside one partial
  upload are copied, those across two are joined.

Then it completes as every tus upload does (completion.py: the record says
"completing" first, so a process that dies there leaves it for the next
reader to finish), lands as every stored file does (landing.py: event,
library, thumbnails), and its partial uploads are removed. A process that
dies between the copies and that record leaves a multipart upload no record
names (gc's stale-upload sweep aborts it) and the partial uploads whole: the
client's retry of the final upload starts again. One that dies after the
completion leaves the partial uploads to expire (UPLOAD_EXPIRY_SECONDS), their leases
with them. Quotas: each
partial upload holds its room (its lease) from its creation, as any upload;
the final upload takes no more room, its file's bytes are counted once stored
and the partial uploads' leases given back just after. While the final upload
is assembled its partial uploads are locked (lock.py): a second final upload
naming one of them, or a DELETE, gets 423.

A final upload is created only from partial uploads that have all their bytes
(the tus extension `concatenation-unfinished`, a final upload created before,
is not offered), and takes no PATCH (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from ...sizes import MAX_PART_SIZE, MIN_PART_SIZE, PARTS_IN_FLIGHT, format_size
from ..cas import HeldLock
from ..errors import ConcatInvalid, ConcatUnfinished, TooLarge, UploadNotFound
from ..keys import validate_name
from ..landing import Finish
from .info import COMPLETING, DONE, Upload, is_upload_id
from .upload import Writer

log = logging.getLogger(__name__)

# The pre-create hook of a final upload, once its size is known: the most bytes it may have.
Admit = Callable[[int], Awaitable[int]]


@dataclasses.dataclass(frozen=True)
class Piece:
    """Bytes `first` to `end` (exclusive) of partial upload number `source` (from 0, in order)."""

    source: int
    first: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.first


def layout(sizes: Sequence[int], *, equal: int | None = None) -> list[list[Piece]]:
    """The final upload's parts, in order, as pieces of the partial uploads of `sizes` bytes.

    A part of one piece is copied inside S3; a part of several is joined in the gateway.
    Every part but the last has at least MIN_PART_SIZE bytes, none more than MAX_PART_SIZE;
    with `equal` (S3_EQUAL_PARTS), every part but the last has exactly `equal` bytes.
    """
    if equal is not None:
        return _equal_layout(sizes, equal)
    parts: list[list[Piece]] = []
    pending: list[Piece] = []  # short pieces waiting to reach MIN_PART_SIZE together
    held = 0
    for source, size in enumerate(sizes):
        at = 0
        if pending:  # fill the waiting part up from this partial upload's first bytes
            at = min(size, MIN_PART_SIZE - held)
            if at:
                pending.append(Piece(source, 0, at))
                held += at
            if held >= MIN_PART_SIZE:
                parts.append(pending)
                pending, held = [], 0
        rest = size - at
        if rest >= MIN_PART_SIZE:
            # In pieces of at most 5 GiB, all alike (so none of them falls under 5 MiB).
            count = -(-rest // MAX_PART_SIZE)
            bounds = [at + rest * k // count for k in range(count + 1)]
            parts += [[Piece(source, first, end)] for first, end in itertools.pairwise(bounds)]
        elif rest:
            pending.append(Piece(source, at, size))
            held += rest
    if pending:
        parts.append(pending)
    return parts


def _equal_layout(sizes: Sequence[int], equal: int) -> list[list[Piece]]:
    parts: list[list[Piece]] = []
    current: list[Piece] = []
    room = equal
    for source, size in enumerate(sizes):
        at = 0
        while at < size:
            take = min(room, size - at)
            current.append(Piece(source, at, at + take))
            at += take
            room -= take
            if not room:
                parts.append(current)
                current, room = [], equal
    if current:
        parts.append(current)
    return parts


class Concatenation(Writer):
    """Final uploads: their partial uploads' objects become one file."""

    async def _partial(self, user: str, upload_id: str) -> Upload:
        if not is_upload_id(upload_id):
            raise UploadNotFound(f"no such partial upload: {upload_id}")
        try:
            upload = await self.records.read(user, upload_id)
        except UploadNotFound:
            raise UploadNotFound(f"no such partial upload: {upload_id}") from None
        if not upload.partial:
            raise ConcatInvalid(f"upload {upload_id} is not a partial upload (Upload-Concat: partial)")
        if upload.state == COMPLETING:
            await self.completion.finish(upload)
        if upload.state != DONE:
            raise ConcatUnfinished(
                f"partial upload {upload_id} has {upload.offset} of its "
                + (
                    f"{upload.length} bytes"
                    if upload.length is not None
                    else "bytes (its length is deferred)"
                )
            )
        return upload

    async def concatenate(
        self,
        user: str,
        name: str,
        metadata: str,
        partial_ids: list[str],
        now: float,
        *,
        admit: Admit | None = None,
        finish: Finish | None = None,
    ) -> Upload:
        """The final upload of the partial uploads `partial_ids`, in order, stored as `name`.

        `admit` is awaited with the file's size once known (the pre-create hook) and answers
        the most bytes it may have; `finish` (the pre-finish hook) just before its parts are
        put together. Either may refuse it by raising: nothing is stored, the partial uploads
        stay."""
        validate_name(name)
        if not partial_ids:
            raise ConcatInvalid("a final upload names its partial uploads: Upload-Concat: final;<url> <url>")
        if len(set(partial_ids)) < len(partial_ids):
            raise ConcatInvalid("a final upload names each partial upload once")
        with self.pipeline.upload(user, "tus"):
            partials = [await self._partial(user, upload_id) for upload_id in partial_ids]
            length = sum(upload.length or 0 for upload in partials)
            limit = min(self.max_size, await admit(length)) if admit is not None else self.max_size
            if length > limit:
                raise TooLarge(
                    f"the partial uploads hold {format_size(length)}; the limit is {format_size(limit)}"
                )
            plan = self.pipeline.plan
            parts = layout(
                [upload.length or 0 for upload in partials], equal=None if plan.grows else plan.first(length)
            )
            if len(parts) > plan.max_parts:
                raise self.pipeline.too_many_parts(length)
            async with self._locked(partials):
                # Read again under the locks: another final upload may have taken them meanwhile.
                partials = [await self._partial(user, upload_id) for upload_id in partial_ids]
                final = Upload.new(
                    user,
                    name,
                    length,
                    metadata,
                    expires=now + self.expiry,
                    part_size=0,  # its parts are laid out from its partial uploads
                    grow=False,
                    partials=list(partial_ids),
                )
                if finish is not None:
                    await finish(length)
                await self._assemble(final, partials, parts)
                await self.completion.finish(final, resumed=False)
                # The file holds their bytes now: their objects go, and their leases with them.
                for upload in partials:
                    await self.records.delete_all(upload)
                    await self.quotas.upload_ended(upload.user, upload.id)
            log.info(
                "tus final upload %s: %d partial uploads in %d parts", final.id, len(partials), len(parts)
            )
            return final

    @contextlib.asynccontextmanager
    async def _locked(self, partials: list[Upload]) -> AsyncIterator[None]:
        """The partial uploads' locks, taken in order and renewed while the block runs."""
        locks: list[HeldLock] = []
        keepers: list[asyncio.Task[None]] = []
        try:
            for upload in partials:
                locks.append(await self.locks.take(upload))
            keepers = [asyncio.create_task(lock.keep()) for lock in locks]
            yield
        finally:
            for keeper in keepers:
                keeper.cancel()
            await asyncio.gather(*keepers, return_exceptions=True)
            for lock in locks:
                await asyncio.shield(lock.release())

    async def _assemble(self, final: Upload, partials: list[Upload], parts: list[list[Piece]]) -> None:
        """Send every part of the final upload to its own multipart upload, and record it
        "completing" (completion.py finishes it)."""
        if not parts:  # only empty partial uploads: completion.py stores the empty file
            final.state = COMPLETING
            await self.records.write(final, new=True)
            return
        final.s3_upload_id = await self.s3.create_multipart_upload(final.key, **self.pipeline.create_params())
        try:
            sent: list[dict[str, Any]] = [{}] * len(parts)
            gate = asyncio.Semaphore(PARTS_IN_FLIGHT)

            async def send(number: int, pieces: list[Piece]) -> None:
                async with gate:
                    sent[number - 1] = await self._send(final, partials, number, pieces)

            async with asyncio.TaskGroup() as group:
                for number, pieces in enumerate(parts, start=1):
                    group.create_task(send(number, pieces))
            final.add_parts(sent)
            final.offset = final.length or 0
            final.state = COMPLETING
            await self.records.write(final, new=True)  # from here, the next reader finishes it
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.s3.abort_multipart_upload(final.key, final.s3_upload_id))
            raise

    async def _send(
        self, final: Upload, partials: list[Upload], number: int, pieces: list[Piece]
    ) -> dict[str, Any]:
        if len(pieces) == 1:
            [piece] = pieces
            return await self.s3.upload_part_copy(
                final.key, final.s3_upload_id, number, partials[piece.source].key, piece.first, piece.end - 1
            )
        part = self.pipeline.new_part(final.user)
        try:
            for piece in pieces:
                async for chunk in self.s3.stream_object(
                    partials[piece.source].key, f"bytes={piece.first}-{piece.end - 1}"
                ):
                    await part.add(chunk)
            part.finish()
            return await self.pipeline.upload_part(final.key, final.s3_upload_id, number, part)
        finally:
            part.release()
