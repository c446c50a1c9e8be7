"""The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload) beside tus.

Apple's URLSession (iOS 17+, macOS 14+) speaks it. A request is the draft's
when it carries `Upload-Draft-Interop-Version` with a version this module
knows (INTEROP_VERSIONS: 6 for draft -05, 7 for -06 to -08, 8 from -09 to the
current one; what the clients built on them send); anything else on the same
routes is tus (tus.py). The draft allows a 104 only for a version the server
implements: another version gets tus's answers and no 104. Both
share the store (storage/tus/): one upload, one record in S3, so an upload
created by either may be resumed by either.

    POST   /api/uploads/        create: the file name is Content-Disposition's filename; the body
                                is the first bytes; Upload-Complete: ?1 says they are all of them.
                                A 104 Upload Resumption Supported (Location) goes out before the
                                body is read (HTTP/1.1), then 201 with Location.
    HEAD   /api/uploads/{id}    offset retrieval: 204, Upload-Offset, Upload-Complete
    PATCH  /api/uploads/{id}    append at Upload-Offset (Content-Type application/partial-upload);
                                Upload-Complete: ?1 on the request that ends the file
    DELETE /api/uploads/{id}    cancel: 204
    OPTIONS                     Upload-Limit (max-size) besides tus's discovery headers

The file's length is Upload-Length where sent, else the Content-Length of
the request that says Upload-Complete: ?1, else the offset that request ends
at. Errors are the gateway's JSON errors (an offset that does not match: 409
with the upload's Upload-Offset).
"""

from __future__ import annotations

import email.message
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..storage.errors import InvalidName, OffsetMismatch, QuotaExceeded, TooLarge
from ..storage.keys import file_key
from ..storage.tus import Upload
from . import hooked
from .auth import authenticate
from .body import ExpectHandler, expect_body, read_body
from .errors import (
    INVALID_HEADER,
    MISSING_OFFSET,
    UNSUPPORTED_MEDIA_TYPE,
    as_api_error,
)
from .proxies import absolute_url
from .tus import header_number, upload_of

INTEROP = "Upload-Draft-Interop-Version"
INTEROP_VERSIONS = ("6", "7", "8")
PARTIAL_UPLOAD = "application/partial-upload"
# tus's media type is taken too on PATCH: a client between the two should not fail on it.
_APPEND_TYPES = (PARTIAL_UPLOAD, "application/offset+octet-stream")
UPLOADS = "/api/uploads"
# What the blocking hooks (HOOK_URL) are told an upload of the draft is: its `upload` field.
DRAFT = "draft"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def speaks_draft(request: web.Request) -> bool:
    return request.headers.get(INTEROP, "").strip() in INTEROP_VERSIONS


def either(tus: Handler, draft: Handler) -> Handler:
    """The route's handler: the draft's for a request of the draft, else tus's."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return await (draft if speaks_draft(request) else tus)(request)

    return handler


def _version(request: web.Request) -> dict[str, str]:
    return {INTEROP: request.headers[INTEROP].strip()}


def draft_route(handler: Handler) -> Handler:
    """Put Upload-Draft-Interop-Version on every answer, errors included."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Exception as exc:
            error = as_api_error(exc)
            if error.status == 500:
                raise
            error.headers.update(_version(request))
            if isinstance(exc, OffsetMismatch):
                error.headers["Upload-Offset"] = str(exc.offset)
            raise error from exc
        response.headers.update(_version(request))
        return response

    return wrapper


def _complete(request: web.Request) -> bool:
    """Upload-Complete, a structured-field boolean: ?1 (the request ends the file) or ?0."""
    value = request.headers.get("Upload-Complete", "?0").strip()
    if value not in ("?0", "?1"):
        raise INVALID_HEADER(header="Upload-Complete")
    return value == "?1"


def _file_name(request: web.Request) -> str:
    """Content-Disposition's filename (RFC 6266; filename* too), as tusd takes it."""
    header = request.headers.get(hdrs.CONTENT_DISPOSITION, "")
    message = email.message.Message()
    message[hdrs.CONTENT_DISPOSITION] = header
    name = message.get_filename()
    if not name:
        raise InvalidName('send the file name as Content-Disposition: attachment; filename="..."')
    return name


def _declared_length(request: web.Request, offset: int) -> int | None:
    """The file's length as this request tells it: Upload-Length, or with Upload-Complete: ?1
    where the request's body ends (Content-Length); None while not known."""
    length = header_number(request, "Upload-Length")
    if length is None and _complete(request) and request.content_length is not None:
        length = offset + request.content_length
    return length


def _state(request: web.Request, upload: Upload) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Complete": "?1" if upload.done else "?0",
        "Upload-Limit": f"max-size={request.app[SETTINGS].max_file_size}",
    }
    if upload.length is not None:
        headers["Upload-Length"] = str(upload.length)
    return headers


