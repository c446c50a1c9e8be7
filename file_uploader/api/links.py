"""Share links people control: `POST /api/files/{name}/share` makes one, `GET /api/links` lists
them, `DELETE /api/links/{id}` revokes one, `GET /s/{link}` serves one.

A link is a record in the bucket (storage/links.py): optional expiry, password
and download limit, its uses counted exactly across replicas. Its password
travels as the password of HTTP Basic authentication (any user name), so
`curl -u :PASSWORD URL` works and a browser asks for it by itself (the 401
carries a Basic challenge). Links made before records existed (stateless
signatures, share.py) are still served until their own expiry.

`POST /api/files/{name}/download-link` still makes such a stateless link, a
minute long by default: what the web page follows to download a file (a
browser's link cannot carry the token header), kept out of the user's list
of links and costing no S3 write.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from aiohttp import hdrs, web

from ..appkeys import SHARE_KEY, STORAGE, USER_ID
from ..formats import iso8601
from ..sizes import SHARE_MAX_SECONDS
from ..storage.keys import file_key, user_prefix, validate_folder
from ..storage.links import Link
from ..storage.passwords import MAX_PASSWORD_BYTES
from . import share
from .downloads import send_zip, serve
from .errors import INVALID_BODY, INVALID_EXPIRY, INVALID_MAX_DOWNLOADS, INVALID_PASSWORD
from .files import FILE
from .grants import owner_routes
from .names import decode_name
from .proxies import absolute_url

SHARE = FILE + "/share"
DOWNLOAD_LINK = FILE + "/download-link"
LINKS = "/api/links"
LINK = "/api/links/{id}"
SHARED = "/s/{link}"
SHARED_NAME = share.SHARED_NAME
DEFAULT_SHARE_SECONDS = 3600  # what a link lives when the request does not say
DEFAULT_DOWNLOAD_LINK_SECONDS = 60  # a download link is followed at once by the browser that asked
# The largest download limit taken: any more is no limit worth counting.
MAX_DOWNLOADS = 1_000_000
_SHARE_SUFFIX = "/share"
_DOWNLOAD_LINK_SUFFIX = "/download-link"
_EXAMPLE = '{"expires_in": 3600, "password": "s3cret", "max_downloads": 3}'


def whole_number(value: object) -> int | None:
    """`value` as a whole number (JSON 3 or 3.0, or query text "3"); None if it is not one."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if isinstance(value, float) else int(value)  # type: ignore[call-overload]
        return int(number) if number == int(number) else None
    except (TypeError, ValueError, OverflowError):
        return None


def expires_in(value: object, maximum: int, default: int | None) -> int | None:
    """Seconds from 1 to `maximum`; `default` when absent (None)."""
    if value is None:
        return default
    seconds = whole_number(value)
    if seconds is None or not 1 <= seconds <= maximum:
        raise INVALID_EXPIRY(maximum=maximum)
    return seconds


def max_downloads(value: object) -> int | None:
    if value is None:
        return None
    count = whole_number(value)
    if count is None or not 1 <= count <= MAX_DOWNLOADS:
        raise INVALID_MAX_DOWNLOADS(maximum=MAX_DOWNLOADS)
    return count


def password(value: object) -> str | None:
    if value is None:
        return None
    size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0
    if not isinstance(value, str) or not 1 <= size <= MAX_PASSWORD_BYTES:
        raise INVALID_PASSWORD(maximum=MAX_PASSWORD_BYTES)
    return value


async def json_body(request: web.Request, example: str) -> dict[str, Any]:
    """The request's JSON object ({} without a body); INVALID_BODY for anything else."""
    if not request.body_exists:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise INVALID_BODY(example=example) from None
    if not isinstance(body, dict):
        raise INVALID_BODY(example=example)
    return body


def basic_password(request: web.Request) -> str | None:
    """The password of the request's HTTP Basic credentials (any user name); None without."""
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text.partition(":")[2] or None


# What a script sends when it asks for a password in its own page (request.js does).
SCRIPTED = ("X-Requested-With", "XMLHttpRequest")


async def scripted_challenge(request: web.Request, response: web.StreamResponse) -> None:
    """A 401 to a script that asks for the password itself goes without the Basic challenge: a
    browser would otherwise open its own prompt over the page, and hold the request until it
    is answered. Anyone else (curl, a browser following a link) gets the challenge."""
    if (
        response.status == 401
        and request.headers.get(SCRIPTED[0]) == SCRIPTED[1]
        and response.headers.get(hdrs.WWW_AUTHENTICATE, "").startswith("Basic")
    ):
        del response.headers[hdrs.WWW_AUTHENTICATE]


