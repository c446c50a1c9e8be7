"""Direct-to-S3 uploads (DIRECT_UPLOADS): the bytes go from the client to S3, the rules stay the gateway's.

The flow, which @uppy/aws-s3's multipart mode drives (docs/api.md):

1. **create**: the client declares a name and a length. The quota is reserved for that
   length before anything else (the same lease a tus upload takes, named after this upload,
   so any process can end it), then a multipart upload is created on the user's own key
   ``files/<user>/<name>`` with ChecksumAlgorithm SHA256, and a record written to
   ``direct/<user>/<id>``: name, length, the S3 UploadId and the part size. The part plan
   is the gateway's: every part is `part_size` bytes but the last, so the size of part n is
   known from the record and need not be remembered per part.
2. **sign** part n with its SHA-256: a presigned UploadPart URL whose signature covers
   ``Content-Length`` (the plan's size for part n) and ``x-amz-checksum-sha256``, so S3
   refuses a PUT of another length or of bytes that do not match (where S3 verifies them:
   moto 5.2 checks neither, see tests/api/test_direct.py).
3. **complete**: the gateway lists the parts S3 holds (ListParts), never trusting the
   client's list, and checks each against the plan: numbers 1..N without a gap, each of the
   planned size, and with the SHA-256 S3 verified where S3 reports one. Any mismatch aborts
   the multipart upload and gives the quota back (DirectPartsRefused). Otherwise the pre-finish
   hook is asked, CompleteMultipartUpload names the parts S3 listed, and the file lands as
   every other upload does (landing.Landing.stored: event, quota, library, expiry).
4. **abort**: AbortMultipartUpload, the quota back, the record gone.

An upload abandoned by its client is `gc`'s: its multipart upload is under ``files/`` and
idle, so `sweep.collect_garbage` aborts it as any other, and removes records whose multipart
upload is gone; its quota lease runs out by itself (1.25 x UPLOAD_EXPIRY_SECONDS).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..sizes import DIRECT_GET_URL_SECONDS, DIRECT_PART_URL_SECONDS, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from .cas import VersionedJson
from .client import S3
from .errors import (
    DirectPartsRefused,
    FileNotFound,
    PreconditionFailed,
    TooLarge,
    UploadConflict,
    UploadNotFound,
)
from .keys import DIRECT_ROOT, file_key, validate_name
from .landing import Finish, Landing
from .quotas import Quotas, size_before

SHA256_BYTES = 32  # a SHA-256 digest, as x-amz-checksum-sha256 carries it (base64)
MD5_BYTES = 16  # an MD5 digest, as Content-MD5 carries it (base64)
# The quota lease lasts as long as a tus upload's would: idle uploads are gc's after UPLOAD_EXPIRY_SECONDS.
LEASE_SPAN = 1.25


@dataclasses.dataclass(frozen=True)
class DirectUpload:
    id: str
    uid: str
    name: str
    length: int
    part_size: int
    s3_upload_id: str
    created: float

    @property
    def key(self) -> str:
        return file_key(self.uid, self.name)

    @property
    def parts(self) -> int:
        return max(1, math.ceil(self.length / self.part_size))

    def part_length(self, number: int) -> int:
        """The planned size of part `number`: `part_size`, the last one what remains."""
        return self.part_size if number < self.parts else self.length - self.part_size * (self.parts - 1)


def record_key(uid: str, upload_id: str) -> str:
    return f"{DIRECT_ROOT}{uid}/{upload_id}"


def plan_part_size(length: int, base: int) -> int:
    """The part size for `length` bytes: PART_SIZE (at least S3's 5 MiB minimum), grown by whole
    MiB where 10,000 parts of it would not hold the file."""
    size = max(base, MIN_PART_SIZE)
    if size * MAX_PARTS < length:
        mib = 1024 * 1024
        size = math.ceil(length / MAX_PARTS / mib) * mib
    return min(size, MAX_PART_SIZE)


def usable_part_size(length: int, part_size: object) -> bool:
    """Whether a client's part size fits S3's rules for `length` bytes: 5 MiB to 5 GiB, at most
    10,000 parts."""
    return (
        isinstance(part_size, int)
        and not isinstance(part_size, bool)
        and MIN_PART_SIZE <= part_size <= MAX_PART_SIZE
        and math.ceil(length / part_size) <= MAX_PARTS
    )


def completing_key(uid: str, upload_id: str) -> str:
    return f"{record_key(uid, upload_id)}.completing"


def signed_prefix(uid: str, upload_id: str) -> str:
    return f"{record_key(uid, upload_id)}.signed/"


def _base64_digest(text: object, size: int) -> str | None:
    """`text` if it is the base64 of a digest of `size` bytes, else None."""
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return text if len(raw) == size else None


def md5_checksum(text: object) -> str | None:
    """`text` if it is the base64 of an MD5 digest (Content-MD5), else None."""
    return _base64_digest(text, MD5_BYTES)


def sha256_checksum(text: object) -> str | None:
    """`text` if it is the base64 of a SHA-256 digest, else None."""
    return _base64_digest(text, SHA256_BYTES)


class DirectUploads:
    def __init__(self, s3: S3, quotas: Quotas, landing: Landing, *, part_size: int, expiry: float) -> None:
        self.s3 = s3
        self.quotas = quotas
        self.landing = landing
        self.part_size = part_size
        self.expiry = expiry  # UPLOAD_EXPIRY_SECONDS: how long an idle upload is kept
        # Whether S3's part ETags are the MD5 of their bytes (the startup probe's finding, set by
        # Storage): only then can a part's ETag be held to the MD5 signed for it.
        self.etags_are_md5: Callable[[], bool] = lambda: False

    async def create(
        self, uid: str, name: str, length: int, *, max_size: int, part_size: int | None = None
    ) -> DirectUpload:
        """Reserve the quota for `length` bytes, then start the multipart upload on the user's key.
        QuotaExceeded (nothing created) when it cannot fit, TooLarge past `max_size`. `part_size`:
        the client's own (Uppy's getChunkSize), checked by `usable_part_size`; None: the gateway's."""
        name = validate_name(name)
        if length > max_size:
            raise TooLarge(f"{length} bytes is more than the limit of {max_size}")
        plan = plan_part_size(length, self.part_size) if part_size is None else part_size
        key = file_key(uid, name)
        upload_id = secrets.token_urlsafe(18)
        now = time.time()
        await self.landing.admit(uid, key, length)
        replaces, _ = await size_before(self.s3, key) if self.quotas.enabled_for(uid) else (None, False)
        await self.quotas.reserve_upload(
            uid, key, upload_id, length, now + LEASE_SPAN * self.expiry, replaces
        )
        try:
            s3_upload_id = await self.s3.create_multipart_upload(key, ChecksumAlgorithm="SHA256")
            upload = DirectUpload(upload_id, uid, name, length, plan, s3_upload_id, now)
            await self.s3.put_object(
                record_key(uid, upload_id),
                json.dumps(dataclasses.asdict(upload)).encode(),
                ContentType="application/json",
            )
        except BaseException:
            await self.quotas.upload_ended(uid, upload_id)
            raise
        return upload

    async def get(self, uid: str, upload_id: str) -> DirectUpload:
        """The user's upload `upload_id`; UploadNotFound when there is none (or it ended)."""
        if not upload_id.replace("-", "").replace("_", "").isalnum():
            raise UploadNotFound("no such direct upload")
        try:
            record = json.loads(await self.s3.read_object(record_key(uid, upload_id)))
        except FileNotFound:
            raise UploadNotFound("no such direct upload") from None
        return DirectUpload(**record)

    async def sign_part(
        self, upload: DirectUpload, number: int, checksum: str, md5: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """The presigned PUT of part `number` and the headers it must be sent with. `md5`: the
        part's Content-MD5 (base64), signed too: the checksum S3 engines that ignore SHA-256 verify
        (Ceph RGW 16), and, where S3's part ETag is the MD5 of its bytes (moto, RGW, AWS without
        SSE-KMS or SSE-C), what the completion compares each part's ETag with.

        What was signed is kept in the name of an empty object, ``direct/<user>/<id>.signed/
        <n>.<sha256>.<md5>``, so that the completion finds all of it in one listing; a part signed
        twice (a retry) has two, and its bytes must match one of them."""
        if not 1 <= number <= upload.parts:
            raise DirectPartsRefused(f"part numbers run from 1 to {upload.parts} for this upload")
        length = upload.part_length(number)
        extra = {"ContentMD5": md5} if md5 else {}
        url = await self.s3.presign(
            "upload_part",
            upload.key,
            DIRECT_PART_URL_SECONDS,
            UploadId=upload.s3_upload_id,
            PartNumber=number,
            ContentLength=length,
            ChecksumSHA256=checksum,
            **extra,
        )
        md5_hex = base64.b64decode(md5).hex() if md5 else "-"
        sha_hex = base64.b64decode(checksum).hex()
        await self.s3.put_object(f"{signed_prefix(upload.uid, upload.id)}{number}.{sha_hex}.{md5_hex}", b"")
        return url, {"x-amz-checksum-sha256": checksum} | ({"Content-MD5": md5} if md5 else {})

    async def _signed(self, upload: DirectUpload) -> dict[int, set[tuple[str, str]]]:
        """Per part number, the (SHA-256, MD5) pairs signed for it, in hex ("-": no MD5)."""
        signed: dict[int, set[tuple[str, str]]] = {}
        prefix = signed_prefix(upload.uid, upload.id)
        async for page in self.s3.list_objects(prefix):
            for item in page:
                number, sha_hex, md5_hex = item["Key"][len(prefix) :].split(".")
                signed.setdefault(int(number), set()).add((sha_hex, md5_hex))
        return signed

    async def parts(self, upload: DirectUpload) -> list[dict[str, Any]]:
        """The parts S3 holds (PartNumber, Size, ETag), for a client that resumes."""
        try:
            return [
                {"PartNumber": part["PartNumber"], "Size": part["Size"], "ETag": part["ETag"]}
                async for page in self.s3.list_parts(upload.key, upload.s3_upload_id)
                for part in page
            ]
        except FileNotFound:
            raise UploadNotFound("the upload was aborted") from None

    async def complete(self, upload: DirectUpload, finish: Finish | None) -> tuple[int, str]:
        """Check every part S3 holds against the plan, then store the file; its size and ETag.

        One completion at a time: each first claims ``<record>.completing`` (a create-only
        compare-and-swap, cas.py), since S3 may answer a second CompleteMultipartUpload of the
        same upload with success, and the file would then land (event, quota) twice. A claim left
        by a process killed mid-completion makes further completions 409 until gc aborts the
        upload."""
        claim = VersionedJson(self.s3, completing_key(upload.uid, upload.id))
        try:
            await claim.write({}, None)
        except PreconditionFailed:
            raise UploadConflict("another request is completing this upload") from None
        try:
            await self.get(upload.uid, upload.id)  # not completed (nor aborted) meanwhile
            return await self._complete(upload, finish)
        finally:
            await self.s3.delete_object(claim.key)

    async def _complete(self, upload: DirectUpload, finish: Finish | None) -> tuple[int, str]:
        try:
            held = [
                part async for page in self.s3.list_parts(upload.key, upload.s3_upload_id) for part in page
            ]
        except FileNotFound:
            raise UploadNotFound("the upload was aborted") from None
        problem = self._problem(upload, held, await self._signed(upload), self.etags_are_md5())
        if problem:
            await self.abort(upload)
            raise DirectPartsRefused(f"{problem}: the upload was aborted")
        if finish is not None:
            try:
                await finish(upload.length)
            except BaseException:
                # The pre-finish hook refused the file (or could not be asked): as for a tus upload,
                # nothing of it is kept, and its room in the quota comes back.
                await self.abort(upload)
                raise
        replaced, known = await self.landing.replaced_size(upload.uid, upload.key)
        parts = [
            {"PartNumber": part["PartNumber"], "ETag": part["ETag"]}
            | ({"ChecksumSHA256": part["ChecksumSHA256"]} if "ChecksumSHA256" in part else {})
            for part in held
        ]
        done = await self.s3.complete_multipart_upload(upload.key, upload.s3_upload_id, parts)
        etag = done["ETag"]
        await self._forget(upload)
        counted = self.quotas.upload_stored(
            upload.uid, upload.key, upload.id, upload.length, replaced, exact=known
        )
        await self.landing.stored(upload.key, upload.length, etag, counted)
        return upload.length, etag

    @staticmethod
    def _problem(
        upload: DirectUpload,
        held: list[dict[str, Any]],
        signed: dict[int, set[tuple[str, str]]],
        etags_are_md5: bool,
    ) -> str | None:
        """What is wrong with the parts S3 holds, against what the gateway signed (None: nothing):
        each part's size, its SHA-256 where S3 reports one, its ETag where that is the MD5 of its
        bytes and an MD5 was signed."""
        numbers = [part["PartNumber"] for part in held]
        if numbers != list(range(1, upload.parts + 1)):
            return f"S3 holds parts {numbers[:5]}..., the upload needs parts 1 to {upload.parts}"
        for part in held:
            number = part["PartNumber"]
            want = upload.part_length(number)
            if part["Size"] != want:
                return f"part {number} is {part['Size']} bytes, {want} were signed"
            pairs = signed.get(number, set())
            if not pairs:
                return f"part {number} was never signed"
            if "ChecksumSHA256" in part:
                sha_hex = base64.b64decode(part["ChecksumSHA256"]).hex()
                if all(sha != sha_hex for sha, _ in pairs):
                    return f"part {number} has another SHA-256 than signed"
            md5s = {md5 for _, md5 in pairs}
            if etags_are_md5 and "-" not in md5s and part["ETag"].strip('"').lower() not in md5s:
                return f"part {number} has other bytes than signed (its ETag is not the MD5 signed)"
        return None

    async def abort(self, upload: DirectUpload) -> None:
        """Abort the multipart upload, give its quota back, forget it."""
        await self.s3.abort_multipart_upload(upload.key, upload.s3_upload_id)
        await self.quotas.upload_ended(upload.uid, upload.id)
        await self._forget(upload)

    async def _forget(self, upload: DirectUpload) -> None:
        await self.s3.delete_prefix(signed_prefix(upload.uid, upload.id))
        await self.s3.delete_object(completing_key(upload.uid, upload.id))
        await self.s3.delete_object(record_key(upload.uid, upload.id))

    async def download_url(self, key: str, disposition: str, content_type: str) -> str:
        """A short-lived presigned GET of `key`, answered with the gateway's own headers."""
        return await self.s3.presign(
            "get_object",
            key,
            DIRECT_GET_URL_SECONDS,
            ResponseContentDisposition=disposition,
            ResponseContentType=content_type,
        )

    async def forget_abandoned(self, older_than: datetime.timedelta) -> int:
        """gc: remove records of uploads created before `older_than` whose multipart upload is gone
        (gc aborted it, or a lifecycle rule did); their quota leases run out by themselves."""
        cutoff = datetime.datetime.now(datetime.UTC) - older_than
        forgotten = 0
        async for page in self.s3.list_objects(DIRECT_ROOT):
            for item in page:
                if (
                    item["LastModified"] > cutoff
                    or ".signed/" in item["Key"]
                    or item["Key"].endswith(".completing")
                ):
                    continue
                try:
                    record = DirectUpload(**json.loads(await self.s3.read_object(item["Key"])))
                    async for _ in self.s3.list_parts(record.key, record.s3_upload_id):
                        break
                    continue  # still there: not abandoned yet
                except (FileNotFound, ValueError, TypeError):
                    pass
                await self.s3.delete_prefix(item["Key"] + ".signed/")
                await self.s3.delete_object(item["Key"] + ".completing")  # left by a process killed
                await self.s3.delete_object(item["Key"])
                forgotten += 1
        return forgotten


def part_checksum(data: bytes) -> str:
    """The x-amz-checksum-sha256 of `data` (what a client computes for each part)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


__all__ = ["DirectPartsRefused", "DirectUpload", "DirectUploads", "part_checksum", "sha256_checksum"]
