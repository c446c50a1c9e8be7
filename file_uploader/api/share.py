"""Stateless share links, as the gateway made them before links were records (links.py).

Such a link carries its own state: the file's S3 key, its ETag when the link
was made and the expiry, signed with HMAC-SHA256 under SHARE_SECRET. Binding
the ETag means the link stops working when the file is replaced or deleted.
The key holds the one-way user id, never the token.

No new ones are made: `POST /api/files/{name}/share` now makes a record
(links.py). Those already handed out are served here until their own expiry
(a week at most, sizes.SHARE_MAX_SECONDS), as long as SHARE_SECRET is
kept: taking them back early is what rotating SHARE_SECRET still does.
`/s/<link>` tells the two apart by the '.' only these have.
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

from ..appkeys import SHARE_KEY
from ..settings import Settings
from ..storage.keys import FILES_ROOT
from .downloads import send_zip, serve
from .errors import INVALID_LINK, LINK_EXPIRED

log = logging.getLogger(__name__)

SHARED = "/s/{link}"
SHARED_NAME = "shared"  # the route's name, to build links with
# What a folder's download link signs in place of an ETag: a folder has no version.
FOLDER_VERSION = "folder"


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


async def serve_link(request: web.Request) -> web.StreamResponse:
    key, etag, expires = verify(request.app[SHARE_KEY], request.match_info["link"])
    if time.time() >= expires:
        raise LINK_EXPIRED()
    name = key.split("/", 2)[2] if key.startswith(FILES_ROOT) else key
    if name.endswith("/") and etag == FOLDER_VERSION:  # a folder's download link: its zip
        return await send_zip(request, key.split("/", 2)[1], name)
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
