"""Where a part's bytes wait until S3 has them: memory by bytes read, disk when short.

What the bytes are counted against:

- **Memory, by bytes actually read.** A chunk is taken from MEMORY_BUDGET
  (budget.FairBudget, served per user in turn) once it has been read from the
  socket, never for a length a client only declared. A client that declares a
  huge body and trickles holds what it sent; while a chunk waits for its
  grant the socket is not read, so TCP slows that client down.
- **One upload's share.** No upload holds more than `share` bytes of memory
  (MEMORY_BUDGET / 8, and never less than a part): before it reads a new
  part, an upload waits for its own parts in flight until the part fits in
  its share. That wait is only ever on the upload's own S3 calls.
- **Disk, for slow clients and to break deadlock.** Reserving chunk by chunk
  can deadlock: uploads that each hold half a part and wait for memory for
  the rest could fill the budget and wait for ever; and slow clients sitting
  on half-filled parts could keep it full while faster users wait. So while a
  chunk waits for memory, every SPILL_SECONDS seconds the pipeline looks at the
  parts in memory: a part whose client has kept it waiting for more than
  SPILL_SECONDS in all (a trickling client) is moved to a temporary file, its
  bytes written out and their memory given back (`preempt`), and goes on
  filling on disk, counted against SPOOL_BUDGET. If no such part is left and
  no part is on its way to S3 (nothing will give memory back: the deadlock),
  the waiting part itself moves to disk. So memory is only ever held for
  long by parts on their way to S3, which always end (by success, failure or
  timeout), and by clients that keep sending; slow clients cost disk, not
  the memory faster users need; and under an ordinary overload (many fast
  uploads, S3 the bottleneck) uploads simply wait their turn, as before,
  without touching the disk. When the disk budget has no room either, a
  chunk keeps waiting for memory; after CLIENT_TIMEOUT the upload fails
  with StorageBusy (503, Retry-After), which frees what it held.
- **Disk from the start, for a part larger than a share.** S3's 10,000-part
  rule makes parts grow with the file: a declared 5 TiB needs 525 MiB parts,
  more than a whole budget. Such parts are written to a temporary file as
  they arrive (counted against SPOOL_BUDGET) and sent from there; disk holds
  at most PARTS_IN_FLIGHT + 1 such parts per upload. Streaming a part to S3
  as it arrives was the other way, and was not taken: it would hold an S3
  connection for as long as the slowest client takes to send 525 MiB.

`Holding` is that policy, one per process; `Part` is one part's bytes, which
ask it for room as they arrive; `PartReader` cuts a body into parts. Sending
parts to S3 is parts.py's (`PartPipeline`), which tells the holding what is
on its way (`sending`) so that it knows what will give memory back.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from typing import IO

from ..ops import metrics
from .budget import FairBudget, GaveUp
from .checksums import Checksum, Hasher
from .errors import StorageBusy
from .pieces import Pieces, Spooled

# No single upload may hold more than this fraction of MEMORY_BUDGET in memory.
MEMORY_SHARE = 8


class Holding:
    """MEMORY_BUDGET and SPOOL_BUDGET as the parts of every upload of the process take them."""

    def __init__(
        self,
        *,
        part_size: int,
        memory_budget: int,
        spool_budget: int,
        spill_after: float,
        wait_timeout: float,
    ) -> None:
        # The most memory one upload may hold; a part larger than this goes to disk.
        self.share = max(part_size, memory_budget // MEMORY_SHARE)
        # Each user may hold an equal split of the budget plus one share, so
        # that whoever holds memory can always finish a part with it.
        self.memory = FairBudget(memory_budget, slack=self.share)
        self.disk = FairBudget(spool_budget)
        self.spill_after = spill_after
        self.wait_timeout = wait_timeout  # CLIENT_TIMEOUT: no upload waits for room longer
        self.filling: set[Part] = set()  # parts in memory still being filled
        # Memory held by parts handed to S3, which comes back on its own: in
        # all, and per user.
        self.sending = 0
        self.sending_by: dict[str, int] = {}

    def disk_has_room(self, size: int) -> bool:
        return not self.disk.waiting and self.disk.held + size <= self.disk.limit

    async def take_memory(self, owner: str, size: int) -> bool:
        """Take `size` bytes of memory for `owner`'s part; False to say: move the part to disk.

        A request that waits (in its user's turn) is looked at every
        SPILL_SECONDS: parts whose slow clients sit on memory are moved to disk
        first (`preempt`); if nothing can free memory any more (no part on its
        way to S3, no slow client to move) the waiting part itself goes to
        disk. After CLIENT_TIMEOUT in all, the upload fails with StorageBusy.
        """

        def give_up() -> bool:
            if self.preempt():
                return False  # memory came free: wait on, in line
            if not self.disk_has_room(self.share):
                return False
            # Nothing will give memory back: no part on its way to S3 at all,
            # or (for a user at its cap) none of this user's.
            stuck = self.memory.over_cap(owner, size) and not self.sending_by.get(owner)
            return stuck or self.sending == 0

        try:
            await self.memory.acquire(owner, size, self.wait_timeout, every=self.spill_after, give_up=give_up)
        except GaveUp:
            return False
        except TimeoutError:
            raise StorageBusy("no memory came free for the upload; try again later") from None
        return True

    def preempt(self) -> int:
        """Move to disk parts in memory whose clients keep them waiting, those of users over
        their cap and the slowest first, up to one share's worth (the writes are synchronous);
        how many moved."""
        now = asyncio.get_running_loop().time()
        slow = sorted(
            (part for part in self.filling if part.memory and part.slow_client(now)),
            key=lambda part: (not self.memory.over_cap(part.owner), -part.client_seconds),
        )
        moved = freed = 0
        for part in slow:
            if freed >= self.share or not self.disk.try_acquire(part.owner, part.memory):
                break
            freed += part.memory
            part.disk += part.memory
            part.spill()
            moved += 1
        return moved

    def sent_off(self, part: Part) -> None:
        """`part` is on its way to S3: its memory comes back on its own, when `landed` says so."""
        if not part.memory:
            return  # on disk: its user is not counted as sending memory back
        self.sending += part.memory
        self.sending_by[part.owner] = self.sending_by.get(part.owner, 0) + part.memory

    def landed(self, owner: str, memory: int) -> None:
        """A part of `owner` that held `memory` bytes is no longer on its way to S3."""
        if not memory:
            return  # a part on disk: `sent_off` counted nothing
        self.sending -= memory
        left = self.sending_by[owner] - memory
        if left:
            self.sending_by[owner] = left
        else:
            del self.sending_by[owner]


class Part:
    """One part's bytes, from the first chunk until S3 has them (or the upload failed)."""

    def __init__(self, holding: Holding, owner: str, checksum: Checksum | None, *, spool: bool) -> None:
        self.size = 0
        self.memory = 0  # bytes of MEMORY_BUDGET this part holds
        self.disk = 0  # bytes of SPOOL_BUDGET this part holds
        self._holding = holding
        self.owner = owner
        self._hasher: Hasher | None = checksum.new() if checksum is not None else None
        # Hashed as the pieces arrive (a cheap CRC), else once the part is whole (`prepare`).
        self._inline = checksum is not None and checksum.inline
        self._pieces: list[bytes | memoryview] = []
        self._body: Pieces | None = None  # the pieces, once hashed and ready to send
        self._file: IO[bytes] | None = tempfile.TemporaryFile() if spool else None
        # Seconds spent waiting for the client's bytes while this part filled,
        # and since when it waits for them now (None: it does not).
        self.client_seconds = 0.0
        self.waiting_since: float | None = None

    @property
    def spooled(self) -> bool:
        return self._file is not None

    async def add(self, piece: bytes | memoryview) -> None:
        """Keep `piece` (already read from the client), in memory if it can be had soon, else on disk."""
        size = len(piece)
        if self._file is None:
            # Memory free now is taken without a wait (and without the coroutines and the
            # closure of one), as `take_memory` would take it first: a chunk is read
            # thousands of times a second.
            memory = self._holding.memory
            if memory.try_acquire(self.owner, size) or await self._holding.take_memory(self.owner, size):
                self._pieces.append(piece)
                self.memory += size
                if self._inline:
                    self._hash(piece)
            else:
                await self._take_disk(self.memory)
                self.spill()
        if self._file is not None:
            await self._take_disk(size)
            # A plain write: the kernel's page cache takes it at memory speed,
            # and a thread per chunk would cost more than it saves.
            self._file.write(piece)
            # On disk, bytes are hashed as they are written, in order; in
            # memory, all at once in a worker thread (`prepare`).
            self._hash(piece)
        self.size += size

    def _hash(self, piece: bytes | memoryview) -> None:
        if self._hasher is not None:
            self._hasher.update(piece)

    def slow_client(self, now: float) -> bool:
        """Is this part waiting for its client, which has kept it waiting longer than SPILL_SECONDS?"""
        if self.waiting_since is None:
            return False
        return self.client_seconds + now - self.waiting_since > self._holding.spill_after

    async def _take_disk(self, size: int) -> None:
        try:
            await self._holding.disk.acquire(self.owner, size, self._holding.wait_timeout)
        except TimeoutError:
            raise StorageBusy("no disk came free for upload parts; try again later") from None
        self.disk += size

    def spill(self) -> None:
        """Move the bytes held in memory to a temporary file (whose disk the caller has taken
        for them), and give their memory back. Synchronous: safe to call from another task
        while this part's own waits for its client."""
        self._file = tempfile.TemporaryFile()
        for piece in self._pieces:
            self._file.write(piece)
            if not self._inline:
                self._hash(piece)  # not hashed yet: in memory that waits for `prepare`
        self._pieces = []
        self._holding.filling.discard(self)
        self._holding.memory.release(self.owner, self.memory)
        self.memory = 0
        metrics.PARTS_SPILLED.inc()

    def finish(self) -> None:
        """Every byte is in: the part can no longer move to disk."""
        self._holding.filling.discard(self)

    async def prepare(self) -> None:
        """Make the part ready to send: in memory, hash its pieces, in a worker thread.

        The pieces are sent as they are (pieces.py), never joined into one
        buffer: that copy of every byte bought nothing. MD5 and SHA-256 are
        hashed here, once per part: hashlib releases the GIL above 2 KiB, so
        on two cores the hash runs beside the event loop's socket work instead
        of on it. CRC32 and CRC32C (`Checksum.inline`) cost less hashed as
        each piece arrives than a thread hand-off per part, and without a
        checksum there is nothing to do. A part on disk was hashed as it was
        written.
        """
        if self._file is None and self._body is None:
            pieces, self._pieces = self._pieces, []
            if self._hasher is not None and not self._inline:
                self._body = await asyncio.to_thread(self._sealed, pieces)
            else:
                self._body = self._sealed(pieces)

    def _sealed(self, pieces: list[bytes | memoryview]) -> Pieces:
        """The pieces as the body to send, hashed unless they were as they came."""
        if self._hasher is not None and not self._inline:
            for piece in pieces:
                self._hasher.update(piece)
        return Pieces(pieces)

    def body(self) -> Pieces | Spooled:
        """What botocore sends: the pieces, or the spool file, from their start (again on a retry)."""
        if self._file is not None:
            self._file.seek(0)
            return Spooled(self._file, self.size)
        if self._body is None:  # not prepared: a tus tail read back, say (small, or rare)
            pieces, self._pieces = self._pieces, []
            self._body = self._sealed(pieces)
        self._body.seek(0)
        return self._body

    def digest(self) -> bytes:
        """The checksum's digest of the part's bytes (an MD5 when ETags are compared)."""
        assert self._hasher is not None, "a part without a checksum has no digest"
        self.body()  # hashed once its bytes are all in hand
        return self._hasher.digest()

    def checksum(self, checksum: Checksum | None) -> dict[str, str]:
        """The botocore parameter carrying this part's checksum, if any."""
        if checksum is None or self._hasher is None:
            return {}
        self.body()  # hashed once its bytes are all in hand
        params = {checksum.param: checksum.encode(self._hasher)}
        if checksum.algorithm:
            # x-amz-sdk-checksum-algorithm: says which header holds the checksum
            # (moto stores and checks it only then); botocore adds no checksum
            # of its own since one is already there.
            params["ChecksumAlgorithm"] = checksum.algorithm
        return params

    def release(self) -> None:
        """Drop the bytes and give their memory and disk back; safe to call more than once."""
        self._holding.filling.discard(self)
        self._pieces = []
        self._body = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.memory:
            self._holding.memory.release(self.owner, self.memory)
            self.memory = 0
        if self.disk:
            self._holding.disk.release(self.owner, self.disk)
            self.disk = 0


class PartReader:
    """Cuts a stream of chunks of any size into `Part`s of exact sizes."""

    def __init__(
        self, holding: Holding, checksum: Checksum | None, chunks: AsyncIterator[bytes], owner: str
    ) -> None:
        self._holding = holding
        self._checksum = checksum
        self._chunks = chunks.__aiter__()
        self._owner = owner
        self._rest: memoryview | None = None
        self._eof = False
        self.received = 0  # bytes taken from `chunks` so far

    async def read(self, size: int) -> Part:
        """The next `size` bytes as a part; fewer only at the end of the stream."""
        part = Part(self._holding, self._owner, self._checksum, spool=size > self._holding.share)
        if not part.spooled:
            self._holding.filling.add(part)
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
            await part.add(piece)
        loop = asyncio.get_running_loop()
        while part.size < size and not self._eof:
            part.waiting_since = loop.time()
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._eof = True
                break
            finally:
                part.client_seconds += loop.time() - part.waiting_since
                part.waiting_since = None
            self.received += len(chunk)
            need = size - part.size
            if len(chunk) > need:
                view = memoryview(chunk)
                self._rest = view[need:]
                await part.add(view[:need])
            else:
                await part.add(chunk)

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
