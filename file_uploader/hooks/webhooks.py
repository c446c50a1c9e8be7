"""Webhooks: each file stored or deleted is POSTed as signed JSON to WEBHOOK_URL.

The body is the event (storage/events.py): ``{"type": "file.stored" |
"file.deleted", "user": <one-way user id>, "name", "size", "etag", "time",
"id"}``, never a token; ``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256
of the exact body bytes with WEBHOOK_SECRET, and ``X-Webhook-Id`` repeats the
event's id.

**Never in the way of a request.** The storage layer emits an event the moment
S3 has done the thing; during a request it is held (`after_response`) until
the response has been written, then put on this process's queue, which
SENDERS tasks empty in the background. Putting an event on the queue never
waits. Uploads are never slowed by a receiver.

**Fair between users.** The queue keeps one line per user and the senders
take from each line in turn, so one user's burst (a form of 1,500 files) is
delivered beside other users' events, not before them. It holds QUEUE_SIZE
events in all; when full, the newest event of the longest line is dropped
(the burst's own, never another user's), counted in
`file_uploader_webhooks_dropped_total{reason="queue_full"}` and logged (once
a minute at most, with the count).

**At least once, while the process lives.** A delivery that gets no 2xx
answer (a 5xx, a redirect, 408 or 429, a timeout of ATTEMPT_SECONDS, no
connection) is tried again after FIRST_RETRY_SECONDS, doubling up to
MAX_RETRY_SECONDS, for as long as it takes; a receiver may see an event more
than once (a lost answer) and can tell by its id. Any other 4xx is the
receiver's permanent refusal of that event: it is given up at once (counted
as ``reason="refused"``, logged), so that refused events never hold the
senders other events need. Only the first ANSWER_BYTES of an answer are read:
a receiver cannot fill the gateway's memory.

**Surviving a crash: the journal.** Each event is first written to the bucket
(storage/events.py's journal, ``events/q/``) before the response that caused
it, and removed once the receiver acknowledged it (a 2xx, or a refusal given
up). The queue above is the fast path: it tries an event for HANDOFF_SECONDS,
then leaves it to the journal. Every process runs a recovery loop
(`_recover`): every RECOVER_SECONDS it counts the journal (the backlog gauge),
and the one process holding the journal's lease (cas.LeaseLock) delivers the
events older than ORPHAN_SECONDS, whoever wrote them (a process killed with
events queued, one that stopped, one whose queue was full, one whose receiver
was down), in the order they happened per file, backing off up to
MAX_RETRY_SECONDS while the receiver fails, for WEBHOOK_RETRY_SECONDS after
which an event is given up (``reason="expired"``). So delivery is at least
once across crashes and restarts: a receiver sees an event twice when an
acknowledgement is lost, and drops the second by its id. The journal holds
at most WEBHOOK_BACKLOG events; past that, events are kept in memory only
(logged). The cost: a PutObject before the response and a DeleteObject after
delivery per event, and a listing per process every RECOVER_SECONDS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import json
import logging
import random
import time

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from .. import __version__
from ..ops import metrics
from ..storage.cas import HeldLock
from ..storage.errors import StorageFailure
from ..storage.events import FileEvent, Journal

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Webhook-Signature"
ID_HEADER = "X-Webhook-Id"
SENDERS = 4  # deliveries in flight at once, per process
# Events one process keeps waiting for the receiver: at a few hundred bytes each, a few MiB, and
# minutes of a busy gateway's uploads while a receiver restarts.
QUEUE_SIZE = 10_000
# Of a receiver's answer, what is read (the status is all that counts): enough for any error page,
# and a bound on what a receiver answering with gigabytes costs.
ANSWER_BYTES = 64 * 1024
# 4xx answers that say "not now" rather than "never": retried like a 5xx.
RETRIED_REFUSALS = frozenset({408, 425, 429})
ATTEMPT_SECONDS = 10.0  # one delivery attempt, connecting included
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0
STOP_SECONDS = 5.0  # on a graceful stop, what the queue gets to drain
DROPS_LOGGED_EVERY = 60.0  # seconds between two log lines about dropped events
# With the journal: how long the in-memory queue tries an event before leaving it to the journal,
# and how old a journaled event must be before the recovery loop takes it as left behind (its
# queue's last attempt, ATTEMPT_SECONDS long, is over by then, so both rarely send it at once).
HANDOFF_SECONDS = 10.0
ORPHAN_SECONDS = HANDOFF_SECONDS + ATTEMPT_SECONDS + 5.0
RECOVER_SECONDS = 5.0  # between two looks at the journal, while the receiver answers
RECOVER_BATCH = 1000  # journaled events read per round (one listing page)
DEFAULT_RETRY_SECONDS = 86_400.0  # WEBHOOK_RETRY_SECONDS' default: a day


def signature(secret: bytes, body: bytes) -> str:
    """The X-Webhook-Signature of `body`: what a receiver computes to check it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclasses.dataclass
