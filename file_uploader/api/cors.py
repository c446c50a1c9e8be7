"""CORS: which other sites' scripts may call the gateway from a browser (CORS_ORIGINS).

A browser lets a script from https://app.example.com read the gateway's
answers only if they say so (`Access-Control-Allow-Origin`); and before any
request that is not "simple", which every API call is (they carry
`X-Auth-Token`), it first sends a preflight: `OPTIONS` with the method and
headers it means to send, and no token. So:

- `preflight_middleware` answers preflights itself, before the token check
  and before the router's 405 (only tus discovery has OPTIONS routes): `204`
  with the methods and headers the API and tus use, or `403` for an origin
  not in CORS_ORIGINS. Preflights carry no body, so no expect handler runs.
- `cors_headers`, a response signal, puts `Access-Control-Allow-Origin` and
  `Access-Control-Expose-Headers` on every answer to an allowed origin:
  errors (a 401 or 413 a script must be able to read), streamed downloads,
  and refusals an expect handler sends before any middleware runs. A script
  cannot read a header that is not exposed: without `Upload-Offset`,
  tus-js-client's resume fails with "invalid or missing offset value".
- CORS_ORIGINS unset: neither adds a thing.
- Never `Access-Control-Allow-Credentials`: the API's credential is a token
  the script itself puts in a header, not a cookie the browser adds, so `*`
  lets a page use only a token it already holds.

Not aiohttp-cors: it is configured route by route, refuses a route that
already has an OPTIONS handler (tus discovery), and its preflight handler is
a route, which our token middleware would refuse with 401; the whole policy
fits in this module.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ..appkeys import SETTINGS
from ..settings import ANY_ORIGIN
from .errors import ORIGIN_NOT_ALLOWED

ALLOW_METHODS = "GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS"
# What the API and tus read from a request (a preflight lists the ones a script sets;
# Accept, Content-Type with form types, and simple Range are allowed without asking).
ALLOW_HEADERS = ", ".join(
    [
        "X-Auth-Token",
        "Authorization",  # a bearer token (AUTH_*)
        "Content-Type",
        "Content-MD5",
        "Digest",
        "Repr-Digest",
        "Range",
        "X-Public",
        "X-Request-ID",
        "X-HTTP-Method-Override",
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Offset",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Checksum",
        "Upload-Concat",
        "Upload-Complete",  # the IETF draft (resumable_draft.py)
        "Upload-Draft-Interop-Version",
        "Content-Disposition",
    ]
)
# What a script may read beyond the always-readable Cache-Control, Content-Language,
# Content-Length, Content-Type, Expires, Last-Modified and Pragma.
EXPOSE_HEADERS = ", ".join(
    [
        "Location",
        "ETag",
        "X-Request-ID",
        "Content-Range",
        "Content-Disposition",
        "Accept-Ranges",
        "Retry-After",
        "WWW-Authenticate",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Expires",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Complete",
        "Upload-Limit",
        "Upload-Draft-Interop-Version",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
    ]
)
# Seconds a browser may reuse a preflight's answer: Chromium's cap (Firefox allows a day).
MAX_AGE = "7200"


def allowed_origin(request: web.Request) -> str | None:
    """What Access-Control-Allow-Origin says to this request: `*`, its Origin, or None."""
    origins = request.app[SETTINGS].cors_origins
    origin = request.headers.get(hdrs.ORIGIN)
    if not origins or origin is None:
        return None
    if origins == (ANY_ORIGIN,):
        return ANY_ORIGIN
    return origin if origin.lower() in origins else None


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.app[SETTINGS].cors_origins or not _is_preflight(request):
        return await handler(request)
    if allowed_origin(request) is None:
        raise ORIGIN_NOT_ALLOWED()
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ALLOW_METHODS,
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
        },
    )


def _vary_on_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get(hdrs.VARY)
    if vary is None:
        response.headers[hdrs.VARY] = "Origin"
    elif "origin" not in vary.lower():
        response.headers[hdrs.VARY] = f"{vary}, Origin"


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origins = request.app[SETTINGS].cors_origins
    if not origins:
        return
    if origins != (ANY_ORIGIN,):
        _vary_on_origin(response)  # the answer differs by Origin: caches must keep them apart
    allowed = allowed_origin(request)
    if allowed is not None:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allowed
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
