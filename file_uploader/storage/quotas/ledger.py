"""The quota ledger's arithmetic, pure: no S3, no I/O (writer.py reads and writes it; the
package's docstring says what the ledger is for).

A `Ledger` is what ``quota/<user id>/ledger`` holds; each change (`Hold`, `Renew`, `Stored`,
`Release`, `FilesRemoved`, `Fits`, `Look`) applies itself to a ledger at a time `now` under a
quota, or raises leaving it untouched, and returns what its caller wants to know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from ...sizes import format_size
from ..errors import QuotaExceeded, TooManyUploads

# A ledger whose files were counted longer ago than this is counted again at its next write:
# what changed in the bucket behind the gateway's back is seen within the hour.
RECOUNT_SECONDS = 3600.0
# Leases one user may hold at once (uploads in progress, tus uploads not finished): keeps the
# ledger small (about 100 bytes a lease) however many tus uploads a user starts.
MAX_LEASES = 1000


def key_tag(key: str) -> str:
    """A short hash of a file's key: enough to see two leases aim at one key, and no name."""
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


@dataclasses.dataclass
class Lease:
    bytes: int
    until: float  # Unix time
    key: str  # key_tag of the file it will store
    since: float  # when it was taken
    # The size of the file it replaces, which frees that much when it lands: not counted against
    # the quota while the lease holds, unless that file changes meanwhile (then 0: see Stored).
    credit: int = 0

    def counted(self) -> int:
        return max(0, self.bytes - self.credit)


