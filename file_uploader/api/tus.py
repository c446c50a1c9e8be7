"""tus 1.0.0 resumable uploads under /api/uploads/: thin handlers over `storage.tus`.

Extensions: creation, creation-with-upload, creation-defer-length, termination,
expiration and checksum (sha1, sha256, md5). The file name comes from the
`filename` key of Upload-Metadata; a completed upload is an ordinary file. Its
`expires_in` key (seconds) makes the file expire that long after it is stored.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..sizes import format_size
from ..storage.errors import ChecksumMismatch, InvalidName, QuotaExceeded, TooLarge
from ..storage.keys import file_key
from ..storage.landing import Finish
from ..storage.tus import UPLOAD_CHECKSUMS, Upload
from . import hooked
from .auth import authenticate
from .body import expect_body, read_body
from .errors import (
    INVALID_CHECKSUM,
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
from .files import EXPIRES_FIELD, file_expires_in
from .proxies import absolute_url

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum"
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


def _number(request: web.Request, header: str) -> int | None:
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
    length = _number(request, "Upload-Length")
    checksum = _checksum(request)
    most = upload.limit(request.app[SETTINGS].max_file_size)
    _check_body_fits(request, length if length is not None else upload.length, offset, most)
    return await request.app[STORAGE].resumable.append(
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
    length = _number(request, "Upload-Length")
    deferred = request.headers.get("Upload-Defer-Length")
    if (length is None) == (deferred is None) or (deferred is not None and deferred != "1"):
        raise INVALID_LENGTH()
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = _metadata(raw_metadata)
    name = metadata.get("filename")
    if not name:
        raise InvalidName("Upload-Metadata has no filename")
    file_expires_in(metadata.get(EXPIRES_FIELD))  # checked now, applied when the file is stored
    verdict = await hooked.pre_create(request, name, length, "tus", metadata)
    most = hooked.limit(request, verdict)
    if length is not None and length > most:
        raise UPLOAD_TOO_LARGE(detail=f"the limit is {format_size(most)}")
    with_upload = request.body_exists and request.content_type == OFFSET_OCTET_STREAM
    if with_upload:  # creation-with-upload: a body that cannot fit creates nothing
        _check_body_fits(request, length, 0, most)
        checksum = _checksum(request)
    resumable = request.app[STORAGE].resumable
    finish = hooked.pre_finish(request, name, "tus", metadata)
    upload = await resumable.create(
        request[USER_ID], name, length, raw_metadata, time.time(), max_size=verdict.max_size, finish=finish
    )
    # Absolute, on the public origin: the client sends its token there next.
    headers: dict[str, str] = {hdrs.LOCATION: absolute_url(request, f"{UPLOADS}/{upload.id}")}
    if with_upload:
        try:
            upload = await resumable.append(
                upload, 0, read_body(request, most), now=time.time(), checksum=checksum, finish=finish
            )
        except (TooLarge, ChecksumMismatch, QuotaExceeded):
            # The client is told the upload failed and gets no Location: leave no upload behind.
            await resumable.terminate(upload)
            raise
    headers.update(_upload_headers(upload))
    return web.Response(status=201, headers=headers)


async def _get(request: web.Request) -> Upload:
    return await request.app[STORAGE].resumable.get(
        request[USER_ID], request.match_info["upload_id"], time.time()
    )


@tus_route
async def head(request: web.Request) -> web.Response:
    upload = await _get(request)
    headers = _upload_headers(upload)
    headers[hdrs.CACHE_CONTROL] = "no-store"
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    return web.Response(status=200, headers=headers)


@tus_route
async def patch(request: web.Request) -> web.Response:
    offset = _number(request, "Upload-Offset")
    if offset is None:
        raise MISSING_OFFSET()
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {OFFSET_OCTET_STREAM}")
    upload = await _append(request, await _get(request), offset)
    return web.Response(status=204, headers=_upload_headers(upload))


@tus_route
async def terminate(request: web.Request) -> web.Response:
    upload = await _get(request)
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
        name = metadata.get("filename")
        length = _number(request, "Upload-Length")
        if name and length is not None:  # (without a name, the creation is refused anyway)
            key = file_key(request[USER_ID], name)
    await storage.admit(request[USER_ID], key, length)
    if name:
        await hooked.pre_create(request, name, length, "tus", metadata)


expect_patch = expect_body(_check_body, _TUS_HEADERS)
