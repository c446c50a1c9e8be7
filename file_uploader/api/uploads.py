"""`PUT /api/files/{name}`: the body is the file, read part by part into the one part pipeline.

What is refused before the body (token, name, length, digests, flags, upload slots, quota, the
pre-create hook) is refused by the expect handler when the client waits for 100 Continue, and
again by the handler for one that does not.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from . import hooked
from .auth import authenticate
from .body import declared_length, expect_body, file_too_large, read_body
from .digests import expected_digests, verified
from .names import content_type, decode_name, own_key
from .params import EXPIRES_HEADER, PUBLIC_HEADER, file_expires_in, public_flag


async def _check_upload(request: web.Request) -> None:
    """What PUT refuses before its body: token, name, length, digests, the user's upload slots,
    a declared length that cannot fit in the user's quota."""
    await authenticate(request)
    key = own_key(request)
    size = declared_length(request, request.app[SETTINGS])
    expected_digests(request.headers)
    public_flag(request.headers.get(PUBLIC_HEADER), PUBLIC_HEADER)
    file_expires_in(request.headers.get(EXPIRES_HEADER))
    storage = request.app[STORAGE]
    await storage.admit(request[USER_ID], key, size)
    _within(size, hooked.limit(request, await hooked.pre_create(request, decode_name(request), size, "put")))


def _within(size: int | None, most: int) -> None:
    if size is not None and size > most:
        raise file_too_large(most)


async def put_file(request: web.Request) -> web.Response:
    name = decode_name(request)
    size = declared_length(request, request.app[SETTINGS])
    public = public_flag(request.headers.get(PUBLIC_HEADER), PUBLIC_HEADER)
    expires_in = file_expires_in(request.headers.get(EXPIRES_HEADER))
    most = hooked.limit(request, await hooked.pre_create(request, name, size, "put"))
    _within(size, most)
    body = verified(read_body(request, most), expected_digests(request.headers))
    await request.app[STORAGE].files.put(
        request[USER_ID],
        own_key(request),
        body,
        size=size,
        content_type=content_type(name),
        public=public,
        expires_in=expires_in,
        finish=hooked.pre_finish(request, name, "put"),
    )
    return web.Response(status=204)


expect_upload = expect_body(_check_upload)
