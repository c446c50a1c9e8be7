"""Who is writing to a tus upload: its ``<id>.lock`` object, a `cas.LeaseLock`.

Two PATCHes at the same offset would each upload the next part numbers, S3
keeping whichever UploadPart came last for each number: a file mixed from both
bodies. The lock lets one writer at a time in, across processes and hosts; its
holder renews it every third of its lease (LEASE_SECONDS, cas.py), and anyone
else gets UploadLocked (423).
"""

from __future__ import annotations

from ...sizes import LEASE_SECONDS
from ..cas import HeldLock, LeaseLock, Locked
from ..client import S3
from ..errors import UploadLocked
from .info import Upload


class Locks:
    """The uploads' locks, each held for a lease of `seconds`."""

    def __init__(self, s3: S3, seconds: float = LEASE_SECONDS) -> None:
        self.s3 = s3
        self.seconds = seconds

    async def take(self, upload: Upload) -> HeldLock:
        """Take the upload's lock, or raise UploadLocked."""
        try:
            return await LeaseLock(self.s3, upload.lock_key, seconds=self.seconds).take()
        except Locked:
            raise UploadLocked("another request is writing to this upload; try again shortly") from None
