"""The OpenAPI 3 description of the API (openapi.json beside this file), served at GET /api/openapi.json.

The description is a static document, read once when the package is imported;
only its version is filled in from the package. Tests hold it to the code: every
route described and nothing else, the enumerations (thumbnail sizes, page
limits, flag words, error codes) equal to the constants the handlers use, the
document valid OpenAPI; and schemathesis fuzzes the running gateway against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import __version__

OPENAPI_PATH = "/api/openapi.json"
DOCUMENT_FILE = Path(__file__).with_name("openapi.json")


def _load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DOCUMENT_FILE.read_text(encoding="utf-8"))
    document["info"]["version"] = __version__
    return document


DOCUMENT = _load()
# Served as is: encoded once, not per request.
_BODY = json.dumps(DOCUMENT).encode()


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
