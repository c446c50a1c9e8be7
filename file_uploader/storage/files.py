"""Files: streamed uploads, listing, download and delete, under the user's prefix.

Knows nothing of HTTP. An upload takes an async iterator of byte chunks and
hands it to the part pipeline (parts.py): a body smaller than one part goes up
with a single PutObject; a larger one becomes a multipart upload. S3 makes an
object visible only when CompleteMultipartUpload succeeds, which is what makes
a replacement atomic; on any failure (the body's iterator raising, S3 failing,
cancellation) the upload is aborted, so nothing is left behind and an older
object under the same key is untouched.

What follows a file stored or deleted (its event, its bytes in the quota, the
public library, thumbnails) is landing.py's, for every route. With USER_QUOTA,
`put()` first reserves room for the body (quotas.py: before a byte of it is
read); the reservation becomes the stored size once the file is there, or is
given back.

A file may expire (expiry.py): from its time on, every read here (stat, open,
the listings) finds it gone, until gc deletes its bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ..ops import metrics
from .client import S3, OpenObject
from .errors import FileNotFound, RangeNotSatisfiable, StorageFailure
from .expiry import Expiring, Expiry
from .keys import split_file_key, start_after, user_prefix
from .landing import ASK, Finish, Landing, Removed
from .library import Library
from .parts import PartPipeline
from .quotas import Quotas


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    last_modified: datetime.datetime


def _info(response: dict[str, Any], size: int) -> ObjectInfo:
    modified = response["LastModified"].astimezone(datetime.UTC)
    return ObjectInfo(size=size, etag=response["ETag"], last_modified=modified)


@dataclasses.dataclass
class Download:
    """An open GetObject: its headers now, its bytes as they are read.

    It holds one of the S3 connections set aside for downloads until it is
    closed (client.py): use it as an async context manager.
    """

    info: ObjectInfo
    length: int  # of this response: the slice for a range
    content_range: str | None
    _object: OpenObject

    def chunks(self) -> AsyncIterator[bytes]:
        return self._object.chunks()

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Gives the S3 connection back even when the client went away midway.
        self._object.close()


@dataclasses.dataclass(frozen=True)
class FolderPage:
    """One page of a listing: files (name, info, public) and, with a delimiter, sub-folders."""

    files: list[tuple[str, ObjectInfo, bool]]
    folders: list[str]
    next: str | None  # the name to list after for the next page; None at the end


@dataclasses.dataclass(eq=False)
class Files:
    """The users' files in one bucket."""

    s3: S3
    pipeline: PartPipeline
    library: Library
    quotas: Quotas
    landing: Landing
    expiry: Expiry

    async def list_entries(self, prefix: str) -> AsyncIterator[list[tuple[str, ObjectInfo]]]:
        """The names under `prefix` with their size, ETag and date, a page at a time, in S3's
        (UTF-8 byte) order."""
        async for page in self.s3.list_objects(prefix):
            yield [(item["Key"][len(prefix) :], _info(item, item["Size"])) for item in page]

    async def list_names(self, prefix: str) -> AsyncIterator[list[str]]:
        async for page in self.list_entries(prefix):
            yield [name for name, _ in page]

    async def list_live(self, uid: str, prefix: str = "") -> AsyncIterator[list[tuple[str, ObjectInfo]]]:
        """The user's files (under `prefix`) as `list_entries` gives them, with their whole names,
        less those that have expired."""
        after: str | None = None
        async for listed in self.list_entries(user_prefix(uid) + prefix):
            page = [(prefix + name, info) for name, info in listed]
            if not page:
                yield page
                continue
            expiring = await self.expiry.in_range(
                uid, prefix, after_name=after, until=page[-1][0], delimiter=None
            )
            after = page[-1][0]
            yield self._live(page, expiring)

    async def read(self, key: str) -> AsyncGenerator[bytes]:
        """The file's bytes as S3 sends them (its download connection held until the end, or
        until the iterator is closed)."""
        async with await self.open(key) as download:
            async for chunk in download.chunks():
                yield chunk

    @staticmethod
    def _live(
        entries: list[tuple[str, ObjectInfo]], expiring: dict[str, Expiring]
    ) -> list[tuple[str, ObjectInfo]]:
        now = time.time()
        return [
            (name, info)
            for name, info in entries
            if name not in expiring or not expiring[name].gone(info.etag, now)
        ]

    async def page(
        self, uid: str, prefix: str, *, after: str | None, limit: int, folders: bool
    ) -> FolderPage:
        """Up to `limit` names under `prefix` after the name `after`, in S3's order; with
        `folders`, what lies in sub-folders is one folder entry (`prefix` + `sub/`) each."""
        root = user_prefix(uid)
        delimiter = "/" if folders else None
        listed = await self.s3.list_page(
            root + prefix,
            start_after=start_after(root + after) if after else None,
            delimiter=delimiter,
            max_keys=limit,
        )
        entries = [(item["Key"][len(root) :], _info(item, item["Size"])) for item in listed.objects]
        subfolders = [folder[len(root) :] for folder in listed.prefixes]
        public: set[str] = set()
        if entries:
            public, expiring = await asyncio.gather(
                self.library.public_names(
                    uid, prefix, after_name=after, until=entries[-1][0], delimiter=delimiter
                ),
                self.expiry.in_range(
                    uid, prefix, after_name=after, until=entries[-1][0], delimiter=delimiter
                ),
            )
            live = self._live(entries, expiring)
        names = [name for name, _ in entries] + subfolders
        last = max(names, key=str.encode) if names else None
        return FolderPage(
            files=[(name, info, name in public) for name, info in (live if entries else [])],
            folders=subfolders,
            next=last if listed.truncated else None,
        )

    async def stat(self, key: str) -> ObjectInfo:
        """The file's size, ETag and date; FileNotFound if it is not there, or has expired."""
        uid, name = split_file_key(key)
        response, expiring = await asyncio.gather(self.s3.head_object(key), self.expiry.of(uid, name))
        info = _info(response, response["ContentLength"])
        self._check_live(info.etag, expiring)
        return info

    @staticmethod
    def _check_live(etag: str, expiring: Expiring | None) -> None:
        if expiring is not None and expiring.gone(etag, time.time()):
            raise FileNotFound("no such file (it has expired)")

    async def check_live(self, key: str, etag: str) -> None:
        """FileNotFound if the version `etag` of the file at `key` has expired."""
        uid, name = split_file_key(key)
        self._check_live(etag, await self.expiry.of(uid, name))

    async def expires(self, key: str) -> float | None:
        """When the file expires (None: it keeps); FileNotFound if it is not there."""
        uid, name = split_file_key(key)
        info = await self.stat(key)
        expiring = await self.expiry.of(uid, name)
        return expiring.at if expiring is not None and expiring.etag == info.etag else None

    async def set_expiry(self, key: str, at: float | None) -> None:
        """Make the file expire at `at` (None: keep it); FileNotFound if it is not there."""
        uid, name = split_file_key(key)
        head = await self.s3.head_object(key)
        self._check_live(head["ETag"], await self.expiry.of(uid, name))
        await self.expiry.set(uid, name, at, head["ETag"])
        if await self.library.library_id(uid, name) is not None:  # its entry carries the time
            await self.library.publish(uid, name, key, head, expires=at)

    async def open(self, key: str, byte_range: str | None = None) -> Download:
        """Start a GetObject; `byte_range` is an HTTP range such as ``bytes=0-99``."""
        # Whether the file has expired is asked while S3 opens it: no time added to a download.
        expiring_read = asyncio.ensure_future(self.expiry.of(*split_file_key(key)))
        try:
            opened = await self.s3.open_object(key, byte_range)
        except RangeNotSatisfiable as exc:
            expiring_read.cancel()
            if exc.size:
                raise
            raise RangeNotSatisfiable((await self.stat(key)).size) from None
        except BaseException:
            expiring_read.cancel()
            raise
        response = opened.response
        try:
            self._check_live(response["ETag"], await expiring_read)
        except BaseException:
            opened.close()
            raise
        content_range = response.get("ContentRange") if byte_range else None
        size = int(content_range.rsplit("/", 1)[1]) if content_range else response["ContentLength"]
        return Download(
            info=_info(response, size),
            length=response["ContentLength"],
            content_range=content_range,
            _object=opened,
        )

    async def delete(self, key: str, *, expired: bool = False) -> None:
        """Delete the file; FileNotFound if it is not there (or has expired, unless `expired`: gc
        deleting expired files)."""
        # S3's DeleteObject succeeds for a missing key; the API promises 404.
        if expired:
            head = await self.s3.head_object(key)
            info = _info(head, head["ContentLength"])
        else:
            info = await self.stat(key)
        await self.s3.delete_object(key)
        removed = Removed(key, info.size, info.etag, info.last_modified)
        await self.landing.removed(split_file_key(key)[0], [removed])

    async def set_public(self, key: str, public: bool) -> str | None:
        """Put the file in the public library or take it out; its library id when public.

        Also what follows any upload that completes at `key`: a replaced file is public only if
        its replacement says so. Cached thumbnails need nothing then: each is checked against the
        file's ETag when it is served and remade when stale.
        """
        uid, name = split_file_key(key)
        if not public:
            await self.library.unpublish(uid, name)
            return None
        head, expiring = await asyncio.gather(self.s3.head_object(key), self.expiry.of(uid, name))
        self._check_live(head["ETag"], expiring)
        expires = expiring.at if expiring is not None and expiring.etag == head["ETag"] else None
        return await self.library.publish(uid, name, key, head, expires=expires)

    async def put(
        self,
        user: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str = "application/octet-stream",
        public: bool = False,
        kind: str = "put",
        expires_in: int | None = None,
        finish: Finish | None = None,
    ) -> None:
        """Store the bytes of `chunks` under `key`; `size` is their length if known; `public`
        puts the file in the public library; `expires_in`: seconds the file lives once stored
        (None: it keeps). `kind` labels the upload's metrics. `finish`, if given, is awaited
        with the size just before the file is stored, and may refuse it."""
        uid, name = split_file_key(key)
        # With a quota: the size of the file this one replaces (it counts only what it adds to
        # it), then room reserved for it before a byte of the body is read.
        replaces, exact = await self.landing.replaced_size(uid, key)
        reservation = await self.quotas.reserve(uid, key, size, replaces)
        # Whether the file being replaced is public is asked while the bytes stream in, so that a
        # small upload does not pay for one more S3 round trip after its own.
        replaced = asyncio.create_task(self.library.library_id(uid, name))

        try:
            stored_size, etag = await self._store(
                user,
                key,
                reservation.meter(chunks),
                size=size,
                content_type=content_type,
                kind=kind,
                ready=reservation.ensure_held,
                finish=finish,
            )
        except BaseException:
            replaced.cancel()
            await asyncio.gather(replaced, return_exceptions=True)
            await asyncio.shield(reservation.release())
            raise
        try:
            library_id: object = await replaced
        except StorageFailure:
            library_id = ASK
        counted = reservation.stored(stored_size, replaces, exact=exact)
        expires = time.time() + expires_in if expires_in is not None else None
        await self.landing.stored(
            key, stored_size, etag, counted, public=public, library_id=library_id, expires=expires
        )

    async def _store(
        self,
        user: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str,
        kind: str,
        ready: Callable[[], None],
        finish: Finish | None = None,
    ) -> tuple[int, str]:
        """Stream `chunks` into the object `key`; its size and ETag. `ready` is called just before
        the object is made (PutObject, CompleteMultipartUpload), and may refuse it by raising."""
        pipeline = self.pipeline
        plan = pipeline.plan
        if size is not None and size > plan.capacity(size):
            raise pipeline.too_many_parts(size)  # before a byte of the body is read
        with pipeline.upload(user, kind):
            reader = pipeline.reader(chunks, user)
            part_size = plan.first(size)
            # A declared length smaller than a part reserves only what it needs.
            first = await reader.read(part_size if size is None else min(part_size, size))
            if first.size < part_size:
                try:
                    await reader.read_to_end()
                    if finish is not None:
                        await finish(first.size)
                    ready()
                    etag = await pipeline.put_object(key, first, ContentType=content_type)
                finally:
                    first.release()
                metrics.UPLOADS_COMPLETED.labels(kind).inc()
                return first.size, etag
            try:
                upload_id = await self.s3.create_multipart_upload(
                    key, ContentType=content_type, **pipeline.create_params()
                )
            except BaseException:
                first.release()
                raise
            try:
                parts, _ = await pipeline.send(
                    key,
                    upload_id,
                    reader,
                    number=1,
                    size_of=lambda number: plan.size(size, number),
                    keep_tail=False,
                    first=first,
                )
                if finish is not None:
                    await finish(reader.received)
                ready()
                completed = await self.s3.complete_multipart_upload(key, upload_id, parts)
            except BaseException:
                # Shielded: a cancelled request must still leave no open upload.
                await asyncio.shield(self.s3.abort_multipart_upload(key, upload_id))
                raise
            metrics.UPLOADS_COMPLETED.labels(kind).inc()
            return reader.received, str(completed["ETag"])
