"""What the S3 server really enforces, found by asking it: the write probe.

S3-compatible servers differ in what they check, and none says so: moto
verifies no checksum at all, Ceph RGW 16 verifies Content-MD5 but stores a
wrong x-amz-checksum-crc32 without a word, AWS and MinIO verify both. A
checksum nobody compares protects nothing, so at startup (and on demand,
`python -m file_uploader probe`) the gateway finds out, with a few tiny
objects under its own prefix `probe/` (deleted at once):

- for each algorithm (crc32, crc32c, sha256, md5), one object with the right
  header, then one with a wrong one: "enforced" if S3 stores the first and
  refuses the second, "ignored" if it stores both, "refused" if it refuses
  even the right one (an algorithm it does not support);
- whether the ETag of a PutObject and of an UploadPart is the MD5 of the bytes
  (AWS without SSE-KMS or SSE-C, MinIO without encryption, RGW, moto);
- whether a PutObject with `If-None-Match: *` is refused for an existing key,
  and whether one with `If-Match: <ETag without quotes>` is stored when the
  ETag matches and refused when it does not (RGW 16 never matches a quoted
  ETag; AWS and moto take both forms). CompleteMultipartUpload's conditions
  are not probed: neither moto nor RGW 16 honours them.

`choose` then turns S3_CHECKSUM (and its fallback, Content-MD5) into the `Integrity`
the part pipeline applies (the rules are in its docstring and in
docs/s3-engines.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any

from .checksums import BY_GATEWAY, BY_NOBODY, BY_S3, CHECKSUMS, MD5, Checksum, Integrity
from .client import S3
from .errors import PreconditionFailed, StorageError, StorageFailure, StorageUnavailable
from .keys import PROBE_ROOT
from .s3_errors import probing

log = logging.getLogger(__name__)

BODY = b"file_uploader write probe\n"
OTHER = b"what a corrupted probe holds"  # its digests are the "wrong" ones
# A checksum's verdict.
ENFORCED, IGNORED, REFUSED = "enforced", "ignored", "refused"


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What the probe found S3 to enforce. Before a probe succeeded, every finding is False."""

    probed: bool = False
    # S3_CHECKSUM name -> ENFORCED, IGNORED or REFUSED.
    checksums: Mapping[str, str] = dataclasses.field(default_factory=dict)
    etag_is_md5: bool = False
    # PutObject with If-None-Match: * is refused (412) when the key exists.
    if_none_match: bool = False
    # PutObject with If-Match: <the ETag without its quotes> is stored when it
    # matches and refused (412) when it does not.
    if_match: bool = False

    def enforces(self, checksum: str) -> bool:
        return self.checksums.get(checksum) == ENFORCED

    def describe(self) -> dict[str, Any]:
        return {
            "checksums": dict(self.checksums),
            "etag_is_md5": self.etag_is_md5,
            "if_none_match": self.if_none_match,
            "if_match": self.if_match,
        }

    def flags(self) -> dict[str, bool]:
        """Every finding as a yes or no, for the metric."""
        flags = {f"checksum_{name}": self.enforces(name) for name in self.checksums}
        flags.update(etag_is_md5=self.etag_is_md5, if_none_match=self.if_none_match, if_match=self.if_match)
        return flags


UNPROBED = Capabilities()


async def probe(s3: S3, checksums: Iterable[str] = CHECKSUMS) -> Capabilities:
    """Ask S3 what it enforces, for the S3_CHECKSUM names `checksums` (by default every one);
    raise a StorageFailure if S3 cannot be written to at all.

    Three round trips: a first object carrying the right Content-MD5 and the
    right value of one other checksum (AWS takes one x-amz-checksum-* at a
    time) while a multipart upload is created; then the wrong values, the
    conditional writes over the first object and the part; then the clean-up.
    """
    found = _Probe(s3, f"{PROBE_ROOT}{secrets.token_hex(8)}/")
    with probing():
        try:
            return await found.run([CHECKSUMS[name] for name in dict.fromkeys(checksums)])
        finally:
            await asyncio.shield(found.clean_up())


