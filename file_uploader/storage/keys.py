"""How a token and a file name become an S3 key.

Layout: ``files/<user id>/<name>`` for files and ``uploads/<user id>/`` for the
state of resumable uploads, where the user id is the SHA-256 (hex) of
the token's canonical lower-case form. The hash is one-way, so no token can be
read back from a bucket listing, a backup or a log line, and the same UUID in
any letter case is the same user. Everything here is pure, so property tests
can run it without a server.
"""

from __future__ import annotations

import hashlib
import re

from ..sizes import MAX_KEY_BYTES
from .errors import InvalidName

FILES_ROOT = "files/"
UPLOADS_ROOT = "uploads/"  # resumable (tus) upload state: see resumable.py
# Every prefix that holds users' data, under the user's id.
ROOTS = (FILES_ROOT, UPLOADS_ROOT)
# The write probe's objects (probe.py), deleted as soon as written; no user's.
PROBE_ROOT = "probe/"
USER_ID_LENGTH = 64  # hex digits of SHA-256
# files/ + 64 hex digits + /: every user's prefix has this length.
USER_PREFIX_BYTES = len(FILES_ROOT) + USER_ID_LENGTH + 1
MAX_NAME_BYTES = MAX_KEY_BYTES - USER_PREFIX_BYTES

# The canonical 8-4-4-4-12 text form only: no braces, no urn:uuid:, no
# missing hyphens, so one user has exactly one spelling up to letter case.
_TOKEN_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# C0 controls, DEL and the C1 controls: invisible in listings and shells,
# and NUL cuts strings short in too many tools.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_valid_token(token: str) -> bool:
    return _TOKEN_RE.fullmatch(token) is not None


def user_id(token: str) -> str:
    """The one-way id of a valid token: SHA-256 hex of its lower-case form."""
    return hashlib.sha256(token.lower().encode("ascii")).hexdigest()


def user_prefix(uid: str) -> str:
    """Where the user's files live."""
    return f"{FILES_ROOT}{uid}/"


def user_prefixes(uid: str) -> tuple[str, ...]:
    """Every prefix that holds anything of the user's: files and resumable upload state."""
    return tuple(f"{root}{uid}/" for root in ROOTS)


def validate_name(name: str) -> str:
    """Return `name` unchanged if it can be stored, else raise InvalidName.

    A name is UTF-8 text whose `/`-separated segments are all non-empty and
    none is `.` or `..`, without control characters, short enough that the
    full key fits S3's 1,024 bytes.
    """
    if not name:
        raise InvalidName("the file name is empty")
    if _CONTROL_RE.search(name):
        raise InvalidName("the file name contains a control character")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates: what an undecodable percent-escape turns into.
        raise InvalidName("the file name is not valid UTF-8") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidName(f"the file name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidName("the file name has an empty, '.' or '..' path segment")
    return name


def file_key(uid: str, name: str) -> str:
    return user_prefix(uid) + validate_name(name)
