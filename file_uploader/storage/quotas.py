"""Per-user quotas (USER_QUOTA): one ledger per user in S3, changed only by compare-and-swap.

Every gateway process and replica must see the same figure, so it lives in
the bucket, in ``quota/<user id>/ledger``, a small JSON object:

- ``used``, ``files``: the bytes and number of the user's files, as counted;
- ``leases``: the room held by uploads in progress, each a number of bytes
  with a time it runs until (``until``), a short hash of the key it will store
  (``key``) and when it was taken (``since``);
- ``checked``: when ``used`` and ``files`` were last counted from a listing of
  ``files/<user id>/``; ``stale``: whether something since may have put them off.

**Reserving before the body.** An upload first takes a lease for its
declared length (a PUT's Content-Length, a tus upload's Upload-Length) if
``used`` plus every live lease plus that length fits USER_QUOTA; otherwise
QuotaExceeded (413 ``quota_exceeded``), before a byte of the body is read.
An upload that replaces a file counts only what it adds to it: its lease
carries the old file's size as a ``credit``, one credit per replaced file (a
second upload aimed at the same key while the first holds it counts in
full), voided (the lease counts in full) as soon as anything else changes
that file; a renewal checks again that what the lease counts still fits. A
body of unknown length (chunked, a form's file, a deferred tus length) takes
a first grant of FIRST_GRANT and doubles it before it accepts bytes past it;
when the quota has no room left the body is cut off and its upload aborted.
Bytes are never accepted past a lease, so the figure in the ledger
always covers what is stored plus what is on its way.

**Compare-and-swap.** The ledger is rewritten with ``If-Match`` on the ETag it
was read with (``If-None-Match: *`` to create it), so of two processes
writing at once one fails (412), reads it again and retries: no reservation
is ever admitted against a figure that misses another's. Within a process,
the writes for one user go through one writer (`_UserLedger`), which applies
every change that arrived meanwhile in one write (group commit) and keeps
the ledger and its ETag from its last write, so a sequential user pays no
read. With conditional writes, the overshoot past USER_QUOTA is therefore 0,
as long as the processes' clocks agree within a third of
QUOTA_LEASE_SECONDS (a lease's holder gives up on it that long before
others may take its room).

**Leases end.** A PUT's lease runs QUOTA_LEASE_SECONDS and its process renews
every lease it holds each third of that, in one write per user; an upload
whose lease could not be renewed in time is not stored (ReservationLost,
503). A process killed mid-upload leaves its leases to run out. A tus
upload's lease lasts as long as the upload may (1.25 x UPLOAD_EXPIRY, renewed
by the PATCH that finds less than one UPLOAD_EXPIRY left), and ends when it
completes, is terminated or expires.

**Counting again.** A completed upload's lease becomes bytes in ``used``
(minus the size of the file it replaced, read with a HeadObject before the
file is stored), a delete takes its size off. What could put the figure off:
a lease that ran out (its process died, perhaps after storing the file), two
uploads or an upload and a delete racing on one key, a count taken while an
upload was landing. Each marks the ledger ``stale``, and the next write
counts the user's files again from a listing (O(files), 1,000 a call) before
it admits anything; so does a ledger not counted for RECOUNT_SECONDS (files
changed behind the gateway's back), and a refusal by a ledger not counted for
RECOUNT_ON_REFUSAL_SECONDS. A count taken while uploads are in flight can
only count a landing file twice, never miss one: it refuses too early rather
than too late, and the landing file's commit marks it stale again.

**Without conditional writes** (S3_CONDITIONAL_WRITES=0, or an S3 the probe
finds ignoring them) the ledger follows cas.py's one rule: a write that finds
another's version, or whose read-back finds another's write, is applied
again on the other's version. Two processes can then both succeed only when
one's write is delayed past the other's second read-back: that process's
leases are lost from the ledger, its renewal finds them gone, and an upload
that had not landed yet is then refused (ReservationLost). The overshoot has
no hard bound in that mode; measured, it was 0 (docs/quotas-and-webhooks.md).

Without USER_QUOTA there is no ledger: uploads cost no S3 call for quotas,
and `usage` counts from a listing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..sizes import KiB
from .cas import VersionedJson, renew_every_third
from .client import S3
from .errors import (
    FileNotFound,
    PreconditionFailed,
    QuotaExceeded,
    ReservationLost,
    StorageBusy,
    StorageFailure,
    TooManyUploads,
)
from .keys import QUOTA_ROOT, user_prefix

log = logging.getLogger(__name__)

# A ledger whose files were counted longer ago than this is counted again at its next write:
# what changed in the bucket behind the gateway's back is seen within the hour.
RECOUNT_SECONDS = 3600.0
# Before refusing an upload, a ledger counted longer ago than this is counted again, so a
# figure put off too high is not what refuses; no more than one listing a minute per user.
RECOUNT_ON_REFUSAL_SECONDS = 60.0
# Leases one user may hold at once (uploads in progress, tus uploads not finished): keeps the
# ledger small (about 100 bytes a lease) however many tus uploads a user starts.
MAX_LEASES = 1000
# Compare-and-swap attempts before a write gives up (StorageBusy, 503 Retry-After). Each
# conflict means another process wrote meanwhile; with group commit each process has at most
# one write in flight per user, so P processes need at most P - 1 retries in turn.
CAS_ATTEMPTS = 16
# A body of unknown length is first granted this much room, then twice what it holds each time
# it needs more: a small body takes little more than it needs when the room left is short, and a
# large one costs one ledger write per doubling (8 to reach 8 MiB, 15 for 1 GiB).
FIRST_GRANT = 64 * KiB
# Users whose ledger (and its ETag) a process keeps after their last upload, the least
# recently used dropped first.
CACHED_USERS = 4096


def ledger_key(uid: str) -> str:
    return f"{QUOTA_ROOT}{uid}/ledger"


def key_tag(key: str) -> str:
    """A short hash of a file's key: enough to see two leases aim at one key, and no name."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def tus_lease(upload_id: str) -> str:
    return f"tus:{upload_id}"


