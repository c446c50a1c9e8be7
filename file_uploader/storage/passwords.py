"""Passwords that protect a share link or an upload request: kept only as a slow salted hash.

The hash is scrypt from the standard library (hashlib.scrypt, OpenSSL's):
memory-hard, so a stolen bucket listing cannot be brute-forced on GPUs at the
speed a plain SHA-256 allows, and no dependency to keep (argon2-cffi would do as
well, for one more compiled package). Its cost (SCRYPT_N, _R, _P: 16 MiB and
about 50 ms a try on one core) is written into each hash, so raising it later
leaves the older hashes readable.

A check runs in a thread, never on the event loop, and at most CHECKS_AT_ONCE
at a time in a process: a flood of tries then queues instead of taking every
core and 16 MiB each. What slows a flood of tries against one link across
replicas (failures counted in its record) is links.py's.

The same person sends the same password many times: a video player's Range
requests on a protected link, every PATCH of a tus upload to a protected
upload request (and its creation checked it three times). A password found
right is remembered for RIGHT_PASSWORD_SECONDS, by a keyed hash of it with the
stored hash, so those cost a dictionary lookup instead of 50 ms of a core each
and a place in the queue. A wrong one is never remembered: each costs a full
hash, and is counted by the grant. The grant's record is still read on every
request, so a revoked link or an ended request refuses at once; a new password
is a new stored hash, which the remembered one does not match.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time

# scrypt's cost: N=2^14, r=8 uses 128 * r * N = 16 MiB and tens of ms per hash (the cost
# scrypt's paper gives for interactive logins): slow for a guesser, quick for one person.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# OpenSSL refuses a scrypt whose memory exceeds maxmem (32 MiB by default): room for our cost.
_MAXMEM = 64 * 1024 * 1024
# Hashes computed at once in a process: each holds 16 MiB and a core for ~50 ms.
CHECKS_AT_ONCE = 2
# The longest password taken, in bytes of UTF-8: a hash of megabytes would cost for nothing.
MAX_PASSWORD_BYTES = 1024
# How long a right password is taken again without hashing it: one sitting of a person's
# downloads or uploads through a link (a tus upload of gigabytes sends a PATCH every few MiB).
RIGHT_PASSWORD_SECONDS = 10 * 60
# The most right passwords remembered (a hundred bytes each): older ones are hashed again.
RIGHT_PASSWORDS_KEPT = 4096


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES
    )


def hash_password_now(password: str) -> str:
    """`scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64): what a record keeps instead of the password."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def matches_now(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` (a hash_password_now result) was made from."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        found = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(found, base64.b64decode(digest))


class Passwords:
    """Hashing and checking off the event loop, CHECKS_AT_ONCE at a time, right passwords
    remembered for a while (one per process)."""

    def __init__(self, at_once: int = CHECKS_AT_ONCE) -> None:
        self._checks = asyncio.Semaphore(at_once)
        # Keyed, so that what is remembered is no faster to guess from than the stored hash.
        self._key = secrets.token_bytes(32)
        self._right: dict[bytes, float] = {}  # keyed hash -> until (monotonic), oldest first

    async def hash(self, password: str) -> str:
        async with self._checks:
            return await asyncio.to_thread(hash_password_now, password)

    async def matches(self, password: str, stored: str) -> bool:
        seen = hmac.digest(self._key, f"{stored}\0{password}".encode("utf-8", "surrogatepass"), "sha256")
        now = time.monotonic()
        if self._right.get(seen, 0.0) > now:
            return True
        async with self._checks:
            right = await asyncio.to_thread(matches_now, password, stored)
        if right:
            self._right.pop(seen, None)  # to the end: the oldest go first
            self._right[seen] = now + RIGHT_PASSWORD_SECONDS
            while len(self._right) > RIGHT_PASSWORDS_KEPT:
                del self._right[next(iter(self._right))]
        return right
