"""A process-wide cap on the part data that uploads hold in memory.

An upload reserves the bytes of a part before it reads the part from its
socket and gives them back when S3 has the part. When the cap is reached the
upload waits, so it stops reading and TCP slows its client down; nothing fails
and memory does not grow with the number of users. Waiters are served in
arrival order, so a large part cannot be starved by a stream of small ones.
"""

from __future__ import annotations

import asyncio
import collections


class ByteBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes reserved right now
        self.peak = 0  # the most ever reserved at once
        self.waits = 0  # reservations that had to wait for room
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    def _fits(self, size: int) -> bool:
        # A reservation larger than the whole budget (a part grown for a huge
        # file) is let through alone rather than never.
        return self.held + size <= self.limit or self.held == 0

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    async def acquire(self, size: int) -> None:
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
