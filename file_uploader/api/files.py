"""The /api/files routes but PUT (uploads.py) and POST (forms.py): list, GET, HEAD, DELETE, PATCH.

Each validates, calls one storage method, shapes the reply; what sending a file takes (Range,
thumbnails, inline, zips) is downloads.py's, shared with share and public links.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import hdrs, web

from ..appkeys import STORAGE, USER_ID
from ..formats import iso8601
from ..sizes import LIST_PAGE_SIZE
from ..storage import sweep
from ..storage.errors import InvalidName
from ..storage.files import FolderPage, ObjectInfo
from ..storage.keys import MAX_NAME_BYTES, validate_folder
from .downloads import file_headers, send, send_zip, serve, zip_format
from .errors import FOLDER_NOT_RECURSIVE, INVALID_BODY, INVALID_DELIMITER, INVALID_EXPIRY, INVALID_LIMIT
from .names import decode_name, own_key
from .params import EXPIRES_FIELD, MAX_FILE_EXPIRES_IN, file_expires_in, flag
from .proxies import absolute_url

FILES = "/api/files"
PUBLIC_FILE = "/p/{id}"
PUBLIC_FILE_NAME = "public_file"  # the route's name, to build public URLs with
# [\s\S] rather than ".": a newline must reach the name check (and be refused there).
FILE = r"/api/files/{name:[\s\S]+}"


async def _detailed(pages: AsyncIterator[list[tuple[str, ObjectInfo]]]) -> AsyncIterator[list[dict]]:
    async for page in pages:
        yield [
            {"name": name, "size": info.size, "modified": iso8601(info.last_modified)} for name, info in page
        ]


async def _names(pages: AsyncIterator[list[tuple[str, ObjectInfo]]]) -> AsyncIterator[list[str]]:
    async for page in pages:
        yield [name for name, _ in page]


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
    key = own_key(request)
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
    info = await request.app[STORAGE].files.stat(own_key(request))
    response = web.StreamResponse(headers=file_headers(decode_name(request), info))
    response.content_length = info.size
    return response


async def get_file(request: web.Request) -> web.StreamResponse:
    """A file; or, for a folder (a name ending in /) with `?format=zip`, everything in it as a zip."""
    name = decode_name(request)
    if name.endswith("/"):
        zip_format(request)
        selection = request.query.getall("name", None)
        return await send_zip(request, request[USER_ID], validate_folder(name), selection=selection)
    return await serve(request, own_key(request), name)


async def delete_file(request: web.Request) -> web.Response:
    """Delete a file; or, for a name ending in / with `?recursive=1`, everything under it."""
    name = decode_name(request)
    if not name.endswith("/"):
        await request.app[STORAGE].files.delete(own_key(request))
        return web.Response(status=204)
    folder = validate_folder(name)
    if not flag(request.query.get("recursive"), "recursive"):
        raise FOLDER_NOT_RECURSIVE()
    deleted = await sweep.delete_folder(request.app[STORAGE], request[USER_ID], folder)
    return web.json_response({"folder": folder, "deleted": deleted.files, "aborted": deleted.aborted})
