"""The checksum the gateway computes over each part and object it sends, and how S3 hears of it.

The gateway has every byte in hand before it sends a part, so it computes the
checksum itself, as the bytes arrive, and sends it in a plain header. botocore
is told not to add one of its own (`request_checksum_calculation=
"when_required"`): over https its default would send the body `aws-chunked`
with a trailing checksum and no Content-Length, which older S3-compatible
servers (Ceph RGW 16 among them) refuse with 411 MissingContentLength.

S3_CHECKSUM picks the algorithm: `crc32` (the default: what AWS computes
itself; through zlib-ng, as cheap as CRC32C), `crc32c` (hardware CRC32C through
google-crc32c, as botocore would only with awscrt), `sha256`, `md5`
(Content-MD5, which even old servers verify) or `off`.

Sending a checksum is not the same as having it checked: moto checks none,
Ceph RGW 16 only Content-MD5. What the server really enforces is found at
startup by probe.py, which picks the `Integrity` the part pipeline applies
(docs/s3-engines.md has the table).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Callable
from typing import Protocol

import google_crc32c
from zlib_ng import zlib_ng


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class Crc32:
    """CRC32 from zlib-ng, with hashlib's update/digest shape.

    zlib-ng folds with the CPU's carry-less multiply (PCLMULQDQ, VPCLMULQDQ):
    0.08 CPU s/GiB on the development machine where the system zlib that
    Python's own `zlib` module uses spends 0.32-0.49; same values, and it too
    releases the GIL while it runs (Part.prepare hashes in a worker thread).
    """

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = zlib_ng.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


class Crc32c:
    """CRC32C (Castagnoli) from google-crc32c's C library, with hashlib's update/digest shape."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        # The C function takes only buffers it need not release: bytes, not
        # memoryviews. Slices arrive only where a chunk straddles two parts.
        if isinstance(data, memoryview):
            data = data.tobytes()
        self._value = google_crc32c.extend(self._value, data)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


def _md5() -> Hasher:
    return hashlib.md5(usedforsecurity=False)


@dataclasses.dataclass(frozen=True)
class Checksum:
    name: str  # the S3_CHECKSUM value
    param: str  # botocore's parameter for the header, on PutObject and UploadPart
    # CreateMultipartUpload's ChecksumAlgorithm: parts of an upload carry the
    # algorithm it was created with (AWS refuses a mismatch). None for MD5,
    # which is per request only.
    algorithm: str | None
    new: Callable[[], Hasher]
    # Hashed chunk by chunk on the event loop as the bytes arrive, not per part in a worker
    # thread: CRCs in hardware (>10 GB/s) cost ~15 us per chunk there, less than handing
    # each part to a thread and passing the GIL to and fro for each of its pieces.
    inline: bool = False

    def encode(self, hasher: Hasher) -> str:
        return base64.b64encode(hasher.digest()).decode("ascii")

    def of(self, data: bytes) -> str:
        """The header's value for `data` (the probe's right and wrong values)."""
        hasher = self.new()
        hasher.update(data)
        return self.encode(hasher)


CHECKSUMS: dict[str, Checksum | None] = {
    "crc32": Checksum("crc32", "ChecksumCRC32", "CRC32", Crc32, inline=True),
    "crc32c": Checksum("crc32c", "ChecksumCRC32C", "CRC32C", Crc32c, inline=True),
    "sha256": Checksum("sha256", "ChecksumSHA256", "SHA256", hashlib.sha256),
    "md5": Checksum("md5", "ContentMD5", None, _md5),
    "off": None,
}
MD5 = CHECKSUMS["md5"]
assert MD5 is not None

# Who checks that the bytes S3 stored are the bytes the gateway sent.
BY_S3 = "s3"  # S3 verifies the checksum header and refuses a mismatch
BY_GATEWAY = "gateway"  # the gateway compares S3's ETag with the MD5 it computed
BY_NOBODY = "nobody"


@dataclasses.dataclass(frozen=True)
class Integrity:
    """What the part pipeline sends with each part, and who checks it.

    `compare_etags`: the checksum is MD5 and S3's ETags are the MD5 of the
    bytes it stored (probe.py found out), so the gateway compares each
    ETag S3 answers with its own MD5 and refuses a mismatch. That catches a
    corruption on an engine that verifies nothing itself (moto), at no cost
    beyond the MD5 already computed for Content-MD5.
    """

    checksum: Checksum | None
    verified_by: str
    compare_etags: bool = False

    @property
    def name(self) -> str:
        return self.checksum.name if self.checksum else "off"

    def describe(self) -> dict[str, object]:
        return {"checksum": self.name, "verified_by": self.verified_by, "etags_compared": self.compare_etags}


def configured(name: str) -> Integrity:
    """The integrity S3_CHECKSUM asks for, before the probe says who checks it."""
    return Integrity(CHECKSUMS[name], BY_NOBODY)
