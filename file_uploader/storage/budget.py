"""What one process lets uploads hold: part data in memory (MEMORY_BUDGET) and on
disk (SPOOL_BUDGET), and uploads per user at once (MAX_UPLOADS_PER_USER).

`FairBudget` is a byte semaphore shared fairly between users:

- **Per user, in turn.** When bytes come free, each user with a request
  waiting gets one grant in turn, whatever the number of uploads that user
  has waiting. Within one user, grants go in arrival order; the user whose
  turn it is is served before anyone after them even if a smaller request
  further back would fit, so a large request is never starved by small ones.
- **A cap per user while others want memory.** Taking turns alone is not
  enough: a user with one upload has at most one request waiting, so a user
  with a hundred would still take all but one of the grants of every round.
  So no user holds more than the budget divided by the users holding or
  waiting for it, plus `slack` (one part of the largest size kept in memory,
  so that each user can always finish a part). A user over that cap is
  passed over, even when the bytes are free: they stay for the others'
  next requests. A user with many slow uploads therefore delays only
  themselves.

The pipeline (parts.py) asks for memory a chunk at a time, once the chunk has
been read from the socket, never for a length a client only declared: a
client that declares 5 TiB and sends a byte every few seconds holds a few
bytes. How that avoids the deadlock of uploads each holding half a part and
waiting for the rest is parts.py's to say.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Iterator

from .errors import TooManyUploads

_Waiter = tuple[int, asyncio.Future[None]]


class GaveUp(Exception):
    """A waiter's `give_up` said to stop waiting (its caller has another way forward)."""


class FairBudget:
    def __init__(self, limit: int, slack: int | None = None) -> None:
        self.limit = limit
        self.slack = slack  # None: no cap per user
        self.held = 0  # bytes granted right now
        self.peak = 0  # the most ever granted at once
        self.waits = 0  # requests that had to wait
        self.held_by: dict[str, int] = {}  # users holding bytes, and how many
        # Users with someone waiting, in the order they are served next.
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        self._users: set[str] = set()  # holding or waiting: what the cap divides by

    @property
    def waiting(self) -> bool:
        return bool(self._queues)

    def cap(self) -> int:
        """The most one user may hold now: an equal split between the users holding or waiting, plus slack."""
        if self.slack is None:
            return self.limit
        return self.limit // max(1, len(self._users)) + self.slack

    def over_cap(self, owner: str, size: int = 0) -> bool:
        return self.held_by.get(owner, 0) + size > self.cap()

    def _grantable(self, owner: str, size: int) -> bool:
        return self.held + size <= self.limit and not self.over_cap(owner, size)

    def _take(self, owner: str, size: int) -> None:
        self.held += size
        self.held_by[owner] = self.held_by.get(owner, 0) + size
        self._users.add(owner)
        self.peak = max(self.peak, self.held)

    def _settle(self, owner: str) -> None:
        """Forget `owner` as a user once it neither holds nor waits."""
        if owner not in self.held_by and owner not in self._queues:
            self._users.discard(owner)

    def try_acquire(self, owner: str, size: int) -> bool:
        """Take `size` bytes now if they are free, within `owner`'s cap, and nobody waits; whether it did."""
        if not size:
            return True  # nothing taken, and `owner` not counted as a user holding some
        if self._queues or not self._grantable(owner, size):
            return False
        self._take(owner, size)
        return True

    async def acquire(
        self,
        owner: str,
        size: int,
        within: float | None = None,
        *,
        every: float | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> None:
        """Take `size` bytes for `owner`, waiting (in `owner`'s turn) for up to `within` seconds.

        While it waits, `give_up()` is asked every `every` seconds; the wait
        keeps its place in line unless that says True (then GaveUp is raised).
        Raises TimeoutError when the bytes did not come free in time. Either
        way nothing is taken.
        """
        if size > self.limit:
            # The pipeline never asks for more than one upload's share of the budget.
            raise ValueError(f"a request of {size} bytes cannot fit a budget of {self.limit}")
        if self.try_acquire(owner, size):
            return
        self.waits += 1
        loop = asyncio.get_running_loop()
        waiter: _Waiter = (size, loop.create_future())
        self._queues.setdefault(owner, collections.deque()).append(waiter)
        self._users.add(owner)
        deadline = None if within is None else loop.time() + within
        try:
            while not waiter[1].done():
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise TimeoutError
                pause = left if every is None else every if left is None else min(every, left)
                await asyncio.wait([waiter[1]], timeout=pause)
                if not waiter[1].done() and give_up is not None and give_up():
                    raise GaveUp
        except BaseException:
            if waiter[1].done() and not waiter[1].cancelled():
                self.release(owner, size)  # granted just as the wait ended
            else:
                self._forget(owner, waiter)
                self._wake()
            raise

    def release(self, owner: str, size: int) -> None:
        if not size:
            return  # a part moved to disk before it held any memory gives back nothing
        self.held -= size
        left = self.held_by[owner] - size
        if left:
            self.held_by[owner] = left
        else:
            del self.held_by[owner]
            self._settle(owner)
        self._wake()

    def _forget(self, owner: str, waiter: _Waiter) -> None:
        queue = self._queues.get(owner)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._queues[owner]
                self._settle(owner)

    def _wake(self) -> None:
        """Grant what now fits: one request per user per round, users in turn, none over its cap."""
        while self._queues:
            granted = False
            for owner in list(self._queues):
                queue = self._queues.pop(owner)
                while queue and queue[0][1].done():  # given up or cancelled meanwhile
                    queue.popleft()
                if not queue:
                    self._settle(owner)
                    continue
                size, future = queue[0]
                if self.over_cap(owner, size):
                    self._queues[owner] = queue  # passed over this round
                    continue
                if self.held + size > self.limit:
                    # Its turn: nobody behind it is served first. Put the user
                    # back at the head of the rotation.
                    self._queues = {owner: queue, **self._queues}
                    return
                queue.popleft()
                self._take(owner, size)
                future.set_result(None)
                granted = True
                if queue:
                    self._queues[owner] = queue  # to the back of the rotation
            if not granted:
                return


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
