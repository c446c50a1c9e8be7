"""What probes and scrapers read: /healthz, /readyz and /metrics, outside /api/ and without a token."""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from ..appkeys import STORAGE
from ..ops import metrics
from ..storage.errors import StorageFailure
from .errors import NOT_READY


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Touches nothing else."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the bucket answers a HeadBucket and the write probe succeeded; the answer says
    what the probe found S3 to enforce and the integrity mode in force."""
    try:
        s3 = await request.app[STORAGE].readiness.check()
    except StorageFailure as exc:
        raise NOT_READY(detail=exc) from None
    return web.json_response({"status": "ready", "s3": s3})


async def metrics_page(request: web.Request) -> web.Response:
    response = web.Response(body=metrics.exposition())
    response.headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE_LATEST
    return response


# Paths that never touch S3: they answer while S3 is down.
_WITHOUT_S3 = frozenset({"/healthz", "/readyz", "/metrics", "/", "/api/openapi.json"})


@web.middleware
async def storage_ready_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before any request that needs S3, make sure the bucket is there and S3 was probed
    (until both were once).

    Every route but those above needs S3, share links and routes added later
    included, so none can skip the check by being forgotten in a list.
    """
    unrouted = request.match_info.http_exception is not None
    if not (unrouted or request.path in _WITHOUT_S3 or request.path.startswith("/static/")):
        await request.app[STORAGE].readiness.ensure_ready()
    return await handler(request)
