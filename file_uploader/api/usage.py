"""GET /api/usage: what the user stores, against their quota (their own from their identity, else USER_QUOTA).

`used` counts the bytes of the user's files and those held by their uploads in
progress (what the quota is checked against); `reserved` is the part of it
held by uploads in progress; `quota` is null when there is none.
"""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORAGE, USER_ID

USAGE = "/api/usage"


async def usage(request: web.Request) -> web.Response:
    found = await request.app[STORAGE].quotas.usage(request[USER_ID])
    return web.json_response(
        {"used": found.used, "quota": found.quota, "files": found.files, "reserved": found.reserved},
        headers={"Cache-Control": "no-store"},
    )
