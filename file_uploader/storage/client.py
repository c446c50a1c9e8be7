"""`S3`: the narrow set of S3 calls the gateway makes, each named, timed and translated.

Every S3 call of the gateway goes through `S3`, as tusd's S3 store goes
through its S3API interface: one place names each operation (for metrics and
logs), has its errors translated into the storage layer's own (s3_errors.py),
paginates, batches deletes and aborts. Nothing outside this module,
s3_errors.py and connection.py (the client's configuration, its factory and
the lanes of its connection pool) imports aiobotocore or botocore.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from ..sizes import DELETE_BATCH_SIZE, LIST_PAGE_SIZE, S3_SEND_STALL_SECONDS, format_size
from .connection import Lane, Lanes, send_bodies_as_is
from .encryption import NO_ENCRYPTION, Encryption
from .errors import FileNotFound, StorageError, StorageFailure, TooLarge
from .pieces import WatchedBody
from .s3_errors import translated

log = logging.getLogger(__name__)

# aiohttp warns when a request body over 1 MB is handed over in memory,
# suggesting a BytesIO; for parts that is the fast path (send_bodies_as_is).
warnings.filterwarnings("ignore", "Sending a large body directly", ResourceWarning, "aiohttp")

# What XML 1.0 cannot carry (outside its Char production), and C0 controls, which XML
# parsers rewrite (CR) or refuse: a key holding one cannot be named in an XML request body.
_NOT_IN_XML = re.compile("[\x00-\x1f\ud800-\udfff\ufffe\uffff]")

# What PutObject and UploadPart send: bytes (small objects of the gateway's own), or a part's
# bytes (its pieces as they arrived, or its spool file), whose send S3 must keep taking.
Body = bytes | WatchedBody


@dataclasses.dataclass(frozen=True)
class ListPage:
    """One ListObjectsV2 page: objects (Key, Size, ETag, LastModified) and, with a delimiter,
    the common prefixes ("folders"), both in key order."""

    objects: list[dict[str, Any]]
    prefixes: list[str]
    truncated: bool


@dataclasses.dataclass
class OpenObject:
    """A GetObject whose body is still to be read; it holds a download connection until closed."""

    response: dict[str, Any]
    _lanes: Lanes
    _closed: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        # The chunks aiohttp received, as received: reading fixed-size pieces
        # (the body's iter_chunks) would join buffered chunks into new bytes
        # objects first, one more copy of every byte on its way to the client.
        with translated("GetObject"):
            async for chunk, _ in self.response["Body"].raw_stream.content.iter_chunks():
                yield chunk

    def close(self) -> None:
        """Give the connection back (closing it if the body was not read to the end)."""
        if not self._closed:
            self._closed = True
            self.response["Body"].close()
            self._lanes.give(Lane.DOWNLOAD)


class S3:
    """One bucket, through the calls the gateway makes. `client` is an aiobotocore S3 client."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        lanes: Lanes,
        *,
        conditional_writes: bool = True,
        encryption: Encryption = NO_ENCRYPTION,
        send_stall: float = S3_SEND_STALL_SECONDS,
    ) -> None:
        self._client = client
        self.bucket = bucket
        # S3_SSE: added here to every call that makes or reads an object (encryption.py), so
        # that no caller can leave it out.
        self.encryption = encryption
        self._create = encryption.create()
        self._use = encryption.use()
        self.lanes = lanes
        # How long S3 may take nothing of a part's body before its connection is dropped
        # (pieces.py); tests set a short one before the first request.
        self.send_stall = send_stall
        self._conditions_wanted = conditional_writes  # Settings.s3_conditional_writes (tests: False)
        self._conditions_honoured = True  # until the probe finds otherwise
        self.presigner: Any = None  # open_presigner's client, when direct URLs are on
        send_bodies_as_is(client)

    @property
    def conditional_writes(self) -> bool:
        """Whether compare-and-swap sends its conditions to S3 (cas.py): only where both are
        wanted (Settings.s3_conditional_writes) and the write probe found S3 to honour both kinds."""
        return self._conditions_wanted and self._conditions_honoured

    def found_conditions(self, *, if_none_match: bool, if_match: bool) -> None:
        """What the write probe found S3 to do with If-None-Match: * and If-Match on PutObject."""
        self._conditions_honoured = if_none_match and if_match

    # Buckets.

    async def bucket_exists(self) -> bool:
        try:
            async with self.lanes.hold(Lane.SHORT):
                with translated("HeadBucket"):
                    await self._client.head_bucket(Bucket=self.bucket)
        except FileNotFound:
            return False
        return True

    async def create_bucket(self) -> None:
        request: dict[str, Any] = {"Bucket": self.bucket}
        region = self._client.meta.region_name
        if region != "us-east-1":  # S3 rejects us-east-1 as a LocationConstraint
            request["CreateBucketConfiguration"] = {"LocationConstraint": region}
        async with self.lanes.hold(Lane.SHORT):
            with translated("CreateBucket"):
                await self._client.create_bucket(**request)

    # Objects.

    async def put_object(
        self, key: str, body: Body, *, lane: Lane = Lane.SHORT, **params: Any
    ) -> dict[str, Any]:
        """PutObject; `params` are botocore's (ContentType, Metadata, a checksum, conditions)."""
        if isinstance(body, WatchedBody):
            body.watch(self.send_stall, "PutObject")
        async with self.lanes.hold(lane):
            with translated("PutObject"):
                return await self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, **self._create, **params
                )

    async def open_object(self, key: str, byte_range: str | None = None) -> OpenObject:
        """Start a GetObject for a client's download; close() the result to give its connection back."""
        request = {"Bucket": self.bucket, "Key": key, **self._use}
        if byte_range:
            request["Range"] = byte_range
        await self.lanes.take(Lane.DOWNLOAD)
        try:
            with translated("GetObject"):
                response = await self._client.get_object(**request)
        except BaseException:
            self.lanes.give(Lane.DOWNLOAD)
            raise
        return OpenObject(response, self.lanes)

    async def stream_object(self, key: str, byte_range: str | None = None) -> AsyncGenerator[bytes]:
        """An object's bytes (or `byte_range`'s, "bytes=first-last") as they arrive from S3, never
        all in memory (a tus tail read back, a partial upload's piece joined to the next)."""
        request = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            request["Range"] = byte_range
        async with self.lanes.hold(Lane.UPLOAD):
            with translated("GetObject"):
                body = (await self._client.get_object(**request, **self._use))["Body"]
            try:
                with translated("GetObject"):
                    async for chunk, _ in body.raw_stream.content.iter_chunks():
                        yield chunk
            finally:
                body.close()

    async def read_object(self, key: str) -> bytes:
        """A small object's bytes (library entries, markers)."""
        return (await self.read_versioned(key))[0]

    async def read_versioned(self, key: str) -> tuple[bytes, str]:
        """A small object's bytes (state objects, locks) and its ETag, for a compare-and-swap."""
        async with self.lanes.hold(Lane.SHORT):
            with translated("GetObject"):
                response = await self._client.get_object(Bucket=self.bucket, Key=key, **self._use)
                async with response["Body"] as body:
                    return await body.read(), response["ETag"]

    async def read_object_and_head(self, key: str, *, limit: int) -> tuple[bytes, dict[str, Any]]:
        """A small object's bytes and the fields of its GetObject (ETag, Metadata, ...);
        TooLarge as soon as it runs past `limit` bytes."""
        async with self.lanes.hold(Lane.SHORT):
            with translated("GetObject"):
                response = await self._client.get_object(Bucket=self.bucket, Key=key, **self._use)
            body = response.pop("Body")
            pieces: list[bytes] = []
            size = 0
            try:
                with translated("GetObject"):
                    async for chunk, _ in body.raw_stream.content.iter_chunks():
                        size += len(chunk)
                        if size > limit:
                            raise TooLarge(f"the object is larger than {format_size(limit)}")
                        pieces.append(chunk)
            finally:
                body.close()
        return b"".join(pieces), response

    async def head_object(self, key: str) -> dict[str, Any]:
        async with self.lanes.hold(Lane.SHORT):
            with translated("HeadObject"):
                return await self._client.head_object(Bucket=self.bucket, Key=key, **self._use)

    async def delete_object(self, key: str) -> None:
        async with self.lanes.hold(Lane.SHORT):
            with translated("DeleteObject"):
                await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def delete_objects(self, keys: list[str]) -> None:
        """Delete `keys`, in batches of what one DeleteObjects takes.

        DeleteObjects names its keys in an XML body, which cannot carry some
        characters a key may hold (see _NOT_IN_XML); those keys are deleted one
        at a time, named in the URL, so that one such key planted in the bucket
        cannot stop a purge or a folder delete.
        """
        uncarried = [key for key in keys if _NOT_IN_XML.search(key)]
        for key in uncarried:
            await self.delete_object(key)
        if uncarried:
            keys = [key for key in keys if not _NOT_IN_XML.search(key)]
        if not keys:
            return
        for start in range(0, len(keys), DELETE_BATCH_SIZE):
            batch = keys[start : start + DELETE_BATCH_SIZE]
            async with self.lanes.hold(Lane.SHORT):
                with translated("DeleteObjects"):
                    response = await self._client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                    )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(
                    f"S3 refused to delete {len(response['Errors'])} objects ({first['Code']})"
                )

    async def list_objects(self, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The objects under `prefix` (Key, Size, ETag, LastModified), a page at a time, in key order."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": LIST_PAGE_SIZE}
        async for page in self._pages("ListObjectsV2", self._client.list_objects_v2, request):
            yield page.get("Contents", [])

    async def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`."""
        return [item["Key"] async for page in self.list_objects(prefix) for item in page]

    async def list_page(
        self,
        prefix: str,
        *,
        start_after: str | None = None,
        delimiter: str | None = None,
        max_keys: int = LIST_PAGE_SIZE,
    ) -> ListPage:
        """One page of what is under `prefix`, after the key `start_after`; with `delimiter`,
        keys that go on past it are rolled up into their common prefix (S3 counts each once)."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if start_after:
            request["StartAfter"] = start_after
        if delimiter:
            request["Delimiter"] = delimiter
        async with self.lanes.hold(Lane.SHORT):
            with translated("ListObjectsV2"):
                page = await self._client.list_objects_v2(**request)
        return ListPage(
            objects=page.get("Contents", []),
            prefixes=[item["Prefix"] for item in page.get("CommonPrefixes", [])],
            truncated=bool(page.get("IsTruncated")),
        )

    async def delete_prefix(
        self,
        prefix: str,
        *,
        keep: Callable[[str], bool] | None = None,
        on_deleted: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> int:
        """Delete every key under `prefix` (but those `keep` says to keep), a listing page at a
        time: one DeleteObjects per page, so memory stays flat however many keys there are.
        `on_deleted` is told each page's deleted objects (Key, Size, ETag, LastModified).
        Returns how many were deleted."""
        deleted = 0
        async for page in self.list_objects(prefix):
            doomed = [item for item in page if keep is None or not keep(item["Key"])]
            await self.delete_objects([item["Key"] for item in doomed])
            deleted += len(doomed)
            if on_deleted is not None and doomed:
                on_deleted(doomed)
        return deleted

    # Multipart uploads.

    async def create_multipart_upload(self, key: str, **params: str) -> str:
        """Start a multipart upload; its UploadId."""
        async with self.lanes.hold(Lane.SHORT):
            with translated("CreateMultipartUpload"):
                created = await self._client.create_multipart_upload(
                    Bucket=self.bucket, Key=key, **self._create, **params
                )
        return created["UploadId"]

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: Body, **params: str
    ) -> dict[str, Any]:
        """UploadPart; the part as CompleteMultipartUpload wants it (number, ETag, checksum)."""
        if isinstance(body, WatchedBody):
            body.watch(self.send_stall, "UploadPart")
        async with self.lanes.hold(Lane.UPLOAD):
            with translated("UploadPart"):
                response = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    **self._use,
                    **params,
                )
        return {"PartNumber": number, "ETag": response["ETag"], **_part_checksums(response)}

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, source_key: str, first: int, last: int
    ) -> dict[str, Any]:
        """UploadPartCopy: bytes `first`..`last` (inclusive) of the object `source_key` become
        part `number`, copied inside S3; the part as CompleteMultipartUpload wants it."""
        async with self.lanes.hold(Lane.UPLOAD):  # S3 copies up to a part's bytes meanwhile
            with translated("UploadPartCopy"):
                response = await self._client.upload_part_copy(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    CopySource={"Bucket": self.bucket, "Key": source_key},
                    CopySourceRange=f"bytes={first}-{last}",
                    **self._use,
                    **self.encryption.copy_source(),
                )
        result = response["CopyPartResult"]
        # With its checksum, which S3 computes when the multipart upload names an algorithm.
        return {"PartNumber": number, "ETag": result["ETag"], **_part_checksums(result)}

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[dict[str, Any]], **params: str
    ) -> dict[str, Any]:
        async with self.lanes.hold(Lane.SHORT):
            with translated("CompleteMultipartUpload"):
                return await self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": sorted(parts, key=lambda part: part["PartNumber"])},
                    **self._use,
                    **params,
                )

    async def abort_multipart_upload(self, key: str, upload_id: str) -> bool:
        """Abort an upload; False (and a warning) if S3 would not, or it was already gone.

        Called on the way out of a failure: the original failure is what the
        caller needs to hear about, and an upload left behind is `gc`'s (or a
        lifecycle rule's) to collect.
        """
        try:
            async with self.lanes.hold(Lane.SHORT):
                with translated("AbortMultipartUpload"):
                    await self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except FileNotFound:
            return False  # NoSuchUpload: aborted already (gc, a lifecycle rule)
        except StorageFailure as exc:
            log.warning("could not abort a multipart upload: %s", exc)
            return False
        return True

    async def presign(self, operation: str, key: str, seconds: int, **params: Any) -> str:
        """A URL that lets its holder make one `operation` (botocore's name: upload_part,
        get_object) on `key` for `seconds`, signed for the public endpoint (open_presigner)."""
        if self.presigner is None:
            raise StorageError("direct URLs are not configured", "NotConfigured")
        return str(
            await self.presigner.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, "Key": key, **params}, ExpiresIn=seconds
            )
        )

    async def list_parts(self, key: str, upload_id: str) -> AsyncIterator[list[dict[str, Any]]]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id, **self._use}
        async for page in self._pages("ListParts", self._client.list_parts, request):
            yield page.get("Parts", [])

    async def list_multipart_uploads(self, prefix: str) -> AsyncIterator[list[dict[str, Any]]]:
        """The unfinished multipart uploads under `prefix` (Key, UploadId, Initiated), a page at a time."""
        # URL-encoded keys, decoded here: botocore does this for ListObjectsV2 by itself, not for this
        # call, and an XML answer cannot carry every character a key may hold (see _NOT_IN_XML).
        # AWS honours it; moto 5.2 and Ceph RGW answer 500 for a listing that reaches such a key
        # whatever it says, which is why keys.py refuses those names in the first place.
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "EncodingType": "url"}
        async for page in self._pages("ListMultipartUploads", self._client.list_multipart_uploads, request):
            uploads = page.get("Uploads", [])
            if page.get("EncodingType") == "url":
                uploads = [{**upload, "Key": urllib.parse.unquote(upload["Key"])} for upload in uploads]
            yield uploads

    async def _pages(
        self, operation: str, call: Any, request: dict[str, Any]
    ) -> AsyncIterator[Mapping[str, Any]]:
        """One way to paginate: each listing call's own continuation fields, until it is not truncated."""
        markers = _CONTINUATION[operation]
        while True:
            async with self.lanes.hold(Lane.SHORT):
                with translated(operation):
                    page = await call(**request)
            yield page
            if not page.get("IsTruncated"):
                return
            for field, next_field in markers.items():
                request[field] = page[next_field]
                if field == "KeyMarker" and page.get("EncodingType") == "url":
                    request[field] = urllib.parse.unquote(request[field])  # a key, sent back decoded


# What each listing call sends back to get its next page: request field <- response field.
_CONTINUATION = {
    "ListObjectsV2": {"ContinuationToken": "NextContinuationToken"},
    "ListParts": {"PartNumberMarker": "NextPartNumberMarker"},
    "ListMultipartUploads": {"KeyMarker": "NextKeyMarker", "UploadIdMarker": "NextUploadIdMarker"},
}


_PART_CHECKSUMS = ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256")


def _part_checksums(response: dict[str, Any]) -> dict[str, str]:
    """A part's checksum as S3 answered it, which CompleteMultipartUpload wants back."""
    return {name: response[name] for name in _PART_CHECKSUMS if name in response}
