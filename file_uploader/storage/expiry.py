"""Files that expire: gone from every read at their time, on every replica; their bytes deleted by gc.

One small object per expiring file, beside it like the public marker:

    ttl/<user id>/<name>    {"at": <seconds since the epoch>, "etag": <the file version's ETag>}

Shorter than files/, so that a marker fits S3's key limit for every name a
file may have. It says "this version of the file is gone at `at`": every read
of the file asks it (a download, HEAD, a share link, the public library, a
listing), so at its time the file is gone on every replica at once, whatever
each replica has cached, clocks agreeing as NTP keeps them (to well under a
second). Bound to the version's ETag: a replacement is not the file that was
meant to expire, and landing.py writes or deletes the marker for every stored
file (an upload that says nothing of an expiry makes a file that keeps).

Its bytes stay until `gc` (sweep.collect_garbage) deletes them, through the
ordinary delete (landing.py: its event, its bytes taken off the quota, the
library, thumbnails). **Until then the quota counts them**: the bytes are still
in the bucket, paid for, and counting them is what keeps the ledger equal to
what S3 holds; run gc often (every few minutes costs a listing of ttl/) if
expired files should leave the quota sooner. gc deletes a file only while it
is still the version the marker names: a replacement that landed after the
marker was read keeps (but for the instant between gc's HEAD and its DELETE:
S3's DeleteObject takes no If-Match on most engines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from .client import S3
from .errors import FileNotFound
from .keys import EXPIRY_ROOT, expiry_key, start_after, user_prefix

# Markers read at once when a listing page holds several expiring files.
_READS_AT_ONCE = 16


@dataclasses.dataclass(frozen=True)
class Expiring:
    at: float
    etag: str

    def gone(self, etag: str, now: float) -> bool:
        """Whether the version `etag` of the file is gone at `now`."""
        return now >= self.at and etag == self.etag


class Expiry:
    def __init__(self, s3: S3) -> None:
        self.s3 = s3

    async def set(self, uid: str, name: str, at: float | None, etag: str) -> None:
        """The version `etag` of the file expires at `at` (None: it keeps)."""
        if at is None:
            await self.s3.delete_object(expiry_key(uid, name))
            return
        body = json.dumps({"at": at, "etag": etag}).encode()
        await self.s3.put_object(expiry_key(uid, name), body, ContentType="application/json")

    async def of(self, uid: str, name: str) -> Expiring | None:
        """The file's expiry, if it has one."""
        return await self._read(expiry_key(uid, name))

    async def _read(self, key: str) -> Expiring | None:
        try:
            fields = json.loads(await self.s3.read_object(key))
        except (FileNotFound, ValueError):
            return None
        return Expiring(at=float(fields["at"]), etag=str(fields["etag"]))

    async def check(self, uid: str, name: str, etag: str, now: float | None = None) -> None:
        """FileNotFound if the version `etag` of the file has expired."""
        found = await self.of(uid, name)
        if found is not None and found.gone(etag, time.time() if now is None else now):
            raise FileNotFound("no such file (it has expired)")

    async def in_range(
        self, uid: str, prefix: str, *, after_name: str | None, until: str, delimiter: str | None
    ) -> dict[str, Expiring]:
        """The expiring names under `prefix` of user `uid`, after `after_name` up to `until`, with
        their expiry; with `delimiter`, only those directly in the folder `prefix`."""
        root = expiry_key(uid, "")
        names: list[str] = []
        after = start_after(root + after_name) if after_name else None
        while True:
            listed = await self.s3.list_page(root + prefix, start_after=after, delimiter=delimiter)
            past = False
            for item in listed.objects:
                name = item["Key"][len(root) :]
                if name.encode() > until.encode():
                    past = True
                    break
                names.append(name)
            listed_keys = [item["Key"] for item in listed.objects] + listed.prefixes
            if past or not listed.truncated or not listed_keys:
                break
            after = start_after(max(listed_keys, key=str.encode))
        reads = asyncio.Semaphore(_READS_AT_ONCE)

        async def read(name: str) -> Expiring | None:
            async with reads:
                return await self._read(root + name)

        found = await asyncio.gather(*(read(name) for name in names))
        return {name: expiring for name, expiring in zip(names, found, strict=True) if expiring}

    async def due(self, now: float) -> list[tuple[str, Expiring]]:
        """Every file key whose marker's time has come, with its marker (for gc)."""
        keys = await self.s3.keys(EXPIRY_ROOT)
        reads = asyncio.Semaphore(_READS_AT_ONCE)

        async def read(key: str) -> Expiring | None:
            async with reads:
                return await self._read(key)

        found = await asyncio.gather(*(read(key) for key in keys))
        due = []
        for key, expiring in zip(keys, found, strict=True):
            if expiring is not None and now >= expiring.at:
                _, uid, name = key.split("/", 2)
                due.append((user_prefix(uid) + name, expiring))
        return due

    async def forget(self, uid: str, name: str) -> None:
        await self.s3.delete_object(expiry_key(uid, name))
