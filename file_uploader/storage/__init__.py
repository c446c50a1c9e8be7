"""The storage layer: every S3 call of the gateway, and nothing of HTTP.

    client.py     the aiobotocore client, its config, `S3` (every call, errors, paging),
                  and the lanes that split its connection pool (downloads, uploads, short calls)
    keys.py       how a token and a name become an S3 key
    checksums.py  the checksum sent with each part, and who checks it
    probe.py      what S3 really enforces, found at startup
    budget.py     MEMORY_BUDGET and SPOOL_BUDGET, served per user in turn; MAX_UPLOADS_PER_USER
    parts.py      the one part pipeline, for PUT and tus alike: memory by bytes read, disk when short
    files.py      put, get, list (flat or by folder), delete, public or not
    library.py    the public library: which files are public, newest first
    thumbnails.py image thumbnails (Pillow, in a thread pool), cached beside the file
    tus/          tus uploads: their state in S3, locks, commits, completion, expiry
    quotas.py     USER_QUOTA: a ledger per user in S3, reservations before the body, leases
    events.py     file.stored and file.deleted, for whoever listens (the webhook sender)
    cas.py        the one compare-and-swap and lease lock on small S3 objects (tus, quotas)
    landing.py    what follows a stored or deleted file, for every route; admitting an upload
    sweep.py      gc, purge (one user or all), deleting a folder
    expiry.py     files that expire: gone from every read at their time, deleted by gc
    grants.py     what a user hands to others: records with an index, a password, compare-and-swap
    links.py      share links as records: expiry, password, download limit, revocation
    passwords.py  the slow hash (scrypt) that links and upload requests keep instead of a password

`Storage` ties them together, once per process (or per admin command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..ops import metrics
from ..settings import Settings
from ..sizes import (
    LEASE_SECONDS,
    PARTS_IN_FLIGHT,
    SPILL_SECONDS,
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_MAX_PIXELS,
    THUMBNAIL_WORKERS,
)
from .checksums import CHECKSUMS, configured
from .client import S3, Lanes, open_client
from .encryption import Encryption
from .errors import StorageError, StorageFailure, StorageUnavailable
from .events import Events
from .expiry import Expiry
from .files import Files
from .landing import Landing
from .library import Library
from .links import Links
from .parts import PartPipeline
from .passwords import Passwords
from .probe import UNPROBED, Capabilities, Decision, choose, probe
from .quotas import Quotas
from .thumbnails import Thumbnails
from .tus import Resumable

log = logging.getLogger(__name__)


class Storage:
    """Everything the gateway stores, in the one bucket of `s3`."""

    def __init__(
        self,
        s3: S3,
        settings: Settings,
        *,
        lease_seconds: float = LEASE_SECONDS,
        known: Capabilities | None = None,
    ) -> None:
        self.s3 = s3
        self.pipeline = PartPipeline(
            s3,
            part_size=settings.part_size,
            parts_in_flight=PARTS_IN_FLIGHT,
            memory_budget=settings.memory_budget,
            integrity=configured(settings.s3_checksum),
            max_uploads_per_user=settings.max_uploads_per_user,
            spool_budget=settings.spool_budget,
            spill_after=SPILL_SECONDS,
            wait_timeout=settings.client_timeout,
            plan=settings.part_plan(),
        )
        self.library = Library(s3)
        self.thumbnails = Thumbnails(
            s3,
            self.pipeline.memory,
            max_pixels=THUMBNAIL_MAX_PIXELS,
            # Held in memory under the budget while decoded: never more than the budget itself.
            max_bytes=min(THUMBNAIL_MAX_BYTES, settings.memory_budget),
            workers=THUMBNAIL_WORKERS,
        )
        self.quotas = Quotas(
            s3,
            limit=settings.user_quota,
            lease_seconds=lease_seconds,
        )
        # What happens to files, for a listener the app connects (the webhook sender).
        self.events = Events()
        self.expiry = Expiry(s3)
        self.landing = Landing(
            s3, self.library, self.thumbnails, self.quotas, self.events, self.pipeline.slots, self.expiry
        )
        self.files = Files(s3, self.pipeline, self.library, self.quotas, self.landing, self.expiry)
        self.resumable = Resumable(
            s3,
            self.pipeline,
            expiry=settings.upload_expiry,
            max_size=settings.max_file_size,
            lock_seconds=lease_seconds,
            quotas=self.quotas,
            landing=self.landing,
        )
        self.passwords = Passwords()
        self.links = Links(s3, self.passwords)
        self._settings = settings
        self._known = known
        # What the write probe found S3 to enforce: every finding False until
        # it succeeded. The tus store reads `if_none_match` and `if_match`.
        self.capabilities: Capabilities = UNPROBED
        self._bucket_ready = False
        self._ready_lock = asyncio.Lock()

    async def admit(self, uid: str, key: str | None, length: int | None) -> None:
        """Refuse an upload before its body (an expect handler's one call): landing.Landing.admit."""
        await self.landing.admit(uid, key, length)

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
        async with self._ready_lock:  # one check at a time, not one per waiting request
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
        self.pipeline.integrity = decision.integrity
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


@contextlib.asynccontextmanager
async def open_storage(settings: Settings, *, known: Capabilities | None = None) -> AsyncIterator[Storage]:
    """A Storage with its own S3 client, open for the block; one per process or admin command.

    `known`: what an earlier write probe found this same S3 endpoint to enforce,
    for S3_CHECKSUM and md5 (`Storage.capabilities`). The startup probe is then
    skipped and these findings applied as its own would be. Only for a caller
    that opens many storages on one S3 and has probed it itself (the test
    suite builds hundreds of apps on one moto server).
    """
    async with open_client(settings) as client:
        s3 = S3(
            client,
            settings.s3_bucket,
            Lanes.from_settings(settings),
            conditional_writes=settings.s3_conditional_writes,
            encryption=Encryption.from_settings(settings),
        )
        storage = Storage(s3, settings, known=known)
        try:
            yield storage
        finally:
            storage.thumbnails.close()
