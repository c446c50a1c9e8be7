"""The storage layer: every S3 call of the gateway, and nothing of HTTP.

    connection.py the aiobotocore client's config and factory, and the lanes that split its
                  connection pool (downloads, uploads, short calls)
    client.py     `S3`: every call, named, timed, paging
    s3_errors.py  S3's error codes and the network's failures as the storage layer's errors
    keys.py       how a token and a name become an S3 key
    checksums.py  the checksum sent with each part, and who checks it
    probe.py      what S3 really enforces, found at startup
    readiness.py  the bucket there and the probe run, before the first request that needs S3
    budget.py     MEMORY_BUDGET and SPOOL_BUDGET, served per user in turn; MAX_UPLOADS_PER_USER
    holding.py    where parts wait for S3: memory by bytes read, per user in turn, disk when short
    parts.py      the one part pipeline, for PUT, forms and tus alike: parts sent to S3, in flight
    files.py      put, get, list (flat or by folder), delete, public or not
    library.py    the public library: which files are public, newest first
    thumbnails.py image thumbnails (Pillow, in a thread pool), cached beside the file
    tus/          tus uploads: their state in S3, locks, commits, completion, expiry
    direct.py     DIRECT_UPLOADS: presigned part URLs straight to S3, checked before completion
    quotas/       USER_QUOTA: a ledger per user in S3 (ledger.py, pure), its writer, reservations
    events.py     file.stored and file.deleted, for whoever listens (the webhook sender)
    cas.py        the one compare-and-swap and lease lock on small S3 objects (tus, quotas)
    landing.py    what follows a stored or deleted file, for every route; admitting an upload
    sweep.py      gc, purge (one user or all), deleting a folder
    expiry.py     files that expire: gone from every read at their time, deleted by gc
    grants.py     what a user hands to others: records with an index, a password, compare-and-swap
    links.py      share links as records: expiry, password, download limit, revocation
    requests.py   upload requests: anyone with the link adds files to one folder, within limits
    request_uploads.py  tus uploads sent to an upload request: its room, its uploads only
    zips.py       a folder as one zip, streamed (stream-zip, in threads of its own)
    passwords.py  the slow hash (scrypt) that links and upload requests keep instead of a password

`Storage` ties them together, once per process (or per admin command).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..settings import Settings
from ..sizes import (
    LEASE_SECONDS,
    PARTS_IN_FLIGHT,
    SPILL_SECONDS,
    THUMBNAIL_MAX_BYTES,
    THUMBNAIL_MAX_PIXELS,
    THUMBNAIL_WORKERS,
)
from .checksums import configured
from .client import S3
from .connection import Lanes, open_client, open_presigner
from .direct import DirectUploads
from .encryption import Encryption
from .events import Events, Journal
from .expiry import Expiry
from .files import Files
from .landing import Landing
from .library import Library
from .links import Links
from .parts import PartPipeline
from .passwords import Passwords
from .probe import Capabilities
from .quotas import Quotas
from .readiness import Readiness
from .request_uploads import RequestUploads
from .requests import UploadRequests
from .thumbnails import Thumbnails
from .tus import Resumable
from .zips import Zips


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
        # What happens to files, for a listener the app connects (the webhook sender), and with
        # WEBHOOK_URL the bucket's journal of the events not delivered yet.
        self.events = Events()
        self.journal = Journal(s3, bound=settings.webhook_backlog) if settings.webhook_url else None
        self.expiry = Expiry(s3)
        self.landing = Landing(
            s3, self.library, self.thumbnails, self.quotas, self.events, self.pipeline.slots, self.expiry
        )
        self.files = Files(s3, self.pipeline, self.library, self.quotas, self.landing, self.expiry)
        self.direct = DirectUploads(
            s3, self.quotas, self.landing, part_size=settings.part_size, expiry=settings.upload_expiry
        )
        self.passwords = Passwords()
        self.links = Links(s3, self.passwords)
        self.requests = UploadRequests(s3, self.passwords, self.files)
        self.resumable = Resumable(
            s3,
            self.pipeline,
            expiry=settings.upload_expiry,
            max_size=settings.max_file_size,
            lock_seconds=lease_seconds,
            quotas=self.quotas,
            landing=self.landing,
            released=self.requests.released,
        )
        self.request_uploads = RequestUploads(self.requests, self.resumable)
        self.zips = Zips(self.files)
        self.readiness = Readiness(s3, self.pipeline, settings, known=known)
        self.direct.etags_are_md5 = lambda: self.readiness.capabilities.etag_is_md5

    async def admit(self, uid: str, key: str | None, length: int | None) -> None:
        """Refuse an upload before its body (an expect handler's one call): landing.Landing.admit."""
        await self.landing.admit(uid, key, length)


@contextlib.asynccontextmanager
async def open_storage(settings: Settings, *, known: Capabilities | None = None) -> AsyncIterator[Storage]:
    """A Storage with its own S3 client, open for the block; one per process or admin command.

    `known`: what an earlier write probe found this same S3 endpoint to enforce,
    for S3_CHECKSUM and md5 (`Readiness.capabilities`). The startup probe is then
    skipped and these findings applied as its own would be. Only for a caller
    that opens many storages on one S3 and has probed it itself (the test
    suite builds hundreds of apps on one moto server).
    """
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(open_client(settings))
        s3 = S3(
            client,
            settings.s3_bucket,
            Lanes.from_settings(settings),
            conditional_writes=settings.s3_conditional_writes,
            encryption=Encryption.from_settings(settings),
        )
        if settings.direct_uploads or settings.direct_downloads:
            s3.presigner = await stack.enter_async_context(open_presigner(settings))
        storage = Storage(s3, settings, known=known)
        try:
            yield storage
        finally:
            storage.thumbnails.close()
            storage.zips.close()
