"""tus 1.0.0 resumable uploads under /api/uploads/: thin handlers over `storage.tus`.

Extensions: creation, creation-with-upload, creation-defer-length, termination,
expiration, checksum (sha1, sha256, sha512, md5, crc32, crc32c) and concatenation (`Upload-Concat:
partial`, then `final;<url> <url>...`: storage/tus/concat.py). The file name
comes from the `filename` key of Upload-Metadata (a partial upload needs none:
the final upload's names the file); a completed upload is an ordinary file.
Its `expires_in` metadata key (seconds) makes the file expire that long after it is stored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..hooks.blocking import ALLOWED
from ..sizes import format_size
from ..storage.errors import ChecksumMismatch, FinalUpload, InvalidName, QuotaExceeded, TooLarge
from ..storage.keys import file_key
from ..storage.landing import Finish
from ..storage.tus import FINAL_TAKES_NO_PATCH, UPLOAD_CHECKSUMS, Upload
from . import hooked
from .auth import authenticate
from .body import expect_body, read_body
from .errors import (
    INVALID_CHECKSUM,
    INVALID_CONCAT,
    INVALID_HEADER,
    INVALID_LENGTH,
    INVALID_METADATA,
    MISSING_OFFSET,
    UNSUPPORTED_CHECKSUM,
    UNSUPPORTED_MEDIA_TYPE,
    UNSUPPORTED_TUS_VERSION,
    UPLOAD_TOO_LARGE,
    ApiError,
    as_api_error,
)
from .params import EXPIRES_FIELD, file_expires_in
from .proxies import absolute_url

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation"
)
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
UPLOADS = "/api/uploads"
UPLOAD = "/api/uploads/{upload_id}"
_TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise UNSUPPORTED_TUS_VERSION({"Tus-Version": TUS_VERSION}, version=TUS_VERSION)


def tus_route(handler: Handler) -> Handler:
    """Check Tus-Resumable, and put it on every answer, errors included."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            _check_version(request)
            response = await handler(request)
        except Exception as exc:
            error = as_api_error(exc)
            if error.status == 500:
                raise  # the error middleware logs it with its traceback
            error.headers.update(_TUS_HEADERS)
            raise error from exc
        response.headers.update(_TUS_HEADERS)
        return response

    return wrapper


# Longer than any offset or length S3 can hold (5 TiB has 13 digits): refused
# before int() is asked to parse a thousand digits.
_MAX_DIGITS = 19


def header_number(request: web.Request, header: str) -> int | None:
    """A whole number in `header` (Upload-Length, Upload-Offset; tus and the IETF draft alike),
    None when absent; 400 invalid_header for anything else."""
    value = request.headers.get(header)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
        raise INVALID_HEADER(header=header)
    return int(value)


def _metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs (the value may be absent)."""
    pairs: dict[str, str] = {}
    for item in header.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, encoded = item.partition(" ")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise INVALID_METADATA(key=key) from None
    return pairs


def _checksum(request: web.Request) -> tuple[str, bytes] | None:
    value = request.headers.get("Upload-Checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in UPLOAD_CHECKSUMS:
        raise UNSUPPORTED_CHECKSUM(algorithms=",".join(UPLOAD_CHECKSUMS))
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise INVALID_CHECKSUM() from None


# A partial upload named in `Upload-Concat: final;...`: its URL as Location gave it (absolute, or
# a path), whatever prefix a proxy puts before /api/uploads/.
_PARTIAL_URL = re.compile(r"(?:.*/)?api/uploads/([^/]+)/?")


def _concat(request: web.Request) -> list[str] | None:
    """Upload-Concat: None (absent), [] for `partial`, or a final upload's partial upload ids."""
    value = request.headers.get("Upload-Concat")
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return []
    kind, _, urls = value.partition(";")
    ids = []
    for url in urls.split():
        match = _PARTIAL_URL.fullmatch(urlsplit(url).path)
        if match is None:
            raise INVALID_CONCAT(detail=f"Upload-Concat names {url!r}, which is not an upload of this server")
        ids.append(match.group(1))
    if kind.strip() != "final" or not ids:
        raise INVALID_CONCAT(detail="send Upload-Concat: partial, or final;<upload URL> <upload URL>...")
    return ids


