"""One user's quota ledger as this process sees it: the one writer of its changes (group commit:
every change that arrived meanwhile in one compare-and-swap write, cas.py), the version last read
or written with its ETag, and the renewal of the PUT reservations this process holds."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from ..cas import VersionedJson, renew_every_third
from ..client import S3
from ..errors import PreconditionFailed, QuotaExceeded, StorageBusy, StorageFailure, TooManyUploads
from ..keys import QUOTA_ROOT, user_prefix
from .ledger import Change, Ledger, Renew


class Quotas(Protocol):
    """What the writer needs of the facade (quotas/__init__.py), which imports it."""

    s3: S3
    lease_seconds: float

    def limit_of(self, uid: str) -> int | None: ...


class Reservation(Protocol):
    """What the writer needs of a PUT's reservation: its lease, lost or renewed."""

    lease: str
    lost: bool
    until: float


log = logging.getLogger(__name__)

# Before refusing an upload, a ledger counted longer ago than this is counted again, so a
# figure put off too high is not what refuses; no more than one listing a minute per user.
RECOUNT_ON_REFUSAL_SECONDS = 60.0
# Compare-and-swap attempts before a write gives up (StorageBusy, 503 Retry-After). Each
# conflict means another process wrote meanwhile; with group commit each process has at most
# one write in flight per user, so P processes need at most P - 1 retries in turn.
CAS_ATTEMPTS = 16


NO_LIMIT = 2**63 - 1  # S3's largest object is 5 TiB; no ledger ever gets near this


def ledger_key(uid: str) -> str:
    return f"{QUOTA_ROOT}{uid}/ledger"


class UserLedger:
    """One user's ledger as this process sees it: the one writer of its changes, the version
    last read or written (with its ETag), and the leases of PUTs this process renews."""

    def __init__(self, quotas: Quotas, uid: str) -> None:
        self.quotas = quotas
        self.uid = uid
        self.state = VersionedJson(quotas.s3, ledger_key(uid))
        self.cached: tuple[Ledger, str] | None = None  # (ledger, ETag) of the last version seen
        self._pending: list[tuple[Change, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.renewed: dict[str, Reservation] = {}  # PUT leases this process holds
        self._renewer: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        return self._writer is None and not self._pending and not self.renewed

    async def read(self) -> tuple[Ledger, str] | None:
        found = await self.state.read()
        self.cached = (Ledger.from_fields(found[0]), found[1]) if found else None
        return self.cached

    async def change(self, change: Change) -> Any:
        """Apply `change` with whatever else is waiting, in one compare-and-swap write."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((change, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = await self._write(batch)
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(
                                exc if isinstance(exc, Exception) else StorageBusy("stopped")
                            )
                            future.exception()  # retrieved: a caller that went away does not warn
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                        future.exception()
                    else:
                        future.set_result(result)
        finally:
            self._writer = None

    async def _write(self, batch: list[tuple[Change, asyncio.Future[Any]]]) -> list[Any]:
        quotas = self.quotas
        s3 = quotas.s3
        for attempt in range(CAS_ATTEMPTS):
            if attempt:
                await asyncio.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
            # Without conditional writes a version kept from before cannot be trusted: read.
            fresh = not (s3.conditional_writes and self.cached)
            current = await self.read() if fresh else self.cached
            now = time.time()
            ledger = current[0].copy() if current else Ledger(stale=True)
            before = current[0].fields() if current else None
            counted = False
            if ledger.prune(now) or ledger.needs_count(now):
                await self._count(ledger, now)
                counted = True
            start = ledger.copy()
            results = self._apply(ledger, batch, now)
            refused = any(isinstance(result, QuotaExceeded) for result in results)
            if refused and not counted and now - ledger.checked > RECOUNT_ON_REFUSAL_SECONDS:
                ledger = start
                await self._count(ledger, now)
                results = self._apply(ledger, batch, now)
            if ledger.fields() == before:
                if refused and not fresh:
                    self.cached = None  # refuse only on what S3 holds now: another may have freed room
                    continue
                return results  # nothing to write
            etag = current[1] if current else None
            try:
                written = await self.state.write(ledger.fields(), etag)
            except PreconditionFailed:
                self.cached = None  # another process wrote first: read theirs, apply again
                continue
            self.cached = (ledger, written)
            return results
        self.cached = None
        raise StorageBusy("the quota ledger is changing too fast; try again")

    def _apply(
        self, ledger: Ledger, batch: list[tuple[Change, asyncio.Future[Any]]], now: float
    ) -> list[Any]:
        # A user whose own quota went away while an upload of theirs was in flight (and there is
        # no USER_QUOTA): the ledger is still kept to its end, with no limit to refuse at.
        limit = self.quotas.limit_of(self.uid)
        results: list[Any] = []
        for change, _ in batch:
            try:
                results.append(change.apply(ledger, NO_LIMIT if limit is None else limit, now))
            except (QuotaExceeded, TooManyUploads) as exc:
                results.append(exc)
        return results

    async def _count(self, ledger: Ledger, now: float) -> None:
        """Count the user's files from a listing; live leases stay."""
        used = files = 0
        async for page in self.quotas.s3.list_objects(user_prefix(self.uid)):
            used += sum(item["Size"] for item in page)
            files += len(page)
        ledger.used, ledger.files, ledger.checked, ledger.stale = used, files, time.time(), False

    # Renewing the PUT leases this process holds.

    def hold(self, reservation: Reservation) -> None:
        self.renewed[reservation.lease] = reservation
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew())

    def drop(self, reservation: Reservation) -> None:
        self.renewed.pop(reservation.lease, None)
        if not self.renewed and self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def _renew(self) -> None:
        """Every third of the lease, renew every lease held here, in one write."""
        await renew_every_third(self.quotas.lease_seconds, self._renew_once)

    async def _renew_once(self) -> bool:
        held = dict(self.renewed)
        until = time.time() + self.quotas.lease_seconds
        try:
            lost = await self.change(Renew(list(held), until))
        except StorageFailure as exc:
            log.warning("could not renew the quota leases of uploads in progress: %s", exc)
            return True
        for id, reservation in held.items():
            if id in lost:
                reservation.lost = True
            else:
                reservation.until = max(reservation.until, until)
        return bool(self.renewed)
