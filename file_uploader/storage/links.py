"""Share links as records in the bucket, so that every replica sees one state of each link.

    links/<link id>            the link: whose file, its limits, how often it was used (JSON)
    linked/<user id>/<link id> empty: lists a user's links without reading anyone else's

A grant (grants.py: records, index, passwords, compare-and-swap changes). A
link names a file of its owner by name (or a folder, ending in /): it serves
whatever is stored there when it is used, until it expires, is used up or is
revoked (its record deleted: the next use on any replica finds nothing).

**Download limits are exact across replicas**: a use is taken before a byte is
served by a compare-and-swap of the record: of two replicas that read the
same count, one writes count+1 and the other reads again and decides again,
so no more than `max_downloads` uses are ever taken. Every request that
serves bytes takes one, a Range request too (a resumed download is another
use): counting only whole downloads would let a client fetch a file in two
halves for one use. Links without a limit count their uses too, but give up
counting after a few lost races rather than delay a download (their count is
then a little low, never high). Without conditional writes
(where the write probe finds S3 ignoring them) the compare-and-swap is cas.py's read-back rule, and
the limit holds but for the rare case that rule states.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from .client import S3
from .errors import LinkExpired, LinkUsedUp, StorageBusy
from .grants import FREE_TRIES, Grants, Unchanged, is_grant_id
from .keys import LINK_INDEX_ROOT, LINKS_ROOT
from .passwords import Passwords

__all__ = ["FREE_TRIES", "Link", "Links", "is_link_id"]

# An unlimited link gives up counting a use after this many lost races (see above).
COUNT_ATTEMPTS = 3

is_link_id = is_grant_id


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

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def used_up(self) -> bool:
        return self.max_downloads is not None and self.downloads >= self.max_downloads


def _usable(link: Link, now: float) -> None:
    if link.expired(now):
        raise LinkExpired("this share link has expired")
    if link.used_up():
        raise LinkUsedUp(f"this link has served its {link.max_downloads} downloads")


class Links:
    """The share links of every user, in one bucket."""

    def __init__(self, s3: S3, passwords: Passwords) -> None:
        self.grants = Grants(s3, passwords, root=LINKS_ROOT, index_root=LINK_INDEX_ROOT, what="link")

    async def create(
        self,
        uid: str,
        name: str,
        *,
        expires: float | None,
        max_downloads: int | None,
        password: str | None,
    ) -> Link:
        fields = {"name": name, "created": time.time(), "expires": expires, "max_downloads": max_downloads}
        link_id, record = await self.grants.create(uid, {**fields, "downloads": 0}, password)
        return Link.from_json(link_id, record)

    async def of_user(self, uid: str) -> list[Link]:
        """The user's links, oldest first."""
        return [Link.from_json(link_id, record) for link_id, record in await self.grants.of_user(uid)]

    async def revoke(self, uid: str, link_id: str) -> None:
        await self.grants.revoke(uid, link_id)

    async def admit(self, link_id: str, password: str | None, now: float | None = None) -> Link:
        """The link, if it may be used now with `password`; else LinkNotFound, LinkExpired,
        LinkUsedUp, LinkBlocked or PasswordRequired (no password and a wrong one alike)."""
        now = time.time() if now is None else now
        record, _ = await self.grants.get(link_id)
        link = Link.from_json(link_id, record)
        _usable(link, now)
        await self.grants.check_password(link_id, record, password, now)
        return link

    async def use(self, link_id: str, now: float | None = None) -> Link:
        """Take one use of the link (its downloads + 1), exactly, whatever other replicas do;
        LinkUsedUp once it has none left, LinkNotFound once revoked, LinkExpired after its time."""
        now = time.time() if now is None else now
        lost = 0

        def take(fields: dict[str, Any]) -> dict[str, Any]:
            nonlocal lost
            _usable(Link.from_json(link_id, fields), now)
            if fields.get("max_downloads") is None and lost >= COUNT_ATTEMPTS:
                raise Unchanged
            lost += 1
            return {
                **fields,
                "downloads": fields.get("downloads", 0) + 1,
                "failures": 0,
                "blocked_until": 0.0,
            }

        try:
            return Link.from_json(link_id, await self.grants.update(link_id, take))
        except StorageBusy:
            raise StorageBusy("the link is being used by many at once: try again") from None
