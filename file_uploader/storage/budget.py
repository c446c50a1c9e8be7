"""What one process lets uploads hold: part data in memory (MEMORY_BUDGET) and on
disk (SPOOL_BUDGET), and uploads per user at once (MAX_UPLOADS_PER_USER).

`FairBudget` is a byte semaphore whose waiters are served per user, round
robin: when bytes come free, each user with someone waiting gets one grant in
turn, whatever the number of uploads that user has waiting. A user with a
hundred uploads therefore waits behind their own uploads, not in front of
everyone else's. Within one user, grants go in arrival order; the user whose
turn it is is served before anyone after them even if a smaller request
further back would fit, so a large request is never starved by small ones.

The pipeline (parts.py) asks for memory a chunk at a time, once the chunk has
been read from the socket, never for a length a client only declared: a
client that declares 5 TiB and sends a byte every few seconds holds a few
bytes. How that avoids the deadlock of every upload holding half a part and
waiting for the rest is parts.py's to say.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterator

from .errors import TooManyUploads

_Waiter = tuple[int, asyncio.Future[None]]


class FairBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes granted right now
        self.peak = 0  # the most ever granted at once
        self.waits = 0  # requests that had to wait
        # Users with someone waiting, in the order they are served next.
        self._queues: dict[str, collections.deque[_Waiter]] = {}

    @property
    def waiting(self) -> bool:
        return bool(self._queues)

    def _fits(self, size: int) -> bool:
        return self.held + size <= self.limit

    def _take(self, size: int) -> None:
        self.held += size
        self.peak = max(self.peak, self.held)

    async def acquire(self, owner: str, size: int, within: float | None = None) -> None:
        """Take `size` bytes for `owner`, waiting (in `owner`'s turn) for up to `within` seconds.

        Raises TimeoutError when the bytes did not come free in time, having
        taken nothing.
        """
        if size > self.limit:
            # The pipeline never asks for more than one upload's share of the budget.
            raise ValueError(f"a request of {size} bytes cannot fit a budget of {self.limit}")
        if not self._queues and self._fits(size):
            self._take(size)
            return
        self.waits += 1
        waiter: _Waiter = (size, asyncio.get_running_loop().create_future())
        self._queues.setdefault(owner, collections.deque()).append(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter[1]
        except BaseException:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(size)  # granted just as the wait ended
            else:
                self._forget(owner, waiter)
                self._wake()
            raise

    def release(self, size: int) -> None:
        self.held -= size
        self._wake()

    def _forget(self, owner: str, waiter: _Waiter) -> None:
        queue = self._queues.get(owner)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._queues[owner]

    def _wake(self) -> None:
        """Grant what now fits: one request per user per round, users in turn."""
        while self._queues:
            for owner in list(self._queues):
                queue = self._queues.pop(owner)
                while queue and queue[0][1].done():  # cancelled meanwhile
                    queue.popleft()
                if not queue:
                    continue
                size, future = queue[0]
                if not self._fits(size):
                    # Its turn: nobody behind it is served first. Put the user
                    # back at the head of the rotation.
                    self._queues = {owner: queue, **self._queues}
                    return
                queue.popleft()
                self._take(size)
                future.set_result(None)
                if queue:
                    self._queues[owner] = queue  # to the back of the rotation


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