@dataclasses.dataclass
class Ledger:
    used: int = 0
    files: int = 0
    checked: float = 0.0  # when used and files were last counted from a listing (its end)
    stale: bool = False  # they may be off: count again before admitting anything
    leases: dict[str, Lease] = dataclasses.field(default_factory=dict)

    def reserved(self, now: float, but: str | None = None) -> int:
        return sum(lease.counted() for id, lease in self.leases.items() if id != but and lease.until >= now)

    def prune(self, now: float) -> bool:
        """Drop leases that ran out; True if any did (their upload may have stored a file)."""
        expired = [id for id, lease in self.leases.items() if lease.until < now]
        for id in expired:
            del self.leases[id]
        return bool(expired)

    def needs_count(self, now: float) -> bool:
        return self.stale or now - self.checked > RECOUNT_SECONDS

    def fields(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["leases"] = {
            id: [lease.bytes, round(lease.until, 3), lease.key, round(lease.since, 3), lease.credit]
            for id, lease in self.leases.items()
        }
        return fields

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Ledger:
        fields = dict(fields)
        leases = {id: Lease(*values) for id, values in fields.pop("leases", {}).items()}
        return cls(**fields, leases=leases)

    def copy(self) -> Ledger:
        return Ledger.from_fields(json.loads(json.dumps(self.fields())))


def exceeded(quota: int, room: int, need: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"the quota of {format_size(quota)} has {format_size(max(room, 0))} left (uploads in progress "
        f"count), and this upload needs {format_size(need)}"
    )


# Changes to a ledger. Each applies itself to the ledger (or raises, leaving it untouched) and
# returns what its caller wants to know; a batch of them is applied to the latest version read,
# again after every conflict, and written once.


@dataclasses.dataclass
class Hold:
    """Take a lease, or grow one: at least `need` bytes, up to `want` if there is room."""

    lease: str
    need: int
    want: int
    until: float
    key: str
    credit: int = 0  # a new lease's Lease.credit: the size of the file it replaces

    def apply(self, ledger: Ledger, quota: int, now: float) -> Lease:
        held = ledger.leases.get(self.lease)
        room = quota - ledger.used - ledger.reserved(now, but=self.lease)
        if held is not None and held.bytes >= self.need:
            # A renewal looks again: what it holds may no longer fit (its credit voided, files
            # counted that the ledger had missed).
            if room < held.counted():
                raise exceeded(quota, room, held.counted())
            held.until = max(held.until, self.until)
            return dataclasses.replace(held)
        # One credit per replaced file: uploads aimed at one key while another holds its credit
        # count in full (else each would count as only what it adds to the same old file).
        credited = any(
            lease.key == self.key and lease.credit
            for id, lease in ledger.leases.items()
            if id != self.lease and lease.until >= now
        )
        credit = held.credit if held else (0 if credited else self.credit)
        if room < self.need - credit:
            refusal = exceeded(quota, room, self.need - credit)
            # Bodies of unknown length all started at once each hold a first grant and all need
            # more: refused together, none would ever be stored. The oldest of the user's leases
            # may wait for room instead (the others, refused, give theirs back); see `_grow`.
            refusal.may_wait = held is not None and all(
                held.since <= lease.since for lease in ledger.leases.values() if lease.until >= now
            )
            raise refusal
        if held is None and len(ledger.leases) >= MAX_LEASES:
            raise TooManyUploads(f"at most {MAX_LEASES} uploads in progress at once; finish some first")
        lease = Lease(
            min(max(self.want, self.need), room + credit),
            max(self.until, held.until if held else 0.0),
            self.key,
            held.since if held else now,
            credit,
        )
        ledger.leases[self.lease] = lease
        return dataclasses.replace(lease)


@dataclasses.dataclass
class Renew:
    """Push back the end of the leases a process holds; the ids of those that are gone."""

    leases: list[str]
    until: float

    def apply(self, ledger: Ledger, quota: int, now: float) -> set[str]:
        lost = set()
        for id in self.leases:
            if (lease := ledger.leases.get(id)) is None:
                lost.add(id)
            else:
                lease.until = max(lease.until, self.until)
        return lost


@dataclasses.dataclass
class Stored:
    """A file was stored: its lease (if any) becomes bytes in `used`, less what it replaced."""

    lease: str | None
    key: str
    size: int
    replaced: int | None  # the size of the file it replaced; None: there was none
    exact: bool  # False: `replaced` may be wrong (it could not be read before the store)
    landed: float | None = None  # when its PutObject or CompleteMultipartUpload began, if known

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        held = ledger.leases.pop(self.lease, None) if self.lease else None
        ledger.used = max(0, ledger.used + self.size - (self.replaced or 0))
        ledger.files = max(0, ledger.files + (self.replaced is None))
        if (
            not self.exact
            or (self.lease is not None and held is None)  # it ran out: a count may have seen the file
            # A count that ended after the file began to land may have seen it: counted twice.
            or (held is not None and ledger.checked >= (self.landed or held.since))
            or any(lease.key == self.key for lease in ledger.leases.values())  # a race on the key
        ):
            ledger.stale = True
        void_credits(ledger, {self.key})


@dataclasses.dataclass
class Release:
    lease: str

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        ledger.leases.pop(self.lease, None)


@dataclasses.dataclass
class FilesRemoved:
    """Files were deleted: (key tag, size) each."""

    files: list[tuple[str, int]]

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        ledger.used = max(0, ledger.used - sum(size for _, size in self.files))
        ledger.files = max(0, ledger.files - len(self.files))
        keys = {tag for tag, _ in self.files}
        if any(lease.key in keys for lease in ledger.leases.values()):
            ledger.stale = True  # an upload to the same key is landing: which one stays?
        void_credits(ledger, keys)


def void_credits(ledger: Ledger, keys: set[str]) -> None:
    """The files at `keys` changed: uploads on their way to them no longer know what they will
    replace, so they count in full (too much, never too little) until they land."""
    for lease in ledger.leases.values():
        if lease.key in keys:
            lease.credit = 0


@dataclasses.dataclass
class Fits:
    """Change nothing; QuotaExceeded unless `need` more bytes fit now (an expect handler's check)."""

    need: int

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        room = quota - ledger.used - ledger.reserved(now)
        if room < self.need:
            raise exceeded(quota, room, self.need)


@dataclasses.dataclass
class Look:
    """Change nothing: only drop leases that ran out and count again if due (for `usage`)."""

    def apply(self, ledger: Ledger, quota: int, now: float) -> None:
        return None


Change = Hold | Renew | Stored | Release | FilesRemoved | Fits | Look
