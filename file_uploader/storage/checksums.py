"""The checksum the gateway computes over each part and object it sends, and how S3 hears of it.

The gateway has every byte in hand before it sends a part, so it computes the
checksum itself, as the bytes arrive, and sends it in a plain header. botocore
is told not to add one of its own (`request_checksum_calculation=
"when_required"`): over https its default would send the body `aws-chunked`
with a trailing checksum and no Content-Length, which older S3-compatible
servers (Ceph RGW 16 among them) refuse with 411 MissingContentLength.

S3_CHECKSUM picks the algorithm: `crc32` (the default: cheap, and what AWS
computes itself), `sha256`, `md5` (Content-MD5, which even old servers verify)
or `off`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc32:
    """zlib's CRC32, with hashlib's update/digest shape."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


@dataclasses.dataclass(frozen=True)
class Checksum:
    name: str  # the S3_CHECKSUM value
    param: str  # botocore's parameter for the header, on PutObject and UploadPart
    # CreateMultipartUpload's ChecksumAlgorithm: parts of an upload carry the
    # algorithm it was created with (AWS refuses a mismatch). None for MD5,
    # which is per request only.
    algorithm: str | None
    new: Callable[[], Hasher]

    def encode(self, hasher: Hasher) -> str:
        return base64.b64encode(hasher.digest()).decode("ascii")


CHECKSUMS: dict[str, Checksum | None] = {
    "crc32": Checksum("crc32", "ChecksumCRC32", "CRC32", _Crc32),
    "sha256": Checksum("sha256", "ChecksumSHA256", "SHA256", hashlib.sha256),
    "md5": Checksum("md5", "ContentMD5", None, lambda: hashlib.md5(usedforsecurity=False)),
    "off": None,
}
DEFAULT_CHECKSUM = "crc32"
