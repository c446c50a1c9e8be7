"""The /api/files routes: each validates, calls one storage method, shapes the reply."""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import urllib.parse
from collections.abc import AsyncIterator
from email.utils import format_datetime
from typing import Any

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..ops import metrics
from ..storage.errors import InvalidName
from ..storage.files import Download, ObjectInfo
from ..storage.keys import file_key, user_prefix
from .auth import authenticate
from .body import declared_length, expect_body, read_body
from .digests import expected_digests, verified
from .errors import ApiError, ClientGone

FILES = "/api/files"
# [\s\S] rather than ".": a newline must reach the name check (and be refused there).
FILE = r"/api/files/{name:[\s\S]+}"

# One satisfiable form of Range: a single `bytes=first-last`, `first-` or `-suffix`.
# Anything else (several ranges, other units, numbers longer than any file size) is
# ignored and the whole file is sent, as RFC 9110 allows.
_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


def raw_path(request: web.Request) -> str:
    """The request target's path as sent (still percent-encoded), without the query.

    A target may come in absolute form (`PUT http://host/api/files/x`, RFC 9112
    section 3.2.2, what a client talking to a proxy sends): its path is what
    follows the authority. aiohttp routes such a request by that path, but its
    `raw_path` is the whole target.
    """
    target = request.raw_path
    if not target.startswith("/"):
        after_scheme = target.split("://", 1)[-1]
        target = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
    return target.split("?", 1)[0]


def decode_name(request: web.Request, suffix: str = "") -> str:
    """The file name in /api/files/<name><suffix>, percent-decoded by us from the raw path.

    Decoding strictly as UTF-8 lets an undecodable escape such as `%FF` be
    refused instead of surviving as the literal text `%FF`, which would make
    two different URLs name one file. `+` is a plain character in a path.
    """
    raw = raw_path(request).split("/", 3)[3]  # after /api/files/
    if suffix:
        raw = raw[: -len(suffix)]
    try:
        return urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidName("the file name is not valid UTF-8") from None


def _key(request: web.Request) -> str:
    return file_key(request[USER_ID], decode_name(request))


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


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


def _check_upload(request: web.Request) -> None:
    """What PUT refuses before its body: token, name, length, digests, the user's upload slots."""
    authenticate(request)
    _key(request)
    declared_length(request, request.app[SETTINGS])
    expected_digests(request.headers)
    request.app[STORAGE].pipeline.slots.check(request[USER_ID])


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


async def send(request: web.Request, response: web.StreamResponse, data: bytes | None = None) -> None:
    """Write `data` (None: the end of the body), or raise ClientGone.

    A client that takes no bytes for SEND_TIMEOUT is cut off: otherwise it
    could hold its response, and for a download one of the S3 connections set
    aside for downloads, for as long as it liked.
    """
    try:
        async with asyncio.timeout(request.app[SETTINGS].send_timeout):
            if data is None:
                await response.write_eof()
            else:
                await response.write(data)
    except TimeoutError:
        metrics.CLIENTS_CUT_OFF.labels("send_timeout").inc()
        raise ClientGone("send_timeout", response) from None
    except ConnectionError:
        raise ClientGone("disconnected", response) from None


async def _prepend(first: list[Any], rest: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    yield first
    async for item in rest:
        yield item


async def list_files(request: web.Request) -> web.StreamResponse:
    """A JSON array of the user's names, streamed a listing page at a time.

    With `?details=1`, each item is an object: name, size, modified (ISO 8601 UTC).
    """
    files = request.app[STORAGE].files
    prefix = user_prefix(request[USER_ID])
    pages: AsyncIterator[list[Any]]
    if request.query.get("details", "") in ("1", "true", "yes"):
        pages = _detailed(files.list_entries(prefix))
    else:
        pages = files.list_names(prefix)
    # The first page is fetched before the status line goes out, so that an S3
    # failure at the start is still a proper JSON error.
    first = await pages.__anext__()
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: "application/json; charset=utf-8"})
    await response.prepare(request)
    await send(request, response, b"[")
    separator = ""
    async for items in _prepend(first, pages):
        if items:
            text = separator + ", ".join(json.dumps(item, ensure_ascii=False) for item in items)
            await send(request, response, text.encode())
            separator = ", "
    await send(request, response, b"]")
    await send(request, response)
    return response


async def put_file(request: web.Request) -> web.Response:
    name = decode_name(request)
    size = declared_length(request, request.app[SETTINGS])
    body = verified(read_body(request), expected_digests(request.headers))
    await request.app[STORAGE].files.put(
        request[USER_ID], _key(request), body, size=size, content_type=_content_type(name)
    )
    return web.Response(status=204)


async def head_file(request: web.Request) -> web.StreamResponse:
    info = await request.app[STORAGE].files.stat(_key(request))
    response = web.StreamResponse(headers=_file_headers(decode_name(request), info))
    response.content_length = info.size
    return response


async def get_file(request: web.Request) -> web.StreamResponse:
    return await send_file(request, _key(request), decode_name(request))


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
    async with await request.app[STORAGE].files.open(key, _byte_range(request)) as download:
        if if_match is not None and download.info.etag != if_match:
            raise ApiError(410, "file_changed", "the file was replaced after this link was made")
        response = web.StreamResponse(headers={**_file_headers(name, download.info), **(headers or {})})
        if download.content_range:
            response.set_status(206)
            response.headers[hdrs.CONTENT_RANGE] = download.content_range
        response.content_length = download.length
        await response.prepare(request)
        sent = 0
        try:
            async for chunk in download.chunks():
                await send(request, response, chunk)
                sent += len(chunk)
        finally:
            metrics.DOWNLOADED_BYTES.inc(sent)
        await send(request, response)
    return response


async def delete_file(request: web.Request) -> web.Response:
    await request.app[STORAGE].files.delete(_key(request))
    return web.Response(status=204)


expect_upload = expect_body(_check_upload)
