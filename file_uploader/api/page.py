"""The web page: `GET /` and its static files, shipped inside the package (no build step).

The page is a plain client of the /api endpoints; it holds no server-side state.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from .headers import PAGE_POLICY
from .sign_in import page_policy

STATIC = Path(__file__).with_name("static")
# Also what the plain form's answer page (forms.py) is sent with.
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    # The page is small and changes with each release: revalidate rather than cache.
    "Cache-Control": "no-cache",
}


async def index(request: web.Request) -> web.FileResponse:
    policy = await page_policy(request)  # with sign-in (AUTH_ISSUER), the provider's token endpoint too
    return web.FileResponse(
        STATIC / "index.html", headers={**PAGE_HEADERS, "Content-Security-Policy": policy}
    )