def link_url(request: web.Request, link_id: str) -> str:
    return absolute_url(request, str(request.app.router[SHARED_NAME].url_for(link=link_id)))


def describe(request: web.Request, link: Link) -> dict[str, Any]:
    now = time.time()
    return {
        "id": link.id,
        "url": link_url(request, link.id),
        "name": link.name,
        "downloads": link.downloads,
        "max_downloads": link.max_downloads,
        "expires_at": iso8601(link.expires) if link.expires is not None else None,
        "created_at": iso8601(link.created),
        "password": link.password is not None,
        "expired": link.expired(now),
        "used_up": link.used_up(),
    }


async def create_link(request: web.Request) -> web.Response:
    """A link to the file: `expires_in` (JSON or query; an hour by default, a week at
    most: sizes.SHARE_MAX_SECONDS), optional `password` and `max_downloads`."""
    body = await json_body(request, _EXAMPLE)
    maximum = SHARE_MAX_SECONDS
    seconds = expires_in(
        body.get("expires_in", request.query.get("expires_in")), maximum, min(DEFAULT_SHARE_SECONDS, maximum)
    )
    limit = max_downloads(body.get("max_downloads"))
    secret = password(body.get("password"))
    uid = request[USER_ID]
    name = decode_name(request, _SHARE_SUFFIX)
    storage = request.app[STORAGE]
    if name.endswith("/"):  # a folder: its link serves it as a zip
        await storage.zips.members(uid, validate_folder(name))  # 404 for a folder with nothing in it
    else:
        await storage.files.stat(file_key(uid, name))  # 404 for a file that is not there
    expires = time.time() + seconds if seconds is not None else None
    link = await storage.links.create(uid, name, expires=expires, max_downloads=limit, password=secret)
    answer = describe(request, link)
    answer["expires_in"] = seconds
    return web.json_response(answer)


async def create_download_link(request: web.Request) -> web.Response:
    """A short-lived URL that downloads the file without a token, for a browser (whose link
    cannot carry the token header): a stateless signature (share.py), so it is never stored,
    listed or counted, and it stops working when the file is replaced. For a folder (a name
    ending in /): its zip, as it is when the link is followed."""
    body = await json_body(request, '{"expires_in": 60}')
    maximum = SHARE_MAX_SECONDS
    seconds = expires_in(
        body.get("expires_in", request.query.get("expires_in")),
        maximum,
        min(DEFAULT_DOWNLOAD_LINK_SECONDS, maximum),
    )
    assert seconds is not None
    uid, name = request[USER_ID], decode_name(request, _DOWNLOAD_LINK_SUFFIX)
    storage = request.app[STORAGE]
    if name.endswith("/"):
        await storage.zips.members(uid, validate_folder(name))  # 404 for a folder with nothing in it
        key, etag = user_prefix(uid) + name, share.FOLDER_VERSION
    else:
        key = file_key(uid, name)
        etag = (await storage.files.stat(key)).etag
    expires = int(time.time()) + seconds
    signed = share.sign(request.app[SHARE_KEY], key, etag, expires)
    return web.json_response(
        {"url": link_url(request, signed), "expires_at": iso8601(expires), "expires_in": seconds}
    )


# GET /api/links, DELETE /api/links/{id}.
list_links, revoke_link = owner_routes(lambda storage: storage.links, describe)


async def serve_link(request: web.Request) -> web.StreamResponse:
    """The linked file (a Range of it, its thumbnail), if the link may be used: each such
    request takes one of its downloads, once the file is found and before a byte is sent."""
    link_id = request.match_info["link"]
    if "." in link_id:  # a stateless link, made before links were records
        return await share.serve_link(request)
    links = request.app[STORAGE].links
    link = await links.admit(link_id, basic_password(request))

    async def take_use() -> None:
        await links.use(link_id)

    # no-store: a cache in between must not serve a limited or revocable link's bytes again.
    if link.name.endswith("/"):  # a folder: as a zip (?format=zip or not: it has no other form)
        return await send_zip(
            request, link.uid, link.name, before_send=take_use, headers={hdrs.CACHE_CONTROL: "no-store"}
        )
    return await serve(
        request,
        file_key(link.uid, link.name),
        link.name,
        before_send=take_use,
        headers={hdrs.CACHE_CONTROL: "no-store"},
    )
