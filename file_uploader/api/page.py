"""The web page: `GET /` and its static files, shipped inside the package (no build step).

The page is a plain client of the /api endpoints; it holds no server-side state.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
# The page is small and changes with each release: revalidate rather than cache.
_NO_STALE = {"Cache-Control": "no-cache"}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=_NO_STALE)
