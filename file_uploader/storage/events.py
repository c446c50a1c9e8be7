"""What happened to a file, for whoever listens: `file.stored` and `file.deleted`.

The storage layer says what it did, where it did it (files.py, tus/,
sweep.py), and knows nothing of who listens: `Events.emit` hands each event to
the one listener the process connected (the webhook sender, hooks/webhooks.py),
or to nobody. An event carries the one-way user id, never a token.

**The journal.** With a listener that must not lose events (WEBHOOK_URL), each
event is first written to the bucket, ``events/q/<time>-<id>``, before `emit`
returns, so before the response says the file is stored or deleted: a process
killed a moment later leaves it there for any other process (or itself,
restarted) to deliver. Whoever delivers it removes it (`acknowledge`); `pending`
lists what is left, oldest first (the key starts with the time, in
microseconds); `claim` is the one lease (cas.LeaseLock on ``events/lock``) that
lets one process at a time deliver what others left. The journal holds at most
`bound` events: past it, new events are not written (logged), so a receiver
gone for good cannot fill the bucket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..formats import iso8601
from ..sizes import LEASE_SECONDS
from .cas import HeldLock, LeaseLock, Locked
from .client import S3
from .errors import FileNotFound, StorageFailure
from .keys import EVENTS_ROOT

log = logging.getLogger(__name__)

JOURNAL_PREFIX = f"{EVENTS_ROOT}q/"
CLAIM_KEY = f"{EVENTS_ROOT}lock"
READS_AT_ONCE = 16  # journaled events read at once (GetObject), a few of the short lane's connections

STORED = "file.stored"
DELETED = "file.deleted"


@dataclasses.dataclass(frozen=True)
class FileEvent:
    type: str  # STORED or DELETED
    user: str  # the one-way user id (keys.user_id), as in the bucket's keys and the logs
    name: str
    size: int
    etag: str
    time: str  # ISO 8601, UTC, when it happened
    # Unique per event: a receiver told the same event twice (delivery is at least once) can
    # recognise it.
    id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(12))
    # Where the journal keeps it ("" when it is not journaled): not part of what is sent.
    journal: str = dataclasses.field(default="", compare=False)

    @classmethod
    def now(cls, kind: str, user: str, name: str, size: int, etag: str) -> FileEvent:
        return cls(kind, user, name, size, etag.strip('"'), iso8601(datetime.datetime.now(datetime.UTC)))

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["journal"]
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any], journal: str) -> FileEvent:
        known = {field.name for field in dataclasses.fields(cls)} - {"journal"}
        return cls(**{name: value for name, value in fields.items() if name in known}, journal=journal)

    def age(self, now: float) -> float:
        """Seconds since it was journaled (0 if it was not)."""
        return now - journal_time(self.journal) if self.journal else 0.0


def journal_time(key: str) -> float:
    """When the event at journal `key` was written: the key starts with it, in microseconds."""
    try:
        return int(key[len(JOURNAL_PREFIX) :].split("-", 1)[0]) / 1e6
    except ValueError:
        return 0.0


class Journal:
    """The events of one bucket not delivered yet, kept in the bucket (see the module's doc)."""

    def __init__(self, s3: S3, *, bound: int) -> None:
        self.s3 = s3
        self.bound = bound
        self.backlog = 0  # events in the journal, as last counted (plus those written since)
        self._full_logged = False

    async def record(self, event: FileEvent) -> FileEvent:
        """Write `event` to the journal; the event with its journal key, or as it was when the
        journal is full or cannot be written (logged: it is then delivered from memory only)."""
        if self.backlog >= self.bound:
            if not self._full_logged:
                self._full_logged = True
                log.warning(
                    "the event journal holds %d events (sizes.WEBHOOK_BACKLOG): new events are kept in "
                    "memory only until the receiver catches up",
                    self.backlog,
                )
            return event
        self._full_logged = False
        key = f"{JOURNAL_PREFIX}{time.time_ns() // 1000:017d}-{event.id}"
        body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
        try:
            await self.s3.put_object(key, body, ContentType="application/json")
        except StorageFailure as exc:
            log.warning("could not journal an event (it is delivered from memory only): %s", exc)
            return event
        self.backlog += 1
        return dataclasses.replace(event, journal=key)

    async def pending(self, limit: int) -> list[FileEvent]:
        """Up to `limit` journaled events, oldest first; counts the backlog on the way (up to the
        bound)."""
        keys: list[str] = []
        async for page in self.s3.list_objects(JOURNAL_PREFIX):
            keys += [item["Key"] for item in page]
            if len(keys) > self.bound:
                break
        self.backlog = len(keys)
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def read(key: str) -> FileEvent | None:
            async with gate:
                try:
                    fields = json.loads(await self.s3.read_object(key))
                except FileNotFound:
                    return None  # delivered meanwhile
                except ValueError:
                    log.warning("dropped an unreadable journaled event %s", key)
                    await self.acknowledge(key)
                    return None
            return FileEvent.from_dict(fields, key)

        found = await asyncio.gather(*(read(key) for key in keys[:limit]))
        return [event for event in found if event is not None]

    async def acknowledge(self, key: str) -> None:
        """The event at `key` was delivered (or given up): it leaves the journal."""
        try:
            await self.s3.delete_object(key)
        except FileNotFound:
            pass
        except StorageFailure as exc:  # it will be delivered again: at least once
            log.warning("could not remove a delivered event from the journal: %s", exc)
            return
        self.backlog = max(0, self.backlog - 1)

    async def claim(self, held: HeldLock | None) -> HeldLock | None:
        """Keep (renew) or take the lease on delivering what the journal holds; None while
        another process holds it."""
        if held is not None and await held.renew():
            return held
        try:
            return await LeaseLock(self.s3, CLAIM_KEY, seconds=LEASE_SECONDS).take()
        except Locked:
            return None


Listener = Callable[[FileEvent], None]


class Events:
    """Where the storage layer's events go: to one listener, or nowhere; journaled first when
    the listener was connected with a journal (the only wait `emit` has)."""

    def __init__(self) -> None:
        self._listener: Listener | None = None
        self.journal: Journal | None = None

    def connect(self, listener: Listener | None, journal: Journal | None = None) -> None:
        self._listener = listener
        self.journal = journal

    async def emit(self, kind: str, user: str, name: str, size: int, etag: str) -> None:
        if self._listener is None:
            return
        event = FileEvent.now(kind, user, name, size, etag)
        if self.journal is not None:
            event = await self.journal.record(event)
        self._listener(event)
