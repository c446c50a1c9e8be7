"""Client connections: how long a client may take to send a request head, how long an idle
keep-alive connection stays, and how many connections one process holds.

aiohttp's server has a keep-alive timeout (an hour by default) and nothing
else: a connection that sends half a request head and then nothing holds a
file descriptor for that hour, and about a thousand of them exhaust the usual
limit of 1,024 open files, after which the process cannot accept anyone, nor
open an S3 connection or a temporary file. So, around aiohttp's RequestHandler:

- HEADER_TIMEOUT: a request head must be complete within this many seconds
  of the connection opening, or of the first byte of the next request on a
  kept-alive connection; otherwise the connection is closed.
- KEEPALIVE_TIMEOUT: an idle kept-alive connection is closed after this long
  (aiohttp's own keep-alive timer).
- MAX_CONNECTIONS: beyond this many open client connections, a new one gets a
  JSON 503 with Retry-After and is closed at once. The effective cap is also
  kept below the process's open-file limit (which the gateway raises to its
  hard limit at startup), leaving room for S3 connections and temporary files.

Bodies have their own timeouts: BODY_READ_TIMEOUT for a client that stops
sending (api/body.py), SEND_TIMEOUT for one that stops reading (api/files.py).

`GatewayRunner` is what `python -m file_uploader` and the gunicorn worker run
the app with; in-process test servers use aiohttp's plain runner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from ..api.headers import SERVER_NAME
from ..ops import metrics
from ..settings import Settings

log = logging.getLogger(__name__)

# Open files kept for what is not a client connection: S3 connections are
# counted apart; these are temporary files of spilled parts, logs, the loop.
_SPARE_FILES = 64
_BUSY_BODY = json.dumps(
    {"error": {"code": "busy", "message": "too many connections; try again shortly"}}
).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Retry-After: 5\r\n"
    b"Server: " + SERVER_NAME.encode() + b"\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_cap(settings: Settings) -> int:
    """MAX_CONNECTIONS, lowered to what the open-file limit leaves once S3 and spare files are counted."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    room = soft - settings.s3_max_connections - _SPARE_FILES
    return max(1, min(settings.max_connections, room))


class GuardedRequestHandler(RequestHandler):
    """aiohttp's RequestHandler with a deadline for request heads and a cap on connections."""

    def __init__(self, manager: GuardedServer, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_timeout = head_timeout
        self._head_handle: asyncio.TimerHandle | None = None
        self._head_armed_for = -1  # the request count when the deadline was set

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        manager = self._manager
        assert isinstance(manager, GuardedServer)
        if len(manager.connections) >= manager.cap:
            metrics.CLIENTS_CUT_OFF.labels("max_connections").inc()
            writable: Any = transport
            writable.write(_BUSY_RESPONSE)
            transport.close()
            self._manager = None  # never counted: connection_lost has nothing to undo
            return
        super().connection_made(transport)
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if (
            data
            and not self._request_in_progress
            and self._head_armed_for != self._request_count
            and self._manager is not None
        ):
            self._arm_head_deadline()  # the first byte of the next request on this connection
        super().data_received(data)

    def _arm_head_deadline(self) -> None:
        if self._head_handle is not None:
            self._head_handle.cancel()
        self._head_armed_for = self._request_count
        self._head_handle = self._loop.call_later(
            self._head_timeout, self._head_deadline, self._request_count
        )

    def _head_deadline(self, armed_for: int) -> None:
        self._head_handle = None
        if self._request_count == armed_for and not self._request_in_progress and self.transport is not None:
            # No request head completed since the deadline was set.
            metrics.CLIENTS_CUT_OFF.labels("header_timeout").inc()
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_handle is not None:
            self._head_handle.cancel()
            self._head_handle = None
        super().connection_lost(exc)

    def handle_error(self, *args: Any, **kwargs: Any) -> web.StreamResponse:
        # aiohttp's own answers to malformed requests, which no app signal sees.
        response = super().handle_error(*args, **kwargs)
        response.headers[hdrs.SERVER] = SERVER_NAME
        return response


class GuardedServer(web.Server):
    def __init__(self, *args: Any, cap: int, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap = cap
        self.head_timeout = head_timeout

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, head_timeout=self.head_timeout, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """aiohttp's AppRunner, serving through GuardedServer."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", settings.keepalive_timeout)
        super().__init__(app, **kwargs)
        self._cap = connection_cap(settings)
        self._head_timeout = settings.header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        # The app's own server, rebuilt with the same arguments as GuardedServer.
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            cap=self._cap,
            head_timeout=self._head_timeout,
            **plain._kwargs,
        )
