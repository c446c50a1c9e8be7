"""Share links: `POST /api/files/{name}/share` signs a link, `GET /s/{link}` serves it.

A link carries its own state, so the gateway stores nothing: the file's S3 key,
its ETag when the link was made and the expiry, signed with HMAC-SHA256 under
SHARE_SECRET. Binding the ETag means the link stops working when the file is
replaced or deleted. The key holds the one-way user id, never the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time

from aiohttp import web

from ..appkeys import SETTINGS, SHARE_KEY, STORAGE, USER_ID
from ..formats import iso8601
from ..settings import Settings
from ..storage.keys import FILES_ROOT, file_key
from .errors import INVALID_BODY, INVALID_EXPIRY, INVALID_LINK, LINK_EXPIRED
from .files import FILE, decode_name, serve
from .proxies import absolute_url

log = logging.getLogger(__name__)

SHARE = FILE + "/share"
SHARED = "/s/{link}"
SHARED_NAME = "shared"  # the route's name, to build links with
DEFAULT_SHARE_SECONDS = 3600  # what a link lives when the request does not say
_SHARE_SUFFIX = "/share"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Unpadded base64url, as _b64 writes it: anything else (padding, characters
# outside the alphabet, which a lenient decoder skips) is not one of our links.
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Strict: only the one spelling _b64 gives (no padding, no stray or leftover bits)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical spelling")
    return data


def sign(secret: bytes, key: str, etag: str, expires: int) -> str:
    """The link's path segment: `<payload>.<signature>`, both base64url."""
    payload = json.dumps({"k": key, "t": etag, "e": expires}, separators=(",", ":")).encode()
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def verify(secret: bytes, link: str) -> tuple[str, str, int]:
    """The key, ETag and expiry a link names; 403 if it was not signed by us."""
    forged = INVALID_LINK()
    try:
        payload_text, signature_text = link.split(".")
        payload, signature = _unb64(payload_text), _unb64(signature_text)
    except (ValueError, binascii.Error):
        raise forged from None
    if not hmac.compare_digest(signature, hmac.new(secret, payload, hashlib.sha256).digest()):
        raise forged
    fields = json.loads(payload)  # signed by us, so well-formed
    return fields["k"], fields["t"], fields["e"]


async def _expires_in(request: web.Request, maximum: int) -> int:
    value: object = request.query.get("expires_in")
    if value is None and request.body_exists:
        try:
            body = await request.json()
        except ValueError:
            raise INVALID_BODY(example='{"expires_in": 3600}') from None
        value = body.get("expires_in") if isinstance(body, dict) else None
    if value is None:
        return min(DEFAULT_SHARE_SECONDS, maximum)
    try:
        # A whole number, as JSON or query text; 3600.0 is one too, 1e400 (inf) and 1.5 are not.
        number = float(value) if isinstance(value, float) else int(value)  # type: ignore[call-overload]
        seconds = int(number) if number == int(number) else 0
    except (TypeError, ValueError, OverflowError):
        seconds = 0
    if isinstance(value, bool) or not 1 <= seconds <= maximum:
        raise INVALID_EXPIRY(maximum=maximum)
    return seconds


async def create_link(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    seconds = await _expires_in(request, settings.share_max_seconds)
    key = file_key(request[USER_ID], decode_name(request, _SHARE_SUFFIX))
    info = await request.app[STORAGE].files.stat(key)
    expires = int(time.time()) + seconds
    link = sign(request.app[SHARE_KEY], key, info.etag, expires)
    url = absolute_url(request, str(request.app.router[SHARED_NAME].url_for(link=link)))
    return web.json_response({"url": url, "expires_at": iso8601(expires), "expires_in": seconds})


async def serve_link(request: web.Request) -> web.StreamResponse:
    key, etag, expires = verify(request.app[SHARE_KEY], request.match_info["link"])
    if time.time() >= expires:
        raise LINK_EXPIRED()
    name = key.split("/", 2)[2] if key.startswith(FILES_ROOT) else key
    return await serve(request, key, name, if_match=etag)


def share_key(settings: Settings) -> bytes:
    """The key that signs links: SHARE_SECRET, else a random one for this process (and a warning)."""
    if settings.share_secret:
        return settings.share_secret.encode()
    log.warning(
        "SHARE_SECRET is not set: share links are signed with a random key that dies with this "
        "process and is not shared with other workers"
    )
    return secrets.token_bytes(32)
