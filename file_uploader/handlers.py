"""The /api/files routes: each validates, calls one storage method, shapes the reply."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import urllib.parse
from collections.abc import AsyncIterator
from email.utils import format_datetime

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from .auth import authenticate
from .errors import ApiError, as_api_error, error_response
from .integrity import expected_digests, verified
from .keys import InvalidName, file_key, user_prefix
from .limits import UPLOADS
from .settings import Settings
from .storage import Download, ObjectInfo
from .typedefs import SETTINGS, STORAGE, USER_ID

FILES = "/api/files"
# [\s\S] rather than ".": a newline must reach the name check (and be refused there).
FILE = r"/api/files/{name:[\s\S]+}"

# One satisfiable form of Range: a single `bytes=first-last`, `first-` or `-suffix`.
# Anything else (several ranges, other units) is ignored and the whole file is
# sent, as RFC 9110 allows.
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def _name(request: web.Request) -> str:
    """The file name, percent-decoded by us from the raw path.

    Decoding strictly as UTF-8 lets an undecodable escape such as `%FF` be
    refused instead of surviving as the literal text `%FF`, which would make
    two different URLs name one file. `+` is a plain character in a path.
    """
    raw = request.raw_path.split("?", 1)[0].split("/", 3)[3]  # after /api/files/
    try:
        return urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidName("the file name is not valid UTF-8") from None


def _key(request: web.Request) -> str:
    return file_key(request[USER_ID], _name(request))


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _declared_length(request: web.Request, settings: Settings) -> int | None:
    """The body's length if the client declared it (None for chunked), within MAX_FILE_SIZE."""
    length = request.content_length
    if length is None:
        return None if request.body_exists else 0
    if length > settings.max_file_size:
        raise ApiError(
            413, "file_too_large", f"the file is larger than the limit of {settings.max_file_size} bytes"
        )
    return length


async def read_body(request: web.Request, settings: Settings) -> AsyncIterator[bytes]:
    """The request body as it arrives, held to MAX_FILE_SIZE and BODY_READ_TIMEOUT."""
    content = request.content
    limit = settings.max_file_size
    total = 0
    while True:
        try:
            async with asyncio.timeout(settings.body_read_timeout):
                # readchunk hands over aiohttp's buffers as received, without
                # joining them into a new bytes object first.
                chunk, _ = await content.readchunk()
        except TimeoutError:
            raise ApiError(
                408, "body_timeout", f"no data arrived for {settings.body_read_timeout:g} seconds"
            ) from None
        except Exception as exc:  # what aiohttp raises for a connection lost midway
            raise ApiError(
                400, "incomplete_body", "the connection ended before the whole body arrived"
            ) from exc
        if not chunk:
            # An empty read is either the end of one HTTP chunk or the end of
            # the body; ask the stream which. (aiohttp's shared empty-body
            # reader answers (b"", True) to everyone after its first use, so
            # the flag alone would loop forever.)
            if content.at_eof():
                return
            continue
        total += len(chunk)
        if total > limit:
            raise ApiError(413, "file_too_large", f"the file is larger than the limit of {limit} bytes")
        yield chunk


def _file_headers(name: str, info: ObjectInfo) -> dict[str, str]:
    return {
        hdrs.CONTENT_TYPE: _content_type(name),
        hdrs.ETAG: info.etag,
        hdrs.LAST_MODIFIED: format_datetime(info.last_modified, usegmt=True),
        hdrs.ACCEPT_RANGES: "bytes",
    }