@dataclasses.dataclass
class Lease:
    bytes: int
    until: float  # Unix time
    key: str  # key_tag of the file it will store
    since: float  # when it was taken
    # The size of the file it replaces, which frees that much when it lands: not counted against
    # the quota while the lease holds, unless that file changes meanwhile (then 0: see _Stored).
    credit: int = 0

    def counted(self) -> int:
        return max(0, self.bytes - self.credit)


@dataclasses.dataclass
class Ledger:
    used: int = 0
    files: int = 0
    checked: float = 0.0  # when used and files were last counted from a listing (its end)
    stale: bool = False  # they may be off: count again before admitting anything
    leases: dict[str, Lease] = dataclasses.field(default_factory=dict)

    def reserved(self, now: float, but: str | None = None) -> int:
        return sum(lease.counted() for id, lease in self.leases.items() if id != but and lease.until >= now)

    def prune(self, now: float) -> bool:
        """Drop leases that ran out; True if any did (their upload may have stored a file)."""
        expired = [id for id, lease in self.leases.items() if lease.until < now]
        for id in expired:
            del self.leases[id]
        return bool(expired)

    def needs_count(self, now: float) -> bool:
        return self.stale or now - self.checked > RECOUNT_SECONDS

    def fields(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["leases"] = {
            id: [lease.bytes, round(lease.until, 3), lease.key, round(lease.since, 3), lease.credit]
            for id, lease in self.leases.items()
        }
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Ledger:
        fields = dict(fields)
        leases = {id: Lease(*values) for id, values in fields.pop("leases", {}).items()}
        return cls(**fields, leases=leases)

    def copy(self) -> Ledger:
        return Ledger.from_fields(json.loads(json.dumps(self.fields())))


@dataclasses.dataclass(frozen=True)
class Usage:
    used: int  # bytes stored plus bytes held by uploads in progress
    files: int
    reserved: int  # of `used`, the bytes held by uploads in progress
    quota: int | None


def _exceeded(quota: int, room: int, need: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"the quota of {quota} bytes has {max(room, 0)} bytes left (uploads in progress count), "
        f"and this upload needs {need}"
    )


# Changes to a ledger. Each applies itself to the ledger (or raises, leaving it untouched) and
# returns what its caller wants to know; a batch of them is applied to the latest version read,
# again after every conflict, and written once.


@dataclasses.dataclass
class _Hold:
    """Take a lease, or grow one: at least `need` bytes, up to `want` if there is room."""

    lease: str
    need: int
    want: int
    until: float
    key: str
    credit: int = 0  # a new lease's Lease.credit: the size of the file it replaces

    def apply(self, ledger: Ledger, quota: int, now: float) -> Lease:
        held = ledger.leases.get(self.lease)
        room = quota - ledger.used - ledger.reserved(now, but=self.lease)
        if held is not None and held.bytes >= self.need:
            # A renewal looks again: what it holds may no longer fit (its credit voided, files
            # counted that the ledger had missed).
            if room < held.counted():
                raise _exceeded(quota, room, held.counted())
            held.until = max(held.until, self.until)
            return dataclasses.replace(held)
        # One credit per replaced file: uploads aimed at one key while another holds its credit
        # count in full (else each would count as only what it adds to the same old file).
        credited = any(
            lease.key == self.key and lease.credit
            for id, lease in ledger.leases.items()
            if id != self.lease and lease.until >= now
        )
        credit = held.credit if held else (0 if credited else self.credit)
        if room < self.need - credit:
            raise _exceeded(quota, room, self.need - credit)
        if held is None and len(ledger.leases) >= MAX_LEASES:
            raise TooManyUploads(f"at most {MAX_LEASES} uploads in progress at once; finish some first")
        lease = Lease(
            min(max(self.want, self.need), room + credit),
            max(self.until, held.until if held else 0.0),
            self.key,
            held.since if held else now,
            credit,
        )
        ledger.leases[self.lease] = lease
        return dataclasses.replace(lease)


@dataclasses.dataclass
class _Renew:
    """Push back the end of the leases a process holds; the ids of those that are gone."""

    leases: list[str]
    until: float

    def apply(self, ledger: Ledger, quota: int, now: float) -> set[str]:
        lost = set()
        for id in self.leases:
            if (lease := ledger.leases.get(id)) is None:
                lost.add(id)
            else:
                lease.until = max(lease.until, self.until)
        return lost


@dataclasses.dataclass
class _Stored:
    """A file was stored: its lease (if any) becomes bytes in `used`, less what it replaced."""

    lease: str | None
    key: str
    size: int
    replaced: int | None  # the size of the file it replaced; None: there was none
    exact: bool  # False: `replaced` may be wrong (it could not be read before the store)
    landed: float | None = None  # when its PutObject or CompleteMultipartUpload began, if known

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        held = ledger.leases.pop(self.lease, None) if self.lease else None
        ledger.used = max(0, ledger.used + self.size - (self.replaced or 0))
        ledger.files = max(0, ledger.files + (self.replaced is None))
        if (
            not self.exact
            or (self.lease is not None and held is None)  # it ran out: a count may have seen the file
            # A count that ended after the file began to land may have seen it: counted twice.
            or (held is not None and ledger.checked >= (self.landed or held.since))
            or any(lease.key == self.key for lease in ledger.leases.values())  # a race on the key
        ):
            ledger.stale = True
        _void_credits(ledger, {self.key})


@dataclasses.dataclass
class _Release:
    lease: str

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        ledger.leases.pop(self.lease, None)


@dataclasses.dataclass
class _Removed:
    """Files were deleted: (key tag, size) each."""

    files: list[tuple[str, int]]

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        ledger.used = max(0, ledger.used - sum(size for _, size in self.files))
        ledger.files = max(0, ledger.files - len(self.files))
        keys = {tag for tag, _ in self.files}
        if any(lease.key in keys for lease in ledger.leases.values()):
            ledger.stale = True  # an upload to the same key is landing: which one stays?
        _void_credits(ledger, keys)


def _void_credits(ledger: Ledger, keys: set[str]) -> None:
    """The files at `keys` changed: uploads on their way to them no longer know what they will
    replace, so they count in full (too much, never too little) until they land."""
    for lease in ledger.leases.values():
        if lease.key in keys:
            lease.credit = 0


@dataclasses.dataclass
class _Fits:
    """Change nothing; QuotaExceeded unless `need` more bytes fit now (an expect handler's check)."""

    need: int

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        room = quota - ledger.used - ledger.reserved(now)
        if room < self.need:
            raise _exceeded(quota, room, self.need)


@dataclasses.dataclass
class _Look:
    """Change nothing: only drop leases that ran out and count again if due (for `usage`)."""

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        return None


_Change = _Hold | _Renew | _Stored | _Release | _Removed | _Fits | _Look


class _UserLedger:
    """One user's ledger as this process sees it: the one writer of its changes, the version
    last read or written (with its ETag), and the leases of PUTs this process renews."""

    def __init__(self, quotas: Quotas, uid: str) -> None:
        self.quotas = quotas
        self.uid = uid
        self.state = VersionedJson(quotas.s3, ledger_key(uid))
        self.cached: tuple[Ledger, str] | None = None  # (ledger, ETag) of the last version seen
        self._pending: list[tuple[_Change, asyncio.Future[Any]]] = []
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

    async def change(self, change: _Change) -> Any:
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

    async def _write(self, batch: list[tuple[_Change, asyncio.Future[Any]]]) -> list[Any]:
        quotas = self.quotas
        s3 = quotas.s3
        assert quotas.limit is not None
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
        self, ledger: Ledger, batch: list[tuple[_Change, asyncio.Future[Any]]], now: float
    ) -> list[Any]:
        assert self.quotas.limit is not None
        results: list[Any] = []
        for change, _ in batch:
            try:
                results.append(change.apply(ledger, self.quotas.limit, now))
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
            lost = await self.change(_Renew(list(held), until))
        except StorageFailure as exc:
            log.warning("could not renew the quota leases of uploads in progress: %s", exc)
            return True
        for id, reservation in held.items():
            if id in lost:
                reservation.lost = True
            else:
                reservation.until = max(reservation.until, until)
        return bool(self.renewed)


