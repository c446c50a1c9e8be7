"""What share links (links.py) and upload requests (requests.py) share on the API: their owner
lists theirs (`GET`) and ends one (`DELETE .../{id}`, 204), each the storage grant's own call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from ..appkeys import STORAGE, USER_ID
from ..storage import Storage

T = TypeVar("T")
Handler = Callable[[web.Request], Any]


class Owned(Protocol[T]):
    """A kind of grant in storage, as its owner reaches it (storage.links.Links,
    storage.requests.UploadRequests)."""

    async def of_user(self, uid: str) -> list[T]: ...

    async def revoke(self, uid: str, grant_id: str) -> None: ...


def owner_routes(
    kind: Callable[[Storage], Owned[T]], describe: Callable[[web.Request, T], dict[str, Any]]
) -> tuple[Handler, Handler]:
    """The list and end handlers of one kind of grant: `kind` picks it from the storage, `describe`
    says one in JSON (expired ones too, with "expired": true, until gc removes them)."""

    async def list_owned(request: web.Request) -> web.Response:
        found = await kind(request.app[STORAGE]).of_user(request[USER_ID])
        return web.json_response([describe(request, item) for item in found])

    async def end_owned(request: web.Request) -> web.Response:
        await kind(request.app[STORAGE]).revoke(request[USER_ID], request.match_info["id"])
        return web.Response(status=204)

    return list_owned, end_owned
