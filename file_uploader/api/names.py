"""What a file's name is, as a request says it: the name in the path, decoded by one strict rule,
the user's key for it, and the content type it implies.

Every route that takes a name from its path (/api/files, share links, upload requests) reads it
here, so that one URL always names one file.
"""

from __future__ import annotations

import mimetypes
import urllib.parse

from aiohttp import web

from ..appkeys import USER_ID
from ..storage.errors import InvalidName
from ..storage.keys import file_key


def raw_path(request: web.Request) -> str:
    """The request target's path as sent (still percent-encoded), without the query.

    A target may come in absolute form (`PUT http://host/api/files/x`, RFC 9112
    section 3.2.2, what a client talking to a proxy sends): its path is what
    follows the authority. aiohttp routes such a request by that path, but its
    `raw_path` is the whole target.
    """
    target = request.raw_path
    if not target.startswith("/"):
        after_scheme = target.split("://", 1)[-1]
        target = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
    return target.split("?", 1)[0]


def decode_name(request: web.Request, suffix: str = "") -> str:
    """The file name in /api/files/<name><suffix>, percent-decoded by us from the raw path.

    Decoding strictly as UTF-8 lets an undecodable escape such as `%FF` be
    refused instead of surviving as the literal text `%FF`, which would make
    two different URLs name one file. `+` is a plain character in a path.
    """
    raw = raw_path(request).split("/", 3)[3]  # after /api/files/
    if suffix:
        raw = raw[: -len(suffix)]
    try:
        return urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidName("the file name is not valid UTF-8") from None


def own_key(request: web.Request) -> str:
    """The key of the file /api/files/<name> names, among the requesting user's."""
    return file_key(request[USER_ID], decode_name(request))


def content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
