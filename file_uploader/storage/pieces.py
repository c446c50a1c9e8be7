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
that off.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

Piece = bytes | memoryview


class Pieces(Payload):
    """The bytes of `pieces`, in order, as one request body."""

    _autoclose = True  # nothing to close: the pieces are in memory

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
        for piece in self._pieces:
            if left <= 0:
                break
            if len(piece) > left:
                piece = piece[:left]
            left -= len(piece)
            await writer.write(piece)

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
