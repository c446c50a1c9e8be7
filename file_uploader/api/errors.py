"""One JSON error shape for every failure, the catalogue of its codes, and the middleware that renders it.

Every error leaves as ``{"error": {"code": ..., "message": ...}}``. Each code
is named once below, with its status and message template (`CATALOGUE`;
openapi.json lists the same codes, and a test holds the two together).
Handlers raise an entry, filled in: ``raise INVALID_LIMIT(maximum=100)``; the
storage layer raises its own errors, which `STORAGE_ERRORS` maps to entries in
one table, their message being the storage error's own; anything else is
logged with its traceback and becomes a 500 that reveals nothing internal.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from ..appkeys import CUT_SHORT
from ..hooks.blocking import HookRefused, HookUnavailable
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


@dataclasses.dataclass(frozen=True)
class Error:
    """One entry of the catalogue: a code, its status, and its message as a `str.format` template."""

    status: int
    code: str
    message: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __call__(self, headers: Mapping[str, str] | None = None, **fields: object) -> ApiError:
        """The ApiError to raise, its message filled in with `fields`, with any extra `headers`."""
        return ApiError(
            self.status, self.code, self.message.format(**fields), {**self.headers, **(headers or {})}
        )


def _whole_number(field: str, *, or_null: bool = False) -> Error:
    """400 invalid_<field>: a count or size out of its range, worded alike for every field."""
    message = f"{field} must be a whole number from 1 to {{maximum}}" + (", or null" if or_null else "")
    return Error(400, f"invalid_{field}", message)


# The catalogue, by status. Entries whose message is "{detail}" carry the
# storage error's own text (STORAGE_ERRORS) or the router's reason.
INVALID_NAME = Error(400, "invalid_name", "{detail}")
INCOMPLETE_BODY = Error(400, "incomplete_body", "the connection ended before the whole body arrived")
INVALID_FORM = Error(400, "invalid_form", "the multipart/form-data body {problem}")
INVALID_FIELD = Error(400, "invalid_field", "the field {field!r} {problem}")
NO_FILES = Error(400, "no_files", "the form has no file field")
INVALID_DIGEST = Error(400, "invalid_digest", "the {header} header is not a valid digest")
DIGEST_MISMATCH = Error(400, "digest_mismatch", "the body does not match its {header} header")
INVALID_PUBLIC = Error(400, "invalid_public", "{what} must be true or false ({words})")
INVALID_FLAG = Error(400, "invalid_flag", "{what} must be a yes or no ({words})")
INVALID_BODY = Error(400, "invalid_body", "send JSON such as {example}")
INVALID_LIMIT = _whole_number("limit")
INVALID_CURSOR = Error(400, "invalid_cursor", "after must be the `next` of an earlier page")
INVALID_DELIMITER = Error(400, "invalid_delimiter", "the only delimiter is /")
INVALID_THUMBNAIL = Error(400, "invalid_thumbnail", "thumbnail must be one of {sizes}")
FOLDER_NOT_RECURSIVE = Error(
    400, "folder_not_recursive", "to delete a folder and everything in it, add ?recursive=1"
)
INVALID_EXPIRY = Error(
    400, "invalid_expiry", "expires_in must be a whole number of seconds from 1 to {maximum}"
)
INVALID_MAX_DOWNLOADS = _whole_number("max_downloads", or_null=True)
INVALID_FORMAT = Error(400, "invalid_format", "a folder is downloaded with ?format=zip")
INVALID_FOLDER = Error(400, "invalid_folder", "folder must be the name of a folder, such as inbox/")
INVALID_MAX_FILES = _whole_number("max_files", or_null=True)
INVALID_MAX_BYTES = _whole_number("max_bytes", or_null=True)
INVALID_PASSWORD = Error(400, "invalid_password", "password must be text of 1 to {maximum} bytes, or null")
INVALID_HEADER = Error(400, "invalid_header", "{header} must be a non-negative integer of at most 19 digits")
INVALID_LENGTH = Error(400, "invalid_length", "send either Upload-Length or Upload-Defer-Length: 1")
LENGTH_REQUIRED = Error(
    400, "length_required", "send Upload-Length: an upload request takes a file's room before its bytes"
)
MISSING_OFFSET = Error(400, "missing_offset", "send Upload-Offset")
INVALID_METADATA = Error(400, "invalid_metadata", "Upload-Metadata {key!r} is not base64 UTF-8")
UNSUPPORTED_CHECKSUM = Error(400, "unsupported_checksum", "Upload-Checksum algorithms: {algorithms}")
INVALID_CHECKSUM = Error(400, "invalid_checksum", "Upload-Checksum is not base64")
LENGTH_CONFLICT = Error(400, "length_conflict", "{detail}")
INVALID_CONCAT = Error(400, "invalid_concat", "{detail}")
UPLOAD_NOT_FINISHED = Error(400, "upload_not_finished", "{detail}")
_CHALLENGE = {"WWW-Authenticate": 'Token realm="file_uploader", header="X-Auth-Token"'}
MISSING_TOKEN = Error(401, "missing_token", "send your token in the {where}", _CHALLENGE)
# `credential`: X-Auth-Token, or the bearer token (identity/), whose refusals carry RFC 6750's
# challenge instead (BEARER_CHALLENGE).
INVALID_TOKEN = Error(401, "invalid_token", "{credential} {problem}", _CHALLENGE)
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="file_uploader", error="invalid_token"'}
# A link's password is the password of HTTP Basic authentication: the challenge makes a browser ask.
PASSWORD_REQUIRED = Error(
    401,
    "password_required",
    "this link needs its password, as the password of HTTP Basic authentication (curl -u :PASSWORD)",
    {"WWW-Authenticate": 'Basic realm="shared link", charset="UTF-8"'},
)
ORIGIN_NOT_ALLOWED = Error(403, "origin_not_allowed", "this origin is not in the gateway's CORS_ORIGINS")
INVALID_LINK = Error(403, "invalid_link", "this share link is not valid")
MODIFY_FINAL = Error(403, "modify_final", "{detail}")
NOT_FOUND = Error(404, "not_found", "{detail}")
METHOD_NOT_ALLOWED = Error(405, "method_not_allowed", "{detail}")
BODY_TIMEOUT = Error(408, "body_timeout", "no data arrived for {seconds:g} seconds")
OFFSET_MISMATCH = Error(409, "offset_mismatch", "{detail}")
REQUEST_FULL = Error(409, "request_full", "{detail}")
FILE_EXISTS = Error(409, "file_exists", "{detail}")
UPLOAD_CONFLICT = Error(409, "upload_conflict", "{detail}")
PARTS_REFUSED = Error(409, "parts_refused", "{detail}")
LINK_EXPIRED = Error(410, "link_expired", "this link has expired")
LINK_USED_UP = Error(410, "link_used_up", "{detail}")
FILE_CHANGED = Error(410, "file_changed", "{detail}")
UPLOAD_EXPIRED = Error(410, "upload_expired", "{detail}")
UNSUPPORTED_TUS_VERSION = Error(412, "unsupported_tus_version", "send Tus-Resumable: {version}")
FILE_TOO_LARGE = Error(413, "file_too_large", "the file is larger than the limit of {limit}")
UPLOAD_TOO_LARGE = Error(413, "upload_too_large", "{detail}")
QUOTA_EXCEEDED = Error(413, "quota_exceeded", "{detail}")
PAYLOAD_TOO_LARGE = Error(413, "payload_too_large", "{detail}")
UNSUPPORTED_MEDIA_TYPE = Error(415, "unsupported_media_type", "send {expected}")
NOT_AN_IMAGE = Error(415, "not_an_image", "{detail}")
RANGE_NOT_SATISFIABLE = Error(416, "range_not_satisfiable", "{detail}")
EXPECTATION_FAILED = Error(417, "expectation_failed", "unknown Expect: {expect}")
IMAGE_TOO_LARGE = Error(422, "image_too_large", "{detail}")
UPLOAD_LOCKED = Error(423, "upload_locked", "{detail}", _RETRY)
TOO_MANY_UPLOADS = Error(429, "too_many_uploads", "{detail}", _RETRY)
LINK_BLOCKED = Error(429, "link_blocked", "{detail}")
CHECKSUM_MISMATCH_ERROR = Error(CHECKSUM_MISMATCH, "checksum_mismatch", "{detail}")
INTERNAL_ERROR = Error(500, "internal_error", "internal server error")
STORAGE_ERROR = Error(502, "storage_error", "{detail}")
BUSY = Error(503, "busy", "{detail}", _RETRY)
STORAGE_UNAVAILABLE = Error(503, "storage_unavailable", "{detail}", _RETRY)
NOT_READY = Error(503, "not_ready", "{detail}")
# HOOK_URL refused the upload: the status is the hook's own 4xx (403 here is only the default).
HOOK_REFUSED = Error(403, "hook_refused", "{detail}")
# HOOK_URL did not answer usably in time, and HOOK_FAIL_OPEN is off.
HOOK_UNAVAILABLE = Error(503, "hook_unavailable", "{detail}", _RETRY)
# The provider's keys or the auth callback could not be had: refused, never let through.
AUTH_UNAVAILABLE = Error(503, "auth_unavailable", "{detail}", _RETRY)

# Every entry, by code.
CATALOGUE: dict[str, Error] = {entry.code: entry for entry in globals().values() if isinstance(entry, Error)}

# Storage errors, as catalogue entries. The first match wins.
STORAGE_ERRORS: dict[type[Exception], Error] = {
    storage.InvalidName: INVALID_NAME,
    storage.FileNotFound: NOT_FOUND,
    storage.RangeNotSatisfiable: RANGE_NOT_SATISFIABLE,
    storage.TooManyUploads: TOO_MANY_UPLOADS,
    storage.TooLarge: UPLOAD_TOO_LARGE,
    storage.QuotaExceeded: QUOTA_EXCEEDED,
    storage.UploadNotFound: NOT_FOUND,
    storage.UploadExpired: UPLOAD_EXPIRED,
    storage.OffsetMismatch: OFFSET_MISMATCH,
    storage.LengthConflict: LENGTH_CONFLICT,
    storage.ChecksumMismatch: CHECKSUM_MISMATCH_ERROR,
    storage.ConcatInvalid: INVALID_CONCAT,
    storage.ConcatUnfinished: UPLOAD_NOT_FINISHED,
    storage.FinalUpload: MODIFY_FINAL,
    storage.NotAnImage: NOT_AN_IMAGE,
    storage.ImageTooLarge: IMAGE_TOO_LARGE,
    storage.FileChanged: FILE_CHANGED,
    storage.LinkNotFound: NOT_FOUND,
    storage.LinkExpired: LINK_EXPIRED,
    storage.LinkUsedUp: LINK_USED_UP,
    storage.PasswordRequired: PASSWORD_REQUIRED,
    storage.LinkBlocked: LINK_BLOCKED,
    storage.RequestFull: REQUEST_FULL,
    storage.FileExists: FILE_EXISTS,
    storage.UploadLocked: UPLOAD_LOCKED,
    storage.UploadConflict: UPLOAD_CONFLICT,
    storage.DirectPartsRefused: PARTS_REFUSED,
    storage.PreconditionFailed: UPLOAD_CONFLICT,
    storage.PartsChanged: UPLOAD_CONFLICT,
    storage.StorageBusy: BUSY,
    storage.StorageUnavailable: STORAGE_UNAVAILABLE,
    storage.StorageError: STORAGE_ERROR,
}

# The router's own refusals (and aiohttp's), as catalogue entries.
_HTTP_ERRORS = {
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: PAYLOAD_TOO_LARGE,
    417: EXPECTATION_FAILED,
}


def as_api_error(exc: Exception) -> ApiError:
    """The ApiError for `exc`; anything unforeseen becomes a bare 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HookRefused):
        return ApiError(exc.status, HOOK_REFUSED.code, exc.message)
    if isinstance(exc, HookUnavailable):
        return HOOK_UNAVAILABLE(detail=exc)
    for kind, entry in STORAGE_ERRORS.items():
        if isinstance(exc, kind):
            error = entry(detail=exc)
            if isinstance(exc, storage.RangeNotSatisfiable):
                error.headers["Content-Range"] = f"bytes */{exc.size}"
            if isinstance(exc, storage.LinkBlocked):
                error.headers["Retry-After"] = str(max(1, round(exc.seconds)))
            return error
    if isinstance(exc, web.HTTPException):
        # The router's own 404 and 405, and any other aiohttp refusal.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        known = _HTTP_ERRORS.get(exc.status)
        code = known.code if known else exc.reason.lower().replace(" ", "_")
        return ApiError(exc.status, code, exc.reason, headers)
    return INTERNAL_ERROR()


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
