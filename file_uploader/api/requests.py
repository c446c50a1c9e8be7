"""Upload requests: `POST /api/requests` makes one, `GET /api/requests` lists them,
`DELETE /api/requests/{id}` ends one; `PUT /r/{id}/{file name}` adds a file, `GET /r/{id}` is its
page, and `/r/{id}/uploads` takes files as tus uploads (resumable: the page's way).

Anyone holding the URL may add files to the owner's folder, within the
request's limits (storage/requests.py), and do nothing else: there is no
route under /r/ that lists, reads, replaces or deletes. A password travels as
share links' does: the password of HTTP Basic authentication.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..formats import iso8601
from ..storage.keys import split_file_key
from ..storage.landing import Finish
from ..storage.requests import UploadRequest
from ..storage.tus import Upload
from . import hooked, tus
from .body import declared_length, expect_body, file_too_large, read_body
from .errors import INVALID_FOLDER, INVALID_MAX_BYTES, INVALID_MAX_FILES, LENGTH_REQUIRED
from .grants import owner_routes
from .links import basic_password, expires_in, json_body, password, whole_number
from .names import content_type, decode_name
from .page import PAGE_HEADERS, STATIC
from .params import MAX_FILE_EXPIRES_IN
from .proxies import absolute_url

REQUESTS = "/api/requests"
# What the blocking hooks (HOOK_URL) are told a file sent to an upload request is: its `upload` field.
UPLOAD_REQUEST = "request"
REQUEST = "/api/requests/{id}"
REQUEST_PAGE = "/r/{id}"
REQUEST_PAGE_NAME = "upload_request"  # the route's name, to build URLs with
REQUEST_FILE = r"/r/{id}/{name:[\s\S]+}"
# tus under the request: creation (POST), then HEAD, PATCH and DELETE of what it created. A file
# named `uploads` is still sent with PUT: no route here takes PUT.
REQUEST_UPLOADS = "/r/{id}/uploads"
REQUEST_UPLOAD = "/r/{id}/uploads/{upload_id}"
# The most files one request may be given: any more is no limit worth counting.
MAX_FILES = 100_000
# The most bytes one request may be given: a pebibyte, past which a limit means nothing.
MAX_REQUEST_BYTES = 2**50
_EXAMPLE = '{"folder": "inbox/", "max_files": 10, "max_bytes": 104857600, "expires_in": 604800}'


def describe(request: web.Request, upload_request: UploadRequest) -> dict[str, Any]:
    url = absolute_url(request, str(request.app.router[REQUEST_PAGE_NAME].url_for(id=upload_request.id)))
    return {
        "id": upload_request.id,
        "url": url,
        "folder": upload_request.folder,
        "files": upload_request.files,
        "bytes": upload_request.bytes,
        "max_files": upload_request.max_files,
        "max_bytes": upload_request.max_bytes,
        "expires_at": iso8601(upload_request.expires) if upload_request.expires is not None else None,
        "created_at": iso8601(upload_request.created),
        "password": upload_request.password is not None,
        "expired": upload_request.expired(time.time()),
    }


def _limit(value: object, maximum: int, error: Any) -> int | None:
    if value is None:
        return None
    number = whole_number(value)
    if number is None or not 1 <= number <= maximum:
        raise error(maximum=maximum)
    return number


async def create_request(request: web.Request) -> web.Response:
    body = await json_body(request, _EXAMPLE)
    folder = body.get("folder")
    if not isinstance(folder, str) or not folder.strip("/"):
        raise INVALID_FOLDER()
    folder = folder.strip("/") + "/"
    max_files = _limit(body.get("max_files"), MAX_FILES, INVALID_MAX_FILES)
    max_bytes = _limit(body.get("max_bytes"), MAX_REQUEST_BYTES, INVALID_MAX_BYTES)
    seconds = expires_in(body.get("expires_in"), MAX_FILE_EXPIRES_IN, None)
    secret = password(body.get("password"))
    made = await request.app[STORAGE].requests.create(
        request[USER_ID],
        folder,
        expires=time.time() + seconds if seconds is not None else None,
        max_files=max_files,
        max_bytes=max_bytes,
        password=secret,
    )
    return web.json_response(describe(request, made), status=201)


# GET /api/requests, DELETE /api/requests/{id} (ends one).
list_requests, end_request = owner_routes(lambda storage: storage.requests, describe)


async def page(request: web.Request) -> web.FileResponse:
    """The page that sends files to the request (it says nothing of the owner's files)."""
    await request.app[STORAGE].requests.grants.get(request.match_info["id"])  # 404 once ended
    return web.FileResponse(STATIC / "request.html", headers=PAGE_HEADERS)


async def _check_upload(request: web.Request) -> tuple[int, Finish | None]:
    """What PUT /r/... refuses before its body: the request (gone, expired, password), its room,
    the name (one segment, not taken), the length (MAX_FILE_SIZE), and the blocking hook
    (HOOK_URL, told the owner's id and the file's name in their space). The most bytes the file
    may have, and its pre-finish hook."""
    size = declared_length(request, request.app[SETTINGS])
    found, key = await request.app[STORAGE].requests.admit(
        request.match_info["id"], basic_password(request), decode_name(request), size
    )
    if not hooked.enabled(request) or key is None:
        return request.app[SETTINGS].max_file_size, None
    name = split_file_key(key)[1]
    verdict = await hooked.pre_create(request, name, size, UPLOAD_REQUEST, user=found.uid)
    if size is not None and size > hooked.limit(request, verdict):
        raise file_too_large(hooked.limit(request, verdict))
    return hooked.limit(request, verdict), hooked.pre_finish(request, name, UPLOAD_REQUEST, user=found.uid)


async def put_file(request: web.Request) -> web.Response:
    name = decode_name(request)
    size = declared_length(request, request.app[SETTINGS])
    most, finish = await _check_upload(request) if hooked.enabled(request) else (None, None)
    await request.app[STORAGE].requests.receive(
        request.match_info["id"],
        basic_password(request),
        name,
        read_body(request, most),
        size=size,
        content_type=content_type(name),
        finish=finish,
    )
    return web.Response(status=204)


async def _admit(request: web.Request) -> None:
    await _check_upload(request)


expect_upload = expect_body(_admit)


class RequestScope(tus.Scope):
    """tus under an upload request (/r/{id}/uploads/): the same handlers as /api/uploads/, for
    whoever holds the link. Whole files of a declared length only (their room is taken from the
    request at creation: storage/request_uploads.py), no expiry of the sender's choosing, the
    password (HTTP Basic) asked at every request, and only the uploads made under this request."""

    hook_upload = UPLOAD_REQUEST
    concatenation = False
    deferred_length = False
    expiry = False

    async def identify(self, request: web.Request) -> None:
        """No token: the link (and its password, checked with the request's record) is all."""

    async def owner(self, request: web.Request, name: str, length: int | None) -> tuple[str, str | None]:
        if length is None:
            raise LENGTH_REQUIRED()
        found, key = await request.app[STORAGE].request_uploads.admit(
            request.match_info["id"], basic_password(request), name, length
        )
        return found.uid, key

    async def writer(self, request: web.Request) -> str:
        return (await self.upload_of(request)).user

    def location(self, request: web.Request, upload_id: str) -> str:
        path = REQUEST_UPLOAD.format(id=request.match_info["id"], upload_id=upload_id)
        return absolute_url(request, path)

    async def start(
        self,
        request: web.Request,
        name: str,
        length: int | None,
        raw_metadata: str,
        *,
        max_size: int | None,
        finish: Finish | None,
        partial: bool,
    ) -> Upload:
        if length is None:
            raise LENGTH_REQUIRED()
        return await request.app[STORAGE].request_uploads.create(
            request.match_info["id"],
            basic_password(request),
            name,
            length,
            raw_metadata,
            time.time(),
            max_size=max_size,
            finish=finish,
        )

    async def upload_of(self, request: web.Request) -> Upload:
        return await request.app[STORAGE].request_uploads.get(
            request.match_info["id"], basic_password(request), request.match_info["upload_id"], time.time()
        )

    def finish(self, request: web.Request, upload: Upload) -> Finish | None:
        return request.app[STORAGE].request_uploads.finish(upload.key, super().finish(request, upload))


TUS = tus.handlers(RequestScope())
