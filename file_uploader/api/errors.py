"""One JSON error shape for every failure, and the middleware that renders it.

Every error leaves as ``{"error": {"code": ..., "message": ...}}``. Handlers
raise `ApiError`; the storage layer raises its own errors, which `STORAGE_ERRORS`
maps to HTTP in one table; anything else is logged with its traceback and
becomes a 500 that reveals nothing internal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from ..appkeys import CUT_SHORT
from ..storage import errors as storage
from .access import route_of

log = logging.getLogger(__name__)

# What a client is told to wait before trying again, whatever made it wait: S3
# busy or unreachable, or the user's upload slots all taken.
RETRY_AFTER_SECONDS = "5"
_RETRY = {"Retry-After": RETRY_AFTER_SECONDS}
# tus's checksum extension answers a mismatch with this status.
CHECKSUM_MISMATCH = 460


class ClientGone(Exception):
    """A response could not be finished because of its client: it went away, or it took no
    bytes for CLIENT_TIMEOUT. Not the gateway's failure: logged at INFO, counted as 499."""

    def __init__(self, reason: str, response: web.StreamResponse) -> None:
        super().__init__(reason)
        self.reason = reason  # "disconnected" or "send_timeout"
        self.response = response


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(error: ApiError) -> web.Response:
    return web.json_response(
        {"error": {"code": error.code, "message": error.message}},
        status=error.status,
        headers=error.headers,
    )


# Storage errors, as HTTP: status, code, extra headers. The first match wins.
STORAGE_ERRORS: dict[type[Exception], tuple[int, str, dict[str, str]]] = {
    storage.InvalidName: (400, "invalid_name", {}),
    storage.FileNotFound: (404, "not_found", {}),
    storage.RangeNotSatisfiable: (416, "range_not_satisfiable", {}),
    storage.TooManyUploads: (429, "too_many_uploads", _RETRY),
    storage.TooLarge: (413, "upload_too_large", {}),
    storage.QuotaExceeded: (413, "quota_exceeded", {}),
    storage.UploadNotFound: (404, "not_found", {}),
    storage.UploadExpired: (410, "upload_expired", {}),
    storage.OffsetMismatch: (409, "offset_mismatch", {}),
    storage.LengthConflict: (400, "length_conflict", {}),
    storage.ChecksumMismatch: (CHECKSUM_MISMATCH, "checksum_mismatch", {}),
    storage.NotAnImage: (415, "not_an_image", {}),
    storage.ImageTooLarge: (422, "image_too_large", {}),
    storage.FileChanged: (410, "file_changed", {}),
    storage.UploadLocked: (423, "upload_locked", _RETRY),
    storage.UploadConflict: (409, "upload_conflict", {}),
    storage.PreconditionFailed: (409, "upload_conflict", {}),
    storage.PartsChanged: (409, "upload_conflict", {}),
    storage.StorageBusy: (503, "busy", _RETRY),
    storage.StorageUnavailable: (503, "storage_unavailable", _RETRY),
    storage.StorageError: (502, "storage_error", {}),
}

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    417: "expectation_failed",
}


def as_api_error(exc: Exception) -> ApiError:
    """The ApiError for `exc`; anything unforeseen becomes a bare 500."""
    if isinstance(exc, ApiError):
        return exc
    for kind, (status, code, headers) in STORAGE_ERRORS.items():
        if isinstance(exc, kind):
            headers = dict(headers)
            if isinstance(exc, storage.RangeNotSatisfiable):
                headers["Content-Range"] = f"bytes */{exc.size}"
            return ApiError(status, code, str(exc), headers)
    if isinstance(exc, web.HTTPException):
        # The router's own 404 and 405, and any other aiohttp refusal.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        code = _HTTP_CODES.get(exc.status, exc.reason.lower().replace(" ", "_"))
        return ApiError(exc.status, code, exc.reason, headers)
    return ApiError(500, "internal_error", "internal server error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientGone as exc:
        # The status line is out and the client cannot be told anything more:
        # drop the connection (at once, whatever is still buffered for it) and
        # hand aiohttp the response it has already started.
        request[CUT_SHORT] = exc.reason
        if request.transport is not None:
            request.transport.abort()
        log.info(
            "response cut short: %s",
            "the client went away"
            if exc.reason == "disconnected"
            else "the client took no bytes for CLIENT_TIMEOUT",
        )
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = as_api_error(exc)
    except Exception as exc:
        if request.writer.output_size:
            # The status line is out: the only honest signal left is to cut
            # the connection, which aiohttp does with an exception.
            raise
        error = as_api_error(exc)
        if error.status == 500:
            # The route's pattern, not the path: a path holds a file name.
            log.exception("unhandled error in %s %s", request.method, route_of(request))
    response = error_response(error)
    if not request.content.is_eof():
        # The body will not be read: close the connection rather than let
        # aiohttp drain (up to lingering_time) an upload nobody will store.
        response.force_close()
    return response
