"""The blocking hooks (HOOK_URL, hooks/blocking.py) on the upload routes: PUT, forms and tus.

`pre_create` asks before a body is read (in the expect handler when the client
waits for 100 Continue, else in the handler; once per request, the answer
kept on it), and `limit` is the size the upload is then held to: MAX_FILE_SIZE,
or less when the hook lowered it. `pre_finish` is what the storage layer
awaits just before the file is stored (storage/landing.py's `Finish`). Without
HOOK_URL each is nothing at all.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..appkeys import BLOCKING_HOOKS, HOOK_VERDICT, SETTINGS, USER_ID
from ..hooks.blocking import ALLOWED, Verdict
from ..storage.landing import Finish


async def pre_create(
    request: web.Request,
    name: str,
    size: int | None,
    upload: str,
    metadata: Mapping[str, str] | None = None,
    *,
    once: bool = True,
    user: str | None = None,
) -> Verdict:
    """The pre-create hook's verdict on an upload of `name` (`size` bytes, None: not known yet);
    HookRefused / HookUnavailable when it says no. `once`: the request's one upload (a PUT, a tus
    creation), asked once whichever of the expect handler and the handler comes first. `user`: whose
    space the file goes to, when it is not the request's own (an upload request's owner)."""
    hooks = request.app.get(BLOCKING_HOOKS)
    if hooks is None:
        return ALLOWED
    if once and HOOK_VERDICT in request:
        return request[HOOK_VERDICT]
    verdict = await hooks.pre_create(
        user=user or request[USER_ID], name=name, size=size, upload=upload, metadata=metadata
    )
    if once:
        request[HOOK_VERDICT] = verdict
    return verdict


def enabled(request: web.Request) -> bool:
    return BLOCKING_HOOKS in request.app


def limit(request: web.Request, verdict: Verdict) -> int:
    """The most bytes the upload may have: MAX_FILE_SIZE, or the hook's lower max_size."""
    most = request.app[SETTINGS].max_file_size
    return most if verdict.max_size is None else min(most, verdict.max_size)


def pre_finish(
    request: web.Request,
    name: str,
    upload: str,
    metadata: Mapping[str, str] | None = None,
    *,
    user: str | None = None,
) -> Finish | None:
    """What the storage layer awaits with the file's size before storing it: the pre-finish hook."""
    hooks = request.app.get(BLOCKING_HOOKS)
    if hooks is None:
        return None
    user = user or request[USER_ID]

    async def finish(size: int) -> None:
        await hooks.pre_finish(user=user, name=name, size=size, upload=upload, metadata=metadata)

    return finish
