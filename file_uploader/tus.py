"""tus 1.0.0 resumable uploads under /api/uploads/: thin handlers over `tus_store`.

Extensions: creation, creation-with-upload, creation-defer-length, termination,
expiration and checksum (sha1, sha256, md5). The file name comes from the
`filename` key of Upload-Metadata; a completed upload is an ordinary file.
"""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from .auth import authenticate
from .errors import ApiError, as_api_error, error_response
from .handlers import read_body
from .keys import InvalidName
from .tus_store import (
    CHECKSUMS,
    ChecksumMismatch,
    LengthConflict,
    OffsetMismatch,
    TusStore,
    Upload,
    UploadExpired,
    UploadNotFound,
    UploadTooLarge,
)
from .typedefs import SETTINGS, STORAGE, USER_ID

TUS_VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum"
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
UPLOADS = "/api/uploads"
UPLOAD = "/api/uploads/{upload_id}"
CHECKSUM_MISMATCH = 460  # tus checksum extension

_ERRORS: dict[type[Exception], tuple[int, str]] = {
    UploadNotFound: (404, "not_found"),
    UploadExpired: (410, "upload_expired"),
    OffsetMismatch: (409, "offset_mismatch"),
    UploadTooLarge: (413, "upload_too_large"),
    LengthConflict: (400, "length_conflict"),
    ChecksumMismatch: (CHECKSUM_MISMATCH, "checksum_mismatch"),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tus_error(exc: Exception) -> ApiError:
    for kind, (status, code) in _ERRORS.items():
        if isinstance(exc, kind):
            return ApiError(status, code, str(exc))
    return as_api_error(exc)


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise ApiError(
            412,
            "unsupported_tus_version",
            f"send Tus-Resumable: {TUS_VERSION}",
            {"Tus-Version": TUS_VERSION},
        )


def tus_route(handler: Handler) -> Handler:
    """Check Tus-Resumable, and put it on every answer, errors included."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            _check_version(request)
            response = await handler(request)
        except Exception as exc:
            error = _tus_error(exc)
            if error.status == 500:
                raise  # the error middleware logs it with its traceback
            error.headers["Tus-Resumable"] = TUS_VERSION
            raise error from exc
        response.headers["Tus-Resumable"] = TUS_VERSION
        return response

    return wrapper


def _store(request: web.Request) -> TusStore:
    settings = request.app[SETTINGS]
    storage = request.app[STORAGE]
    return TusStore(
        storage.client,
        storage.bucket,
        part_size=settings.part_size,
        parts_in_flight=settings.parts_in_flight,
        expiry=settings.upload_expiry,
        max_size=settings.max_file_size,
    )


def _number(request: web.Request, header: str) -> int | None:
    value = request.headers.get(header)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise ApiError(400, "invalid_header", f"{header} must be a non-negative integer")
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
            raise ApiError(400, "invalid_metadata", f"Upload-Metadata {key!r} is not base64 UTF-8") from None
    return pairs


def _checksum(request: web.Request) -> tuple[str, bytes] | None:
    value = request.headers.get("Upload-Checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUMS:
        raise ApiError(400, "unsupported_checksum", f"Upload-Checksum algorithms: {','.join(CHECKSUMS)}")
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ApiError(400, "invalid_checksum", "Upload-Checksum is not base64") from None


def _expires(upload: Upload) -> str:
    return formatdate(upload.expires, usegmt=True)


def _check_body_fits(request: web.Request, upload: Upload, offset: int) -> None:
    """Refuse before reading a declared body that would run past the upload's end."""
    size = request.content_length
    limit = request.app[SETTINGS].max_file_size
    end = upload.length if upload.length is not None else limit
    if size is not None and offset + size > end:
        raise ApiError(413, "upload_too_large", f"the upload ends at byte {end}")


async def _append(request: web.Request, upload: Upload, offset: int) -> Upload:
    settings = request.app[SETTINGS]
    if request.content_type != OFFSET_OCTET_STREAM:
        raise ApiError(415, "unsupported_media_type", f"send Content-Type: {OFFSET_OCTET_STREAM}")
    length = _number(request, "Upload-Length")
    checksum = _checksum(request)
    _check_body_fits(request, upload, offset)
    return await _store(request).append(
        upload, offset, read_body(request, settings), now=time.time(), length=length, checksum=checksum
    )


def _upload_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if not upload.done:
        headers["Upload-Expires"] = _expires(upload)
    return headers


async def options(request: web.Request) -> web.Response:
    """Discovery; tus lets OPTIONS go without Tus-Resumable."""
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(request.app[SETTINGS].max_file_size),
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        },
    )


@tus_route
async def create(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    length = _number(request, "Upload-Length")
    deferred = request.headers.get("Upload-Defer-Length")
    if (length is None) == (deferred is None) or (deferred is not None and deferred != "1"):
        raise ApiError(400, "invalid_length", "send either Upload-Length or Upload-Defer-Length: 1")
    if length is not None and length > settings.max_file_size:
        raise ApiError(413, "upload_too_large", f"the limit is {settings.max_file_size} bytes")
    raw_metadata = request.headers.get("Upload-Metadata", "")
    name = _metadata(raw_metadata).get("filename")
    if not name:
        raise InvalidName("Upload-Metadata has no filename")
    upload = await _store(request).create(request[USER_ID], name, length, raw_metadata, time.time())
    headers = {hdrs.LOCATION: f"{UPLOADS}/{upload.id}"}
    if request.body_exists and request.content_type == OFFSET_OCTET_STREAM:  # creation-with-upload
        upload = await _append(request, upload, 0)
    headers.update(_upload_headers(upload))
    return web.Response(status=201, headers=headers)


async def _get(request: web.Request) -> Upload:
    return await _store(request).get(request[USER_ID], request.match_info["upload_id"], time.time())


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
        raise ApiError(400, "missing_offset", "send Upload-Offset")
    if request.content_type != OFFSET_OCTET_STREAM:
        raise ApiError(415, "unsupported_media_type", f"send Content-Type: {OFFSET_OCTET_STREAM}")
    upload = await _append(request, await _get(request), offset)
    return web.Response(status=204, headers=_upload_headers(upload))


@tus_route
async def terminate(request: web.Request) -> web.Response:
    upload = await _get(request)
    await _store(request).terminate(upload)
    return web.Response(status=204)


async def expect_patch(request: web.Request) -> web.StreamResponse | None:
    """Refuse a bad token or tus version before the body under `Expect: 100-continue`.

    aiohttp runs this before any middleware (see handlers.expect_upload).
    """
    try:
        authenticate(request)
        _check_version(request)
    except ApiError as exc:
        exc.headers["Tus-Resumable"] = TUS_VERSION
        response = error_response(exc)
        response.force_close()
        return response
    if request.version == HttpVersion11 and request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
    return None


def add_routes(app: web.Application) -> None:
    for path in (UPLOADS, UPLOADS + "/"):
        app.router.add_route(hdrs.METH_OPTIONS, path, options)
        app.router.add_post(path, create, expect_handler=expect_patch)
    app.router.add_route(hdrs.METH_OPTIONS, UPLOAD, options)
    app.router.add_head(UPLOAD, head)
    app.router.add_patch(UPLOAD, patch, expect_handler=expect_patch)
    app.router.add_delete(UPLOAD, terminate)
