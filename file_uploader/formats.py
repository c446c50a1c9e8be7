"""Two small rules every layer shares: how a yes or no is read, and how a moment is written.

A yes or no (a setting such as S3_CREATE_BUCKET, the X-Public header, a form's
`public` field, ``?inline=``, ``?recursive=``, ``?details=``) is one of
`TRUE_WORDS` or `FALSE_WORDS`, in any case, spaces around it ignored: the same
word means the same thing wherever it is written.

A moment (a log line's time, a webhook event's, a file's `modified`, a share
link's `expires_at`) is ISO 8601 in UTC, to the millisecond, with a Z:
``2026-12-02T17:50:00.000Z``; JavaScript's ``Date.toISOString()`` writes the same.
"""

from __future__ import annotations

import datetime

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
FLAG_WORDS = "1/0, true/false, yes/no, on/off"


def parse_flag(text: str) -> bool:
    """True for one of TRUE_WORDS, False for one of FALSE_WORDS; ValueError for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"not a yes or no ({FLAG_WORDS}): {text!r}")


def iso8601(moment: datetime.datetime | float) -> str:
    """`moment` (an aware datetime, or seconds since the epoch) in ISO 8601, UTC, milliseconds, Z."""
    if not isinstance(moment, datetime.datetime):
        moment = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