class Reservation:
    """Room held in a user's quota for one upload in progress (or, without a quota, nothing)."""

    def __init__(
        self,
        ledger: _UserLedger | None,
        lease: str = "",
        key: str = "",
        granted: Lease | None = None,
        *,
        extend: Callable[[float], float] | None = None,
    ) -> None:
        self._ledger = ledger
        self.lease = lease
        self.key = key  # key_tag of the file it stores
        self.bytes = granted.bytes if granted else 0
        self.until = granted.until if granted else 0.0
        self.lost = False
        self.landed: float | None = None  # when the file began to land (ensure_held)
        self._ended = False
        # The end to ask for when growing: a PUT's is QUOTA_LEASE_SECONDS from now, a tus
        # upload's past its next expiry.
        self._extend = extend or (lambda now: now)

    @property
    def active(self) -> bool:
        return self._ledger is not None

    def meter(self, chunks: AsyncIterator[bytes], *, start: int = 0) -> AsyncIterator[bytes]:
        """`chunks`, as long as they fit: the lease grows (doubling, as far as the quota has room)
        before a byte past it is let through, and QuotaExceeded ends the body when it cannot.
        `start`: bytes the lease already covers before these (a tus upload's offset). Without a
        quota, `chunks` themselves: no layer on the path every chunk takes."""
        return chunks if self._ledger is None else self._metered(chunks, start)

    async def _metered(self, chunks: AsyncIterator[bytes], start: int) -> AsyncIterator[bytes]:
        total = start
        async for chunk in chunks:
            total += len(chunk)
            if total > self.bytes:
                await self._grow(total)
            yield chunk

    async def _grow(self, need: int) -> None:
        assert self._ledger is not None
        now = time.time()
        granted = await self._ledger.change(
            _Hold(self.lease, need, max(need, 2 * self.bytes), self._extend(now), self.key)
        )
        self.bytes = granted.bytes
        self.until = max(self.until, granted.until)

    def ensure_held(self) -> None:
        """Raise ReservationLost unless the lease surely still holds: called just before the file
        is stored. Its holder gives up a third of QUOTA_LEASE_SECONDS before others may take it."""
        if self._ledger is None:
            return
        if self.lost or self.until - time.time() < self._ledger.quotas.lease_seconds / 3:
            raise ReservationLost("the upload's room in the quota could not be renewed in time")
        self.landed = time.time()

    async def stored(self, size: int, replaced: int | None, *, exact: bool = True) -> None:
        """The file is stored: `size` bytes, replacing a file of `replaced` bytes (None: none).
        A failure is logged, not raised: the file is there, and the lease running out has the
        ledger counted again."""
        if self._ledger is None or self._ended:
            return
        self._end()
        try:
            await self._ledger.change(_Stored(self.lease, self.key, size, replaced, exact, self.landed))
        except StorageFailure as exc:
            log.warning("could not add a stored file to its user's quota ledger: %s", exc)

    async def release(self) -> None:
        """The upload failed: give its room back (else it returns when the lease runs out)."""
        if self._ledger is None or self._ended:
            return
        self._end()
        try:
            await self._ledger.change(_Release(self.lease))
        except StorageFailure as exc:
            log.warning("could not give back a failed upload's room in the quota: %s", exc)

    def _end(self) -> None:
        self._ended = True
        if self._ledger is not None:
            self._ledger.drop(self)


