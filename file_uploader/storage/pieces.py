"""A part's bytes sent to S3 as the pieces they arrived in, without joining them first.

A part in memory is the chunks aiohttp handed over as it read the client's
body (~245 KiB each, about 32 to an 8 MiB part). Joining them into one
`bytes` before UploadPart copied every byte once more, for nothing the
request needs: no checksum wants the whole buffer (checksums.py's hashers
take the pieces one after the other), and a socket takes a list of buffers
as readily as one. `Pieces` is that list as a request body:

- to **aiohttp**, a `Payload` that writes each piece to the connection in turn
  (uvloop writes each buffer as it is, or keeps a reference until the
  socket takes it: no copy);
- to **botocore**, a file-like object: `read` (which its parameter check asks
  for, and which a checksum botocore had to compute itself would use),
  `seek`/`tell` (a retry rewinds the body) and a length (Content-Length).

botocore adds `Expect: 100-continue` to every request whose body has `read`,
which would cost a round trip per part; connection.send_bodies_as_is turns
that off. A part spooled to disk (holding.py) is sent the same way by
`Spooled`, a piece at a time read in a worker thread.

**A send S3 stops taking.** aiobotocore gives aiohttp a connect and a read
timeout only, and aiohttp starts the read timeout once the body is sent: an
S3 that stops reading a body mid-way (Ceph RGW did, for over 8 minutes) holds
the upload, its S3 connection and its lane for ever, the kernel's send buffer
full. These bodies see S3's progress: aiohttp takes their next piece only once
the socket took the last. So each send has one deadline, `stall_seconds`
(S3_SEND_STALL_SECONDS, set by the S3 call: client.py) after the last piece
taken; its one timer is looked at when due and moved on then if a piece was
taken meanwhile, which costs a clock reading per piece and nothing per byte.
Past it the connection is aborted: dropped, never back in the pool, its socket
closed at once rather than left to flush what S3 will not take. aiohttp's own
one resend on a fresh connection is declined (the body says it is consumed),
so that botocore alone decides: its standard retries rewind the body and send
it on a new connection, which may well work (a wedged connection, one RGW
instance of several); when they run out the call fails as S3 unreachable
(503), and the upload's caller aborts its multipart upload. Once the whole
body is sent, waiting for S3's answer is botocore's read timeout's.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Sequence
from typing import IO

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from ..ops import metrics
from ..sizes import KiB

log = logging.getLogger(__name__)

Piece = bytes | memoryview

# What Spooled reads from its file at a time: about the size pieces arrive from a client in,
# so a spooled part is sent in as many writes as a part in memory has pieces.
FILE_PIECE = 256 * KiB


class WatchedBody(Payload):
    """A request body of the gateway's own, whose send is dropped once S3 takes nothing of it
    for `stall_seconds` (None: never)."""

    _autoclose = True  # nothing for aiohttp to close: the part's owner releases its bytes
    stall_seconds: float | None = None
    operation = "?"  # the S3 call sending it, for the log and the metric

    def watch(self, stall_seconds: float, operation: str) -> None:
        """Watch the sends of this body by the S3 call `operation` (client.py, before each call)."""
        self.stall_seconds = stall_seconds
        self.operation = operation

    def _watch(self, writer: AbstractStreamWriter) -> _Watch | None:
        self._consumed = False  # a new send: botocore's retry, or aiohttp's resend after a reset
        transport = getattr(writer, "transport", None)  # aiohttp's StreamWriter's connection
        if self.stall_seconds is None or transport is None:
            return None
        return _Watch(self, transport, self.stall_seconds)

    def _stalled(self) -> None:
        metrics.S3_SEND_STALLS.labels(self.operation).inc()
        log.warning(
            "S3 took nothing of a %s body for %g s: its connection is dropped",
            self.operation,
            self.stall_seconds,
        )
        # aiohttp resends an idempotent request once on a fresh connection unless its body is
        # consumed: declined, so that the attempts are botocore's (AWS_MAX_ATTEMPTS) alone.
        self._consumed = True


class _Watch:
    """One send's deadline: `seconds` after the last piece taken. One timer, looked at when due
    and moved on then if a piece was taken meanwhile: never a timer per piece."""

    __slots__ = ("_body", "_due_from", "_handle", "_loop", "_seconds", "_transport", "taken_at")

    def __init__(self, body: WatchedBody, transport: asyncio.WriteTransport, seconds: float) -> None:
        self._body = body
        self._transport = transport
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self.taken_at = self._due_from = self._loop.time()
        self._handle = self._loop.call_at(self._due_from + seconds, self._look)

    def taken(self) -> None:
        """A piece was taken: S3 is taking the body."""
        self.taken_at = self._loop.time()

    def _look(self) -> None:
        if self.taken_at != self._due_from:
            self._due_from = self.taken_at
            self._handle = self._loop.call_at(self.taken_at + self._seconds, self._look)
            return
        self._body._stalled()
        # Aborted, not closed: a close would keep the socket until S3 took what it holds.
        # The write waiting for room fails at once, and so does the call.
        self._transport.abort()

    def stop(self) -> None:
        self._handle.cancel()


class Pieces(WatchedBody):
    """The bytes of `pieces`, in order, as one request body."""

    def __init__(self, pieces: Sequence[Piece]) -> None:
        super().__init__(pieces, content_type="application/octet-stream")
        self._pieces = pieces
        self._total = sum(len(piece) for piece in pieces)
        self._size = self._total  # aiohttp's Content-Length, were botocore not to give one
        self._position = 0  # where `read` goes on from (botocore's view of the body)

    def __len__(self) -> int:
        return self._total

    def __bool__(self) -> bool:
        return True  # even empty: botocore tells "no body" from an empty one by truth

    # What aiohttp calls.

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        left = self._total if content_length is None else content_length
        watch = self._watch(writer)
        try:
            for piece in self._pieces:
                if left <= 0:
                    break
                if len(piece) > left:
                    piece = piece[:left]
                left -= len(piece)
                if watch is not None:
                    watch.taken()
                await writer.write(piece)  # returns once the socket took (most of) it
        finally:
            if watch is not None:
                watch.stop()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._pieces).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"".join(self._pieces)

    # What botocore calls (a file's reading position; aiohttp writes every piece regardless).

    def read(self, size: int = -1) -> bytes:
        size = self._total - self._position if size is None or size < 0 else size
        out = []
        start = 0
        for piece in self._pieces:
            end = start + len(piece)
            if end > self._position and size > 0:
                taken = piece[self._position - start : self._position - start + size]
                out.append(taken)
                self._position += len(taken)
                size -= len(taken)
            start = end
        return b"".join(out)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._total}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def __repr__(self) -> str:
        return f"<Pieces: {len(self._pieces)} pieces, {self._total} bytes>"


class Spooled(WatchedBody):
    """The first `size` bytes of a part's temporary file (holding.py) as one request body.

    Written a FILE_PIECE at a time, each read at its offset (pread), so that aiohttp's sending
    never moves the file's position, which is botocore's reading position (`read`, `seek`,
    `tell`), as in `Pieces`. Read on the event loop, as holding.py writes the file: it was
    written moments ago and is in the page cache, where 256 KiB take tens of microseconds.
    Each read in a worker thread queued behind every other use of the loop's six threads
    while the send held its S3 connection: with 500 concurrent uploads spilling parts, 343
    of them waited more than S3_POOL_WAIT_SECONDS for a connection and got 503 (69 reading
    here).
    """

    def __init__(self, file: IO[bytes], size: int) -> None:
        super().__init__(file, content_type="application/octet-stream")
        file.flush()  # what the part wrote is in the file, for pread
        self._file = file
        self._total = size
        self._size = size  # aiohttp's Content-Length, were botocore not to give one

    def __len__(self) -> int:
        return self._total

    def __bool__(self) -> bool:
        return True

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        end = self._total if content_length is None else min(content_length, self._total)
        fd = self._file.fileno()
        watch = self._watch(writer)
        try:
            offset = 0
            while offset < end:
                piece = os.pread(fd, min(FILE_PIECE, end - offset), offset)
                if not piece:
                    raise OSError(f"the part's file ends at {offset} bytes of {end}")
                offset += len(piece)
                if watch is not None:
                    watch.taken()
                await writer.write(piece)
        finally:
            if watch is not None:
                watch.stop()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return os.pread(self._file.fileno(), self._total, 0).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return os.pread(self._file.fileno(), self._total, 0)

    def read(self, size: int = -1) -> bytes:
        left = self._total - self._file.tell()
        return self._file.read(left if size is None or size < 0 else min(size, left))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            offset, whence = self._total + offset, io.SEEK_SET
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def __repr__(self) -> str:
        return f"<Spooled: {self._total} bytes>"
