"""Resumable (tus) uploads sent to an upload request: the tus store (tus/), under the request's grant.

An upload request (requests.py) takes files with one PUT each, or, so that a
file cut short resumes where it stopped, as tus uploads. These are the tus
store's own uploads of the owner (same records, part pipeline, quota lease,
completion and landing), made with `grant` set to the request's id. What the
request adds:

- **Its room is taken at creation**, before a byte: one file and the upload's
  length (which a creation must declare) by the request's compare-and-swap
  (`UploadRequests.take`), as a PUT's is. An upload that ends unfinished
  (terminated, expired and removed by gc, refused at its end) gives it back
  (`UploadRequests.released`, which the tus store calls: completion.Released).
- **The sender reaches only its uploads**: every later request names the
  request and the upload, and an upload of another request, or the owner's
  own, is as unknown as a made-up id. The request must still be there, not
  expired, and the password right, at each request.
- **Nothing is replaced**: the name must be free at creation, and again just
  before the file is stored (the finish check); a name taken meanwhile refuses
  the file, and the upload is forgotten with its room given back.
"""

from __future__ import annotations

import asyncio

from .landing import Finish
from .requests import UploadRequest, UploadRequests
from .tus import Resumable, Upload


class RequestUploads:
    """tus uploads under upload requests, in one bucket."""

    def __init__(self, requests: UploadRequests, resumable: Resumable) -> None:
        self.requests = requests
        self.resumable = resumable

    async def admit(
        self, request_id: str, password: str | None, name: str, length: int
    ) -> tuple[UploadRequest, str]:
        """The request and the file's key, if an upload of `name` and `length` may be made now
        (UploadRequests.admit's refusals); nothing is taken yet."""
        request, key = await self.requests.admit(request_id, password, name, length)
        assert key is not None
        return request, key

    async def create(
        self,
        request_id: str,
        password: str | None,
        name: str,
        length: int,
        metadata: str,
        now: float,
        *,
        max_size: int | None = None,
        finish: Finish | None = None,
    ) -> Upload:
        """A tus upload of `length` bytes, to be stored as `name` in the request's folder, its room
        taken from the request. `finish`: as Resumable.create's (the pre-finish hook)."""
        request, key = await self.admit(request_id, password, name, length)
        await self.requests.take(request_id, length)
        try:
            return await self.resumable.create(
                request.uid,
                request.folder + name,
                length,
                metadata,
                now,
                max_size=max_size,
                finish=self.finish(key, finish),
                grant=request_id,
            )
        except BaseException:
            await asyncio.shield(self.requests.released(request_id, length))
            raise

    async def get(self, request_id: str, password: str | None, upload_id: str, now: float) -> Upload:
        """The upload `upload_id` made under the request; any other is UploadNotFound."""
        request = await self.requests.open(request_id, password)
        return await self.resumable.get(request.uid, upload_id, now, grant=request_id)

    def finish(self, key: str, hook: Finish | None) -> Finish:
        """What is awaited just before the file is stored: the name still free, then `hook`."""

        async def finish(size: int) -> None:
            await self.requests.absent(key)
            if hook is not None:
                await hook(size)

        return finish
