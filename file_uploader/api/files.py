"""The /api/files routes: each validates, calls one storage method, shapes the reply.

Also what every route that serves a file shares (`serve`): `?thumbnail=<size>`,
`?inline=1` and the Content-Disposition rules, for /api/files, share links and
public links alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import format_datetime
from typing import Any

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..formats import FLAG_WORDS, iso8601, parse_flag
from ..ops import metrics
from ..sizes import LIST_PAGE_SIZE
from ..storage import sweep
from ..storage.errors import InvalidName
from ..storage.files import Download, FolderPage, ObjectInfo
from ..storage.keys import MAX_NAME_BYTES, file_key, validate_folder
from ..storage.thumbnails import THUMBNAIL_FORMATS, THUMBNAIL_SIZES
from . import hooked
from .auth import authenticate
from .body import declared_length, expect_body, file_too_large, read_body
from .digests import expected_digests, verified
from .errors import (
    FILE_CHANGED,
    FOLDER_NOT_RECURSIVE,
    INVALID_BODY,
    INVALID_DELIMITER,
    INVALID_EXPIRY,
    INVALID_FLAG,
    INVALID_FORMAT,
    INVALID_LIMIT,
    INVALID_PUBLIC,
    INVALID_THUMBNAIL,
    ApiError,
    ClientGone,
    Error,
)
from .proxies import absolute_url

FILES = "/api/files"
PUBLIC_HEADER = "X-Public"  # on PUT: true puts the file in the public library
EXPIRES_HEADER = "X-Expires-In"  # on PUT: seconds the file lives once stored (a form field, tus metadata)
EXPIRES_FIELD = "expires_in"  # the same, as a form field, tus metadata and PATCH's JSON
# The longest a file may be given to live: ten years, past which "expires" means nothing.
MAX_FILE_EXPIRES_IN = 10 * 365 * 24 * 3600
PUBLIC_FILE = "/p/{id}"
PUBLIC_FILE_NAME = "public_file"  # the route's name, to build public URLs with
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


def content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _file_headers(name: str, info: ObjectInfo) -> dict[str, str]:
    return {
        hdrs.CONTENT_TYPE: content_type(name),
        hdrs.ETAG: info.etag,
        hdrs.LAST_MODIFIED: format_datetime(info.last_modified, usegmt=True),
        hdrs.ACCEPT_RANGES: "bytes",
        # A browser must take the type as given: never sniff a text file into HTML.
        "X-Content-Type-Options": "nosniff",
    }


# What `?inline=1` may show in the browser: media a browser renders without running the
# file's own code. Everything else, and always the active types below, is an attachment.
INLINE_PREFIXES = ("image/", "audio/", "video/")
INLINE_TYPES = frozenset({"application/pdf", "text/plain"})
# Types that run script or pull in other documents when opened as a page: HTML, SVG, XML.
ACTIVE_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
)


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


def flag(value: str | None, what: str, error: Error = INVALID_FLAG) -> bool:
    """A yes or no from the query, a header or a form field, by the one rule (formats.py); absent or
    empty is no; anything else is `error`, a 400."""
    if value is None or not value.strip():
        return False
    try:
        return parse_flag(value)
    except ValueError:
        raise error(what=what, words=FLAG_WORDS) from None


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


BeforeSend = Callable[[], Awaitable[None]]


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


def file_expires_in(value: object) -> int | None:
    """A file's `expires_in` (header or form text, JSON or tus metadata): whole seconds from 1 to
    MAX_FILE_EXPIRES_IN; absent, empty or null: the file keeps (None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seconds: int | None = None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        seconds = int(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = int(value) if value == int(value) else None
        except (ValueError, OverflowError):
            seconds = None
    if seconds is None or not 1 <= seconds <= MAX_FILE_EXPIRES_IN:
        raise INVALID_EXPIRY(maximum=MAX_FILE_EXPIRES_IN)
    return seconds


def public_flag(value: str | None, what: str) -> bool:
    """X-Public, or a form's `public` field (`flag`, with its own error code)."""
    return flag(value, what, INVALID_PUBLIC)


def _byte_range(request: web.Request) -> str | None:
    value = request.headers.get(hdrs.RANGE, "").strip()
    match = _RANGE_RE.fullmatch(value)
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first and last and int(first) > int(last):
        return None  # unsatisfiable syntax: RFC 9110 says ignore the header
    return value


async def _check_upload(request: web.Request) -> None:
    """What PUT refuses before its body: token, name, length, digests, the user's upload slots,
    a declared length that cannot fit in the user's quota."""
    await authenticate(request)
    key = _key(request)
    size = declared_length(request, request.app[SETTINGS])
    expected_digests(request.headers)
    public_flag(request.headers.get(PUBLIC_HEADER), PUBLIC_HEADER)
    file_expires_in(request.headers.get(EXPIRES_HEADER))
    storage = request.app[STORAGE]
    await storage.admit(request[USER_ID], key, size)
    _within(size, hooked.limit(request, await hooked.pre_create(request, decode_name(request), size, "put")))


def _within(size: int | None, most: int) -> None:
    if size is not None and size > most:
        raise file_too_large(most)


async def _detailed(pages: AsyncIterator[list[tuple[str, ObjectInfo]]]) -> AsyncIterator[list[dict]]:
    async for page in pages:
        yield [
            {"name": name, "size": info.size, "modified": iso8601(info.last_modified)} for name, info in page
        ]


async def _names(pages: AsyncIterator[list[tuple[str, ObjectInfo]]]) -> AsyncIterator[list[str]]:
    async for page in pages:
        yield [name for name, _ in page]


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


async def _prepend(first: list[Any], rest: AsyncIterator[list[Any]]) -> AsyncIterator[list[Any]]:
    yield first
    async for item in rest:
        yield item


# The query parameters that ask for one page (an object) rather than the whole array.
_PAGE_PARAMETERS = ("prefix", "delimiter", "after", "limit")


def _page_query(request: web.Request) -> tuple[str, bool, str | None, int]:
    query = request.query
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter")
    if delimiter not in (None, "/"):
        raise INVALID_DELIMITER()
    after = query.get("after") or None
    for value in (prefix, after or ""):
        if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES or not value.isprintable():
            raise InvalidName("prefix and after are file or folder names")
    limit_text = query.get("limit", str(LIST_PAGE_SIZE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= LIST_PAGE_SIZE:
        raise INVALID_LIMIT(maximum=LIST_PAGE_SIZE)
    return prefix, delimiter == "/", after, int(limit_text)


def _page_json(prefix: str, page: FolderPage) -> dict[str, Any]:
    return {
        "prefix": prefix,
        "folders": page.folders,
        "files": [
            {"name": name, "size": info.size, "modified": iso8601(info.last_modified), "public": public}
            for name, info, public in page.files
        ],
        "next": page.next,
    }


async def list_files(request: web.Request) -> web.StreamResponse:
    """A JSON array of the user's names, streamed a listing page at a time.

    With `?details=1`, each item is an object: name, size, modified (ISO 8601 UTC).
    With any of prefix, delimiter=/, after, limit: one page, as an object (`_page_json`).
    """
    files = request.app[STORAGE].files
    if any(name in request.query for name in _PAGE_PARAMETERS):
        prefix, folders, after, limit = _page_query(request)
        page = await files.page(request[USER_ID], prefix, after=after, limit=limit, folders=folders)
        return web.json_response(_page_json(prefix, page))
    pages: AsyncIterator[list[Any]]
    if flag(request.query.get("details"), "details"):
        pages = _detailed(files.list_live(request[USER_ID]))
    else:
        pages = _names(files.list_live(request[USER_ID]))
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
    public = public_flag(request.headers.get(PUBLIC_HEADER), PUBLIC_HEADER)
    expires_in = file_expires_in(request.headers.get(EXPIRES_HEADER))
    most = hooked.limit(request, await hooked.pre_create(request, name, size, "put"))
    _within(size, most)
    body = verified(read_body(request, most), expected_digests(request.headers))
    await request.app[STORAGE].files.put(
        request[USER_ID],
        _key(request),
        body,
        size=size,
        content_type=content_type(name),
        public=public,
        expires_in=expires_in,
        finish=hooked.pre_finish(request, name, "put"),
    )
    return web.Response(status=204)


async def patch_file(request: web.Request) -> web.Response:
    """`{"public": true|false}`: put the file in the public library, or take it out;
    `{"expires_in": N}`: the file is gone N seconds from now (`null`: it keeps). Either or both."""
    example = '{"public": true} or {"expires_in": 86400}'
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not ("public" in body or EXPIRES_FIELD in body):
        raise INVALID_BODY(example=example)
    if "public" in body and not isinstance(body["public"], bool):
        raise INVALID_BODY(example=example)
    expiry = EXPIRES_FIELD in body
    expires_in = file_expires_in(body[EXPIRES_FIELD]) if expiry else None
    if isinstance(body.get(EXPIRES_FIELD), str):  # JSON says 60, not "60"
        raise INVALID_EXPIRY(maximum=MAX_FILE_EXPIRES_IN)
    name = decode_name(request)
    files = request.app[STORAGE].files
    key = _key(request)
    if expiry:
        await files.set_expiry(key, time.time() + expires_in if expires_in is not None else None)
    if "public" in body:
        library_id = await files.set_public(key, body["public"])
    else:
        library_id = await request.app[STORAGE].library.library_id(request[USER_ID], name)
    answer: dict[str, Any] = {"name": name, "public": library_id is not None}
    if library_id is not None:
        answer["url"] = public_url(request, library_id)
    expires = await files.expires(key)
    answer["expires_at"] = iso8601(expires) if expires is not None else None
    return web.json_response(answer)


def public_url(request: web.Request, library_id: str) -> str:
    """The URL that serves a public file to anyone: /p/<library id>, on the public origin."""
    return absolute_url(request, str(request.app.router[PUBLIC_FILE_NAME].url_for(id=library_id)))


async def head_file(request: web.Request) -> web.StreamResponse:
    info = await request.app[STORAGE].files.stat(_key(request))
    response = web.StreamResponse(headers=_file_headers(decode_name(request), info))
    response.content_length = info.size
    return response


async def get_file(request: web.Request) -> web.StreamResponse:
    """A file; or, for a folder (a name ending in /) with `?format=zip`, everything in it as a zip."""
    name = decode_name(request)
    if name.endswith("/"):
        zip_format(request)
        selection = request.query.getall("name", None)
        return await send_zip(request, request[USER_ID], validate_folder(name), selection=selection)
    return await serve(request, _key(request), name)


ZIP_TYPE = "application/zip"


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
    sent = 0
    try:
        async with contextlib.aclosing(zips.folder(uid, folder, members)) as chunks:
            async for chunk in chunks:
                await send(request, response, chunk)
                sent += len(chunk)
    finally:
        metrics.DOWNLOADED_BYTES.inc(sent)
    await send(request, response)
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
    """Delete a file; or, for a name ending in / with `?recursive=1`, everything under it."""
    name = decode_name(request)
    if not name.endswith("/"):
        await request.app[STORAGE].files.delete(_key(request))
        return web.Response(status=204)
    folder = validate_folder(name)
    if not flag(request.query.get("recursive"), "recursive"):
        raise FOLDER_NOT_RECURSIVE()
    deleted = await sweep.delete_folder(request.app[STORAGE], request[USER_ID], folder)
    return web.json_response({"folder": folder, "deleted": deleted.files, "aborted": deleted.aborted})


expect_upload = expect_body(_check_upload)
