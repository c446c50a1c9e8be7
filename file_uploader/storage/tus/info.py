"""A tus upload's record: the ``<id>.info`` object in S3, read and rewritten by compare-and-swap.

The record is what says what is committed (parts with their ETags, the offset,
the tail's key, the state); every other object of the upload is judged by it.
It is a `cas.VersionedJson`: a rewrite names the ETag it was read with, so a
commit that another commit overtook fails (UploadConflict, 409) instead of
overwriting it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

from ...sizes import PARTS_PER_SIZE_STEP, growing_capacity, part_size_for
from ..cas import VersionedJson
from ..client import S3
from ..errors import PreconditionFailed, StorageFailure, UploadConflict, UploadNotFound
from ..keys import UPLOADS_ROOT, file_key

log = logging.getLogger(__name__)

INFO_SUFFIX = ".info"
LOCK_SUFFIX = ".lock"
_ID_BYTES = 24  # 192 random bits: an upload URL cannot be guessed
_ID_RE = re.compile(r"[A-Za-z0-9_-]{32}")
OPEN, COMPLETING, DONE = "open", "completing", "done"
# What CompleteMultipartUpload wants of each part, besides its number.
_PART_FIELDS = ("ETag", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumSHA1", "ChecksumSHA256")


def recorded(part: dict[str, Any]) -> dict[str, str]:
    """What the record keeps of a part S3 answered for (its ETag and checksum)."""
    return {name: part[name] for name in _PART_FIELDS if name in part}


@dataclasses.dataclass
class Upload:
    id: str
    user: str
    name: str
    length: int | None  # None: deferred (creation-defer-length)
    metadata: str  # the Upload-Metadata header as created, echoed by HEAD
    s3_upload_id: str
    part_size: int
    grow: bool  # length unknown at creation: parts grow as a chunked PUT's do
    expires: float  # Unix time
    parts: int = 0  # committed full parts
    offset: int = 0  # committed bytes: the parts plus the tail
    # Each committed part's ETag (and checksum), parts 1..parts in order.
    etags: list[dict[str, str]] = dataclasses.field(default_factory=list)
    tail: str | None = None  # key of the tail object, if the offset is past the last part
    state: str = OPEN
    # With `grow`: how many parts keep one size before it doubles (sizes.parts_per_step of the
    # S3_MAX_PARTS at creation; uploads created before it was a setting have none: 900).
    step: int = PARTS_PER_SIZE_STEP
    # The upload's own size limit, below MAX_FILE_SIZE, when a pre-create hook lowered it.
    max_size: int | None = None
    # Concatenation (concat.py): a partial upload's bytes become an object of its own, not a
    # file; a final upload was assembled from the partial uploads `partials` names, in order.
    partial: bool = False
    partials: list[str] = dataclasses.field(default_factory=list)
    # The upload request (requests.py) it was created under, whose room it holds: given back if it
    # ends unfinished (completion.Completion.released). Only that request's routes reach it.
    grant: str | None = None
    # The info's ETag as read: what the next rewrite must still find. Not stored.
    version: str | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def new(
        cls,
        user: str,
        name: str,
        length: int | None,
        metadata: str,
        *,
        expires: float,
        part_size: int,
        grow: bool,
        **fields: Any,
    ) -> Upload:
        """A new upload's record: a fresh id, no multipart upload yet; the optional `fields`
        (step, max_size, partial, partials) as the class's."""
        return cls(
            id=new_upload_id(),
            user=user,
            name=name,
            length=length,
            metadata=metadata,
            s3_upload_id="",
            part_size=part_size,
            grow=grow,
            expires=expires,
            **fields,
        )

    @property
    def key(self) -> str:
        """Where its multipart upload lands: the file, or for a partial upload ``<id>.data``."""
        return f"{self.prefix}data" if self.partial else file_key(self.user, self.name)

    @property
    def prefix(self) -> str:
        return f"{UPLOADS_ROOT}{self.user}/{self.id}."

    @property
    def info_key(self) -> str:
        return info_key(self.user, self.id)

    @property
    def lock_key(self) -> str:
        return f"{UPLOADS_ROOT}{self.user}/{self.id}{LOCK_SUFFIX}"

    def limit(self, max_size: int) -> int:
        """The most bytes this upload may hold: MAX_FILE_SIZE, or the lower limit it was given."""
        return max_size if self.max_size is None else min(max_size, self.max_size)

    @property
    def done(self) -> bool:
        return self.length is not None and self.offset == self.length

    def size_of_part(self, number: int) -> int:
        return part_size_for(None, self.part_size, number, step=self.step) if self.grow else self.part_size

    def capacity(self, max_parts: int) -> int:
        """The most bytes `max_parts` parts of this upload hold (S3_MAX_PARTS)."""
        if self.grow:
            return growing_capacity(self.part_size, self.step, max_parts)
        return self.part_size * max_parts

    def bytes_in_parts(self, parts: int) -> int:
        return sum(self.size_of_part(n) for n in range(1, parts + 1))

    def new_tail_key(self) -> str:
        return f"{self.prefix}part.{self.offset}.{secrets.token_hex(4)}"

    def add_parts(self, sent: list[dict[str, Any]]) -> None:
        """Record parts S3 answered for; they must follow the committed ones without a gap."""
        numbers = sorted(part["PartNumber"] for part in sent)
        assert numbers == list(range(self.parts + 1, self.parts + 1 + len(sent))), numbers
        self.etags += [recorded(part) for part in sorted(sent, key=lambda part: part["PartNumber"])]
        self.parts += len(sent)

    def fields(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["version"]
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any], version: str) -> Upload:
        return cls(**fields, version=version)


def info_key(user: str, upload_id: str) -> str:
    return f"{UPLOADS_ROOT}{user}/{upload_id}{INFO_SUFFIX}"


def new_upload_id() -> str:
    return secrets.token_urlsafe(_ID_BYTES)


def is_upload_id(text: str) -> bool:
    return _ID_RE.fullmatch(text) is not None


class Records:
    """The uploads' objects in S3: their records, and the leftovers (tails) beside them."""

    def __init__(self, s3: S3) -> None:
        self.s3 = s3

    async def read(self, user: str, upload_id: str) -> Upload:
        found = await VersionedJson(self.s3, info_key(user, upload_id)).read()
        if found is None:
            raise UploadNotFound("no such upload")
        return Upload.from_fields(*found)

    async def write(self, upload: Upload, *, new: bool = False) -> None:
        """Rewrite the info, if it is still the version read (compare-and-swap, cas.py)."""
        try:
            upload.version = await VersionedJson(self.s3, upload.info_key).write(
                upload.fields(), None if new else upload.version
            )
        except PreconditionFailed:
            raise UploadConflict("another request changed this upload; ask HEAD for its offset") from None

    async def all(self, prefix: str = UPLOADS_ROOT) -> AsyncIterator[Upload]:
        """Every user's uploads (or those under `prefix`), as their records say."""
        async for page in self.s3.list_objects(prefix):
            for item in page:
                if not item["Key"].endswith(INFO_SUFFIX):
                    continue
                found = await VersionedJson(self.s3, item["Key"]).read()
                if found is not None:  # else terminated since the listing
                    yield Upload.from_fields(*found)

    async def delete_quietly(self, key: str) -> None:
        try:
            await self.s3.delete_object(key)
        except StorageFailure as exc:  # only a leftover: gc or the upload's end removes it
            log.warning("could not delete a tus tail: %s", exc)

    async def delete_all(self, upload: Upload) -> None:
        """Every object of the upload: record, tail, lock."""
        await self.s3.delete_objects(await self.s3.keys(upload.prefix))
