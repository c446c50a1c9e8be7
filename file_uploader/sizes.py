"""Sizes and limits, each named once with the S3 rule it comes from."""

from __future__ import annotations

import dataclasses
import re

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

MIN_PART_SIZE = 5 * MiB  # S3: every part but the last is at least 5 MiB
MAX_PART_SIZE = 5 * GiB  # S3: no part is larger than 5 GiB
MAX_PARTS = 10_000  # S3: part numbers run from 1 to 10,000
MAX_OBJECT_SIZE = 5 * TiB  # S3: the largest object a multipart upload can build
MAX_KEY_BYTES = 1024  # S3: an object key is at most 1,024 bytes of UTF-8
LIST_PAGE_SIZE = 1000  # S3: ListObjectsV2 returns at most 1,000 keys a page
DELETE_BATCH_SIZE = 1000  # S3: DeleteObjects takes at most 1,000 keys a call

DEFAULT_PART_SIZE = 8 * MiB
# An upload of unknown length (chunked) starts at the configured part size and
# doubles it after every PARTS_PER_SIZE_STEP parts. With 900, even a 5 MiB
# start reaches 5 GiB parts by part 9,001, so the 10,000 parts can hold S3's
# 5 TiB maximum; at the 8 MiB default, uploads under 7 GiB never use parts
# bigger than 8 MiB (and memory grows only for bodies that large). An engine
# with fewer parts (S3_MAX_PARTS, 1,000 on Scaleway) doubles after the same
# share of them (parts_per_step: every 90 of 1,000).
PARTS_PER_SIZE_STEP = 900

# Internal limits and periods of the storage layer: not settings (a user has no way to know
# better values), each with why it is what it is.

# Parts of one upload sent to S3 at once while the next is read: 4 x 8 MiB keeps enough requests
# going to hide S3's per-request latency (tens of ms on AWS) at a few hundred MB/s per stream,
# while MEMORY_BUDGET, shared fairly, still admits a dozen uploads at full speed.
PARTS_IN_FLIGHT = 4
# While memory is short, parts whose clients keep them waiting longer than this move to
# temporary files: long enough that a client merely between two TCP windows is left alone.
SPILL_SECONDS = 1.0
# How long a call waits with no S3 connection of its kind coming free before a 503 with
# Retry-After (aiobotocore's own pool would wait for ever): longer than any healthy call takes.
# While connections come free (to calls ahead of it), it waits its turn (connection.py).
S3_POOL_WAIT_SECONDS = 10.0
# How long S3 may take none of a request body (a part, a small file) before its connection is
# dropped and the call fails or is retried (storage/pieces.py): nothing else bounds a write,
# since aiohttp's read timeout starts only once the body is sent, and Ceph RGW that stopped
# reading a part held an upload for over 8 minutes. The same 60 s as botocore's read timeout
# (left at its default), which bounds the other direction: S3 may be silent either way for as
# long. Far above a slow but moving S3 (a ~256 KiB piece taken in 60 s is 4 KiB/s) and above
# Ceph's own threshold for a slow OSD write (30 s), during which RGW stops reading.
S3_SEND_STALL_SECONDS = 60.0
# A lease: how long a claim on a shared thing holds unless its holder renews it (a tus upload's
# lock, an upload's room in its user's quota; storage/cas.py), renewed every third of it. Long
# enough that a holder whose S3 calls are slow for a while still renews it twice before it runs
# out, and that replicas' clocks may differ by a few seconds (NTP keeps them far closer); short
# enough that what a killed process held (a lock: a resuming client gets 423; room in the
# quota) comes back within half a minute.
LEASE_SECONDS = 30.0
# Thumbnails: images with more pixels than this are refused before any pixel is decoded
# (decompression bombs; a decode holds up to 4 bytes a pixel: 160 MB at this limit)...
THUMBNAIL_MAX_PIXELS = 40_000_000
# ...larger files get none (the file is read whole into memory, counted in MEMORY_BUDGET)...
THUMBNAIL_MAX_BYTES = 32 * MiB
# ...and this many threads decode images, which is also how many are decoded at once: two
# decodes at the pixel limit stay far below the default MEMORY_BUDGET.
THUMBNAIL_WORKERS = 2

# Uploads one user may run at once, per process (PUTs and tus PATCHes alike; the next gets 429
# with Retry-After): a bound on what one user's runaway client can hold, high enough that
# parallel clients (xargs -P 50 curl) never see it. MEMORY_BUDGET, shared fairly, is what makes
# uploads wait.
MAX_UPLOADS_PER_USER = 128
# A resumable (tus) upload that nobody PATCHes for this long expires and `gc` may abort it: a day
# after the last PATCH, so a client that resumes at all keeps it, while what an abandoned one
# holds (its parts in S3, its room in the quota) comes back within a day.
UPLOAD_EXPIRY_SECONDS = 24 * 3600.0
# The longest lifetime a share or download link may be given: a week, SigV4's own limit for a
# presigned S3 URL (the bound S3's users already know); a link can be revoked before.
SHARE_MAX_SECONDS = 7 * 24 * 3600
# Most webhook events kept in the bucket's journal waiting for the receiver; past it, new events
# are kept in the process's memory only (logged). Bounds what a receiver gone for good costs
# (an event is a few hundred bytes: about 50 MB of small objects at this bound).
WEBHOOK_BACKLOG = 100_000

