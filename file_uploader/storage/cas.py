"""The one compare-and-swap and the one lock of the storage layer, both on small S3 objects.

Gateway processes share nothing but the bucket, so what they must agree on
(a tus upload's state and who is writing to it, a user's quota ledger) is a
small JSON object there, changed only by compare-and-swap, as tusd's S3 store
keeps its `.info` objects and its `Locker` behind one interface:

- `VersionedJson`: read a small JSON object with its ETag; write it again only
  if it is still that version (or, to create it, still absent). Of two
  writers who read the same version, one gets PreconditionFailed: it reads
  again and decides again (the ledger re-applies its changes, the tus store
  answers 409).
- `LeaseLock`: a `VersionedJson` saying who holds the lock and until when (its
  lease, LEASE_SECONDS). Taking it creates the object, or takes over one whose
  lease ran out (its process died) by a compare-and-swap on what was read, so
  of two takers one wins; the holder renews it every third of its lease
  (`renew_every_third`, also what renews quota reservations) and deletes it
  when done. Anyone else is refused (Locked).

**With conditional writes** (S3 honours both ``If-None-Match: *`` and
``If-Match`` on PutObject: the startup probe finding both honoured,
`S3.conditional_writes`), S3 does the comparing: a
write is a PutObject with the condition, and 412 means another won.

**Without them, the one rule** (an engine the probe finds ignoring either
condition, or Settings.s3_conditional_writes=False in tests): every body
carries a random ``_writer`` nonce, so the ETag a write gets back is its own.
A write first reads the object and gives up (PreconditionFailed) unless it is still the version expected; then
puts it unconditionally; then reads it back twice, at once and again after as
long as the write took (a write by another that read the old version may
still be on its way), and gives up unless both reads find its own ETag. Two
writers can then both believe they won only when one's write is delayed past
the other's second read-back: rare, but without a bound. What each user keeps
guaranteed in that mode is said where it is used (the tus store's completion
checks every part's ETag; the quota ledger's renewals find lost reservations).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..sizes import LEASE_SECONDS
from .client import S3
from .errors import FileNotFound, PreconditionFailed, StorageFailure

log = logging.getLogger(__name__)

_WRITER = "_writer"  # the nonce every body carries: a write's ETag is its own


class Locked(PreconditionFailed):
    """Another holds the lock and its lease has not run out."""


class VersionedJson:
    """A small JSON object at `key`, changed only by compare-and-swap."""

    def __init__(self, s3: S3, key: str) -> None:
        self.s3 = s3
        self.key = key

    async def read(self) -> tuple[dict[str, Any], str] | None:
        """The object's fields and its ETag; None if there is none."""
        try:
            data, etag = await self.s3.read_versioned(self.key)
        except FileNotFound:
            return None
        fields = json.loads(data)
        fields.pop(_WRITER, None)
        return fields, etag

    async def write(self, fields: dict[str, Any], etag: str | None) -> str:
        """Write `fields` if the object is still the version `etag` (None: still absent); the new
        ETag. PreconditionFailed if another version is there (or the object went away)."""
        body = json.dumps({**fields, _WRITER: secrets.token_hex(6)}, separators=(",", ":")).encode()
        if self.s3.conditional_writes:
            # Without its quotes: Ceph RGW 16 never matches a quoted ETag; AWS and moto take both.
            condition: dict[str, Any] = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag.strip('"')}
            try:
                return str((await self.s3.put_object(self.key, body, **condition))["ETag"])
            except FileNotFound:  # If-Match on an object deleted meanwhile
                raise PreconditionFailed("the object is gone") from None
        if await self._etag() != etag:
            raise PreconditionFailed("another version is there")
        started = time.monotonic()
        written = str((await self.s3.put_object(self.key, body))["ETag"])
        for wait in (0.0, time.monotonic() - started):
            await asyncio.sleep(wait)
            if await self._etag() != written:
                raise PreconditionFailed("another write replaced this one")
        return written

    async def _etag(self) -> str | None:
        found = await self.read()
        return found[1] if found else None


class LeaseLock:
    """A lock on one thing, held across processes through the object at `key`."""

    def __init__(self, s3: S3, key: str, *, seconds: float = LEASE_SECONDS) -> None:
        self.state = VersionedJson(s3, key)
        self.seconds = seconds

    def _fields(self, holder: str) -> dict[str, Any]:
        return {"holder": holder, "until": time.time() + self.seconds}

    async def take(self) -> HeldLock:
        """Take the lock, or raise Locked while another's lease runs."""
        holder = secrets.token_hex(8)
        try:
            return HeldLock(self, holder, await self.state.write(self._fields(holder), None))
        except PreconditionFailed:
            pass
        found = await self.state.read()
        if found is not None and found[0]["until"] > time.time():
            raise Locked("another holds the lock")
        seen = found[1] if found else None
        try:  # released just now, or its holder died: take it, if nobody else did first
            return HeldLock(self, holder, await self.state.write(self._fields(holder), seen))
        except PreconditionFailed:
            raise Locked("another took the lock first") from None


class HeldLock:
    """A lock this process holds: renew it while working, release it when done."""

    def __init__(self, lock: LeaseLock, holder: str, etag: str) -> None:
        self._lock = lock
        self.holder = holder
        self.etag = etag
        self.lost = False  # a renewal found another's lock: nothing may be committed

    async def renew(self) -> bool:
        """Push the lease back by its length; False once it is lost."""
        try:
            self.etag = await self._lock.state.write(self._lock._fields(self.holder), self.etag)
        except PreconditionFailed:
            self.lost = True
            log.warning("lost a lock while holding it")
        except StorageFailure as exc:
            log.warning("could not renew a lock: %s", exc)
        return not self.lost

    async def keep(self) -> None:
        """Renew the lock every third of its lease until cancelled or lost (run it as a task)."""
        await renew_every_third(self._lock.seconds, self.renew)

    async def release(self) -> None:
        if self.lost:
            return
        try:
            await self._lock.state.s3.delete_object(self._lock.state.key)
        except StorageFailure as exc:  # its lease runs out by itself
            log.warning("could not release a lock: %s", exc)


async def renew_every_third(seconds: float, renew: Callable[[], Awaitable[bool]]) -> None:
    """Call `renew` every third of a lease of `seconds` until it returns False: a holder that
    missed one renewal still holds its lease for two more tries."""
    while True:
        await asyncio.sleep(seconds / 3)
        if not await renew():
            return
