"""tus 1.0.0 resumable uploads under /api/uploads/: thin handlers over `storage.tus`.

Extensions: creation, creation-with-upload, creation-defer-length, termination,
expiration, checksum (sha1, sha256, sha512, md5, crc32, crc32c) and concatenation (`Upload-Concat:
partial`, then `final;<url> <url>...`: storage/tus/concat.py). The file name
comes from the `filename` key of Upload-Metadata (a partial upload needs none:
the final upload's names the file); a completed upload is an ordinary file.
Its `expires_in` metadata key (seconds) makes the file expire that long after it is stored.

The handlers serve a `Scope`: whose uploads, and what a creation may be. The
token's user's own here; an upload request's at /r/{id}/uploads/ (requests.py:
no token but the request's password, whole files of a declared length, only
the uploads made under it). One set of handlers, one store, for both.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import re
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..hooks.blocking import ALLOWED
from ..sizes import format_size
from ..storage.errors import ChecksumMismatch, FinalUpload, InvalidName, QuotaExceeded, TooLarge
from ..storage.keys import file_key, split_file_key
from ..storage.landing import Finish
from ..storage.tus import FINAL_TAKES_NO_PATCH, UPLOAD_CHECKSUMS, Upload
from . import hooked
from .auth import authenticate
from .body import ExpectHandler, expect_body, read_body
from .errors import (
    INVALID_CHECKSUM,
    INVALID_CONCAT,
    INVALID_HEADER,
    INVALID_LENGTH,
    INVALID_METADATA,
    LENGTH_REQUIRED,
    MISSING_OFFSET,
    UNSUPPORTED_CHECKSUM,
    UNSUPPORTED_MEDIA_TYPE,
    UNSUPPORTED_TUS_VERSION,
    UPLOAD_TOO_LARGE,
    ApiError,
    as_api_error,
)
from .params import EXPIRES_FIELD, file_expires_in
from .proxies import absolute_url

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum,concatenation"
)
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
UPLOADS = "/api/uploads"
UPLOAD = "/api/uploads/{upload_id}"
_TUS_HEADERS = {"Tus-Resumable": TUS_VERSION}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise UNSUPPORTED_TUS_VERSION({"Tus-Version": TUS_VERSION}, version=TUS_VERSION)


def tus_route(handler: Handler) -> Handler:
    """Check Tus-Resumable, and put it on every answer, errors included."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            _check_version(request)
            response = await handler(request)
        except Exception as exc:
            error = as_api_error(exc)
            if error.status == 500:
                raise  # the error middleware logs it with its traceback
            error.headers.update(_TUS_HEADERS)
            raise error from exc
        response.headers.update(_TUS_HEADERS)
        return response

    return wrapper


# Longer than any offset or length S3 can hold (5 TiB has 13 digits): refused
# before int() is asked to parse a thousand digits.
_MAX_DIGITS = 19


def header_number(request: web.Request, header: str) -> int | None:
    """A whole number in `header` (Upload-Length, Upload-Offset; tus and the IETF draft alike),
    None when absent; 400 invalid_header for anything else."""
    value = request.headers.get(header)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_DIGITS:
        raise INVALID_HEADER(header=header)
    return int(value)


def _metadata(header: str) -> dict[str, str]:
    """Upload-Metadata: comma-separated `key base64value` pairs (the value may be absent)."""
    pairs: dict[str, str] = {}
    for item in header.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, encoded = item.partition(" ")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise INVALID_METADATA(key=key) from None
    return pairs