class _Probe:
    def __init__(self, s3: S3, base: str) -> None:
        self.s3 = s3
        self.base = base
        self.written: list[str] = []
        self.upload_id: str | None = None

    async def run(self, wanted: list[Checksum | None]) -> Capabilities:
        probed = [checksum for checksum in wanted if checksum is not None]
        # The first object carries the right value of Content-MD5 and of one x-amz-checksum-*.
        riding = [c for c in probed if c is MD5][:1] + [c for c in probed if c is not MD5][:1]
        plain = f"{self.base}plain"
        part = asyncio.ensure_future(self.part_etag())
        try:
            try:
                put_etag = await self.put(plain, **_params(riding, BODY))
            except StorageUnavailable:
                raise
            except StorageError:
                # A header S3 refuses even when right, or no write at all:
                # the second try without them says which.
                put_etag, riding = await self.put(plain), []
            verdicts, (create_only, wrong_match, right_match) = await asyncio.gather(
                asyncio.gather(*(self.verdict(checksum, checksum in riding) for checksum in probed)),
                asyncio.gather(
                    self.conditional(plain, IfNoneMatch="*"),
                    self.conditional(plain, IfMatch="0" * 32),
                    self.conditional(plain, IfMatch=put_etag.strip('"')),
                ),
            )
            part_etag = await part
        finally:
            if not part.done():
                part.cancel()
            await asyncio.gather(part, return_exceptions=True)
        md5 = hashlib.md5(BODY, usedforsecurity=False).hexdigest()
        return Capabilities(
            probed=True,
            checksums={checksum.name: found for checksum, found in zip(probed, verdicts, strict=True)},
            etag_is_md5=all(etag.strip('"').lower() == md5 for etag in (put_etag, part_etag)),
            if_none_match=create_only is False,
            if_match=right_match is True and wrong_match is False,
        )

    async def put(self, key: str, **params: Any) -> str:
        """PutObject of BODY; its ETag."""
        self.written.append(key)
        return (await self.s3.put_object(key, BODY, **params))["ETag"]

    async def verdict(self, checksum: Checksum, right_stored: bool) -> str:
        name = checksum.name
        if not right_stored and not await self.stored(f"{self.base}{name}-right", [checksum], BODY):
            return REFUSED
        return IGNORED if await self.stored(f"{self.base}{name}-wrong", [checksum], OTHER) else ENFORCED

    async def stored(self, key: str, checksums: list[Checksum], of: bytes) -> bool:
        """Whether S3 stores BODY sent with these checksums of `of`."""
        try:
            await self.put(key, **_params(checksums, of))
        except StorageUnavailable:
            raise
        except StorageError:
            return False
        return True

    async def conditional(self, key: str, **params: Any) -> bool | None:
        """True if stored, False if refused as a failed precondition, None if refused otherwise."""
        try:
            await self.s3.put_object(key, BODY, **params)
        except PreconditionFailed:
            return False
        except StorageUnavailable:
            raise
        except StorageError:
            return None
        return True

    async def part_etag(self) -> str:
        key = f"{self.base}part"
        self.upload_id = await self.s3.create_multipart_upload(key)
        return str((await self.s3.upload_part(key, self.upload_id, 1, BODY))["ETag"])

    async def clean_up(self) -> None:
        """Remove what the probe wrote; a failure here is only worth a warning."""
        steps: list[Awaitable[object]] = [self.s3.delete_objects(sorted(set(self.written)))]
        if self.upload_id:
            steps.append(self.s3.abort_multipart_upload(f"{self.base}part", self.upload_id))
        for failure in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(failure, StorageFailure):
                log.warning("could not remove the probe's objects under %s: %s", PROBE_ROOT, failure)
            elif isinstance(failure, BaseException):
                raise failure


def _params(checksums: list[Checksum], of: bytes) -> dict[str, str]:
    """The botocore parameters that carry these checksums of `of`, as the part pipeline sends them."""
    params: dict[str, str] = {}
    for checksum in checksums:
        params[checksum.param] = checksum.of(of)
        if checksum.algorithm:
            params["ChecksumAlgorithm"] = checksum.algorithm
    return params


@dataclasses.dataclass(frozen=True)
class Decision:
    integrity: Integrity
    note: str | None = None  # what to tell the operator
    loud: bool = False  # a warning: nothing checks the bytes S3 stores


def choose(name: str, fallback: str, found: Capabilities) -> Decision:
    """The integrity to apply for S3_CHECKSUM=`name` and the fallback `fallback` (md5; warn only in tests).

    - `off`: nothing is sent, nothing checked (as asked).
    - The chosen checksum is enforced: it is sent, S3 verifies it.
    - Otherwise, with the fallback `md5` (the default), or when S3 refuses
      the chosen header even when right, or when the choice was md5 anyway:
      Content-MD5 is sent; S3 verifies it where it enforces Content-MD5
      (RGW), else the gateway compares S3's ETags with its MD5 where ETags
      are MD5s (moto).
    - Otherwise nothing checks the bytes: the chosen checksum is still sent
      (if S3 takes it), and the gateway warns.

    Wherever MD5 is sent and ETags are MD5s, the ETags are compared too: the
    MD5 is computed anyway.
    """
    chosen = CHECKSUMS[name]
    if chosen is None:
        return Decision(Integrity(None, BY_NOBODY))
    verdict = found.checksums.get(chosen.name)
    if verdict == ENFORCED:
        return Decision(Integrity(chosen, BY_S3, chosen is MD5 and found.etag_is_md5))
    if chosen is MD5 or fallback == "md5" or verdict == REFUSED:
        why = f"S3 {'refuses' if verdict == REFUSED else 'does not verify'} S3_CHECKSUM={name}"
        if found.enforces("md5"):
            note = f"{why}: sending Content-MD5 instead, which it verifies"
            return Decision(Integrity(MD5, BY_S3, found.etag_is_md5), None if chosen is MD5 else note)
        if found.checksums.get("md5") == IGNORED and found.etag_is_md5:
            why = "S3 does not verify Content-MD5" if chosen is MD5 else f"{why} nor Content-MD5"
            note = f"{why}: sending Content-MD5 and comparing each ETag with it"
            return Decision(Integrity(MD5, BY_GATEWAY, True), note)
    kept = chosen if verdict == IGNORED else None
    note = (
        f"S3 does not verify S3_CHECKSUM={name}"
        + (" (fallback: warn)" if fallback == "warn" else ", nor Content-MD5, nor are its ETags MD5s")
        + ": nothing checks that S3 stores the bytes the gateway sends"
    )
    return Decision(Integrity(kept, BY_NOBODY), note, loud=True)
