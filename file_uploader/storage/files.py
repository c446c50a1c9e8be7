"""Files: streamed uploads, listing, download and delete, under the user's prefix.

Knows nothing of HTTP. An upload takes an async iterator of byte chunks and
hands it to the part pipeline (parts.py): a body smaller than one part goes up
with a single PutObject; a larger one becomes a multipart upload. S3 makes an
object visible only when CompleteMultipartUpload succeeds, which is what makes
a replacement atomic; on any failure (the body's iterator raising, S3 failing,
cancellation) the upload is aborted, so nothing is left behind and an older
object under the same key is untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

from ..ops import metrics
from ..sizes import part_size_for
from .client import S3, Lane, OpenObject
from .errors import RangeNotSatisfiable
from .parts import PartPipeline


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


class Files:
    """The users' files in one bucket."""

    def __init__(self, s3: S3, pipeline: PartPipeline) -> None:
        self.s3 = s3
        self.pipeline = pipeline

    async def list_entries(self, prefix: str) -> AsyncIterator[list[tuple[str, ObjectInfo]]]:
        """The names under `prefix` with their size, ETag and date, a page at a time, in S3's
        (UTF-8 byte) order."""
        async for page in self.s3.list_objects(prefix):
            yield [(item["Key"][len(prefix) :], _info(item, item["Size"])) for item in page]

    async def list_names(self, prefix: str) -> AsyncIterator[list[str]]:
        async for page in self.list_entries(prefix):
            yield [name for name, _ in page]

    async def stat(self, key: str) -> ObjectInfo:
        response = await self.s3.head_object(key)
        return _info(response, response["ContentLength"])

    async def open(self, key: str, byte_range: str | None = None) -> Download:
        """Start a GetObject; `byte_range` is an HTTP range such as ``bytes=0-99``."""
        try:
            opened = await self.s3.open_object(key, byte_range)
        except RangeNotSatisfiable as exc:
            if exc.size:
                raise
            raise RangeNotSatisfiable((await self.stat(key)).size) from None
        response = opened.response
        content_range = response.get("ContentRange") if byte_range else None
        size = int(content_range.rsplit("/", 1)[1]) if content_range else response["ContentLength"]
        return Download(
            info=_info(response, size),
            length=response["ContentLength"],
            content_range=content_range,
            _object=opened,
        )

    async def delete(self, key: str) -> None:
        # S3's DeleteObject succeeds for a missing key; the API promises 404.
        await self.stat(key)
        await self.s3.delete_object(key)

    async def put(
        self,
        user: str,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str = "application/octet-stream",
    ) -> None:
        """Store the bytes of `chunks` under `key`; `size` is their length if known."""
        pipeline = self.pipeline
        with pipeline.upload(user, "put"):
            reader = pipeline.reader(chunks, user)
            part_size = part_size_for(size, pipeline.part_size, 1)
            # A declared length smaller than a part reserves only what it needs.
            first = await reader.read(part_size if size is None else min(part_size, size))
            if first.size < part_size:
                try:
                    await reader.read_to_end()
                    params = pipeline.part_params(first)
                    await self.s3.put_object(
                        key, first.body(), lane=Lane.UPLOAD, ContentType=content_type, **params
                    )
                finally:
                    first.release()
                metrics.UPLOADS_COMPLETED.labels("put").inc()
                return
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
                    size_of=lambda number: part_size_for(size, pipeline.part_size, number),
                    keep_tail=False,
                    first=first,
                )
                await self.s3.complete_multipart_upload(key, upload_id, parts)
            except BaseException:
                # Shielded: a cancelled request must still leave no open upload.
                await asyncio.shield(self.s3.abort_multipart_upload(key, upload_id))
                raise
            metrics.UPLOADS_COMPLETED.labels("put").inc()