def _concat_header(request: web.Request, upload: Upload) -> dict[str, str]:
    if upload.partial:
        return {"Upload-Concat": "partial"}
    if upload.partials:
        urls = " ".join(absolute_url(request, f"{UPLOADS}/{upload_id}") for upload_id in upload.partials)
        return {"Upload-Concat": f"final;{urls}"}
    return {}


def _expires(upload: Upload) -> str:
    return formatdate(upload.expires, usegmt=True)


def _check_body_fits(request: web.Request, length: int | None, offset: int, most: int | None = None) -> None:
    """Refuse before reading a declared body that would run past the upload's end."""
    size = request.content_length
    if length is not None:
        end = length
    else:
        end = request.app[SETTINGS].max_file_size if most is None else most
    if size is not None and offset + size > end:
        raise UPLOAD_TOO_LARGE(detail=f"the upload ends at byte {end}")


async def _append(request: web.Request, upload: Upload, offset: int) -> Upload:
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {OFFSET_OCTET_STREAM}")
    if upload.partials:  # before the body's size is judged: 403 whatever it is (tus concatenation)
        raise FinalUpload(FINAL_TAKES_NO_PATCH)
    length = header_number(request, "Upload-Length")
    checksum = _checksum(request)
    most = upload.limit(request.app[SETTINGS].max_file_size)
    _check_body_fits(request, length if length is not None else upload.length, offset, most)
    return await request.app[STORAGE].resumable.appender.append(
        upload,
        offset,
        read_body(request, most),
        now=time.time(),
        length=length,
        checksum=checksum,
        finish=_pre_finish(request, upload),
    )


def _pre_finish(request: web.Request, upload: Upload) -> Finish | None:
    try:
        metadata = _metadata(upload.metadata)
    except ApiError:
        metadata = {}
    return hooked.pre_finish(request, upload.name, "tus", metadata)


def _upload_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if not upload.done:
        headers["Upload-Expires"] = _expires(upload)
    return headers


async def options(request: web.Request) -> web.Response:
    """Discovery; tus lets OPTIONS go without Tus-Resumable, and it needs no token (auth.py)."""
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(request.app[SETTINGS].max_file_size),
            "Tus-Checksum-Algorithm": ",".join(UPLOAD_CHECKSUMS),
        },
    )


@tus_route
async def create(request: web.Request) -> web.Response:
    concat = _concat(request)
    if concat:
        return await _create_final(request, concat)
    length = header_number(request, "Upload-Length")
    deferred = request.headers.get("Upload-Defer-Length")
    if (length is None) == (deferred is None) or (deferred is not None and deferred != "1"):
        raise INVALID_LENGTH()
    raw_metadata = request.headers.get("Upload-Metadata", "")
    partial = concat is not None
    metadata = _metadata(raw_metadata)
    name = metadata.get("filename", "")
    if not name and not partial:
        raise InvalidName("Upload-Metadata has no filename")
    file_expires_in(metadata.get(EXPIRES_FIELD))  # checked now, applied when the file is stored
    # A partial upload is no file yet: the hooks are asked of its final upload.
    verdict = ALLOWED if partial else await hooked.pre_create(request, name, length, "tus", metadata)
    most = hooked.limit(request, verdict)
    if length is not None and length > most:
        raise UPLOAD_TOO_LARGE(detail=f"the limit is {format_size(most)}")
    with_upload = request.body_exists and request.content_type == OFFSET_OCTET_STREAM
    if with_upload:  # creation-with-upload: a body that cannot fit creates nothing
        _check_body_fits(request, length, 0, most)
        checksum = _checksum(request)
    resumable = request.app[STORAGE].resumable
    finish = None if partial else hooked.pre_finish(request, name, "tus", metadata)
    upload = await resumable.create(
        request[USER_ID],
        name,
        length,
        raw_metadata,
        time.time(),
        max_size=verdict.max_size,
        finish=finish,
        partial=partial,
    )
    # Absolute, on the public origin: the client sends its token there next.
    headers: dict[str, str] = {hdrs.LOCATION: absolute_url(request, f"{UPLOADS}/{upload.id}")}
    if with_upload:
        try:
            upload = await resumable.appender.append(
                upload, 0, read_body(request, most), now=time.time(), checksum=checksum, finish=finish
            )
        except (TooLarge, ChecksumMismatch, QuotaExceeded):
            # The client is told the upload failed and gets no Location: leave no upload behind.
            await resumable.terminate(upload)
            raise
    headers.update(_upload_headers(upload))
    return web.Response(status=201, headers=headers)


