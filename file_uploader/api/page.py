"""The web page: `GET /` and its static files, shipped inside the package (no build step).

The page is a plain client of the /api endpoints; it holds no server-side state.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).with_name("static")
# The page runs only its own script and style files: no inline script or style, no eval;
# images it fetches with the token header become blob: URLs; nobody may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The page is small and changes with each release: revalidate rather than cache.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)
