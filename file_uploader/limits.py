"""MAX_UPLOADS_PER_USER: how many uploads one user may run at once in this process.

Counted per process (each gunicorn worker has its own count), so the bound
across a deployment is the limit times the number of workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiohttp import web

from .errors import ApiError

RETRY_AFTER_SECONDS = "1"  # an upload slot frees up as soon as any upload ends


class UploadSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit
        self._active: dict[str, int] = {}

    def active(self, uid: str) -> int:
        return self._active.get(uid, 0)

    def check(self, uid: str) -> None:
        """Raise a 429 ApiError if `uid` may not start another upload now."""
        if self.limit and self.active(uid) >= self.limit:
            raise ApiError(
                429,
                "too_many_uploads",
                f"at most {self.limit} uploads at a time; wait for one to finish",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )

    @contextlib.contextmanager
    def hold(self, uid: str) -> Iterator[None]:
        """Take one of `uid`'s slots for the duration of the block (or raise 429)."""
        self.check(uid)
        self._active[uid] = self.active(uid) + 1
        try:
            yield
        finally:
            left = self._active[uid] - 1
            if left:
                self._active[uid] = left
            else:
                del self._active[uid]


UPLOADS = web.AppKey("uploads", UploadSlots)
