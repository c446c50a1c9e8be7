"""The public library: `GET /api/public` lists every user's public files, `GET /p/{id}` serves one.

Neither needs a token. A public file is named by its library id only
(storage/library.py): nothing in the listing or the URL says whose it is, not
even the one-way user id, so two files cannot be told to have one owner. The
listing shows a file's last name segment, not the folders its owner keeps it in.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..appkeys import STORAGE
from ..storage.library import Entry, is_library_id
from .downloads import serve
from .errors import INVALID_CURSOR, INVALID_LIMIT
from .files import public_url
from .names import content_type

PUBLIC = "/api/public"
DEFAULT_PAGE = 50
MAX_PAGE = 100  # each entry is one small GetObject: a page is read at most 16 at a time


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_PAGE))
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise INVALID_LIMIT(maximum=MAX_PAGE)
    return int(text)


def _item(request: web.Request, entry: Entry) -> dict[str, object]:
    return {
        "id": entry.id,
        "name": entry.name.rsplit("/", 1)[-1],
        "size": entry.size,
        "type": content_type(entry.name),
        "modified": entry.modified,
        "published": entry.published,
        "url": public_url(request, entry.id),
    }


async def list_public(request: web.Request) -> web.Response:
    """A page of the library, newest first: `{"files": [...], "next": <id> | null}`."""
    after = request.query.get("after") or None
    if after is not None and not is_library_id(after):
        raise INVALID_CURSOR()
    entries, next_id = await request.app[STORAGE].library.page(after=after, limit=_limit(request))
    # A page read is kept for a moment (library.py): an entry that expired meanwhile is left out here.
    now = time.time()
    live = [entry for entry in entries if entry.expires is None or now < entry.expires]
    return web.json_response({"files": [_item(request, entry) for entry in live], "next": next_id})


async def serve_public(request: web.Request) -> web.StreamResponse:
    """A public file, as /api/files/{name} serves it: Range, ETag, ?thumbnail=, ?inline=1."""
    entry = await request.app[STORAGE].library.entry(request.match_info["id"])
    return await serve(request, entry.key, entry.name, if_match=entry.etag)
