"""What follows a file stored or deleted, the same for every route: PUT, forms, tus, folder deletes.

A stored file (`Landing.stored`): its ``file.stored`` event; its bytes in the
quota (the reservation the upload held becomes the stored size, less the
size of the file it replaced: `replaced_size`, asked once, before the store);
the public library, which follows the new version (public only if the upload
said so); its expiry (expiry.py: the upload's, or none, for every stored
version, so a replacement never inherits the time of the file it replaced).
Cached thumbnails need nothing: each is checked against the file's ETag when
served.

A deleted file (`Landing.removed`): S3's deletes are idempotent, so racing
DELETEs of one file each succeed, and each would otherwise say ``file.deleted``
and take its size off the quota (issue 20, row 1: storage reached 3x
USER_QUOTA). So the first to remove a version claims it: a create-only
compare-and-swap (cas.py) of ``removed/<user id>/<key tag>.<ETag>.<time>``,
the version's identity, which exactly one remover wins in any process.
Only the winner says ``file.deleted``, takes the size off the quota, and
takes the file out of the library and its thumbnails. The claims are small
and left for gc (`sweep.collect_garbage` removes those older than a day).
A folder delete claims nothing: one PUT more per file would double its cost,
for a race (a DELETE of one of its files at the same instant) that can then
count that one file twice.

`Landing.admit` is the one look an expect handler takes before a body: the
user's upload slots, and whether a declared length can fit their quota.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Awaitable, Callable

from .budget import UploadSlots
from .cas import VersionedJson
from .client import S3
from .errors import PreconditionFailed
from .events import DELETED, STORED, Events
from .expiry import Expiry
from .keys import REMOVED_ROOT, split_file_key
from .library import Library
from .quotas import Quotas, key_tag, size_before
from .thumbnails import Thumbnails

# A last word before a file lands, for every kind of upload: awaited with the file's final size
# just before it is stored (before PutObject or CompleteMultipartUpload), it may refuse it by
# raising, and nothing is then stored (the HTTP layer's pre-finish hook: hooks/blocking.py).
Finish = Callable[[int], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Removed:
    """A file version that was deleted."""

    key: str
    size: int
    etag: str
    modified: datetime.datetime


# What the library does after a store: ASK whether the replaced file was public (one GetObject).
ASK = object()


@dataclasses.dataclass(eq=False)
class Landing:
    """What every kind of upload and delete hands a stored or deleted file to."""

    s3: S3
    library: Library
    thumbnails: Thumbnails
    quotas: Quotas
    events: Events
    slots: UploadSlots
    expiry: Expiry

    async def admit(self, uid: str, key: str | None, length: int | None) -> None:
        """Refuse an upload before its body: TooManyUploads when the user has no upload slot
        left, QuotaExceeded when `length` bytes to `key` cannot fit (None: no key known yet)."""
        self.slots.check(uid)
        if key is not None:
            await self.quotas.check(uid, key, length)

    async def replaced_size(self, uid: str, key: str) -> tuple[int | None, bool]:
        """With a quota (`uid`'s), the size of the file at `key` that an upload is about to replace (None:
        there is none), and whether that is known; asked once, before the store."""
        return await size_before(self.s3, key) if self.quotas.enabled_for(uid) else (None, False)

    async def stored(
        self,
        key: str,
        size: int,
        etag: str,
        counted: Awaitable[None],
        *,
        public: bool = False,
        library_id: object = ASK,
        expires: float | None = None,
    ) -> None:
        """The file at `key` is there: its event, `counted` (its bytes in the quota), the library.
        `library_id`: the replaced file's library id if the caller asked it already (None: it was
        not public), else ASK. `expires`: when the file is gone (None: it keeps)."""
        uid, name = split_file_key(key)
        await self.events.emit(STORED, uid, name, size, etag)
        await asyncio.shield(counted)
        await self.expiry.set(uid, name, expires, etag)
        if library_id is ASK:
            library_id = await self.library.library_id(uid, name)
        if public:
            await self.library.publish(uid, name, key, await self.s3.head_object(key), expires=expires)
        elif isinstance(library_id, str):
            await self.library.remove(uid, name, library_id)

    async def removed(self, uid: str, files: list[Removed], *, folder: bool = False) -> None:
        """The files were deleted: what follows each one that this request was the first to
        remove. `folder`: a folder delete, which takes its files out of the library and their
        thumbnails folder by folder itself, and claims none of them (see below)."""
        if folder:
            won = files
        else:
            claims = await asyncio.gather(*(self._first(uid, file) for file in files))
            won = [file for file, first in zip(files, claims, strict=True) if first]
        for file in won:
            await self.events.emit(DELETED, uid, split_file_key(file.key)[1], file.size, file.etag)
        await self.quotas.removed(uid, [(file.key, file.size) for file in won])
        if not folder:
            for file in won:
                name = split_file_key(file.key)[1]
                await asyncio.gather(
                    self.library.unpublish(uid, name),
                    self.thumbnails.forget(uid, name),
                    self.expiry.forget(uid, name),
                )

    async def _first(self, uid: str, file: Removed) -> bool:
        version = f"{key_tag(file.key)}.{file.etag.strip(chr(34))}.{int(file.modified.timestamp())}"
        try:
            await VersionedJson(self.s3, f"{REMOVED_ROOT}{uid}/{version}").write({}, None)
        except PreconditionFailed:
            return False
        return True