NO_RESERVATION = Reservation(None)


class Quotas:
    """USER_QUOTA for every user of one bucket; `limit` None: no quota, and no S3 call for it."""

    def __init__(self, s3: S3, *, limit: int | None, lease_seconds: float) -> None:
        self.s3 = s3
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._ledgers: collections.OrderedDict[str, _UserLedger] = collections.OrderedDict()
        self._background: set[asyncio.Future[Any]] = set()

    @property
    def enabled(self) -> bool:
        return self.limit is not None

    def _ledger(self, uid: str) -> _UserLedger:
        ledger = self._ledgers.get(uid)
        if ledger is None:
            ledger = self._ledgers[uid] = _UserLedger(self, uid)
            if len(self._ledgers) > CACHED_USERS:
                for other, kept in list(self._ledgers.items())[: len(self._ledgers) - CACHED_USERS]:
                    if kept.idle:
                        del self._ledgers[other]
        self._ledgers.move_to_end(uid)
        return ledger

    async def check(self, uid: str, key: str, size: int | None) -> None:
        """Refuse (QuotaExceeded) an upload of `size` bytes to `key` that cannot fit: the look of
        an expect handler, before the client sends the body. One GetObject of the ledger as S3
        holds it now (other processes' uploads count); only when that says no, the size of the
        file it would replace is asked, and a ledger due for a count is counted first.
        `reserve` decides, after the 100 Continue."""
        if self.limit is None:
            return
        ledger = self._ledger(uid)
        seen = await ledger.read()
        state = seen[0] if seen else Ledger()
        room = self.limit - state.used - state.reserved(time.time())
        need = size if size is not None else 1
        if need > room:
            replaces, _ = await size_before(self.s3, key)
            await ledger.change(_Fits(need - (replaces or 0)))

    async def reserve(self, uid: str, key: str, size: int | None, replaces: int | None = None) -> Reservation:
        """Room for a PUT or a form's file of `size` bytes (None: unknown) aimed at `key`, where a
        file of `replaces` bytes is now (None: none), renewed by this process until the upload
        ends; QuotaExceeded when it does not fit (counting only what it adds to `replaces`)."""
        if self.limit is None:
            return NO_RESERVATION
        ledger = self._ledger(uid)
        need, want = (size, size) if size is not None else (1, FIRST_GRANT)
        lease_id = secrets.token_hex(8)
        tag = key_tag(key)

        def extend(now: float) -> float:
            return now + self.lease_seconds

        granted = await self._take(
            ledger, _Hold(lease_id, need, want, extend(time.time()), tag, replaces or 0)
        )
        reservation = Reservation(ledger, lease_id, tag, granted, extend=extend)
        ledger.hold(reservation)
        return reservation

    async def _take(self, ledger: _UserLedger, hold: _Hold) -> Lease:
        """Apply `hold`; should the caller be cancelled meanwhile, give back what it got."""
        task = asyncio.ensure_future(ledger.change(hold))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:

            def give_back(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    giving = asyncio.ensure_future(ledger.change(_Release(hold.lease)))
                    self._background.add(giving)
                    giving.add_done_callback(self._background.discard)

            task.add_done_callback(give_back)
            raise

    # Resumable (tus) uploads: their lease is named after the upload, so any process can use it.

    async def reserve_upload(
        self, uid: str, key: str, upload_id: str, length: int, until: float, replaces: int | None
    ) -> None:
        """Room for a tus upload of `length` bytes until `until`, where a file of `replaces` bytes
        is now (None: none); QuotaExceeded when it does not fit."""
        if self.limit is not None:
            hold = _Hold(tus_lease(upload_id), length, length, until, key_tag(key), replaces or 0)
            await self._take(self._ledger(uid), hold)

    async def resume_upload(
        self, uid: str, key: str, upload_id: str, need: int, *, until: float, renew_before: float
    ) -> Reservation:
        """Before a PATCH: the upload's lease covers `need` bytes and runs past `renew_before`
        (else it is extended to `until`: one write per UPLOAD_EXPIRY at most). A lease that is
        missing (the quota was turned on after the upload began) is taken now, if it fits."""
        if self.limit is None:
            return NO_RESERVATION
        ledger = self._ledger(uid)
        lease_id, tag = tus_lease(upload_id), key_tag(key)
        seen = ledger.cached or await ledger.read()
        held = seen[0].leases.get(lease_id) if seen else None
        if held is None or held.bytes < need or held.until < renew_before:
            held = await self._take(ledger, _Hold(lease_id, need, need, until, tag))
        span = until - time.time()
        return Reservation(ledger, lease_id, tag, held, extend=lambda now: now + span)

    async def upload_stored(
        self, uid: str, key: str, upload_id: str | None, size: int, replaced: int | None, *, exact: bool
    ) -> None:
        if self.limit is not None:
            lease = tus_lease(upload_id) if upload_id else None
            try:
                await self._ledger(uid).change(_Stored(lease, key_tag(key), size, replaced, exact))
            except StorageFailure as exc:
                log.warning("could not add a stored file to its user's quota ledger: %s", exc)

    async def upload_ended(self, uid: str, upload_id: str) -> None:
        """A tus upload was terminated or expired: its room comes back."""
        if self.limit is not None:
            try:
                await self._ledger(uid).change(_Release(tus_lease(upload_id)))
            except StorageFailure as exc:
                log.warning("could not give back a tus upload's room in the quota: %s", exc)

    # Deletes and usage.

    async def removed(self, uid: str, files: list[tuple[str, int]]) -> None:
        """The files (key, size) were deleted. A failure is logged: the figure stays too high
        (refusing early, never late) until the ledger is counted again."""
        if self.limit is not None and files:
            try:
                await self._ledger(uid).change(_Removed([(key_tag(key), size) for key, size in files]))
            except StorageFailure as exc:
                log.warning("could not take deleted files off their user's quota ledger: %s", exc)

    async def usage(self, uid: str) -> Usage:
        """What the user stores and holds for uploads in progress, and their quota.

        With a quota: from the ledger, read afresh (one GetObject; a ledger due for a count is
        counted and written first). Without: counted from a listing of the user's files.
        """
        if self.limit is None:
            used = files = 0
            async for page in self.s3.list_objects(user_prefix(uid)):
                used += sum(item["Size"] for item in page)
                files += len(page)
            return Usage(used, files, 0, None)
        ledger = self._ledger(uid)
        seen = await ledger.read()
        now = time.time()
        if (
            seen is None
            or any(lease.until < now for lease in seen[0].leases.values())
            or seen[0].needs_count(now)
        ):
            await ledger.change(_Look())
            seen = ledger.cached or await ledger.read()
        assert seen is not None
        state = seen[0]
        reserved = state.reserved(time.time())
        return Usage(state.used + reserved, state.files, reserved, self.limit)


async def size_before(s3: S3, key: str) -> tuple[int | None, bool]:
    """The size of the file at `key` now (None: there is none), and whether that is known."""
    try:
        return (await s3.head_object(key))["ContentLength"], True
    except FileNotFound:
        return None, True
    except StorageFailure:
        return None, False
