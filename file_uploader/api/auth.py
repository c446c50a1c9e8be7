"""X-Auth-Token: any UUID is a user, mapped 1:1 to a one-way user id.

The token is checked by middleware for every /api/ request, and by the expect
handlers of the routes that take a body (body.py), which aiohttp runs before
any middleware: that is how a bad token is refused before a client sends a
body behind `Expect: 100-continue`.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ..appkeys import USER_ID
from ..storage.keys import is_valid_token, user_id
from .errors import INVALID_TOKEN, MISSING_TOKEN
from .openapi import OPENAPI_PATH

TOKEN_HEADER = "X-Auth-Token"
API_PREFIX = "/api/"
# Under /api/ but open to all: the API's description, which a client reads before it has a
# token, and the public library.
PUBLIC_PATHS = frozenset({OPENAPI_PATH, "/api/public"})
# tus discovery (OPTIONS /api/uploads...) tells what the server supports, nothing of anyone's.
PUBLIC_OPTIONS_PREFIX = "/api/uploads"
# Routes that may carry the token in a multipart/form-data body instead of the header,
# because a plain HTML form cannot set a header: their handler authenticates (forms.py).
BODY_TOKEN_ROUTES = frozenset({("POST", "/api/files")})
FORM_TYPE = "multipart/form-data"


def authenticate(request: web.Request) -> str:
    """Store and return the request's user id, or raise a 401 ApiError."""
    tokens = request.headers.getall(TOKEN_HEADER, [])
    if len(tokens) > 1:
        raise INVALID_TOKEN(problem="must be sent exactly once")
    token = tokens[0].strip() if tokens else ""
    if not token:
        raise MISSING_TOKEN(where=f"{TOKEN_HEADER} header")
    return authenticate_with(request, token)


def authenticate_with(request: web.Request, token: str) -> str:
    """Store and return the user id of `token`, wherever the request carried it; or a 401."""
    if not is_valid_token(token):
        raise INVALID_TOKEN(problem="must be a UUID such as 18ce71ad-1391-46c7-91de-56948fda0d8a")
    request[USER_ID] = user_id(token)
    return request[USER_ID]


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or (
        request.method == hdrs.METH_OPTIONS and request.path.startswith(PUBLIC_OPTIONS_PREFIX)
    ):
        return await handler(request)
    if (
        (request.method, request.path) in BODY_TOKEN_ROUTES
        and request.content_type == FORM_TYPE
        and TOKEN_HEADER not in request.headers
    ):
        return await handler(request)
    if request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/"):
        authenticate(request)
    return await handler(request)
