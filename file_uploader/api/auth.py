"""Who a request is: `X-Auth-Token: <UUID>` (AUTH_UUID_TOKENS), or `Authorization: Bearer <token>`
(a JWT, or a token the auth callback vouches for: identity/), mapped to a one-way user id.

The credential is checked by middleware for every /api/ request, and by the expect
handlers of the routes that take a body (body.py), which aiohttp runs before
any middleware: that is how a bad credential is refused before a client sends a
body behind `Expect: 100-continue`. Whichever runs first keeps its answer on the
request, so a bearer is verified (or the callback asked) once per request.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from ..appkeys import IDENTITIES, IDENTITY, SETTINGS, STORAGE, USER_ID
from ..identity import AuthUnavailable, Identity, InvalidToken
from ..storage.keys import is_valid_token, user_id
from .errors import AUTH_UNAVAILABLE, BEARER_CHALLENGE, INVALID_TOKEN, MISSING_TOKEN
from .openapi import OPENAPI_PATH
from .sign_in import SIGN_IN

TOKEN_HEADER = "X-Auth-Token"
OFF = "UUID tokens are turned off here: send Authorization: Bearer <token>"
API_PREFIX = "/api/"
# Under /api/ but open to all: the API's description, which a client reads before it has a
# token, the public library, and where the page signs in.
PUBLIC_PATHS = frozenset({OPENAPI_PATH, "/api/public", SIGN_IN})
# tus discovery (OPTIONS /api/uploads...) tells what the server supports, nothing of anyone's.
PUBLIC_OPTIONS_PREFIX = "/api/uploads"
# Routes that may carry the token in a multipart/form-data body instead of the header,
# because a plain HTML form cannot set a header: their handler authenticates (forms.py).
BODY_TOKEN_ROUTES = frozenset({("POST", "/api/files")})
FORM_TYPE = "multipart/form-data"


async def authenticate(request: web.Request) -> str:
    """Store and return the request's user id, or raise a 401 (503 when the gateway cannot tell)."""
    if USER_ID in request:
        return request[USER_ID]
    tokens = request.headers.getall(TOKEN_HEADER, [])
    bearers = request.headers.getall(hdrs.AUTHORIZATION, [])
    identities = request.app.get(IDENTITIES)
    uuids = request.app[SETTINGS].auth_uuid_tokens
    if identities is not None and identities.accepts_bearer and bearers:
        if tokens:
            raise _bearer_refused(f"send one credential: {TOKEN_HEADER} or Authorization")
        if len(bearers) > 1:
            raise _bearer_refused("send exactly one Authorization header")
        scheme, _, credential = bearers[0].strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise _bearer_refused("Authorization must be Bearer <token>")
        try:
            identity = await identities.bearer(credential.strip())
        except InvalidToken as exc:
            raise _bearer_refused(str(exc)) from None
        except AuthUnavailable as exc:
            raise AUTH_UNAVAILABLE(detail=str(exc)) from None
        # A quota the identity carries (a claim, the callback's answer) holds this user alone,
        # from this request on; one without it has USER_QUOTA again.
        request.app[STORAGE].quotas.own_limit(identity.user, identity.quota)
        return _identified(request, identity)
    if not uuids:
        if tokens:
            raise _bearer_refused(OFF)
        raise MISSING_TOKEN(headers=BEARER_CHALLENGE, where="Authorization header: Bearer <token>")
    if len(tokens) > 1:
        raise INVALID_TOKEN(credential=TOKEN_HEADER, problem="must be sent exactly once")
    token = tokens[0].strip() if tokens else ""
    if not token:
        raise MISSING_TOKEN(where=f"{TOKEN_HEADER} header")
    return authenticate_with(request, token)


def _bearer_refused(why: str) -> Exception:
    return INVALID_TOKEN(BEARER_CHALLENGE, credential="the bearer token:", problem=why)


def _identified(request: web.Request, identity: Identity) -> str:
    request[IDENTITY] = identity
    uid = request[USER_ID] = identity.user
    return uid


def authenticate_with(request: web.Request, token: str) -> str:
    """Store and return the user id of UUID `token`, wherever the request carried it; or a 401."""
    if not request.app[SETTINGS].auth_uuid_tokens:
        raise _bearer_refused(OFF)
    if not is_valid_token(token):
        raise INVALID_TOKEN(
            credential=TOKEN_HEADER, problem="must be a UUID such as 18ce71ad-1391-46c7-91de-56948fda0d8a"
        )
    return _identified(request, Identity(user_id(token)))


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
        and hdrs.AUTHORIZATION not in request.headers
    ):
        return await handler(request)
    if request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/"):
        await authenticate(request)
    return await handler(request)
