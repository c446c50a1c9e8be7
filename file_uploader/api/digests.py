"""Digests a client may send with an upload, checked over the whole body.

`Content-MD5` (RFC 1864, base64), `Digest: sha-256=<base64>` (RFC 3230) and
`Repr-Digest: sha-256=:<base64>:` (RFC 9530). Other algorithms are ignored, as
those RFCs allow. The body iterator raises at its end when a digest does not
match, before the storage layer completes the upload, so nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Mapping

from .errors import DIGEST_MISMATCH, INVALID_DIGEST, ApiError

_ALGORITHMS = {"md5": 16, "sha-256": 32}  # digest name -> length in bytes


def _invalid(header: str) -> ApiError:
    return INVALID_DIGEST(header=header)


def _decode(header: str, text: str, algorithm: str) -> bytes:
    try:
        value = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(header) from None
    if len(value) != _ALGORITHMS[algorithm]:
        raise _invalid(header)
    return value


def _members(value: str) -> list[tuple[str, str]]:
    """`a=x, b=y` -> [("a", "x"), ("b", "y")]; names lower-cased."""
    members = []
    for item in value.split(","):
        name, sep, rest = item.strip().partition("=")
        if sep:
            members.append((name.strip().lower(), rest.strip()))
    return members


# (header, algorithm, digest the client declared)
Expected = list[tuple[str, str, bytes]]


def expected_digests(headers: Mapping[str, str]) -> Expected:
    """The digests the client declared; raise a 400 ApiError for a malformed one."""
    expected: Expected = []
    if "Content-MD5" in headers:
        expected.append(("Content-MD5", "md5", _decode("Content-MD5", headers["Content-MD5"], "md5")))
    for name, text in _members(headers.get("Digest", "")):
        if name == "sha-256":
            expected.append(("Digest", name, _decode("Digest", text, name)))
    for name, text in _members(headers.get("Repr-Digest", "")):
        if name == "sha-256":
            if not (len(text) >= 2 and text[0] == text[-1] == ":"):
                raise _invalid("Repr-Digest")  # an RFC 8941 byte sequence is :base64:
            expected.append(("Repr-Digest", name, _decode("Repr-Digest", text[1:-1], name)))
    return expected


def verified(chunks: AsyncIterator[bytes], expected: Expected) -> AsyncIterator[bytes]:
    """`chunks` unchanged; at their end, raise a 400 ApiError if a digest does not match.

    Without digests to check, `chunks` itself: the upload path runs once per
    chunk, and an extra generator layer there would be pure overhead.
    """
    return _checked(chunks, expected) if expected else chunks


async def _checked(chunks: AsyncIterator[bytes], expected: Expected) -> AsyncIterator[bytes]:
    hashes = {
        algorithm: hashlib.md5(usedforsecurity=False) if algorithm == "md5" else hashlib.sha256()
        for _, algorithm, _ in expected
    }
    async for chunk in chunks:
        for digest in hashes.values():
            digest.update(chunk)
        yield chunk
    for header, algorithm, value in expected:
        if hashes[algorithm].digest() != value:
            raise DIGEST_MISMATCH(header=header)