def _checksum(request: web.Request) -> tuple[str, bytes] | None:
    value = request.headers.get("Upload-Checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in UPLOAD_CHECKSUMS:
        raise UNSUPPORTED_CHECKSUM(algorithms=",".join(UPLOAD_CHECKSUMS))
    try:
        return algorithm, base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise INVALID_CHECKSUM() from None


# A partial upload named in `Upload-Concat: final;...`: its URL as Location gave it (absolute, or
# a path), whatever prefix a proxy puts before /api/uploads/.
_PARTIAL_URL = re.compile(r"(?:.*/)?api/uploads/([^/]+)/?")


def _concat(request: web.Request) -> list[str] | None:
    """Upload-Concat: None (absent), [] for `partial`, or a final upload's partial upload ids."""
    value = request.headers.get("Upload-Concat")
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return []
    kind, _, urls = value.partition(";")
    ids = []
    for url in urls.split():
        match = _PARTIAL_URL.fullmatch(urlsplit(url).path)
        if match is None:
            raise INVALID_CONCAT(detail=f"Upload-Concat names {url!r}, which is not an upload of this server")
        ids.append(match.group(1))
    if kind.strip() != "final" or not ids:
        raise INVALID_CONCAT(detail="send Upload-Concat: partial, or final;<upload URL> <upload URL>...")
    return ids


def _concat_header(request: web.Request, upload: Upload) -> dict[str, str]:
    if upload.partial:
        return {"Upload-Concat": "partial"}
    if upload.partials:
        urls = " ".join(absolute_url(request, f"{UPLOADS}/{upload_id}") for upload_id in upload.partials)
        return {"Upload-Concat": f"final;{urls}"}
    return {}


def _expires(upload: Upload) -> str:
    return formatdate(upload.expires, usegmt=True)


def _check_body_fits(request: web.Request, length: int | None, offset: int, most: int | None = None) -> None:
    """Refuse before reading a declared body that would run past the upload's end."""
    size = request.content_length
    if length is not None:
        end = length
    else:
        end = request.app[SETTINGS].max_file_size if most is None else most
    if size is not None and offset + size > end:
        raise UPLOAD_TOO_LARGE(detail=f"the upload ends at byte {end}")


class Scope:
    """Whose tus uploads a set of routes serves, and what a creation there may be. This one: the
    token's user's own, under /api/uploads/. api/requests.py's serves an upload request's, under
    /r/{id}/uploads/. The handlers (`Handlers`) and the store are the same for both."""

    # What the blocking hooks are told the upload is (their `upload` field).
    hook_upload = "tus"
    # Upload-Concat (concatenation), Upload-Defer-Length, and the file's expiry in the metadata.
    concatenation = True
    deferred_length = True
    expiry = True

    async def identify(self, request: web.Request) -> None:
        """Before anything else (the expect handler runs before the auth middleware): the token."""
        await authenticate(request)

    async def owner(self, request: web.Request, name: str, length: int | None) -> tuple[str, str | None]:
        """Whose space an upload of `name` (`length` bytes, None: not declared) goes to, and the
        file's key there (None: too little known yet); refuses what may not be created."""
        uid = request[USER_ID]
        return uid, file_key(uid, name) if name and length is not None else None

    async def writer(self, request: web.Request) -> str:
        """Before a PATCH's body: whose upload slots it takes (refusing what may not be written)."""
        return request[USER_ID]

    def location(self, request: web.Request, upload_id: str) -> str:
        # Absolute, on the public origin: the client sends its token there next.
        return absolute_url(request, f"{UPLOADS}/{upload_id}")

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
        return await request.app[STORAGE].resumable.create(
            request[USER_ID],
            name,
            length,
            raw_metadata,
            time.time(),
            max_size=max_size,
            finish=finish,
            partial=partial,
        )

    async def upload_of(self, request: web.Request) -> Upload:
        """The upload the request's path names, if this scope's (UploadNotFound otherwise)."""
        return await request.app[STORAGE].resumable.get(
            request[USER_ID], request.match_info["upload_id"], time.time()
        )

    def finish(self, request: web.Request, upload: Upload) -> Finish | None:
        """What is awaited just before the upload's file is stored: the pre-finish hook."""
        return hooked.pre_finish(
            request, upload.name, self.hook_upload, _stored_metadata(upload), user=upload.user
        )


OWN = Scope()


async def upload_of(request: web.Request) -> Upload:
    """The upload the request's path names, of the request's user (tus and the IETF draft)."""
    return await OWN.upload_of(request)


def _stored_metadata(upload: Upload) -> dict[str, str]:
    try:
        return _metadata(upload.metadata)
    except ApiError:
        return {}


async def _append(request: web.Request, scope: Scope, upload: Upload, offset: int) -> Upload:
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {OFFSET_OCTET_STREAM}")
    if upload.partials:  # before the body's size is judged: 403 whatever it is (tus concatenation)
        raise FinalUpload(FINAL_TAKES_NO_PATCH)
    length = header_number(request, "Upload-Length")
    checksum = _checksum(request)
    most = upload.limit(request.app[SETTINGS].max_file_size)
    _check_body_fits(request, length if length is not None else upload.length, offset, most)
    return await request.app[STORAGE].resumable.appender.append(
        upload,
        offset,
        read_body(request, most),
        now=time.time(),
        length=length,
        checksum=checksum,
        finish=scope.finish(request, upload),
    )


def _upload_headers(upload: Upload) -> dict[str, str]:
    headers = {"Upload-Offset": str(upload.offset)}
    if not upload.done:
        headers["Upload-Expires"] = _expires(upload)
    return headers


async def options(request: web.Request) -> web.Response:
    """Discovery; tus lets OPTIONS go without Tus-Resumable, and it needs no token (auth.py)."""
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": TUS_VERSION,
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": EXTENSIONS,
            "Tus-Max-Size": str(request.app[SETTINGS].max_file_size),
            "Tus-Checksum-Algorithm": ",".join(UPLOAD_CHECKSUMS),
        },
    )


