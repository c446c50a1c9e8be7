"""Who a verified credential is: the one-way user id, and the quota it may carry.

The storage layout keys everything by a 64-hex-digit user id (storage/keys.py),
which for a UUID token is the SHA-256 of the token. An identity from a JWT is
the SHA-256 of its (issuer, subject), one from the auth callback the SHA-256 of
the user the callback named, each under its own domain label. The labels hold
a NUL, which no UUID has, so no identity of one kind can ever land in the space
of another, and two issuers naming the same subject get two spaces. Pure
functions: unit tests need no server.
"""

from __future__ import annotations

import dataclasses
import hashlib

_JWT_DOMAIN = b"file_uploader:jwt\x00"
_CALLBACK_DOMAIN = b"file_uploader:auth-callback\x00"


@dataclasses.dataclass(frozen=True)
class Identity:
    """A request's user: the one-way id its files live under, and its own quota if it has one
    (None: USER_QUOTA applies)."""

    user: str
    quota: int | None = None


def jwt_user(issuer: str, subject: str) -> str:
    """The user id of `subject` at `issuer`: distinct per issuer, and never a token's."""
    digest = hashlib.sha256(_JWT_DOMAIN)
    # Length-prefixed, so that no (issuer, subject) pair can be spelled as another.
    for part in (issuer.encode(), subject.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    return digest.hexdigest()


def callback_user(user: str) -> str:
    """The user id of the stable id the auth callback answered with."""
    return hashlib.sha256(_CALLBACK_DOMAIN + user.encode()).hexdigest()


def quota_of(value: object, where: str) -> int:
    """A quota in bytes, from a claim or the callback's answer; InvalidToken-worthy if not one.

    JSON has no integers of its own: 1000 and 1000.0 are the same number, but
    neither a boolean nor a string is a size.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise ValueError(f"{where} must be a whole number of bytes, not {value!r}")
    return int(value)
