"""Share links as records in the bucket, so that every replica sees one state of each link.

    links/<link id>            the link: whose file, its limits, how often it was used (JSON)
    linked/<user id>/<link id> empty: lists a user's links without reading anyone else's

A link names a file of its owner by name (or a folder, ending in /): it serves
whatever is stored there when it is used, until it expires, is used up or is
revoked (its record deleted: the next use on any replica finds nothing).

**Download limits are exact across replicas**: a use is taken before a byte is
served by a compare-and-swap of the record (cas.VersionedJson): of two
replicas that read the same count, one writes count+1 and the other reads
again and decides again, so no more than `max_downloads` uses are ever taken.
Every request that serves bytes takes one, a Range request too (a resumed
download is another use): counting only whole downloads would let a client
fetch a file in two halves for one use. Links without a limit count their uses
too, but give up counting after a few lost races rather than delay a download
(their count is then a little low, never high). Without conditional writes
(S3_CONDITIONAL_WRITES=0) the compare-and-swap is cas.py's read-back rule, and
the limit holds but for the rare case that rule states.

**Passwords** are kept as scrypt hashes (passwords.py). A wrong or missing
password is counted in the record (again by compare-and-swap, so across
replicas): after FREE_TRIES failures each further one blocks the link for
twice as long as the last (1 s, 2 s, ... up to BLOCK_SECONDS_MAX), and while
blocked every try is refused before any hash is computed. The right password
ends the count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import re
import secrets
import time
from typing import Any

from .cas import VersionedJson
from .client import S3
from .errors import (
    FileNotFound,
    LinkBlocked,
    LinkExpired,
    LinkNotFound,
    LinkUsedUp,
    PasswordRequired,
    PreconditionFailed,
    StorageBusy,
)
from .keys import LINK_INDEX_ROOT, LINKS_ROOT
from .passwords import Passwords

log = logging.getLogger(__name__)

# Wrong passwords a link takes before each further one blocks it for a while: enough for a
# person who mistypes, nothing for a guesser.
FREE_TRIES = 5
# The longest a link is blocked after one more wrong password: 15 minutes, which keeps a
# guesser to about a hundred tries a day, while the owner's person waits at most that.
BLOCK_SECONDS_MAX = 15 * 60
# A limited link's use is retried this often against other replicas' uses before the client is
# told to come back (503): each lost race means another took a use, so 20 concurrent
# downloads settle in at most 20 rounds.
USE_ATTEMPTS = 64
# An unlimited link gives up counting a use after this many lost races (see above).
COUNT_ATTEMPTS = 3
# Links listed at once (one GetObject each).
LIST_READS_AT_ONCE = 16

# What new_link_id makes: 128 random bits, unpadded base64url (no '.', unlike the older
# stateless links, which is how /s/<link> tells the two apart).
_LINK_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_link_id() -> str:
    return secrets.token_urlsafe(16)


def is_link_id(text: str) -> bool:
    return _LINK_ID.fullmatch(text) is not None


def blocked_for(failures: int) -> float:
    """How long the link is blocked after its `failures`-th wrong password in a row."""
    if failures < FREE_TRIES:
        return 0.0
    return float(min(2 ** (failures - FREE_TRIES), BLOCK_SECONDS_MAX))


@dataclasses.dataclass(frozen=True)
class Link:
    id: str
    uid: str
    name: str  # a file's name, or a folder's (ending in /)
    created: float
    expires: float | None
    max_downloads: int | None
    downloads: int = 0
    password: str | None = None  # the scrypt hash, never the password
    failures: int = 0  # wrong passwords in a row
    blocked_until: float = 0.0

    @classmethod
    def from_json(cls, link_id: str, fields: dict[str, Any]) -> Link:
        known = {field.name for field in dataclasses.fields(cls)} - {"id"}
        return cls(id=link_id, **{name: value for name, value in fields.items() if name in known})

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["id"]
        return fields

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def used_up(self) -> bool:
        return self.max_downloads is not None and self.downloads >= self.max_downloads


class Links:
    """The share links of every user, in one bucket."""

    def __init__(self, s3: S3, passwords: Passwords) -> None:
        self.s3 = s3
        self.passwords = passwords

    def _record(self, link_id: str) -> VersionedJson:
        return VersionedJson(self.s3, LINKS_ROOT + link_id)

    async def create(
        self,
        uid: str,
        name: str,
        *,
        expires: float | None,
        max_downloads: int | None,
        password: str | None,
    ) -> Link:
        link = Link(
            id=new_link_id(),
            uid=uid,
            name=name,
            created=time.time(),
            expires=expires,
            max_downloads=max_downloads,
            password=await self.passwords.hash(password) if password else None,
        )
        # The index entry first: a link that exists is always listed (and so revocable).
        await self.s3.put_object(f"{LINK_INDEX_ROOT}{uid}/{link.id}", b"")
        await self._record(link.id).write(link.to_json(), None)
        return link

    async def get(self, link_id: str) -> tuple[Link, str]:
        """The link and its record's ETag; LinkNotFound if there is none (or it was revoked)."""
        if not is_link_id(link_id):
            raise LinkNotFound("no such link")
        found = await self._record(link_id).read()
        if found is None:
            raise LinkNotFound("no such link (it may have been revoked)")
        return Link.from_json(link_id, found[0]), found[1]

    async def of_user(self, uid: str) -> list[Link]:
        """The user's links, oldest first."""
        prefix = f"{LINK_INDEX_ROOT}{uid}/"
        ids = [key[len(prefix) :] for key in await self.s3.keys(prefix)]
        reads = asyncio.Semaphore(LIST_READS_AT_ONCE)

        async def read(link_id: str) -> Link | None:
            async with reads:
                try:
                    link, _ = await self.get(link_id)
                except LinkNotFound:  # revoked just now, or its record never written
                    return None
            return link if link.uid == uid else None

        links = [link for link in await asyncio.gather(*(read(link_id) for link_id in ids)) if link]
        return sorted(links, key=lambda link: link.created)

    async def revoke(self, uid: str, link_id: str) -> None:
        """Delete the user's link: refused from the next use on, on every replica."""
        link, _ = await self.get(link_id)
        if link.uid != uid:
            raise LinkNotFound("no such link")
        await self.s3.delete_object(LINKS_ROOT + link_id)
        await self.s3.delete_object(f"{LINK_INDEX_ROOT}{uid}/{link_id}")

    async def admit(self, link_id: str, password: str | None, now: float | None = None) -> Link:
        """The link, if it may be used now with `password`; else LinkNotFound, LinkExpired,
        LinkUsedUp, LinkBlocked or PasswordRequired (no password and a wrong one alike)."""
        now = time.time() if now is None else now
        link, _ = await self.get(link_id)
        if link.expired(now):
            raise LinkExpired("this share link has expired")
        if link.used_up():
            raise LinkUsedUp(f"this link has served its {link.max_downloads} downloads")
        if link.password is None:
            return link
        if link.blocked_until > now:
            raise LinkBlocked(link.blocked_until - now)
        if password and await self.passwords.matches(password, link.password):
            return link
        await self._failed(link_id, now)
        raise PasswordRequired("this link needs its password")

    async def _failed(self, link_id: str, now: float) -> None:
        """Count one wrong password in the record, and block the link past FREE_TRIES."""
        for _ in range(COUNT_ATTEMPTS * 2):
            try:
                link, etag = await self.get(link_id)
            except LinkNotFound:
                return
            failures = link.failures + 1
            changed = dataclasses.replace(link, failures=failures, blocked_until=now + blocked_for(failures))
            try:
                await self._record(link_id).write(changed.to_json(), etag)
                return
            except PreconditionFailed:
                await asyncio.sleep(random.uniform(0, 0.05))
        log.info("a wrong password could not be counted: the link is busy")

    async def use(self, link_id: str, now: float | None = None) -> Link:
        """Take one use of the link (its downloads + 1), exactly, whatever other replicas do;
        LinkUsedUp once it has none left, LinkNotFound once revoked, LinkExpired after its time."""
        now = time.time() if now is None else now
        attempts = USE_ATTEMPTS
        for attempt in range(attempts):
            link, etag = await self.get(link_id)
            if link.expired(now):
                raise LinkExpired("this share link has expired")
            if link.used_up():
                raise LinkUsedUp(f"this link has served its {link.max_downloads} downloads")
            used = dataclasses.replace(link, downloads=link.downloads + 1, failures=0, blocked_until=0.0)
            try:
                await self._record(link_id).write(used.to_json(), etag)
                return used
            except PreconditionFailed:
                if link.max_downloads is None and attempt + 1 >= COUNT_ATTEMPTS:
                    log.info("a use of an unlimited link went uncounted: the link is busy")
                    return link
                # Another replica took a use (or counted a failure): read again, after a moment
                # that spreads the racers out.
                await asyncio.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
            except FileNotFound:
                raise LinkNotFound("no such link (it may have been revoked)") from None
        raise StorageBusy("the link is being used by many at once: try again")