async def _create(request: web.Request, scope: Scope) -> web.Response:
    concat = _concat(request)
    if concat is not None and not scope.concatenation:
        raise INVALID_CONCAT(detail="only whole files are sent here: no Upload-Concat")
    if concat:
        return await _create_final(request, concat)
    length = header_number(request, "Upload-Length")
    deferred = request.headers.get("Upload-Defer-Length")
    if length is None and not scope.deferred_length:
        raise LENGTH_REQUIRED()
    if (length is None) == (deferred is None) or (deferred is not None and deferred != "1"):
        raise INVALID_LENGTH()
    raw_metadata = request.headers.get("Upload-Metadata", "")
    partial = concat is not None
    metadata = _metadata(raw_metadata)
    name = metadata.get("filename", "")
    if not name and not partial:
        raise InvalidName("Upload-Metadata has no filename")
    if scope.expiry:
        file_expires_in(metadata.get(EXPIRES_FIELD))  # checked now, applied when the file is stored
    # A partial upload is no file yet: the hooks are asked of its final upload.
    name_seen, user = name, None
    if partial:
        verdict = ALLOWED
    else:
        user, key = await scope.owner(request, name, length)
        if key is not None:  # the name in the user's space (an upload request's folder, name)
            name_seen = split_file_key(key)[1]
        verdict = await hooked.pre_create(request, name_seen, length, scope.hook_upload, metadata, user=user)
    most = hooked.limit(request, verdict)
    if length is not None and length > most:
        raise UPLOAD_TOO_LARGE(detail=f"the limit is {format_size(most)}")
    with_upload = request.body_exists and request.content_type == OFFSET_OCTET_STREAM
    if with_upload:  # creation-with-upload: a body that cannot fit creates nothing
        _check_body_fits(request, length, 0, most)
        checksum = _checksum(request)
    resumable = request.app[STORAGE].resumable
    finish = (
        None if partial else hooked.pre_finish(request, name_seen, scope.hook_upload, metadata, user=user)
    )
    upload = await scope.start(
        request, name, length, raw_metadata, max_size=verdict.max_size, finish=finish, partial=partial
    )
    headers: dict[str, str] = {hdrs.LOCATION: scope.location(request, upload.id)}
    if with_upload:
        try:
            upload = await resumable.appender.append(
                upload,
                0,
                read_body(request, most),
                now=time.time(),
                checksum=checksum,
                finish=None if partial else scope.finish(request, upload),
            )
        except (TooLarge, ChecksumMismatch, QuotaExceeded):
            # The client is told the upload failed and gets no Location: leave no upload behind.
            await resumable.terminate(upload)
            raise
    headers.update(_upload_headers(upload))
    return web.Response(status=201, headers=headers)


