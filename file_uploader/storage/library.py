"""The public library: files their owners made public, listed for everyone, newest first.

Two small objects per public file, both in the bucket, so every replica sees
the same library:

- ``pub/<user id>/<name>``, the marker: the file is public, and its library id.
  Mirrors the file's name, so a folder's public files are one listing away.
- ``library/<library id>``, the entry: the file's key, name, size, ETag and
  dates. The id starts with the time it was published, counted down
  (`_newest_first`), so S3's ascending key order is newest first and a page
  of the library is one ListObjectsV2 from a cursor; its random tail makes it
  unguessable and unique. The id is what public URLs carry: unlike the S3 key,
  it says nothing of who owns the file, not even the one-way user id.

Order of writes, so that a crash halfway never shows a private file: publish
writes the marker before the entry, unpublish deletes the entry before the
marker. The entry holds the ETag of the version published, and the file is
served only while it still has that ETag, so the moment a file is replaced its
old entry stops serving it, whatever the replacement says about visibility.

Publish then looks again: the marker must still name its entry and the file
still be the version it published (ETag and date), else a delete or a
replacement ran meanwhile and may have missed the entry (its unpublish ran
between our marker and our entry): publish takes out what it wrote, so no
entry is ever left without its marker to serve a file stored again private.

Reading a page of the library is what anyone may do without a token, as often
as they like: one listing and up to 100 entry reads. So a page read is kept
for _PAGE_KEPT_SECONDS in the process (every request for it meanwhile, and
those arriving while it is read, share one read), and page reads hold at most
_PAGE_CONNECTIONS of the short lane's S3 connections, waiting for them at
most _PAGE_WAIT_SECONDS (then 503): with a hundred anonymous pollers another
user's listing, HEAD, PUT or DELETE took 3-9 s (issue 20, row 9); it is now
the pollers who wait. A publish or an unpublish in this process drops the
kept pages at once; another process's shows within _PAGE_KEPT_SECONDS.

Not locked: two replicas publishing the same file at the same instant can
leave two entries (both read "no marker"); the one the marker does not name
then lists the file twice until the file is unpublished or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from ..formats import iso8601
from .client import S3
from .errors import FileNotFound, StorageBusy
from .keys import LIBRARY_ROOT, marker_key, start_after

# Milliseconds up to the year 2286: every id starts with 13 digits.
_TIME_DIGITS = 13
_LAST_MILLISECOND = 10**_TIME_DIGITS - 1
_RANDOM_BYTES = 8
LIBRARY_ID_LENGTH = _TIME_DIGITS + 2 * _RANDOM_BYTES
# Entries fetched at once when a folder's public files are taken out.
_READS_AT_ONCE = 16
# Public pages (see the module docstring): how long a page read is served again, how many
# pages are kept (a few MB at most: 100 entries of up to ~1 KB each), how many S3 connections
# all page reads together may hold (of the short lane's), how long a page waits for one.
_PAGE_KEPT_SECONDS = 2.0
_PAGES_KEPT = 64
_PAGE_CONNECTIONS = 2
_PAGE_WAIT_SECONDS = 10.0
Page = tuple[list["Entry"], str | None]


def _newest_first(now: float) -> str:
    return f"{_LAST_MILLISECOND - int(now * 1000):0{_TIME_DIGITS}d}"


def new_library_id(now: float) -> str:
    return _newest_first(now) + secrets.token_hex(_RANDOM_BYTES)


def is_library_id(text: str) -> bool:
    return len(text) == LIBRARY_ID_LENGTH and text.isascii() and text.isalnum() and text == text.lower()


@dataclasses.dataclass(frozen=True)
class Entry:
    """What the library knows of one public file."""

    id: str
    key: str  # the file's S3 key: never shown to anyone
    name: str
    size: int
    etag: str
    modified: str  # ISO 8601, UTC
    published: str  # ISO 8601, UTC
    expires: float | None = None  # when the file is gone (expiry.py): out of every page at once

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


class Library:
    def __init__(self, s3: S3) -> None:
        self.s3 = s3
        self._page_connections = asyncio.Semaphore(_PAGE_CONNECTIONS)
        # (after, limit) -> (when read, the read): done or under way.
        self._pages: dict[tuple[str | None, int], tuple[float, asyncio.Future[Page]]] = {}

    async def library_id(self, uid: str, name: str) -> str | None:
        """The library id of the file `name` if it is public, else None."""
        try:
            marker = json.loads(await self.s3.read_object(marker_key(uid, name)))
        except FileNotFound:
            return None
        return str(marker["id"])

    async def publish(
        self, uid: str, name: str, key: str, head: dict[str, Any], *, expires: float | None = None
    ) -> str:
        """Make the file public (or refresh its entry after a replacement); its library id.

        `head` is the file's HeadObject, of the version to publish; `expires` its expiry, kept in
        the entry so that a page read kept for a moment still leaves the file out at its time.
        """
        library_id = await self.library_id(uid, name)
        now = time.time()
        if library_id is None:
            library_id = new_library_id(now)
            await self.s3.put_object(
                marker_key(uid, name), json.dumps({"id": library_id}).encode(), ContentType="application/json"
            )
            published = iso8601(now)
        else:
            try:
                published = (await self.entry(library_id)).published
            except FileNotFound:  # a marker whose entry was lost: publish it anew
                published = iso8601(now)
        entry = Entry(
            id=library_id,
            key=key,
            name=name,
            size=head["ContentLength"],
            etag=head["ETag"],
            modified=iso8601(head["LastModified"]),
            published=published,
            expires=expires,
        )
        await self.s3.put_object(LIBRARY_ROOT + library_id, entry.to_json(), ContentType="application/json")
        self._pages.clear()
        if not await self._still(uid, name, key, library_id, head):
            # A delete or a replacement landed meanwhile, and may have missed the entry (its
            # unpublish ran between our marker and our entry): take out what we wrote.
            await self.s3.delete_object(LIBRARY_ROOT + library_id)
            if await self.library_id(uid, name) == library_id:
                await self.s3.delete_object(marker_key(uid, name))
            raise FileNotFound("the file was deleted or replaced while being made public")
        return library_id

    async def _still(self, uid: str, name: str, key: str, library_id: str, head: dict[str, Any]) -> bool:
        """Whether the marker still names `library_id` and the file is still the version `head`."""
        if await self.library_id(uid, name) != library_id:
            return False
        try:
            now = await self.s3.head_object(key)
        except FileNotFound:
            return False
        return bool(now["ETag"] == head["ETag"] and now["LastModified"] == head["LastModified"])

    async def unpublish(self, uid: str, name: str) -> bool:
        """Take the file out of the library; False if it was not in it."""
        library_id = await self.library_id(uid, name)
        if library_id is None:
            return False
        await self.remove(uid, name, library_id)
        return True

    async def remove(self, uid: str, name: str, library_id: str) -> None:
        """Take out the file whose library id the caller has just looked up."""
        await self.s3.delete_object(LIBRARY_ROOT + library_id)
        self._pages.clear()
        await self.s3.delete_object(marker_key(uid, name))

    async def unpublish_folder(self, uid: str, folder: str) -> int:
        """Take every public file under `folder` (a name ending in /) out of the library."""
        prefix = marker_key(uid, folder)
        markers = await self.s3.keys(prefix)
        gate = asyncio.Semaphore(_READS_AT_ONCE)

        async def entry_key(marker: str) -> str | None:
            async with gate:
                try:
                    return LIBRARY_ROOT + json.loads(await self.s3.read_object(marker))["id"]
                except FileNotFound:
                    return None

        entries = [key for key in await asyncio.gather(*(entry_key(m) for m in markers)) if key]
        await self.s3.delete_objects(entries)
        self._pages.clear()
        await self.s3.delete_objects(markers)
        return len(markers)

    async def entry(self, library_id: str) -> Entry:
        """The entry of `library_id`; FileNotFound if there is none."""
        if not is_library_id(library_id):
            raise FileNotFound("no such public file")
        return Entry(**json.loads(await self.s3.read_object(LIBRARY_ROOT + library_id)))

    async def page(self, *, after: str | None, limit: int) -> Page:
        """Up to `limit` entries, newest first, after the id `after`; and the cursor of the next
        page (None at the end). Read at most once per _PAGE_KEPT_SECONDS (module docstring)."""
        now = time.monotonic()
        kept = self._pages.get((after, limit))
        if kept is None or now - kept[0] > _PAGE_KEPT_SECONDS or kept[1].cancelled():
            if len(self._pages) >= _PAGES_KEPT:
                self._pages = {
                    page: read for page, read in self._pages.items() if now - read[0] <= _PAGE_KEPT_SECONDS
                }
                if len(self._pages) >= _PAGES_KEPT:
                    del self._pages[next(iter(self._pages))]
            kept = self._pages[(after, limit)] = (now, asyncio.ensure_future(self._read_page(after, limit)))
            kept[1].add_done_callback(lambda read: read.cancelled() or read.exception())  # retrieved
        try:
            return await asyncio.shield(kept[1])
        except Exception:
            if self._pages.get((after, limit)) is kept:  # a failed read is not served again
                del self._pages[(after, limit)]
            raise

    async def _read_page(self, after: str | None, limit: int) -> Page:
        start_after = LIBRARY_ROOT + after if after else None
        async with self._page_connection():
            listed = await self.s3.list_page(LIBRARY_ROOT, start_after=start_after, max_keys=limit)

        async def read(key: str) -> Entry | None:
            async with self._page_connection():
                try:
                    return Entry(**json.loads(await self.s3.read_object(key)))
                except FileNotFound:  # unpublished since the listing
                    return None

        entries = await asyncio.gather(*(read(item["Key"]) for item in listed.objects))
        ids = [item["Key"][len(LIBRARY_ROOT) :] for item in listed.objects]
        return [e for e in entries if e is not None], ids[-1] if listed.truncated and ids else None

    @contextlib.asynccontextmanager
    async def _page_connection(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(_PAGE_WAIT_SECONDS):
                await self._page_connections.acquire()
        except TimeoutError:
            raise StorageBusy("the public library is busy; try again later") from None
        try:
            yield
        finally:
            self._page_connections.release()

    async def public_names(
        self, uid: str, prefix: str, *, after_name: str | None, until: str, delimiter: str | None
    ) -> set[str]:
        """The public names under `prefix` of user `uid`, after the name `after_name` up to
        `until`; with `delimiter`, only those directly in the folder `prefix`."""
        root = marker_key(uid, "")
        names: set[str] = set()
        after = start_after(root + after_name) if after_name else None
        while True:
            listed = await self.s3.list_page(root + prefix, start_after=after, delimiter=delimiter)
            for item in listed.objects:
                name = item["Key"][len(root) :]
                if name.encode() > until.encode():
                    return names
                names.add(name)
            listed_keys = [item["Key"] for item in listed.objects] + listed.prefixes
            if not listed.truncated or not listed_keys:
                return names
            after = start_after(max(listed_keys, key=str.encode))
