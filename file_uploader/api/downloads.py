"""Sending a file, by any route that serves one: /api/files, share links, public links.

`serve` is a GET of one file: `?thumbnail=<size>`, `?inline=1` and the Content-Disposition
rules, Range, If-Match for a link pinned to a version, or DIRECT_DOWNLOADS' redirect to S3.
`send_zip` streams a folder as one zip. Both write through `send`, which cuts off a client
that stops reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
from collections.abc import AsyncIterable, Awaitable, Callable
from email.utils import format_datetime

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE
from ..ops import metrics
from ..storage.files import Download, ObjectInfo
from ..storage.thumbnails import THUMBNAIL_FORMATS, THUMBNAIL_SIZES
from .errors import FILE_CHANGED, INVALID_FORMAT, INVALID_THUMBNAIL, ApiError, ClientGone
from .names import content_type
from .params import flag

# One satisfiable form of Range: a single `bytes=first-last`, `first-` or `-suffix`.
# Anything else (several ranges, other units, numbers longer than any file size) is
# ignored and the whole file is sent, as RFC 9110 allows.
_RANGE_RE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")

# What `?inline=1` may show in the browser: media a browser renders without running the
# file's own code. Everything else, and always the active types below, is an attachment.
INLINE_PREFIXES = ("image/", "audio/", "video/")
INLINE_TYPES = frozenset({"application/pdf", "text/plain"})
# Types that run script or pull in other documents when opened as a page: HTML, SVG, XML.
ACTIVE_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)

ZIP_TYPE = "application/zip"

BeforeSend = Callable[[], Awaitable[None]]


def file_headers(name: str, info: ObjectInfo) -> dict[str, str]:
    """What a GET or HEAD of a file answers with, whatever the route."""
    return {
        hdrs.CONTENT_TYPE: content_type(name),
        hdrs.ETAG: info.etag,
        hdrs.LAST_MODIFIED: format_datetime(info.last_modified, usegmt=True),
        hdrs.ACCEPT_RANGES: "bytes",
        # A browser must take the type as given: never sniff a text file into HTML.
        "X-Content-Type-Options": "nosniff",
    }


def may_be_inline(kind: str) -> bool:
    if kind in ACTIVE_TYPES or kind.endswith("+xml"):
        return False
    return kind in INLINE_TYPES or kind.startswith(INLINE_PREFIXES)


def content_disposition(name: str, *, inline: bool = False) -> str:
    """`attachment` (or `inline`) with an ASCII fallback and the exact UTF-8 name (RFC 6266, RFC 8187)."""
    base = name.rsplit("/", 1)[-1]
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in base)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(base, safe='')}"


def _thumbnail_size(request: web.Request) -> int | None:
    value = request.query.get("thumbnail")
    if value is None:
        return None
    if not value.isdigit() or int(value) not in THUMBNAIL_SIZES:
        sizes = ", ".join(map(str, THUMBNAIL_SIZES))
        raise INVALID_THUMBNAIL(sizes=sizes)
    return int(value)


def _thumbnail_format(request: web.Request) -> str:
    """WebP for a client that says it takes it (every browser does), else JPEG."""
    return "webp" if "image/webp" in request.headers.get(hdrs.ACCEPT, "") else "jpeg"


async def serve(
    request: web.Request,
    key: str,
    name: str,
    *,
    if_match: str | None = None,
    before_send: BeforeSend | None = None,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """GET of a file by any route: its thumbnail with `?thumbnail=`, else its bytes, as an
    attachment unless `?inline=1` asks for one of the types a browser may show.

    `before_send`: called once the file is found, before anything of it is sent, and may refuse
    by raising (a share link takes one of its downloads there)."""
    size = _thumbnail_size(request)
    if size is None:
        inline = flag(request.query.get("inline"), "inline") and may_be_inline(content_type(name))
        if request.app[SETTINGS].direct_downloads:
            await _redirect(request, key, name, inline, if_match, before_send)
        disposition = {"Content-Disposition": content_disposition(name, inline=inline), **(headers or {})}
        return await send_file(
            request, key, name, if_match=if_match, headers=disposition, before_send=before_send
        )
    if before_send is not None:
        await before_send()
    image_format = _thumbnail_format(request)
    thumb, etag = await request.app[STORAGE].thumbnails.get(key, size, image_format, version=if_match)
    await request.app[STORAGE].files.check_live(key, etag)  # an expired file shows nothing
    base = name.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "thumbnail"
    return web.Response(
        body=thumb,
        headers={
            hdrs.CONTENT_TYPE: THUMBNAIL_FORMATS[image_format],
            hdrs.ETAG: f'"{etag.strip(chr(34))}-{size}-{image_format}"',
            hdrs.CONTENT_DISPOSITION: content_disposition(f"{base}.{size}.{image_format}", inline=True),
            hdrs.VARY: "Accept",
            hdrs.CACHE_CONTROL: "no-cache",
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        },
    )


def _changed() -> ApiError:
    return FILE_CHANGED(detail="the file was replaced after this link was made")


def _byte_range(request: web.Request) -> str | None:
    value = request.headers.get(hdrs.RANGE, "").strip()
    match = _RANGE_RE.fullmatch(value)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first and last and int(first) > int(last):
        return None  # unsatisfiable syntax: RFC 9110 says ignore the header
    return value


async def send(request: web.Request, response: web.StreamResponse, data: bytes | None = None) -> None:
    """Write `data` (None: the end of the body), or raise ClientGone.

    A client that takes no bytes for CLIENT_TIMEOUT is cut off: otherwise it
    could hold its response, and for a download one of the S3 connections set
    aside for downloads, for as long as it liked.
    """
    try:
        async with asyncio.timeout(request.app[SETTINGS].client_timeout):
            if data is None:
                await response.write_eof()
            else:
                await response.write(data)
    except TimeoutError:
        metrics.CLIENTS_CUT_OFF.labels("send_timeout").inc()
        raise ClientGone("send_timeout", response) from None
    except ConnectionError:
        raise ClientGone("disconnected", response) from None


async def _send_body(
    request: web.Request, response: web.StreamResponse, chunks: AsyncIterable[bytes]
) -> None:
    """Send a file's (or a zip's) chunks and the end of the body, counting the bytes that went out,
    a download cut short included."""
    sent = 0
    try:
        async for chunk in chunks:
            await send(request, response, chunk)
            sent += len(chunk)
    finally:
        metrics.DOWNLOADED_BYTES.inc(sent)
    await send(request, response)


def zip_format(request: web.Request) -> None:
    """A folder is downloaded as a zip: `?format=zip`, said so that a later format can be added."""
    if request.query.get("format") != "zip":
        raise INVALID_FORMAT()


async def send_zip(
    request: web.Request,
    uid: str,
    folder: str,
    *,
    before_send: BeforeSend | None = None,
    headers: dict[str, str] | None = None,
    selection: list[str] | None = None,
) -> web.StreamResponse:
    """Stream the zip of the user's `folder` (storage/zips.py) as the response: 404 for a folder
    with nothing in it; `selection`: only these names in it (`?name=` repeated, files or
    sub-folders), 404 for one that is not there; `before_send` as for `serve`. Its length is
    not known in advance, so it goes out chunked; a failure midway cuts the connection (the
    zip is then visibly broken)."""
    zips = request.app[STORAGE].zips
    members = await zips.members(uid, folder, selection)
    if before_send is not None:
        await before_send()
    base = folder.rstrip("/").rsplit("/", 1)[-1] + ".zip"
    response = web.StreamResponse(
        headers={
            hdrs.CONTENT_TYPE: ZIP_TYPE,
            hdrs.CONTENT_DISPOSITION: content_disposition(base),
            "X-Content-Type-Options": "nosniff",
            **(headers or {}),
        }
    )
    await response.prepare(request)
    async with contextlib.aclosing(zips.folder(uid, folder, members)) as chunks:
        await _send_body(request, response, chunks)
    return response


async def _redirect(
    request: web.Request,
    key: str,
    name: str,
    inline: bool,
    if_match: str | None,
    before_send: BeforeSend | None,
) -> None:
    """DIRECT_DOWNLOADS: a 302 to a short-lived presigned GET, which S3 answers with the headers
    the gateway would have sent. The file is looked at first (there, not expired, and for a link
    pinned to a version, that version); `before_send` runs as for a streamed download. A file
    replaced in the seconds between this look and the client's GET is sent in its new version: a
    presigned URL cannot carry If-Match for a browser to send."""
    info = await request.app[STORAGE].files.stat(key)
    if if_match is not None and info.etag != if_match:
        raise _changed()
    if before_send is not None:
        await before_send()
    url = await request.app[STORAGE].direct.download_url(
        key, content_disposition(name, inline=inline), content_type(name)
    )
    raise web.HTTPFound(url, headers={hdrs.CACHE_CONTROL: "no-store"})


async def send_file(
    request: web.Request,
    key: str,
    name: str,
    *,
    if_match: str | None = None,
    headers: dict[str, str] | None = None,
    before_send: BeforeSend | None = None,
) -> web.StreamResponse:
    """Stream the object at `key` (or the request's Range of it) as the response.

    `if_match`: the ETag the object must still have; checked on the object
    actually opened, so a file replaced at any moment is never sent in its place.
    """
    download: Download
    async with await request.app[STORAGE].files.open(key, _byte_range(request)) as download:
        if if_match is not None and download.info.etag != if_match:
            raise _changed()
        if before_send is not None:
            await before_send()
        response = web.StreamResponse(headers={**file_headers(name, download.info), **(headers or {})})
        if download.content_range:
            response.set_status(206)
            response.headers[hdrs.CONTENT_RANGE] = download.content_range
        response.content_length = download.length
        await response.prepare(request)
        await _send_body(request, response, download.chunks())
    return response
