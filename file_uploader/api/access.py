"""One log line and one set of metrics per request, and the count a graceful stop waits on.

The request log names the route pattern, never the raw path (which holds file
names), the user by the one-way id only, and the client by its address (as a
trusted proxy forwarded it, api/proxies.py).
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from ..appkeys import CUT_SHORT, IN_FLIGHT, REQUEST_ID, USER_ID
from ..ops import metrics
from .proxies import client_address

access_log = logging.getLogger("file_uploader.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is kept only if it is short and cannot break a log line.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"  # one label for every unknown path, so metrics stay bounded
CLIENT_CLOSED = 499  # a response its client cut short (nginx's code): not a server error


def request_id(request: web.Request) -> str:
    """The request's id: the client's X-Request-ID if sane, else a new one."""
    if REQUEST_ID not in request:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request[REQUEST_ID] = incoming if _SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return request[REQUEST_ID]


def route_of(request: web.Request) -> str:
    """The request's route pattern (`/api/files/{name}`): what logs and metrics name, never the path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


def _bytes_out(response: web.StreamResponse) -> int:
    """The body's length; for a chunked stream, what went on the wire (headers included)."""
    if response.content_length is not None:
        return response.content_length
    return response.body_length if response.prepared else 0


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log and count every request; count it for a graceful stop while it runs."""
    started = time.perf_counter()
    rid = request_id(request)
    route = route_of(request)
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    response: web.StreamResponse | None = None
    status = "cancelled"
    try:
        response = await handler(request)
        status = str(CLIENT_CLOSED if CUT_SHORT in request else response.status)
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
        metrics.UPLOADED_BYTES.inc(bytes_in)
        fields = {
            "request_id": rid,
            "method": request.method,
            "route": route,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(elapsed * 1000, 1),
            "user": request.get(USER_ID, "-"),
            "client": client_address(request) or "-",
        }
        access_log.info(" ".join(f"{name}=%s" for name in fields), *fields.values(), extra={"fields": fields})


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A signal rather than the middleware: streamed responses send their headers
    # inside the handler, and expect-handler refusals never reach a middleware.
    response.headers[REQUEST_ID_HEADER] = request_id(request)