async def _create_final(request: web.Request, partial_ids: list[str]) -> web.Response:
    """concatenation: the final upload, assembled from its partial uploads before the answer."""
    if "Upload-Length" in request.headers or "Upload-Defer-Length" in request.headers:
        raise INVALID_CONCAT(detail="a final upload's length is its partial uploads': send no Upload-Length")
    if request.content_length:
        raise INVALID_CONCAT(detail="a final upload takes no body: its bytes are its partial uploads'")
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = _metadata(raw_metadata)
    name = metadata.get("filename")
    if not name:
        raise InvalidName("Upload-Metadata has no filename")

    async def admit(size: int) -> int:
        """The pre-create hook, once the size is known: the most bytes the file may have."""
        return hooked.limit(request, await hooked.pre_create(request, name, size, "tus", metadata))

    upload = await request.app[STORAGE].resumable.concatenation.concatenate(
        request[USER_ID],
        name,
        raw_metadata,
        partial_ids,
        time.time(),
        admit=admit,
        finish=hooked.pre_finish(request, name, "tus", metadata),
    )
    headers = {hdrs.LOCATION: absolute_url(request, f"{UPLOADS}/{upload.id}"), **_upload_headers(upload)}
    return web.Response(status=201, headers=headers)


async def _head(request: web.Request, scope: Scope) -> web.Response:
    upload = await scope.upload_of(request)
    headers = _upload_headers(upload)
    headers[hdrs.CACHE_CONTROL] = "no-store"
    if upload.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.length)
    if upload.metadata:
        headers["Upload-Metadata"] = upload.metadata
    headers.update(_concat_header(request, upload))
    return web.Response(status=200, headers=headers)


async def _patch(request: web.Request, scope: Scope) -> web.Response:
    offset = header_number(request, "Upload-Offset")
    if offset is None:
        raise MISSING_OFFSET()
    if request.content_type != OFFSET_OCTET_STREAM:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"Content-Type: {OFFSET_OCTET_STREAM}")
    upload = await _append(request, scope, await scope.upload_of(request), offset)
    return web.Response(status=204, headers=_upload_headers(upload))


async def _terminate(request: web.Request, scope: Scope) -> web.Response:
    upload = await scope.upload_of(request)
    await request.app[STORAGE].resumable.terminate(upload)
    return web.Response(status=204)


async def _check_body(request: web.Request, scope: Scope) -> None:
    """What a tus request with a body refuses before reading it: credentials, version, upload
    slots, and for a creation, an Upload-Length that cannot fit in the quota of the space the
    file goes to; a PATCH, an upload that is not the scope's."""
    await scope.identify(request)
    _check_version(request)
    storage = request.app[STORAGE]
    if request.method == hdrs.METH_POST:
        metadata = _metadata(request.headers.get("Upload-Metadata", ""))
        # A partial upload is no file: no key, and the hooks are asked of its final upload.
        partial = request.headers.get("Upload-Concat", "").strip() == "partial"
        name = None if partial else metadata.get("filename")
        length = header_number(request, "Upload-Length")
        if not name:  # (the creation is refused anyway, unless partial)
            if not partial:
                raise InvalidName("Upload-Metadata has no filename")
            await storage.admit(request[USER_ID], None, None)
            return
        user, key = await scope.owner(request, name, length)
        await storage.admit(user, key, length)
        name_seen = split_file_key(key)[1] if key is not None else name
        await hooked.pre_create(request, name_seen, length, scope.hook_upload, metadata, user=user)
    else:
        await storage.admit(await scope.writer(request), None, None)


@dataclasses.dataclass(frozen=True)
class Handlers:
    """The tus routes of one scope: creation, HEAD, PATCH, termination, and the expect handler
    of the routes that take a body."""

    create: Handler
    head: Handler
    patch: Handler
    terminate: Handler
    expect: ExpectHandler


def handlers(scope: Scope) -> Handlers:
    async def create(request: web.Request) -> web.StreamResponse:
        return await _create(request, scope)

    async def head(request: web.Request) -> web.StreamResponse:
        return await _head(request, scope)

    async def patch(request: web.Request) -> web.StreamResponse:
        return await _patch(request, scope)

    async def terminate(request: web.Request) -> web.StreamResponse:
        return await _terminate(request, scope)

    async def check(request: web.Request) -> None:
        await _check_body(request, scope)

    return Handlers(
        create=tus_route(create),
        head=tus_route(head),
        patch=tus_route(patch),
        terminate=tus_route(terminate),
        expect=expect_body(check, _TUS_HEADERS),
    )


_OWN_ROUTES = handlers(OWN)
create = _OWN_ROUTES.create
head = _OWN_ROUTES.head
patch = _OWN_ROUTES.patch
terminate = _OWN_ROUTES.terminate
expect_patch = _OWN_ROUTES.expect
