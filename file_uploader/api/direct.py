"""Direct-to-S3 uploads (DIRECT_UPLOADS), one route per call of @uppy/aws-s3's multipart mode:

    POST   /api/direct                    createMultipartUpload: {"name", "size", "partSize"?} -> {"uploadId"}
    POST   /api/direct/{id}/parts/{n}     signPart: {"checksum": SHA-256, "md5"?} -> {"url", "headers"}
    GET    /api/direct/{id}/parts         listParts: [{"PartNumber", "Size", "ETag"}]
    POST   /api/direct/{id}/complete      completeMultipartUpload -> {"name", "size", "etag"}
    DELETE /api/direct/{id}               abortMultipartUpload

The rules are the storage layer's (storage/direct.py); here the blocking hooks (pre-create on
create, pre-finish before completion) and the JSON shapes.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..storage.direct import DirectUpload, md5_checksum, sha256_checksum, usable_part_size
from . import hooked
from .errors import INVALID_FIELD, NOT_FOUND
from .links import json_body

DIRECT = "/api/direct"
DIRECT_UPLOAD = DIRECT + "/{upload_id}"
DIRECT_PARTS = DIRECT_UPLOAD + "/parts"
DIRECT_PART = DIRECT_PARTS + "/{number:[0-9]{1,5}}"
DIRECT_COMPLETE = DIRECT_UPLOAD + "/complete"
HOOK_UPLOAD = "direct"  # the hooks' `upload` field for these uploads


def _enabled(request: web.Request) -> None:
    if not request.app[SETTINGS].direct_uploads:
        raise NOT_FOUND(detail="direct uploads are off (DIRECT_UPLOADS)")


async def _upload(request: web.Request) -> DirectUpload:
    _enabled(request)
    return await request.app[STORAGE].direct.get(request[USER_ID], request.match_info["upload_id"])


async def create(request: web.Request) -> web.Response:
    _enabled(request)
    body = await json_body(request, '{"name": "report.pdf", "size": 104857600}')
    name, size = body.get("name"), body.get("size")
    if not isinstance(name, str) or not name:
        raise INVALID_FIELD(field="name", problem="must be the file's name")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise INVALID_FIELD(field="size", problem="must be the file's size in bytes, at least 1")
    part_size = body.get("partSize")
    if part_size is not None and not usable_part_size(size, part_size):
        raise INVALID_FIELD(field="partSize", problem="must be 5 MiB to 5 GiB, and make at most 10,000 parts")
    verdict = await hooked.pre_create(request, name, size, HOOK_UPLOAD)
    upload = await request.app[STORAGE].direct.create(
        request[USER_ID], name, size, max_size=hooked.limit(request, verdict), part_size=part_size
    )
    return web.json_response(
        {"uploadId": upload.id, "key": upload.name, "partSize": upload.part_size, "parts": upload.parts},
        status=201,
    )


async def sign_part(request: web.Request) -> web.Response:
    upload = await _upload(request)
    body = await json_body(request, '{"checksum": "<base64 of the part\'s SHA-256>"}')
    checksum = sha256_checksum(body.get("checksum"))
    if checksum is None:
        raise INVALID_FIELD(field="checksum", problem="must be the base64 of the part's SHA-256")
    md5 = md5_checksum(body["md5"]) if body.get("md5") is not None else None
    if body.get("md5") is not None and md5 is None:
        raise INVALID_FIELD(field="md5", problem="must be the base64 of the part's MD5 (Content-MD5)")
    number = int(request.match_info["number"])
    url, headers = await request.app[STORAGE].direct.sign_part(upload, number, checksum, md5)
    return web.json_response({"url": url, "headers": headers, "size": upload.part_length(number)})


async def list_parts(request: web.Request) -> web.Response:
    upload = await _upload(request)
    return web.json_response(await request.app[STORAGE].direct.parts(upload))


async def complete(request: web.Request) -> web.Response:
    upload = await _upload(request)
    finish = hooked.pre_finish(request, upload.name, HOOK_UPLOAD)
    size, etag = await request.app[STORAGE].direct.complete(upload, finish)
    return web.json_response({"name": upload.name, "size": size, "etag": etag})


async def abort(request: web.Request) -> web.Response:
    upload = await _upload(request)
    await request.app[STORAGE].direct.abort(upload)
    return web.Response(status=204)
