"""The storage layer: every S3 call of the gateway, and nothing of HTTP.

    client.py     the aiobotocore client, its config, `S3` (every call, errors, paging),
                  and the lanes that split its connection pool (downloads, uploads, short calls)
    keys.py       how a token and a name become an S3 key
    checksums.py  the checksum sent with each part
    budget.py     MEMORY_BUDGET and SPOOL_BUDGET, served per user in turn; MAX_UPLOADS_PER_USER
    parts.py      the one part pipeline, for PUT and tus alike: memory by bytes read, disk when short
    files.py      put, get, list, delete
    resumable.py  tus uploads, their state in S3, their locks and compare-and-swap commits
    sweep.py      gc and purge

`Storage` ties them together, once per process (or per admin command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from ..settings import Settings
from .checksums import CHECKSUMS
from .client import S3, Lanes, open_client
from .errors import StorageError
from .files import Files
from .parts import PartPipeline
from .resumable import Resumable

log = logging.getLogger(__name__)


class Storage:
    """Everything the gateway stores, in the one bucket of `s3`."""

    def __init__(self, s3: S3, settings: Settings) -> None:
        self.s3 = s3
        self.pipeline = PartPipeline(
            s3,
            part_size=settings.part_size,
            parts_in_flight=settings.parts_in_flight,
            memory_budget=settings.memory_budget,
            checksum=CHECKSUMS[settings.s3_checksum],
            max_uploads_per_user=settings.max_uploads_per_user,
            spool_budget=settings.spool_budget,
            spill_after=settings.spill_after,
            wait_timeout=settings.body_read_timeout,
        )
        self.files = Files(s3, self.pipeline)
        self.resumable = Resumable(
            s3,
            self.pipeline,
            expiry=settings.upload_expiry,
            max_size=settings.max_file_size,
            lock_seconds=settings.upload_lock_seconds,
        )
        self._create_bucket = settings.s3_create_bucket
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    async def ensure_bucket(self) -> None:
        """Return once the bucket exists (creating it if allowed); raise a StorageFailure otherwise.

        Checked at startup and, until that succeeds, again before each request
        that needs S3: the gateway starts even when S3 is unreachable, and the
        first request after S3 answers creates a missing bucket.
        """
        if self._bucket_ready:
            return
        async with self._bucket_lock:  # one check at a time, not one per waiting request
            if self._bucket_ready:
                return
            if not await self.s3.bucket_exists():
                if not self._create_bucket:
                    raise StorageError("the bucket does not exist")
                await self.s3.create_bucket()
                log.info("created the bucket")
            self._bucket_ready = True

    async def check(self) -> None:
        """Raise a StorageFailure unless the bucket answers (for readiness probes)."""
        if not await self.s3.bucket_exists():
            raise StorageError("the bucket does not exist")


@contextlib.asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """A Storage with its own S3 client, open for the block; one per process or admin command."""
    async with open_client(settings) as client:
        s3 = S3(
            client,
            settings.s3_bucket,
            Lanes.from_settings(settings),
            conditional_writes=settings.s3_conditional_writes,
        )
        yield Storage(s3, settings)
