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
LEASE_SECONDS (a lease's holder gives up on it that long before
others may take its room).

**Leases end.** A PUT's lease runs LEASE_SECONDS and its process renews
every lease it holds each third of that, in one write per user; an upload
whose lease could not be renewed in time is not stored (ReservationLost,
503). A process killed mid-upload leaves its leases to run out. A tus
upload's lease lasts as long as the upload may (1.25 x UPLOAD_EXPIRY_SECONDS, renewed
by the PATCH that finds less than one UPLOAD_EXPIRY_SECONDS left), and ends when it
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

**Without conditional writes** (an S3 the write probe finds
ignoring them) the ledger follows cas.py's one rule: a write that finds
another's version, or whose read-back finds another's write, is applied
again on the other's version. Two processes can then both succeed only when
one's write is delayed past the other's second read-back: that process's
leases are lost from the ledger, its renewal finds them gone, and an upload
that had not landed yet is then refused (ReservationLost). The overshoot has
no hard bound in that mode; measured, it was 0 (docs/quotas-and-webhooks.md).

**A user's own quota.** A quota carried by the user's identity (a JWT claim,
the auth callback's answer: identity/) replaces USER_QUOTA for that user
alone: the HTTP layer tells the facade (`own_limit`) with each of the user's
requests, and `limit_of(uid)` is what every check, lease and count of that
user's ledger is held to. The ledger is the same; only the figure it is held
to differs, so a user whose token gains or loses a quota keeps their count.

Without USER_QUOTA, and for a user without a quota of their own, there is no
ledger: uploads cost no S3 call for quotas, and `usage` counts from a listing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...sizes import KiB
from ..client import S3
from ..errors import FileNotFound, QuotaExceeded, ReservationLost, StorageFailure
from ..keys import user_prefix
from .ledger import FilesRemoved, Fits, Hold, Lease, Ledger, Look, Release, Stored, key_tag
from .writer import UserLedger, ledger_key

__all__ = ["NO_RESERVATION", "Quotas", "Reservation", "Usage", "key_tag", "ledger_key", "size_before"]

log = logging.getLogger(__name__)

# A body of unknown length is first granted this much room, then twice what it holds each time
# it needs more: a small body takes little more than it needs when the room left is short, and a
# large one costs one ledger write per doubling (8 to reach 8 MiB, 15 for 1 GiB).
FIRST_GRANT = 64 * KiB
# How long the oldest of a user's uploads of unknown length waits for room to grow into (the
# younger ones it waits for are refused at once and give theirs back within a ledger write or two).
GROW_WAIT_SECONDS = 2.0
GROW_RETRY_SECONDS = 0.1
# Users whose ledger (and its ETag) a process keeps after their last upload, the least
# recently used dropped first.
CACHED_USERS = 4096


def tus_lease(upload_id: str) -> str:
    return f"tus:{upload_id}"


@dataclasses.dataclass(frozen=True)
class Usage:
    used: int  # bytes stored plus bytes held by uploads in progress
    files: int
    reserved: int  # of `used`, the bytes held by uploads in progress
    quota: int | None


class Reservation:
    """Room held in a user's quota for one upload in progress (or, without a quota, nothing)."""

    def __init__(
        self,
        ledger: UserLedger | None,
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
        # The end to ask for when growing: a PUT's is LEASE_SECONDS from now, a tus
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
        waited = 0.0
        while True:
            now = time.time()
            try:
                granted = await self._ledger.change(
                    Hold(self.lease, need, max(need, 2 * self.bytes), self._extend(now), self.key)
                )
                break
            except QuotaExceeded as exc:
                # The oldest upload waits a little for the room of younger ones refused meanwhile.
                if not exc.may_wait or waited >= GROW_WAIT_SECONDS:
                    raise
            await asyncio.sleep(GROW_RETRY_SECONDS)
            waited += GROW_RETRY_SECONDS
        self.bytes = granted.bytes
        self.until = max(self.until, granted.until)

    def ensure_held(self) -> None:
        """Raise ReservationLost unless the lease surely still holds: called just before the file
        is stored. Its holder gives up a third of LEASE_SECONDS before others may take it."""
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
            await self._ledger.change(Stored(self.lease, self.key, size, replaced, exact, self.landed))
        except StorageFailure as exc:
            log.warning("could not add a stored file to its user's quota ledger: %s", exc)

    async def release(self) -> None:
        """The upload failed: give its room back (else it returns when the lease runs out)."""
        if self._ledger is None or self._ended:
            return
        self._end()
        try:
            await self._ledger.change(Release(self.lease))
        except StorageFailure as exc:
            log.warning("could not give back a failed upload's room in the quota: %s", exc)

    def _end(self) -> None:
        self._ended = True
        if self._ledger is not None:
            self._ledger.drop(self)


NO_RESERVATION = Reservation(None)


class Quotas:
    """USER_QUOTA for every user of one bucket, or a user's own quota (`own_limit`); a limit of
    None: no quota, and no S3 call for it."""

    def __init__(self, s3: S3, *, limit: int | None, lease_seconds: float) -> None:
        self.s3 = s3
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._ledgers: collections.OrderedDict[str, UserLedger] = collections.OrderedDict()
        # Users whose identity carries their own quota, as their latest request said.
        self._own: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._background: set[asyncio.Future[Any]] = set()

    def own_limit(self, uid: str, limit: int | None) -> None:
        """The quota `uid`'s identity carries (None: none, USER_QUOTA applies), told with each of
        their requests before it reaches the storage layer. Kept for the CACHED_USERS users seen
        last, and for as long as the user has an upload in progress here (its lease renewals
        are held to it)."""
        if limit is None:
            self._own.pop(uid, None)
            return
        self._own[uid] = limit
        self._own.move_to_end(uid)
        if len(self._own) > CACHED_USERS:
            for other in list(self._own)[: len(self._own) - CACHED_USERS]:
                ledger = self._ledgers.get(other)
                if ledger is None or ledger.idle:
                    del self._own[other]

    def limit_of(self, uid: str) -> int | None:
        """The quota `uid` is held to: their own, else USER_QUOTA (None: no quota)."""
        return self._own.get(uid, self.limit)

    def enabled_for(self, uid: str) -> bool:
        return self.limit_of(uid) is not None

    def _ledger(self, uid: str) -> UserLedger:
        ledger = self._ledgers.get(uid)
        if ledger is None:
            ledger = self._ledgers[uid] = UserLedger(self, uid)
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
        limit = self.limit_of(uid)
        if limit is None:
            return
        ledger = self._ledger(uid)
        seen = await ledger.read()
        state = seen[0] if seen else Ledger()
        room = limit - state.used - state.reserved(time.time())
        need = size if size is not None else 1
        if need > room:
            replaces, _ = await size_before(self.s3, key)
            await ledger.change(Fits(need - (replaces or 0)))

    async def reserve(self, uid: str, key: str, size: int | None, replaces: int | None = None) -> Reservation:
        """Room for a PUT or a form's file of `size` bytes (None: unknown) aimed at `key`, where a
        file of `replaces` bytes is now (None: none), renewed by this process until the upload
        ends; QuotaExceeded when it does not fit (counting only what it adds to `replaces`)."""
        if self.limit_of(uid) is None:
            return NO_RESERVATION
        ledger = self._ledger(uid)
        need, want = (size, size) if size is not None else (1, FIRST_GRANT)
        lease_id = secrets.token_hex(8)
        tag = key_tag(key)

        def extend(now: float) -> float:
            return now + self.lease_seconds

        granted = await self._take(
            ledger, Hold(lease_id, need, want, extend(time.time()), tag, replaces or 0)
        )
        reservation = Reservation(ledger, lease_id, tag, granted, extend=extend)
        ledger.hold(reservation)
        return reservation

    async def _take(self, ledger: UserLedger, hold: Hold) -> Lease:
        """Apply `hold`; should the caller be cancelled meanwhile, give back what it got."""
        task = asyncio.ensure_future(ledger.change(hold))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:

            def give_back(done: asyncio.Future[Any]) -> None:
                if not done.cancelled() and done.exception() is None:
                    giving = asyncio.ensure_future(ledger.change(Release(hold.lease)))
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
        if self.limit_of(uid) is not None:
            hold = Hold(tus_lease(upload_id), length, length, until, key_tag(key), replaces or 0)
            await self._take(self._ledger(uid), hold)

    async def resume_upload(
        self, uid: str, key: str, upload_id: str, need: int, *, until: float, renew_before: float
    ) -> Reservation:
        """Before a PATCH: the upload's lease covers `need` bytes and runs past `renew_before`
        (else it is extended to `until`: one write per UPLOAD_EXPIRY_SECONDS at most). A lease that is
        missing (the quota was turned on after the upload began) is taken now, if it fits."""
        if self.limit_of(uid) is None:
            return NO_RESERVATION
        ledger = self._ledger(uid)
        lease_id, tag = tus_lease(upload_id), key_tag(key)
        seen = ledger.cached or await ledger.read()
        held = seen[0].leases.get(lease_id) if seen else None
        if held is None or held.bytes < need or held.until < renew_before:
            held = await self._take(ledger, Hold(lease_id, need, need, until, tag))
        span = until - time.time()
        return Reservation(ledger, lease_id, tag, held, extend=lambda now: now + span)

    async def upload_stored(
        self, uid: str, key: str, upload_id: str | None, size: int, replaced: int | None, *, exact: bool
    ) -> None:
        if self.limit_of(uid) is not None:
            lease = tus_lease(upload_id) if upload_id else None
            try:
                await self._ledger(uid).change(Stored(lease, key_tag(key), size, replaced, exact))
            except StorageFailure as exc:
                log.warning("could not add a stored file to its user's quota ledger: %s", exc)

    async def upload_ended(self, uid: str, upload_id: str) -> None:
        """A tus upload was terminated or expired: its room comes back."""
        if self.limit_of(uid) is not None:
            try:
                await self._ledger(uid).change(Release(tus_lease(upload_id)))
            except StorageFailure as exc:
                log.warning("could not give back a tus upload's room in the quota: %s", exc)

    # Deletes and usage.

    async def removed(self, uid: str, files: list[tuple[str, int]]) -> None:
        """The files (key, size) were deleted. A failure is logged: the figure stays too high
        (refusing early, never late) until the ledger is counted again."""
        if self.limit_of(uid) is not None and files:
            try:
                await self._ledger(uid).change(FilesRemoved([(key_tag(key), size) for key, size in files]))
            except StorageFailure as exc:
                log.warning("could not take deleted files off their user's quota ledger: %s", exc)

    async def usage(self, uid: str) -> Usage:
        """What the user stores and holds for uploads in progress, and their quota.

        With a quota: from the ledger, read afresh (one GetObject; a ledger due for a count is
        counted and written first). Without: counted from a listing of the user's files.
        """
        if self.limit_of(uid) is None:
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
            await ledger.change(Look())
            seen = ledger.cached or await ledger.read()
        assert seen is not None
        state = seen[0]
        reserved = state.reserved(time.time())
        return Usage(state.used + reserved, state.files, reserved, self.limit_of(uid))


async def size_before(s3: S3, key: str) -> tuple[int | None, bool]:
    """The size of the file at `key` now (None: there is none), and whether that is known."""
    try:
        return (await s3.head_object(key))["ContentLength"], True
    except FileNotFound:
        return None, True
    except StorageFailure:
        return None, False
