"""What happened to a file, for whoever listens: `file.stored` and `file.deleted`.

The storage layer says what it did, where it did it (files.py, tus/,
sweep.py), and knows nothing of who listens: `Events.emit` hands each event to
the one listener the process connected (the webhook sender, hooks/webhooks.py),
or to nobody. An event carries the one-way user id, never a token.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
from collections.abc import Callable
from typing import Any

from ..formats import iso8601

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

    @classmethod
    def now(cls, kind: str, user: str, name: str, size: int, etag: str) -> FileEvent:
        return cls(kind, user, name, size, etag.strip('"'), iso8601(datetime.datetime.now(datetime.UTC)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Listener = Callable[[FileEvent], None]


class Events:
    """Where the storage layer's events go: to one listener, or nowhere. `emit` never waits."""

    def __init__(self) -> None:
        self._listener: Listener | None = None

    def connect(self, listener: Listener | None) -> None:
        self._listener = listener

    def emit(self, kind: str, user: str, name: str, size: int, etag: str) -> None:
        if self._listener is not None:
            self._listener(FileEvent.now(kind, user, name, size, etag))
