"""`POST /api/files`: uploads as multipart/form-data, for `curl -F`, HTML forms and `FormData`.

Each file field is streamed through the same pipeline as PUT, part by part as
aiohttp's multipart reader hands it over: never the whole file in memory or on
disk. Fields are read in the order they were sent, so what a file needs to
know comes before it:

- `token`: the user's token, for a client that cannot set X-Auth-Token (a
  plain HTML form). It must come before any file field, and is accepted on
  this route only. A form carries no ambient credential (no cookie), so a
  cross-site form can only upload into an account whose token it already has.
- `name`: the name to store the next file field under (else its filename).
- `public`: true/false, for every file field after it (PUT's X-Public).
- `expires_in`: seconds each file field after it lives once stored (PUT's X-Expires-In; empty: it
  keeps).

Each file gets the checks a PUT gets: its name, MAX_FILE_SIZE, the user's
upload slots and quota (USER_QUOTA: a file of unknown length, it is cut off
where it passes the quota), and the part's own Content-MD5 / Digest /
Repr-Digest headers. A
file that fails is aborted (nothing of it is stored), reported, and the rest of
its bytes skipped; the next file goes on. A broken body (malformed multipart,
a lost connection, a stall) ends the request: files completed before it stay.

The answer: JSON (`{"files": [...]}`; 200 when every file was stored, 207 when
some were not, and when none was, the first failure's status with the error
shape plus the list), or for a browser (Accept: text/html) a small HTML page
saying the same, with a link back to the page.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, hdrs, web

from ..appkeys import SETTINGS, STORAGE, USER_ID
from ..hooks.blocking import HookError
from ..sizes import format_size
from ..storage.errors import StorageFailure
from ..storage.keys import file_key
from . import hooked
from .auth import FORM_TYPE, TOKEN_HEADER, authenticate, authenticate_with
from .body import expect_body, read_part
from .digests import expected_digests, verified
from .errors import (
    BODY_TIMEOUT,
    INCOMPLETE_BODY,
    INVALID_FIELD,
    INVALID_FORM,
    INVALID_TOKEN,
    MISSING_TOKEN,
    NO_FILES,
    UNSUPPORTED_MEDIA_TYPE,
    ApiError,
    as_api_error,
)
from .names import content_type
from .page import PAGE_HEADERS
from .params import EXPIRES_FIELD, file_expires_in, public_flag

TOKEN_FIELD = "token"
NAME_FIELD = "name"
PUBLIC_FIELD = "public"
FIELD_MAX_BYTES = 4096  # a plain field (token, name, public) is short text
# Errors that leave the body unreadable: the request ends with them.
_BROKEN_BODY = frozenset({"incomplete_body", "body_timeout", "invalid_form"})


async def _check_form(request: web.Request) -> None:
    """What a form upload refuses before its body: not a form, a bad token header, no upload slot."""
    if request.content_type != FORM_TYPE:
        raise UNSUPPORTED_MEDIA_TYPE(expected=f"{FORM_TYPE} (or PUT the file's bytes)")
    if TOKEN_HEADER in request.headers or hdrs.AUTHORIZATION in request.headers:
        await request.app[STORAGE].admit(await authenticate(request), None, None)


async def _next(request: web.Request, reader: MultipartReader) -> BodyPartReader | None:
    settings = request.app[SETTINGS]
    try:
        async with asyncio.timeout(settings.client_timeout):
            part = await reader.next()
    except TimeoutError:
        raise BODY_TIMEOUT(seconds=settings.client_timeout) from None
    except ValueError as exc:
        raise INVALID_FORM(problem="is malformed") from exc
    except Exception as exc:
        raise INCOMPLETE_BODY() from exc
    if part is not None and not isinstance(part, BodyPartReader):
        raise INVALID_FORM(problem="nests another multipart body: send one file per field")
    return part


async def _text(request: web.Request, part: BodyPartReader) -> str:
    data = bytearray()
    async for chunk in read_part(request, part):
        data += chunk
        if len(data) > FIELD_MAX_BYTES:
            raise INVALID_FIELD(field=part.name, problem=f"is longer than {format_size(FIELD_MAX_BYTES)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise INVALID_FIELD(field=part.name, problem="is not UTF-8 text") from None


# Browsers escape these three in a filename (WHATWG HTML, "multipart/form-data encoding
# algorithm"); any other % is part of the name, as curl sends it.
_BROWSER_ESCAPES = {"%22": '"', "%0A": "\n", "%0D": "\r"}


def _filename(sent: str) -> str:
    for escape, character in _BROWSER_ESCAPES.items():
        sent = sent.replace(escape, character)
    return sent


async def _skip(request: web.Request, part: BodyPartReader) -> None:
    """Read the rest of a part and drop it, to get to the next one."""
    async for _ in read_part(request, part, limited=False):
        pass


async def _store(
    request: web.Request,
    user_id: str,
    part: BodyPartReader,
    name: str,
    public: bool,
    expires_in: int | None = None,
) -> dict[str, Any]:
    """Store one file field; its entry in the answer."""
    field = part.name
    received = 0
    most: int | None = None

    async def counted() -> Any:
        nonlocal received
        async for chunk in read_part(request, part, most=most):
            received += len(chunk)
            yield chunk

    try:
        key = file_key(user_id, name)
        # The form's body names its files: each is put to the pre-create hook when its part's
        # headers arrive, before a byte of it is read.
        most = hooked.limit(request, await hooked.pre_create(request, name, None, "form", once=False))
        chunks = verified(counted(), expected_digests(part.headers))
        await request.app[STORAGE].files.put(
            user_id,
            key,
            chunks,
            size=None,
            content_type=content_type(name),
            public=public,
            kind="form",
            expires_in=expires_in,
            finish=hooked.pre_finish(request, name, "form"),
        )
    except (ApiError, StorageFailure, HookError) as exc:
        error = as_api_error(exc)
        if error.code in _BROKEN_BODY:
            raise
        await _skip(request, part)
        return {
            "field": field,
            "name": name,
            "status": error.status,
            "error": {"code": error.code, "message": error.message},
        }
    return {"field": field, "name": name, "status": 201, "size": received, "public": public}


async def upload_form(request: web.Request) -> web.StreamResponse:
    await _check_form(request)
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError) as exc:
        raise INVALID_FORM(problem="is malformed") from exc
    user_id: str | None = request.get(USER_ID)
    name: str | None = None
    public = False
    expires_in: int | None = None
    results: list[dict[str, Any]] = []
    while (part := await _next(request, reader)) is not None:
        if part.filename is None:  # a plain field
            value = await _text(request, part)
            if part.name == TOKEN_FIELD:
                if user_id is not None:
                    raise INVALID_TOKEN(
                        credential=TOKEN_HEADER,
                        problem="must be sent once: in a header or a token field, not both",
                    )
                user_id = authenticate_with(request, value.strip())
                await request.app[STORAGE].admit(user_id, None, None)
            elif part.name == NAME_FIELD:
                name = value
            elif part.name == PUBLIC_FIELD:
                public = public_flag(value, "the public field")
            elif part.name == EXPIRES_FIELD:
                expires_in = file_expires_in(value)
            continue
        if part.filename == "" and name is None:
            await _skip(request, part)  # a form's file input left empty
            continue
        if user_id is None:
            raise MISSING_TOKEN(
                where=f"{TOKEN_HEADER} header, or in a {TOKEN_FIELD} field before the first file"
            )
        results.append(
            await _store(request, user_id, part, name or _filename(part.filename), public, expires_in)
        )
        name = None
    if user_id is None:
        await authenticate(request)  # the same 401 as any other route
    if not results:
        raise NO_FILES()
    return _answer(request, results)


def _answer(request: web.Request, results: list[dict[str, Any]]) -> web.StreamResponse:
    failures = [result for result in results if result["status"] >= 400]
    status = 200 if not failures else 207 if len(failures) < len(results) else failures[0]["status"]
    if "text/html" in request.headers.get(hdrs.ACCEPT, ""):
        return web.Response(
            status=status, text=_page(results), content_type="text/html", headers=PAGE_HEADERS
        )
    body: dict[str, Any] = {"files": results}
    if status >= 400:
        body["error"] = failures[0]["error"]
    return web.json_response(body, status=status)


def _page(results: list[dict[str, Any]]) -> str:
    """The answer as a page, for a form sent without JavaScript. No script, no inline style."""
    rows = "".join(
        f'<li class="{"done" if r["status"] < 400 else "failed"}">{html.escape(r["name"])}: '
        + ("stored" if r["status"] < 400 else html.escape(r["error"]["message"]))
        + "</li>"
        for r in results
    )
    stored = sum(r["status"] < 400 for r in results)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Upload: file_uploader</title>'
        '<link rel="stylesheet" href="/static/style.css"></head><body><main><section>'
        f'<h2>Stored {stored} of {len(results)} files</h2><ul class="uploads" id="results">{rows}</ul>'
        '<p><a href="/">Back to your files</a></p></section></main></body></html>'
    )


expect_form = expect_body(_check_form)
