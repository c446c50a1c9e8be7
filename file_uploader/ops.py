"""What operators see: health and readiness probes, /metrics, and one log line per request.

The probes and /metrics live outside /api/, so they need no token. The request
log names the route pattern, never the raw path (which holds file names), and
the user by the one-way id only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST

from . import metrics
from .errors import ApiError
from .handlers import FILE
from .storage import StorageFailure
from .typedefs import STORAGE, USER_ID

access_log = logging.getLogger("file_uploader.access")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
# An incoming id is kept only if it is short and cannot break a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
FILE_ROUTE = web.DynamicResource(FILE).canonical  # "/api/files/{name}", as routes are labelled
UNMATCHED_ROUTE = "<unmatched>"  # one label for every unknown path, so metrics stay bounded


class RequestsInFlight:
    """How many requests are being handled, so that a graceful stop can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request is in flight."""
        await self._idle.wait()


IN_FLIGHT = web.AppKey("requests_in_flight", RequestsInFlight)


def request_id(request: web.Request) -> str:
    """The request's id: the client's X-Request-ID if sane, else a new one."""
    if REQUEST_ID not in request:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request[REQUEST_ID] = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return request[REQUEST_ID]


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def _error_code(response: web.StreamResponse) -> str:
    """The `code` of a JSON error response, else its status."""
    body = getattr(response, "body", None)
    if isinstance(body, bytes) and response.content_type == "application/json":
        try:
            return str(json.loads(body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            pass
    return str(response.status)


def _bytes_out(response: web.StreamResponse) -> int:
    """The body's length; for a chunked stream, what went on the wire (headers included)."""
    if response.content_length is not None:
        return response.content_length
    return response.body_length if response.prepared else 0


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log and count every request; track uploads from start to outcome."""
    started = time.perf_counter()
    rid = request_id(request)
    route = _route(request)
    is_upload = request.method == hdrs.METH_PUT and route == FILE_ROUTE
    if is_upload:
        metrics.UPLOADS_IN_FLIGHT.inc()
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    response: web.StreamResponse | None = None
    status = "cancelled"
    try:
        response = await handler(request)
        status = str(response.status)
        if in_flight.draining:
            response.force_close()  # a keep-alive client must not start another request
        return response
    except web.HTTPException as exc:  # a redirect or other non-error the error middleware passed on
        status = str(exc.status)
        raise
    except Exception:
        status = "500"  # the connection will be cut: the status line is already out
        raise
    finally:
        in_flight.leave()
        elapsed = time.perf_counter() - started
        bytes_in = request.content.total_bytes
        bytes_out = _bytes_out(response) if response is not None else 0
        metrics.HTTP_REQUESTS.labels(request.method, route, status).inc()
        metrics.HTTP_SECONDS.labels(request.method, route).observe(elapsed)
        if is_upload:
            metrics.UPLOADS_IN_FLIGHT.dec()
            metrics.UPLOADED_BYTES.inc(bytes_in)
            if status == "204":
                metrics.UPLOADS_COMPLETED.inc()
            elif USER_ID in request:  # refusals before the upload began are not aborts
                reason = _error_code(response) if response is not None else status
                metrics.UPLOADS_ABORTED.labels(reason).inc()
        elif request.method == hdrs.METH_GET and route == FILE_ROUTE and status in ("200", "206"):
            metrics.DOWNLOADED_BYTES.inc(bytes_out)
        fields = {
            "request_id": rid,
            "method": request.method,
            "route": route,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(elapsed * 1000, 1),
            "user": request.get(USER_ID, "-"),
        }
        access_log.info(" ".join(f"{name}=%s" for name in fields), *fields.values(), extra={"fields": fields})


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A signal rather than the middleware: streamed responses send their headers
    # inside the handler, and expect-handler refusals never reach a middleware.
    response.headers[REQUEST_ID_HEADER] = request_id(request)


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers. Touches nothing else."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: the bucket answers a HeadBucket."""
    try:
        await request.app[STORAGE].check()
    except StorageFailure as exc:
        raise ApiError(503, "not_ready", str(exc)) from None
    return web.json_response({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    response = web.Response(body=metrics.exposition())
    response.headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE_LATEST
    return response


def add_ops(app: web.Application) -> None:
    app[IN_FLIGHT] = RequestsInFlight()
    app.middlewares.insert(0, observe_middleware)
    app.on_response_prepare.append(_add_request_id)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
