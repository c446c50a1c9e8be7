"""What a user hands to others without their token: records in the bucket, one mechanism for two kinds.

A grant is a share link (links.py) or an upload request (requests.py): a small
JSON record every replica reads, named by a random id that is its URL, and an
empty index entry under its owner, so the owner lists theirs without reading
anyone else's:

    <root><grant id>                the record (links/, requests/)
    <index root><user id>/<id>      the index (linked/, requested/)

Every change to a record (a use taken, a wrong password counted) is a
compare-and-swap (cas.VersionedJson): what two replicas do at once is
decided once. Revoking deletes the record: the next use anywhere finds none.

**Passwords** are kept as scrypt hashes (passwords.py). A wrong or missing
password is counted in the record (again by compare-and-swap, so across
replicas): after FREE_TRIES failures each further one blocks the grant for
twice as long as the last (1 s, 2 s, ... up to BLOCK_SECONDS_MAX), and while
blocked every try is refused before any hash is computed. A use with the right
password ends the count.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets
from collections.abc import Callable
from typing import Any

from .cas import VersionedJson
from .client import S3
from .errors import FileNotFound, LinkBlocked, LinkNotFound, PasswordRequired, PreconditionFailed, StorageBusy
from .passwords import Passwords

log = logging.getLogger(__name__)

# Wrong passwords a grant takes before each further one blocks it for a while: enough for a
# person who mistypes, nothing for a guesser.
FREE_TRIES = 5
# The longest a grant is blocked after one more wrong password: 15 minutes, which keeps a
# guesser to about a hundred tries a day, while the owner's person waits at most that.
BLOCK_SECONDS_MAX = 15 * 60
# A change is retried this often against other replicas' changes before the client is told to
# come back (503): each lost race means another's change went in, so 20 concurrent uses settle
# in at most 20 rounds.
CHANGE_ATTEMPTS = 64
# Records read at once when a user's grants are listed (one GetObject each).
LIST_READS_AT_ONCE = 16

# What new_id makes: 128 random bits, unpadded base64url (no '.', unlike the older stateless
# links, which is how /s/<link> tells the two apart).
_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def new_id() -> str:
    # Ids are typed on command lines (`file-uploader revoke ID`), where one that begins with '-'
    # reads as an option: such a draw (1 in 64) is drawn again, which costs 0.02 of 128 bits.
    while (grant_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return grant_id


def is_grant_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def blocked_for(failures: int) -> float:
    """How long a grant is blocked after its `failures`-th wrong password in a row."""
    if failures < FREE_TRIES:
        return 0.0
    return float(min(2 ** (failures - FREE_TRIES), BLOCK_SECONDS_MAX))


class Unchanged(Exception):
    """Raised by a change function: the record stays as it is (`update` returns it)."""


class Grants:
    """The records of one kind of grant, in one bucket."""

    def __init__(self, s3: S3, passwords: Passwords, *, root: str, index_root: str, what: str) -> None:
        self.s3 = s3
        self.passwords = passwords
        self.root = root
        self.index_root = index_root
        self.what = what  # "link", "upload request": for messages

    def _record(self, grant_id: str) -> VersionedJson:
        return VersionedJson(self.s3, self.root + grant_id)

    def _missing(self) -> LinkNotFound:
        return LinkNotFound(f"no such {self.what} (it may have been revoked)")

    async def create(
        self, uid: str, fields: dict[str, Any], password: str | None
    ) -> tuple[str, dict[str, Any]]:
        """A new grant of `uid` with `fields` (and the hash of `password`); its id and record."""
        grant_id = new_id()
        record = {
            **fields,
            "uid": uid,
            "password": await self.passwords.hash(password) if password else None,
            "failures": 0,
            "blocked_until": 0.0,
        }
        # The index entry first: a grant that exists is always listed (and so revocable).
        await self.s3.put_object(f"{self.index_root}{uid}/{grant_id}", b"")
        await self._record(grant_id).write(record, None)
        return grant_id, record

    async def get(self, grant_id: str) -> tuple[dict[str, Any], str]:
        """The record and its ETag; LinkNotFound if there is none (or it was revoked)."""
        if not is_grant_id(grant_id):
            raise self._missing()
        found = await self._record(grant_id).read()
        if found is None:
            raise self._missing()
        return found

    async def of_user(self, uid: str) -> list[tuple[str, dict[str, Any]]]:
        """The user's grants (id, record), oldest first."""
        prefix = f"{self.index_root}{uid}/"
        ids = [key[len(prefix) :] for key in await self.s3.keys(prefix)]
        reads = asyncio.Semaphore(LIST_READS_AT_ONCE)

        async def read(grant_id: str) -> dict[str, Any] | None:
            async with reads:
                try:
                    record, _ = await self.get(grant_id)
                except LinkNotFound:  # revoked just now, or its record never written
                    return None
            return record if record.get("uid") == uid else None

        records = await asyncio.gather(*(read(grant_id) for grant_id in ids))
        found = [(grant_id, record) for grant_id, record in zip(ids, records, strict=True) if record]
        return sorted(found, key=lambda item: item[1].get("created", 0))

    async def revoke(self, uid: str, grant_id: str) -> None:
        """Delete the user's grant: refused from its next use on, on every replica."""
        record, _ = await self.get(grant_id)
        if record.get("uid") != uid:
            raise LinkNotFound(f"no such {self.what}")
        await self.s3.delete_object(self.root + grant_id)
        await self.s3.delete_object(f"{self.index_root}{uid}/{grant_id}")

    async def forget_expired(self, before: float) -> int:
        """Delete every grant whose expiry is before `before` (record, then index entry), as a
        revoke would; how many. For gc: read once each, LIST_READS_AT_ONCE at a time."""
        ids = [key[len(self.root) :] for key in await self.s3.keys(self.root)]
        reads = asyncio.Semaphore(LIST_READS_AT_ONCE)

        async def forget(grant_id: str) -> bool:
            async with reads:
                try:
                    record, _ = await self.get(grant_id)
                except LinkNotFound:  # revoked since the listing, or not a grant's key
                    return False
                expires = record.get("expires")
                if expires is None or expires >= before:
                    return False
                # An expiry is never changed: what is past it now stays past it.
                await self.s3.delete_object(self.root + grant_id)
                await self.s3.delete_object(f"{self.index_root}{record.get('uid')}/{grant_id}")
                return True

        return sum(await asyncio.gather(*(forget(grant_id) for grant_id in ids)))

    async def update(
        self,
        grant_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        attempts: int = CHANGE_ATTEMPTS,
    ) -> dict[str, Any]:
        """Apply `change` to the record by compare-and-swap, reading again after each lost race;
        the record written. `change` may raise to refuse (or Unchanged to leave it)."""
        for attempt in range(attempts):
            record, etag = await self.get(grant_id)
            try:
                changed = change(dict(record))
            except Unchanged:
                return record
            try:
                await self._record(grant_id).write(changed, etag)
                return changed
            except PreconditionFailed:
                # Another replica's change went in: read again, after a moment that spreads the
                # racers out.
                await asyncio.sleep(random.uniform(0, 0.02 * min(attempt + 1, 10)))
            except FileNotFound:
                raise self._missing() from None
        raise StorageBusy(f"the {self.what} is being used by many at once: try again")

    async def check_password(
        self, grant_id: str, record: dict[str, Any], password: str | None, now: float
    ) -> None:
        """Return if the grant needs no password or `password` is its own; else count the failure
        and raise PasswordRequired (no password and a wrong one alike), or LinkBlocked."""
        stored = record.get("password")
        if stored is None:
            return
        if record.get("blocked_until", 0.0) > now:
            raise LinkBlocked(record["blocked_until"] - now)
        if password and await self.passwords.matches(password, stored):
            return

        def failed(fields: dict[str, Any]) -> dict[str, Any]:
            fields["failures"] = fields.get("failures", 0) + 1
            fields["blocked_until"] = now + blocked_for(fields["failures"])
            return fields

        try:
            await self.update(grant_id, failed, attempts=6)
        except StorageBusy:
            log.info("a wrong password could not be counted: the %s is busy", self.what)
        except LinkNotFound:
            pass
        raise PasswordRequired(f"this {self.what} needs its password")
