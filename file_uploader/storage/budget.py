"""What one process lets uploads hold: part data in memory (MEMORY_BUDGET) and
uploads per user at once (MAX_UPLOADS_PER_USER).

An upload reserves the bytes of a part before it reads the part from its
socket and gives them back when S3 has the part. When the cap is reached the
upload waits, so it stops reading and TCP slows its client down; nothing fails
and memory does not grow with the number of users. Waiters are served in
arrival order, so a large part cannot be starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator

from .errors import TooManyUploads


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes reserved right now
        self.peak = 0  # the most ever reserved at once
        self.waits = 0  # reservations that had to wait for room
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.limit

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    async def acquire(self, size: int) -> None:
        if size > self.limit:
            # The pipeline never asks for more than a share of the budget
            # (parts.PartPipeline spools larger parts to disk).
            raise ValueError(f"a reservation of {size} bytes cannot fit a budget of {self.limit}")
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        self.waits += 1
        waiter = (size, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(size)  # granted just as it was cancelled
            else:
                self._waiters.remove(waiter)
                self._wake()
            raise

    def release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            size, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if not self._fits(size):
                return
            self._waiters.popleft()
            self._take(size)
            future.set_result(None)


class UploadSlots:
    """MAX_UPLOADS_PER_USER: how many uploads (PUTs and tus PATCHes alike) one user runs at once.

    Counted per process (each gunicorn worker has its own count), so the bound
    across a deployment is the limit times the number of workers.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._active: dict[str, int] = {}

    def active(self, user: str) -> int:
        return self._active.get(user, 0)

    def check(self, user: str) -> None:
        """Raise TooManyUploads if `user` may not start another upload now."""
        if self.limit and self.active(user) >= self.limit:
            raise TooManyUploads(f"at most {self.limit} uploads at a time; wait for one to finish")

    @contextlib.contextmanager
    def hold(self, user: str) -> Iterator[None]:
        """Take one of `user`'s slots for the duration of the block (or raise TooManyUploads)."""
        self.check(user)
        self._active[user] = self.active(user) + 1
        try:
            yield
        finally:
            left = self._active[user] - 1
            if left:
                self._active[user] = left
            else:
                del self._active[user]
