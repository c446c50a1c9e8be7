"""Whether the storage may serve: the bucket is there (created if S3_CREATE_BUCKET allows) and
the write probe (probe.py) has found what S3 enforces.

The gateway starts even when S3 is unreachable or refuses writes: this is
checked at startup and, until it succeeds, again before each request that
needs S3, so the first request after S3 answers creates a missing bucket and
probes it. What the probe finds is applied where it matters: the integrity
the part pipeline sends with each part, and whether the S3 client may rely on
conditional writes (cas.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..ops import metrics
from ..settings import Settings
from .checksums import CHECKSUMS
from .client import S3
from .errors import StorageError, StorageFailure, StorageUnavailable
from .parts import PartPipeline
from .probe import UNPROBED, Capabilities, Decision, choose, probe

log = logging.getLogger(__name__)


class Readiness:
    def __init__(
        self, s3: S3, pipeline: PartPipeline, settings: Settings, *, known: Capabilities | None = None
    ) -> None:
        self.s3 = s3
        self.pipeline = pipeline
        self._settings = settings
        self._known = known  # what an earlier probe of this S3 found (open_storage says when)
        # What the write probe found S3 to enforce: every finding False until it succeeded.
        self.capabilities: Capabilities = UNPROBED
        self._bucket_ready = False
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self._bucket_ready and self.capabilities.probed

    async def ensure_bucket(self) -> None:
        """Return once the bucket exists (creating it if allowed); raise a StorageFailure otherwise."""
        if self._bucket_ready:
            return
        if not await self.s3.bucket_exists():
            if not self._settings.s3_create_bucket:
                raise StorageError("the bucket does not exist")
            await self.s3.create_bucket()
            log.info("created the bucket")
        self._bucket_ready = True

    async def ensure_ready(self) -> None:
        """Return once the bucket exists and the write probe has run; raise a StorageFailure otherwise.

        Checked at startup and, until that succeeds, again before each request
        that needs S3: the gateway starts even when S3 is unreachable or
        refuses writes, and the first request after S3 answers creates a
        missing bucket and probes it.
        """
        if self.ready:
            return
        async with self._lock:  # one check at a time, not one per waiting request
            if self.ready:
                return
            await self.ensure_bucket()
            await self.probe()

    async def probe(self, *, every_checksum: bool = False) -> Decision:
        """Run the write probe, and apply the integrity it leads to (docs/s3-engines.md).

        At startup only S3_CHECKSUM and its fallback, Content-MD5, are tried;
        `every_checksum` tries every algorithm (`python -m file_uploader probe`).
        """
        names = list(CHECKSUMS) if every_checksum else [self._settings.s3_checksum, "md5"]
        try:
            if self._known is not None and not every_checksum:
                found = self._known
            else:
                found = await probe(self.s3, names)
        except StorageUnavailable as exc:
            raise StorageUnavailable(f"the write probe failed: {exc}") from exc
        except StorageFailure as exc:
            raise StorageError(f"the write probe failed: {exc}", exc.s3_code) from exc
        decision = choose(self._settings.s3_checksum, self._settings.s3_checksum_fallback, found)
        self.pipeline.use(decision.integrity)
        self.capabilities = found
        self.s3.found_conditions(if_none_match=found.if_none_match, if_match=found.if_match)
        metrics.report_s3(decision.integrity.describe(), found.flags())
        integrity = decision.integrity
        log.info(
            "S3 write probe: checksums %s, ETags %s MD5s, If-None-Match %s, If-Match %s; "
            "integrity: %s, verified by %s",
            ", ".join(f"{name} {verdict}" for name, verdict in found.checksums.items()),
            "are" if found.etag_is_md5 else "are not",
            "honoured" if found.if_none_match else "ignored",
            "honoured" if found.if_match else "ignored",
            integrity.name,
            integrity.verified_by,
        )
        if decision.note:
            log.log(logging.WARNING if decision.loud else logging.INFO, "%s", decision.note)
        return decision

    async def check(self) -> dict[str, Any]:
        """What S3 is found to do, or a StorageFailure saying why the gateway is not ready.

        For readiness probes: the bucket answers a HeadBucket, and the write
        probe has succeeded (it is retried here until it does).
        """
        if not await self.s3.bucket_exists():
            raise StorageError("the bucket does not exist")
        await self.ensure_ready()
        return self.report()

    def report(self) -> dict[str, Any]:
        return {
            "integrity": self.pipeline.integrity.describe(),
            "capabilities": self.capabilities.describe(),
        }
