"""`GET /api/sign-in`: what the web page needs to sign in through the first AUTH_ISSUER.

The page signs in on its own, in the browser (signin.js: the authorization code
flow with PKCE, as a public client): the gateway only tells it where, from the
issuer's discovery document it fetched for the keys anyway, and with which
client id (the first AUTH_AUDIENCE, which the ID tokens the page sends carry as
their `aud`). Without an issuer the answer says so, and the page stays as it
is. The page's Content-Security-Policy lets it reach the token endpoint's
origin, and no other (`page_policy`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from ..appkeys import IDENTITIES, SETTINGS
from ..identity import AuthUnavailable
from .headers import PAGE_POLICY

SIGN_IN = "/api/sign-in"
# The ID token's claims the page shows (who is signed in): profile and email, beside openid.
SCOPE = "openid profile email"


async def sign_in_config(request: web.Request) -> dict[str, Any] | None:
    """The page's sign-in, or None without an issuer; AuthUnavailable when it cannot be reached."""
    found = await request.app[IDENTITIES].sign_in()
    if found is None:
        return None
    return {**found, "client_id": request.app[SETTINGS].auth_audience[0], "scope": SCOPE}


async def sign_in(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    return web.json_response(
        {"sign_in": await sign_in_config(request), "uuid_tokens": settings.auth_uuid_tokens}
    )


async def page_policy(request: web.Request) -> str:
    """The page's policy; with sign-in, `connect-src` also names the token endpoint's origin."""
    if not request.app[SETTINGS].auth_issuer:
        return PAGE_POLICY
    try:
        found = await sign_in_config(request)
    except AuthUnavailable:
        return PAGE_POLICY  # the page then offers no sign-in either
    endpoint = urllib.parse.urlsplit((found or {}).get("token_endpoint") or "")
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        return PAGE_POLICY
    origin = f"{endpoint.scheme}://{endpoint.netloc}"
    return PAGE_POLICY.replace("connect-src 'self'", f"connect-src 'self' {origin}")
