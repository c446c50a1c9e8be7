"""What a client may ask of a file, read by one rule wherever it asks: a yes or no (a query
parameter, a header, a form field), whether the file is public, how long it lives.

PUT, forms, tus, upload requests and PATCH all read `public` and `expires_in` here, so the same
value means the same thing, and the same bad value is the same 400, on every route.
"""

from __future__ import annotations

from ..formats import FLAG_WORDS, parse_flag
from .errors import INVALID_EXPIRY, INVALID_FLAG, INVALID_PUBLIC, Error

PUBLIC_HEADER = "X-Public"  # on PUT: true puts the file in the public library
EXPIRES_HEADER = "X-Expires-In"  # on PUT: seconds the file lives once stored (a form field, tus metadata)
EXPIRES_FIELD = "expires_in"  # the same, as a form field, tus metadata and PATCH's JSON
# The longest a file may be given to live: ten years, past which "expires" means nothing.
MAX_FILE_EXPIRES_IN = 10 * 365 * 24 * 3600


def flag(value: str | None, what: str, error: Error = INVALID_FLAG) -> bool:
    """A yes or no from the query, a header or a form field, by the one rule (formats.py); absent or
    empty is no; anything else is `error`, a 400."""
    if value is None or not value.strip():
        return False
    try:
        return parse_flag(value)
    except ValueError:
        raise error(what=what, words=FLAG_WORDS) from None


def public_flag(value: str | None, what: str) -> bool:
    """X-Public, or a form's `public` field (`flag`, with its own error code)."""
    return flag(value, what, INVALID_PUBLIC)


def file_expires_in(value: object) -> int | None:
    """A file's `expires_in` (header or form text, JSON or tus metadata): whole seconds from 1 to
    MAX_FILE_EXPIRES_IN; absent, empty or null: the file keeps (None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seconds: int | None = None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = int(value) if value == int(value) else None
        except (ValueError, OverflowError):
            seconds = None
    if seconds is None or not 1 <= seconds <= MAX_FILE_EXPIRES_IN:
        raise INVALID_EXPIRY(maximum=MAX_FILE_EXPIRES_IN)
    return seconds