async def _create_final(request: web.Request, partial_ids: list[str]) -> web.Response:
    """concatenation: the final upload, assembled from its partial uploads before the answer."""
    if "Upload-Length" in request.headers or "Upload-Defer-Length" in request.headers:
        raise INVALID_CONCAT(detail="a final upload's length is its partial uploads': send no Upload-Length")
    if request.content_length:
        raise INVALID_CONCAT(detail="a final upload takes no body: its bytes are its partial uploads'")
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = _metadata(raw_metadata)
    name = metadata.get("filename")
    if not name:
        raise InvalidName("Upload-Metadata has no filename")

    async def admit(size: int) -> int:
        """The pre-create hook, once the size is known: the most bytes the file may have."""
        return hooked.limit(request, await hooked.pre_create(request, name, size, "tus", metadata))

    upload = await request.app[STORAGE].resumable.concatenation.concatenate(
        request[USER_ID],
        name,
        raw_metadata,
        partial_ids,
        time.time(),
        admit=admit,
        finish=hooked.pre_finish(request, name, "tus", metadata),
    )
    headers = {hdrs.LOCATION: absolute_url(request, f"{UPLOADS}/{upload.id}"), **_upload_headers(upload)}
    return web.Response(status=201, headers=headers)


async def upload_of(request: web.Request) -> Upload:
    """The upload the request's path names, of the request's user (tus and the IETF draft)."""
    return await request.app[STORAGE].resumable.get(
        request[USER_ID], request.match_info["upload_id"], time.time()
    )


@tus_route
async def head(request: web.Request) -> web.Response:
    upload = await upload_of(request)
    headers = _upload_headers(upload)
    headers[hdrs.CACHE_CONTROL] = "no-store"
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    headers.update(_concat_header(request, upload))
    return web.Response(status=200, headers=headers)


@tus_route
async def patch(request: web.Request) -> web.Response:
    offset = header_number(request, "Upload-Offset")
    if offset is None:
        raise MISSING_OFFSET()
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {OFFSET_OCTET_STREAM}")
    upload = await _append(request, await upload_of(request), offset)
    return web.Response(status=204, headers=_upload_headers(upload))


@tus_route
async def terminate(request: web.Request) -> web.Response:
    upload = await upload_of(request)
    await request.app[STORAGE].resumable.terminate(upload)
    return web.Response(status=204)


async def _check_body(request: web.Request) -> None:
    """What a tus request with a body refuses before reading it: token, version, upload slots,
    and for a creation, an Upload-Length that cannot fit in the user's quota."""
    await authenticate(request)
    _check_version(request)
    storage = request.app[STORAGE]
    key = length = None
    name = None
    if request.method == hdrs.METH_POST:
        metadata = _metadata(request.headers.get("Upload-Metadata", ""))
        # A partial upload is no file: no key, and the hooks are asked of its final upload.
        partial = request.headers.get("Upload-Concat", "").strip() == "partial"
        name = None if partial else metadata.get("filename")
        length = header_number(request, "Upload-Length")
        if name and length is not None:  # (without a name, the creation is refused anyway)
            key = file_key(request[USER_ID], name)
    await storage.admit(request[USER_ID], key, length)
    if name:
        await hooked.pre_create(request, name, length, "tus", metadata)


expect_patch = expect_body(_check_body, _TUS_HEADERS)