def _byte_range(request: web.Request) -> str | None:
    value = request.headers.get(hdrs.RANGE, "").strip()
    match = _RANGE_RE.fullmatch(value)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first and last and int(first) > int(last):
        return None  # unsatisfiable syntax: RFC 9110 says ignore the header
    return value


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue` only for an upload that will be accepted.

    aiohttp calls this before any middleware, so it runs the same checks the
    middleware and the PUT handler do; a refusal goes out before the client
    sends a byte of the body.
    """
    try:
        authenticate(request)
        _key(request)
        _declared_length(request, request.app[SETTINGS])
        expected_digests(request.headers)
        request.app[UPLOADS].check(request[USER_ID])
    except Exception as exc:
        response = error_response(as_api_error(exc))
        response.force_close()
        return response
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        response = error_response(ApiError(417, "expectation_failed", f"unknown Expect: {expect}"))
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # as aiohttp's own handler: the response has not started
    return None


async def _detailed(pages: AsyncIterator[list[tuple[str, ObjectInfo]]]) -> AsyncIterator[list[dict]]:
    async for page in pages:
        yield [
            {
                "name": name,
                "size": info.size,
                "modified": info.last_modified.isoformat().replace("+00:00", "Z"),
            }
            for name, info in page
        ]


async def list_files(request: web.Request) -> web.StreamResponse:
    """A JSON array of the user's names, streamed a listing page at a time.

    With `?details=1`, each item is an object: name, size, modified (ISO 8601 UTC).
    """
    prefix = user_prefix(request[USER_ID])
    pages: AsyncIterator[list]
    if request.query.get("details", "") in ("1", "true", "yes"):
        pages = _detailed(request.app[STORAGE].list_entries(prefix))
    else:
        pages = request.app[STORAGE].list_names(prefix)
    # The first page is fetched before the status line goes out, so that an S3
    # failure at the start is still a proper JSON error.
    first = await anext(pages)
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json; charset=utf-8"})
    await response.prepare(request)
    separator = ""
    await response.write(b"[")
    page: list | None = first
    while page is not None:
        if page:
            text = separator + ", ".join(json.dumps(name, ensure_ascii=False) for name in page)
            await response.write(text.encode())
            separator = ", "
        page = await anext(pages, None)
    await response.write(b"]")
    await response.write_eof()
    return response


async def put_file(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    key = _key(request)
    size = _declared_length(request, settings)
    body = verified(read_body(request, settings), expected_digests(request.headers))
    with request.app[UPLOADS].hold(request[USER_ID]):
        await request.app[STORAGE].put(key, body, size=size, content_type=_content_type(_name(request)))
    return web.Response(status=204)


async def head_file(request: web.Request) -> web.StreamResponse:
    info = await request.app[STORAGE].stat(_key(request))
    response = web.StreamResponse(headers=_file_headers(_name(request), info))
    response.content_length = info.size
    return response


async def get_file(request: web.Request) -> web.StreamResponse:
    return await send_file(request, _key(request), _name(request))


async def send_file(
    request: web.Request,
    key: str,
    name: str,
    *,
    if_match: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Stream the object at `key` (or the request's Range of it) as the response.

    `if_match`: the ETag the object must still have; checked on the object
    actually opened, so a file replaced at any moment is never sent in its place.
    """
    download: Download
    async with await request.app[STORAGE].open(key, _byte_range(request)) as download:
        if if_match is not None and download.info.etag != if_match:
            raise ApiError(410, "file_changed", "the file was replaced after this link was made")
        response = web.StreamResponse(headers={**_file_headers(name, download.info), **(headers or {})})
        if download.content_range:
            response.set_status(206)
            response.headers[hdrs.CONTENT_RANGE] = download.content_range
        response.content_length = download.length
        await response.prepare(request)
        async for chunk in download.chunks():
            await response.write(chunk)
        await response.write_eof()
    return response


async def delete_file(request: web.Request) -> web.Response:
    await request.app[STORAGE].delete(_key(request))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get(FILES, list_files, allow_head=False)
    app.router.add_put(FILE, put_file, expect_handler=expect_upload)
    app.router.add_get(FILE, get_file, allow_head=False)
    app.router.add_head(FILE, head_file)
    app.router.add_delete(FILE, delete_file)