_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse `8388608`, `8MiB`, `8M` or `5 GiB` into bytes (binary units)."""
    match = _SIZE_RE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use bytes or a unit such as 8MiB, 5GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


_NAMES = ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"))


def format_size(size: int) -> str:
    """`size` for a person, in the largest binary unit it reaches: "5 GiB", "1000 bytes";
    a size that is no whole number of its unit keeps its exact bytes: "9.5 MiB (10000000 bytes)"."""
    for unit, name in _NAMES:
        if size >= unit:
            if size % unit == 0:
                return f"{size // unit} {name}"
            return f"{size / unit:.1f} {name} ({size} bytes)"
    return f"{size} bytes"


def parts_per_step(max_parts: int = MAX_PARTS) -> int:
    """How many parts of a body of unknown length keep one size before it doubles: PARTS_PER_SIZE_STEP
    at S3's 10,000 parts, the same share (9 %) of a smaller S3_MAX_PARTS, and at least one."""
    return max(1, -(-max_parts * PARTS_PER_SIZE_STEP // MAX_PARTS))


def part_size_for(
    total: int | None, base: int, part_number: int = 1, *, max_parts: int = MAX_PARTS, step: int | None = None
) -> int:
    """The size of part `part_number` for an object of `total` bytes (None: unknown).

    Known length: the base size, grown (in whole MiB) until the object fits in
    `max_parts` parts. Unknown length: the base size doubled every `step`
    parts (parts_per_step: 900 of 10,000), never above MAX_PART_SIZE.
    """
    if total is not None:
        needed = -(-total // max_parts)  # ceiling division
        needed = -(-needed // MiB) * MiB
        return min(max(base, needed), MAX_PART_SIZE)
    step = parts_per_step(max_parts) if step is None else step
    return min(base << min((part_number - 1) // step, 40), MAX_PART_SIZE)


@dataclasses.dataclass(frozen=True)
class PartPlan:
    """How the bytes of an upload are cut into parts on this engine (S3_MAX_PARTS, S3_EQUAL_PARTS).

    `equal`: the one size of every part but the last of a body of unknown length, chosen up front
    (Cloudflare R2 refuses a completion whose parts differ in size); None: such bodies start at
    `base` and double every `step` parts, so that they may reach S3's largest object. A body of
    known length always has parts of one size: the base, grown until it fits in `max_parts`.
    """

    base: int = DEFAULT_PART_SIZE
    max_parts: int = MAX_PARTS
    equal: int | None = None

    @property
    def step(self) -> int:
        return parts_per_step(self.max_parts)

    @property
    def grows(self) -> bool:
        """Do the parts of a body of unknown length grow?"""
        return self.equal is None

    def first(self, total: int | None) -> int:
        """The size of the first part (and, but for a growing body of unknown length, of every part)."""
        if total is None and self.equal is not None:
            return self.equal
        return part_size_for(total, self.base, 1, max_parts=self.max_parts)

    def size(self, total: int | None, number: int) -> int:
        """The size of part `number` of a body of `total` bytes (None: unknown)."""
        if total is not None or self.equal is not None:
            return self.first(total)
        return part_size_for(None, self.base, number, step=self.step)

    def capacity(self, total: int | None) -> int:
        """The most bytes `max_parts` parts hold for a body of `total` bytes (None: unknown)."""
        if total is not None or self.equal is not None:
            return self.first(total) * self.max_parts
        return growing_capacity(self.base, self.step, self.max_parts)


def growing_capacity(base: int, step: int, max_parts: int) -> int:
    """The bytes in parts 1..`max_parts` of a body of unknown length whose parts double every `step`."""
    total, number = 0, 1
    while number <= max_parts:
        run = min(step - (number - 1) % step, max_parts - number + 1)
        total += run * part_size_for(None, base, number, step=step)
        number += run
    return total


# Direct-to-S3 (storage/direct.py). A part's presigned PUT must start within this: a client signs
# each part just before sending it (as @uppy/aws-s3 does), and S3 checks the time only when a
# request begins, so a slow part that started in time still finishes.
DIRECT_PART_URL_SECONDS = 15 * 60
# A download's redirect is followed at once; the transfer may run longer (S3 checks at the start).
DIRECT_GET_URL_SECONDS = 60