class _Held:
    """The events of one request, held until its response has been written."""

    events: list[tuple[FileEvent, Webhooks]] = dataclasses.field(default_factory=list)
    open: bool = True


_held: contextvars.ContextVar[_Held | None] = contextvars.ContextVar("webhook_events", default=None)


@web.middleware
async def after_response(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Hold the events a request causes until its response is written (on an error too), so a
    receiver never hears of a file before its uploader does. Requests without events pass
    through untouched."""
    held = _Held()
    token = _held.set(held)
    try:
        response = await handler(request)
        if held.events and not response.prepared:
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
                await response.write_eof()
        return response
    finally:
        _held.reset(token)
        held.open = False  # anything emitted from here on (a shielded task of the request) goes at once
        for event, hooks in held.events:
            hooks.enqueue(event)


class FairQueue:
    """Events in one line per user, taken from each line in turn; `put` never waits.

    At `maxsize` events in all, the newest event of the longest line is dropped, so a burst from
    one user costs that user's events only.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lines: collections.OrderedDict[str, collections.deque[FileEvent]] = collections.OrderedDict()
        self._size = 0
        self._unfinished = 0  # put, and not yet marked done
        self._not_empty = asyncio.Event()
        self._all_done = asyncio.Event()
        self._all_done.set()

    def qsize(self) -> int:
        return self._size

    def put(self, event: FileEvent) -> bool:
        """Queue `event`; False if that dropped an event (this one or the longest line's newest)."""
        dropped = False
        if self._size >= self.maxsize:
            longest = max(self._lines, key=lambda user: len(self._lines[user]))
            if len(self._lines.get(event.user, ())) >= len(self._lines[longest]):
                return False  # its own line is (one of) the longest
            self._lines[longest].pop()
            if not self._lines[longest]:
                del self._lines[longest]
            self._size -= 1
            self._unfinished -= 1
            dropped = True
        self._lines.setdefault(event.user, collections.deque()).append(event)
        self._size += 1
        self._unfinished += 1
        self._all_done.clear()
        self._not_empty.set()
        return not dropped

    async def get(self) -> FileEvent:
        while not self._size:
            self._not_empty.clear()
            await self._not_empty.wait()
        user, line = self._lines.popitem(last=False)
        event = line.popleft()
        if line:
            self._lines[user] = line  # to the back: every other user with events goes first
        self._size -= 1
        return event

    def task_done(self) -> None:
        self._unfinished -= 1
        if not self._unfinished:
            self._all_done.set()

    async def join(self) -> None:
        await self._all_done.wait()


class Webhooks:
    """This process's queue of events and the tasks that deliver them to one URL."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        queue_size: int = QUEUE_SIZE,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
        senders: int = SENDERS,
        journal: Journal | None = None,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        orphan_seconds: float = ORPHAN_SECONDS,
    ) -> None:
        self.url = url  # never logged: it may carry credentials
        self._secret = secret
        self._queue = FairQueue(queue_size)
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._senders_count = senders
        self._senders: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._delivering = 0  # events taken off the queue, not delivered yet
        self._failing = False
        self._dropped_unlogged = 0
        self._refused_unlogged = 0
        self._refused_status = 0
        self._drops_logged_at = 0.0
        self.journal = journal
        self.retry_seconds = retry_seconds
        self.orphan_seconds = orphan_seconds
        self._recovery: asyncio.Task[None] | None = None
        self._claim: HeldLock | None = None

    def listen(self, event: FileEvent) -> None:
        """The storage layer's listener: hold the event for the request's response, or queue it."""
        held = _held.get()
        if held is not None and held.open:
            held.events.append((event, self))
        else:
            self.enqueue(event)

    def enqueue(self, event: FileEvent) -> None:
        if self._queue.put(event):
            metrics.WEBHOOK_QUEUE.inc()
        else:
            self._drop("queue_full", 1)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=ATTEMPT_SECONDS),
            connector=aiohttp.TCPConnector(limit=self._senders_count),
            headers={"User-Agent": f"file_uploader/{__version__}"},
        )
        self._senders = [asyncio.create_task(self._send()) for _ in range(self._senders_count)]
        if self.journal is not None:
            self._recovery = asyncio.create_task(self._recover())

    async def stop(self) -> None:
        """Let the queue drain for up to STOP_SECONDS (unless the receiver is failing: it would
        wait in vain), then drop (and count) what is left."""
        if not self._failing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_SECONDS):
                    await self._queue.join()
        lost = self._queue.qsize() + self._delivering
        tasks = [*self._senders, *([self._recovery] if self._recovery else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._claim is not None:
            await self._claim.release()
        metrics.WEBHOOK_QUEUE.dec(self._queue.qsize())
        if lost and self.journal is not None:
            log.info("%d webhook events left to the journal: another process delivers them", lost)
        elif lost:
            self._drop("stopped", lost)
        if self._session is not None:
            await self._session.close()
        self._flush_drop_log(force=True)

    async def _send(self) -> None:
        while True:
            event = await self._queue.get()
            self._delivering += 1
            try:
                await self._deliver(event)
            finally:
                self._delivering -= 1
                metrics.WEBHOOK_QUEUE.dec()
                self._queue.task_done()

    async def _deliver(self, event: FileEvent) -> None:
        delay = self.first_retry
        while not await self._attempt(event):
            if event.journal and event.age(time.time()) > HANDOFF_SECONDS:
                return  # the journal's recovery loop takes it from here
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            delay = min(delay * 2, self.max_retry)

    async def _attempt(self, event: FileEvent) -> bool:
        """One delivery of `event`: True when it is done with (delivered, or refused for good, and
        then out of the journal), False when it is to be tried again."""
        assert self._session is not None
        body = json.dumps(event.to_dict(), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(self._secret, body),
            ID_HEADER: event.id,
        }
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await _read_some(response)
                status = response.status
                failure = None if 200 <= status < 300 else str(status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, failure = 0, type(exc).__name__
        if 400 <= status < 500 and status not in RETRIED_REFUSALS:
            self._drop("refused", 1, status=status)
            await self._acknowledge(event)
            return True
        if failure is None:
            metrics.WEBHOOKS_SENT.inc()
            if self._failing:
                self._failing = False
                log.info("webhook receiver answers again")
            await self._acknowledge(event)
            return True
        metrics.WEBHOOKS_RETRIED.labels(failure).inc()
        if not self._failing:
            self._failing = True
            log.warning(
                "webhook delivery failed (%s): retrying with backoff up to %g s", failure, self.max_retry
            )
        return False

    async def _acknowledge(self, event: FileEvent) -> None:
        if event.journal and self.journal is not None:
            await asyncio.shield(self.journal.acknowledge(event.journal))

    # The journal: events left behind, delivered by whichever process holds its lease.

    async def _recover(self) -> None:
        assert self.journal is not None
        delay = RECOVER_SECONDS
        while True:
            await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            try:
                delivered = await self._recover_once()
            except StorageFailure as exc:
                log.warning("could not read the event journal: %s", exc)
                delivered = False
            delay = RECOVER_SECONDS if delivered else min(max(delay, self.first_retry) * 2, self.max_retry)

    async def _recover_once(self) -> bool:
        """One round: count the journal; holding its lease, deliver what was left behind. False
        when a delivery failed (the next round waits longer)."""
        assert self.journal is not None
        self._claim = await self.journal.claim(self._claim)
        if self._claim is None:
            await self.journal.pending(0)  # only the count, for the backlog gauge
            metrics.WEBHOOK_BACKLOG.set(self.journal.backlog)
            return True
        events = await self.journal.pending(RECOVER_BATCH)
        metrics.WEBHOOK_BACKLOG.set(self.journal.backlog)
        now = time.time()
        lines: dict[tuple[str, str], list[FileEvent]] = {}
        for event in events:
            if event.age(now) > self.retry_seconds:
                self._drop("expired", 1)
                await self.journal.acknowledge(event.journal)
            elif event.age(now) > self.orphan_seconds:
                lines.setdefault((event.user, event.name), []).append(event)
        if not lines:
            return True
        keeper = asyncio.create_task(self._claim.keep())
        gate = asyncio.Semaphore(self._senders_count)

        async def line(events: list[FileEvent]) -> bool:
            async with gate:
                for event in events:  # one file's events in the order they happened
                    if not await self._attempt(event):
                        return False
                return True

        try:
            done = await asyncio.gather(*(line(events) for events in lines.values()))
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        metrics.WEBHOOK_BACKLOG.set(self.journal.backlog)
        return all(done)

    def _drop(self, reason: str, count: int, *, status: int = 0) -> None:
        metrics.WEBHOOKS_DROPPED.labels(reason).inc(count)
        if reason == "refused":
            self._refused_unlogged += count
            self._refused_status = status
        else:
            self._dropped_unlogged += count
        self._flush_drop_log(force=reason == "stopped")

    def _flush_drop_log(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not (self._dropped_unlogged or self._refused_unlogged):
            return
        if not force and now - self._drops_logged_at < DROPS_LOGGED_EVERY:
            return
        if self._dropped_unlogged:
            log.warning(
                "dropped %d webhook events (the queue of %d was full, or the process stopped)",
                self._dropped_unlogged,
                self._queue.maxsize,
            )
        if self._refused_unlogged:
            log.warning(
                "gave up %d webhook events the receiver refused (the last with HTTP %d): not retried",
                self._refused_unlogged,
                self._refused_status,
            )
        self._dropped_unlogged = self._refused_unlogged = 0
        self._drops_logged_at = now


async def _read_some(response: aiohttp.ClientResponse) -> None:
    """Read at most ANSWER_BYTES of an answer: a short one to its end, so that its connection can
    serve the next delivery; a longer one is cut off (its connection closed on release)."""
    left = ANSWER_BYTES
    while left > 0 and not response.content.at_eof():
        chunk = await response.content.read(left)
        if not chunk:
            return
        left -= len(chunk)