async def _append(request: web.Request, upload: Upload, offset: int) -> Upload:
    """The request's body appended at `offset`; with Upload-Complete: ?1, the file ends with it."""
    resumable = request.app[STORAGE].resumable
    length = _declared_length(request, offset)
    if length is not None and upload.length is not None and length == upload.length:
        length = None  # already known: nothing to declare
    size = request.content_length
    end = length if length is not None else upload.length
    if size is not None and end is not None and offset + size > end:
        raise TooLarge(f"the upload ends at byte {end}")
    most = upload.limit(request.app[SETTINGS].max_file_size)
    finish = hooked.pre_finish(request, upload.name, DRAFT)
    upload = await resumable.appender.append(
        upload, offset, read_body(request, most), now=time.time(), length=length, finish=finish
    )
    if _complete(request) and not upload.done:
        # The body had no Content-Length: the file ends where it did.
        end = upload.offset
        upload = await resumable.appender.append(
            upload, end, _empty(), now=time.time(), length=end, finish=finish
        )
    return upload


async def _empty() -> AsyncGenerator[bytes]:
    return
    yield b""  # an async generator that yields nothing


async def _send_104(request: web.Request, location: str) -> None:
    """104 Upload Resumption Supported, before the body is read: the client learns where to resume
    should this request be cut off. HTTP/1.1 only (aiohttp writes no informational response of
    its own but 100 Continue)."""
    if request.version < (1, 1) or request.writer is None:
        return
    head = (
        "HTTP/1.1 104 Upload Resumption Supported\r\n"
        f"{INTEROP}: {request.headers[INTEROP].strip()}\r\n"
        f"Location: {location}\r\n"
        f"Upload-Limit: max-size={request.app[SETTINGS].max_file_size}\r\n\r\n"
    )
    await request.writer.write(head.encode("latin-1"))
    # As after a 100 Continue (body.py): the response proper has not started, so an error found
    # while reading or storing the body is still answered with its JSON, not a cut connection.
    request.writer.output_size = 0


@draft_route
async def create(request: web.Request) -> web.Response:
    name = _file_name(request)
    length = _declared_length(request, 0)
    verdict = await hooked.pre_create(request, name, length, DRAFT)
    resumable = request.app[STORAGE].resumable
    upload = await resumable.create(
        request[USER_ID],
        name,
        length,
        "",
        time.time(),
        max_size=verdict.max_size,
        finish=hooked.pre_finish(request, name, DRAFT),
    )
    location = absolute_url(request, f"{UPLOADS}/{upload.id}")
    await _send_104(request, location)
    if request.body_exists or _complete(request):
        try:
            upload = await _append(request, upload, 0)
        except (TooLarge, QuotaExceeded):
            # Refused, not cut off: the client gets no Location to resume, so nothing is left.
            await resumable.terminate(upload)
            raise
    return web.Response(status=201, headers={hdrs.LOCATION: location, **_state(request, upload)})


@draft_route
async def head(request: web.Request) -> web.Response:
    upload = await upload_of(request)
    return web.Response(status=204, headers={**_state(request, upload), hdrs.CACHE_CONTROL: "no-store"})


@draft_route
async def patch(request: web.Request) -> web.Response:
    if request.content_type not in _APPEND_TYPES:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {PARTIAL_UPLOAD}")
    offset = header_number(request, "Upload-Offset")
    if offset is None:
        raise MISSING_OFFSET()
    upload = await _append(request, await upload_of(request), offset)
    return web.Response(status=204, headers=_state(request, upload))


@draft_route
async def cancel(request: web.Request) -> web.Response:
    await request.app[STORAGE].resumable.terminate(await upload_of(request))
    return web.Response(status=204)


async def check_body(request: web.Request) -> None:
    """What a request of the draft with a body refuses before reading it: token, upload slots,
    and for a creation of known length, a file that cannot fit in the user's quota."""
    await authenticate(request)
    key = length = name = None
    if request.method == hdrs.METH_POST:
        length = _declared_length(request, 0)
        try:
            name = _file_name(request)
        except InvalidName:
            pass  # the creation is refused anyway
        if length is not None and name is not None:
            key = file_key(request[USER_ID], name)
    await request.app[STORAGE].admit(request[USER_ID], key, length)
    if name is not None:
        await hooked.pre_create(request, name, length, DRAFT)


def options(tus_options: Handler) -> Handler:
    """OPTIONS discovery: tus's answer, and for the draft its Upload-Limit (the largest file)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = await tus_options(request)
        if speaks_draft(request):
            response.headers["Upload-Limit"] = f"max-size={request.app[SETTINGS].max_file_size}"
            response.headers.update(_version(request))
        return response

    return handler


expect_body_of_draft = expect_body(check_body)


def expect_either(tus_expect: ExpectHandler) -> ExpectHandler:
    """The route's expect handler: the draft's checks for a request of the draft, else tus's."""

    async def expect(request: web.Request) -> web.StreamResponse | None:
        return await (expect_body_of_draft if speaks_draft(request) else tus_expect)(request)

    return expect
