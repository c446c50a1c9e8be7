"""The OpenAPI 3 description of the API, served at GET /api/openapi.json.

Kept here, in one place; a test checks its paths and methods against the
app's routes, and schemathesis fuzzes the running gateway against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__

OPENAPI_PATH = "/api/openapi.json"

_STRING = {"schema": {"type": "string"}}
_ERROR_BODY = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": _ERROR_BODY}}


def _error(description: str, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = {name: _STRING for name in headers}
    return response


def _no_body(description: str) -> dict[str, Any]:
    return {"description": description}


# Every route can answer these.
_COMMON = {
    "401": _error("no token, a malformed one, or more than one", ("WWW-Authenticate",)),
    "502": _error("S3 refused the operation"),
    "503": _error(
        "S3 is unreachable or busy, or the gateway is at one of its limits (S3 connections, "
        "memory, client connections); try again",
        ("Retry-After",),
    ),
}
_NAMED = {**_COMMON, "400": _error("the file name cannot be stored (see the message)")}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_FILE_HEADERS = {name: _STRING for name in ("ETag", "Last-Modified", "Content-Length", "Accept-Ranges")}
# What GET of a file, and of a share link, answers when it sends bytes.
_FILE_BODY = {
    "200": {"description": "the file", "headers": _FILE_HEADERS, "content": {"*/*": _BINARY}},
    "206": {
        "description": "the requested range",
        "headers": {**_FILE_HEADERS, "Content-Range": _STRING},
        "content": {"*/*": _BINARY},
    },
}


def _header(name: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, **_STRING}


_DIGEST_HEADERS = [_header("Content-MD5"), _header("Digest"), _header("Repr-Digest")]
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the file name: UTF-8, percent-encoded; '/' allowed between non-empty segments",
    "schema": {"type": "string", "minLength": 1},
}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


# Issue #15: forms, folders, the public library, thumbnails and inline.
_JSON = "application/json"
_THUMBNAIL = _query(
    "thumbnail",
    {"type": "integer", "enum": [64, 128, 256, 512]},
    "a JPEG thumbnail of an image (WebP when Accept names image/webp), this many pixels on its longest side",
)
_INLINE = _query(
    "inline",
    {"type": "string", "enum": ["1", "0"]},
    "1: images, audio, video, PDF and plain text shown inline",
)
# What a file-serving route adds for ?thumbnail= and ?inline=.
_SERVE_ERRORS = {
    "400": _error("a thumbnail size that is not offered"),
    "415": _error("a thumbnail of a file that is not a PNG, JPEG, WebP or GIF image"),
    "422": _error("a thumbnail of an image over THUMBNAIL_MAX_PIXELS or THUMBNAIL_MAX_BYTES"),
}
_FILE_ITEM = {
    "type": "object",
    "required": ["name", "size", "modified"],
    "properties": {
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "modified": {"type": "string"},
        "public": {"type": "boolean"},
    },
}
_LISTING = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "array", "items": _FILE_ITEM},
        {
            "type": "object",
            "required": ["prefix", "folders", "files", "next"],
            "properties": {
                "prefix": {"type": "string"},
                "folders": {"type": "array", "items": {"type": "string"}},
                "files": {"type": "array", "items": _FILE_ITEM},
                "next": {"type": "string", "nullable": True},
            },
        },
    ]
}
_FORM_FILE = {
    "type": "object",
    "required": ["field", "name", "status"],
    "properties": {
        "field": {"type": "string", "nullable": True},
        "name": {"type": "string"},
        "status": {"type": "integer"},
        "size": {"type": "integer"},
        "public": {"type": "boolean"},
        "error": _ERROR_BODY,
    },
}
_FORM_ANSWER = {
    "type": "object",
    "required": ["files"],
    "properties": {"files": {"type": "array", "items": _FORM_FILE}},
}
_FORM_POST = {
    "summary": "store files sent as multipart/form-data (curl -F, an HTML form, FormData), streamed",
    "description": (
        "Fields are read in order: `token` (only for a client that cannot send X-Auth-Token; before any "
        "file), `name` (the name of the next file), `public` (true/false, for the files after it), then "
        "file fields, each stored under its filename. Each file is checked and stored on its own."
    ),
    "security": [{"token": []}, {}],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "token": {"type": "string"},
                        "name": {"type": "string"},
                        "public": {"type": "string", "enum": ["true", "false"]},
                        "file": {"type": "string", "format": "binary"},
                    },
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    },
    "responses": {
        "200": {"description": "every file was stored", "content": {_JSON: {"schema": _FORM_ANSWER}}},
        "207": {
            "description": "some files were stored, some not",
            "content": {_JSON: {"schema": _FORM_ANSWER}},
        },
        **_NAMED,
        "400": _error("no file, a malformed form or field, or (with the list) every file refused for a 400"),
        "408": _error("the client stopped sending the body"),
        "413": _error("every file was larger than MAX_FILE_SIZE, or past the user's quota"),
        "415": _error("not multipart/form-data"),
        "417": _error("an Expect other than 100-continue"),
        "429": _error("too many uploads at once for this user", ("Retry-After",)),
    },
}
_LIBRARY_ITEM = {
    "type": "object",
    "required": ["id", "name", "size", "type", "modified", "published", "url"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "type": {"type": "string"},
        "modified": {"type": "string"},
        "published": {"type": "string"},
        "url": {"type": "string"},
    },
}


def _library_paths() -> dict[str, Any]:
    return {
        "/api/public": {
            "get": {
                "summary": "the public library: every user's public files, newest first, a page at a time",
                "security": [],
                "parameters": [
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("after", {"type": "string"}, "the `next` of the page before"),
                ],
                "responses": {
                    "200": {
                        "description": "one page",
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["files", "next"],
                                    "properties": {
                                        "files": {"type": "array", "items": _LIBRARY_ITEM},
                                        "next": {"type": "string", "nullable": True},
                                    },
                                }
                            }
                        },
                    },
                    "400": _error("a bad limit or cursor"),
                    "502": _COMMON["502"],
                    "503": _COMMON["503"],
                },
            }
        },
        "/p/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, **_STRING}],
            "get": {
                "summary": "a public file (or one range of it, or its thumbnail), without a token",
                "security": [],
                "parameters": [_header("Range"), _THUMBNAIL, _INLINE],
                "responses": {
                    **_FILE_BODY,
                    **_SERVE_ERRORS,
                    "404": _error("no such public file"),
                    "410": _error("the file was replaced since it was published"),
                    "416": _error("the range is outside the file", ("Content-Range",)),
                    "502": _COMMON["502"],
                    "503": _COMMON["503"],
                },
            },
        },
    }


# tus 1.0.0 (see tus.py): every request but OPTIONS carries Tus-Resumable.
_TUS_VERSION = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "schema": {"type": "string", "enum": ["1.0.0"]},
}
_TUS_ERRORS = {
    **_COMMON,
    "400": _error("a malformed tus header, metadata or file name"),
    "412": _error("an unsupported Tus-Resumable", ("Tus-Version",)),
}
_TUS_OPTIONS = {
    "summary": "tus discovery: version, extensions, maximum size (no token needed)",
    "security": [],
    "responses": {"204": _no_body("the server's tus capabilities")},
}
_TUS_LOCKED = _error("another request is writing to this upload; try again", ("Retry-After",))
_TUS_CREATE = {
    "summary": "start a resumable (tus) upload; the file name is the filename metadata key",
    "parameters": [
        _TUS_VERSION,
        _header("Upload-Length"),
        _header("Upload-Defer-Length"),
        _header("Upload-Metadata"),
    ],
    "responses": {
        "201": {
            "description": "created",
            "headers": {
                "Location": {
                    "description": "the upload's absolute URL, on the public origin (PUBLIC_URL, or what a "
                    "trusted proxy forwarded)",
                    "schema": {"type": "string", "format": "uri"},
                },
                "Upload-Offset": _STRING,
            },
        },
        **_TUS_ERRORS,
        "413": _error(
            "Upload-Length is over MAX_FILE_SIZE or does not fit in the user's quota (quota_exceeded), "
            "or the body is longer than Upload-Length"
        ),
        "415": _error("a body without Content-Type: application/offset+octet-stream"),
        "460": _error("the body does not match Upload-Checksum (nothing is created)"),
    },
}
_UPLOAD_ID = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _tus_paths() -> dict[str, Any]:
    return {
        "/api/uploads": {"post": _TUS_CREATE, "options": _TUS_OPTIONS},
        "/api/uploads/": {"post": _TUS_CREATE, "options": _TUS_OPTIONS},
        "/api/uploads/{upload_id}": {
            "parameters": [_UPLOAD_ID],
            "options": _TUS_OPTIONS,
            "head": {
                "summary": "the upload's offset (where to resume); a finished upload's is its length",
                "parameters": [_TUS_VERSION],
                "responses": {
                    "200": {"description": "the upload", "headers": {"Upload-Offset": _STRING}},
                    **{code: _no_body(r["description"]) for code, r in _TUS_ERRORS.items()},
                    "404": _no_body("no such upload"),
                    "410": _no_body("the upload expired"),
                },
            },
            "patch": {
                "summary": "append bytes at Upload-Offset",
                "parameters": [
                    _TUS_VERSION,
                    _header("Upload-Offset"),
                    _header("Upload-Length"),
                    _header("Upload-Checksum"),
                ],
                "requestBody": {"required": True, "content": {"application/offset+octet-stream": _BINARY}},
                "responses": {
                    "204": {"description": "appended", "headers": {"Upload-Offset": _STRING}},
                    **_TUS_ERRORS,
                    "404": _error("no such upload"),
                    "408": _error("the client stopped sending the body"),
                    "409": _error(
                        "Upload-Offset is not the upload's offset, or another request changed the "
                        "upload meanwhile (HEAD tells where to resume)"
                    ),
                    "410": _error("the upload expired"),
                    "413": _error(
                        "the bytes run past the upload's length, Upload-Length past MAX_FILE_SIZE, or "
                        "the upload past the user's quota (quota_exceeded)"
                    ),
                    "423": _TUS_LOCKED,
                    "415": _error("Content-Type is not application/offset+octet-stream"),
                    "460": _error("the bytes do not match Upload-Checksum"),
                },
            },
            "delete": {
                "summary": "terminate the upload (a finished one is forgotten; its file stays)",
                "parameters": [_TUS_VERSION],
                "responses": {
                    "204": _no_body("terminated"),
                    **_TUS_ERRORS,
                    "404": _error("no such upload"),
                    "410": _error("the upload expired"),
                    "423": _TUS_LOCKED,
                },
            },
        },
    }


def _usage_paths() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    return {
        "/api/usage": {
            "get": {
                "summary": "what the user stores, against their quota (USER_QUOTA)",
                "description": (
                    "`used`: bytes of the user's files plus those held by their uploads in progress "
                    "(what the quota is checked against); `reserved`: the part of `used` held by "
                    "uploads in progress; `quota`: null when there is none; `files`: how many files."
                ),
                "responses": {
                    "200": {
                        "description": "the usage",
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["used", "quota", "files"],
                                    "properties": {
                                        "used": count,
                                        "quota": {**count, "nullable": True},
                                        "files": count,
                                        "reserved": count,
                                    },
                                }
                            }
                        },
                    },
                    **_COMMON,
                },
            }
        }
    }


def _ops_paths() -> dict[str, Any]:
    def probe(summary: str, ok: dict[str, Any], failure: dict[str, Any] | None = None) -> dict[str, Any]:
        responses = {"200": ok, **({"503": failure} if failure else {})}
        head = {code: _no_body(response["description"]) for code, response in responses.items()}
        return {
            "get": {"summary": summary, "security": [], "responses": responses},
            "head": {"summary": summary, "security": [], "responses": head},
        }

    status = {
        "application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}
    }
    return {
        "/healthz": probe("alive (no S3 call)", {"description": "serving", "content": status}),
        "/readyz": probe(
            "ready: the bucket answers",
            {"description": "ready", "content": status},
            _error("S3 or the bucket is not reachable"),
        ),
        "/metrics": probe(
            "Prometheus metrics",
            {"description": "text exposition format", "content": {"text/plain": _STRING}},
        ),
    }


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "file_uploader",
            "version": __version__,
            "description": (
                "Stream files into S3. Every user is an X-Auth-Token (a UUID). With CORS_ORIGINS set, "
                "CORS preflights (OPTIONS with Origin and Access-Control-Request-Method) are answered "
                "without a token: 204, or 403 origin_not_allowed (docs/browsers-and-proxies.md)."
            ),
        },
        "security": [{"token": []}],
        "paths": {
            "/api/files": {
                "get": {
                    "summary": "the user's file names, sorted; or one page of one folder",
                    "description": (
                        "Without parameters: every name (with details=1, objects). With prefix, "
                        "delimiter=/, after or limit: one page, an object with the folders and files "
                        "directly under prefix and the `next` cursor (null at the end)."
                    ),
                    "parameters": [
                        _query("details", {"type": "string", "enum": ["1"]}),
                        _query("prefix", {"type": "string"}, "a folder such as photos/"),
                        _query("delimiter", {"type": "string", "enum": ["/"]}),
                        _query("after", {"type": "string"}, "the `next` of the page before"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ],
                    "responses": {
                        "200": {"description": "the names", "content": {_JSON: {"schema": _LISTING}}},
                        **_COMMON,
                        "400": _error("a bad prefix, delimiter, cursor or limit"),
                    },
                },
                "post": _FORM_POST,
            },
            "/api/files/{name}": {
                "parameters": [_NAME],
                "put": {
                    "summary": "store a file (replacing any under the same name), streamed",
                    "parameters": [*_DIGEST_HEADERS, _header("X-Public")],
                    "requestBody": {
                        "required": True,
                        "content": {"application/octet-stream": _BINARY},
                    },
                    "responses": {
                        "204": _no_body("stored"),
                        **_NAMED,
                        "400": _error("a bad name, a bad or mismatched digest, or an incomplete body"),
                        "408": _error("the client stopped sending the body"),
                        "413": _error(
                            "the file is larger than MAX_FILE_SIZE (file_too_large), or does not fit "
                            "in the user's quota (quota_exceeded)"
                        ),
                        "417": _error("an Expect other than 100-continue"),
                        "429": _error("too many uploads at once for this user", ("Retry-After",)),
                    },
                },
                "get": {
                    "summary": "the file's bytes (or one range of them, or its thumbnail)",
                    "parameters": [_header("Range"), _THUMBNAIL, _INLINE],
                    "responses": {
                        **_FILE_BODY,
                        **_NAMED,
                        **_SERVE_ERRORS,
                        "400": _error("a bad name or thumbnail size"),
                        "404": _error("no such file"),
                        "416": _error("the range is outside the file", ("Content-Range",)),
                    },
                },
                "head": {
                    "summary": "the headers GET would send",
                    "responses": {
                        "200": {"description": "the file exists", "headers": _FILE_HEADERS},
                        **{code: _no_body(r["description"]) for code, r in _NAMED.items()},
                        "404": _no_body("no such file"),
                    },
                },
                "delete": {
                    "summary": "delete the file; or, for a name ending in / with recursive=1, the folder",
                    "parameters": [_query("recursive", {"type": "string", "enum": ["1"]})],
                    "responses": {
                        "204": _no_body("deleted"),
                        "200": {
                            "description": "the folder and everything in it deleted",
                            "content": {
                                _JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["folder", "deleted", "aborted"],
                                        "properties": {
                                            "folder": {"type": "string"},
                                            "deleted": {"type": "integer"},
                                            "aborted": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        **_NAMED,
                        "400": _error("a bad name, or a folder without recursive=1"),
                        "404": _error("no such file, or nothing in the folder"),
                    },
                },
                "patch": {
                    "summary": "make the file public (listed in /api/public) or private",
                    "requestBody": {
                        "required": True,
                        "content": {
                            _JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["public"],
                                    "properties": {"public": {"type": "boolean"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the file's visibility now, and its public URL",
                            "content": {
                                _JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["name", "public"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "public": {"type": "boolean"},
                                            "url": {"type": "string"},
                                        },
                                    }
                                }
                            },
                        },
                        **_NAMED,
                        "400": _error("a bad name or body"),
                        "404": _error("no such file"),
                    },
                },
            },
            "/api/files/{name}/share": {
                "parameters": [_NAME],
                "post": {
                    "summary": "a link that serves the file without a token until it expires",
                    "parameters": [
                        {
                            "name": "expires_in",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    ],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"expires_in": {"type": "integer", "minimum": 1}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "the link",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["url", "expires_at", "expires_in"],
                                        "properties": {
                                            "url": {"type": "string"},
                                            "expires_at": {"type": "string"},
                                            "expires_in": {"type": "integer"},
                                        },
                                    }
                                }
                            },
                        },
                        **_NAMED,
                        "400": _error("a bad name, body or expires_in"),
                        "404": _error("no such file"),
                    },
                },
            },
            "/s/{link}": {
                "parameters": [{"name": "link", "in": "path", "required": True, **_STRING}],
                "get": {
                    "summary": "a shared file (or one range of it, or its thumbnail), as an attachment",
                    "security": [],
                    "parameters": [_header("Range"), _THUMBNAIL, _INLINE],
                    "responses": {
                        **_FILE_BODY,
                        **_SERVE_ERRORS,
                        "403": _error("the link was not signed by this gateway"),
                        "404": _error("the file is gone"),
                        "410": _error("the link has expired, or the file was replaced"),
                        "416": _error("the range is outside the file", ("Content-Range",)),
                        "502": _COMMON["502"],
                        "503": _COMMON["503"],
                    },
                },
            },
            **_library_paths(),
            **_usage_paths(),
            **_tus_paths(),
            **_ops_paths(),
            OPENAPI_PATH: {
                "get": {
                    "summary": "this description",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
            "schemas": {"Error": _ERROR},
        },
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(spec())
