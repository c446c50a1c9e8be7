"""Whether the bucket is usable: checked (and created if allowed) at startup and,
until that succeeds, again before each request that needs S3.

The gateway starts even when S3 is unreachable; requests get 503 until S3
answers, and the first one after that creates the bucket if it is missing.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from .storage import Storage


class BucketCheck:
    def __init__(self, storage: Storage, *, create: bool) -> None:
        self.storage = storage
        self.create = create
        self.ready = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Return once the bucket exists; raise the storage error otherwise."""
        if self.ready:
            return
        async with self._lock:  # one check at a time, not one per waiting request
            if not self.ready:
                await self.storage.ensure_bucket(create=self.create)
                self.ready = True


# Here rather than in typedefs.py, which this module's middleware would otherwise import in a cycle.
BUCKET = web.AppKey("bucket", BucketCheck)
S3_ROUTES = ("/api/files", "/api/uploads")  # what needs the bucket


@web.middleware
async def bucket_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the bucket before a file request, until a check has passed once."""
    if request.path.startswith(S3_ROUTES):
        await request.app[BUCKET].ensure()
    return await handler(request)
