"""Client connections: how long a client may take to send a request head, how long an idle
keep-alive connection stays, and how many connections one process holds.

aiohttp's server has a keep-alive timeout (an hour by default) and nothing
else: a connection that sends half a request head and then nothing holds a
file descriptor for that hour, and about a thousand of them exhaust the usual
limit of 1,024 open files, after which the process cannot accept anyone, nor
open an S3 connection or a temporary file. So, around aiohttp's RequestHandler:

- HEAD_SECONDS: a request head must be complete within this many seconds
  of the connection opening, or of the first byte of the next request on a
  kept-alive connection; otherwise the connection is closed.
- KEEPALIVE_SECONDS: an idle kept-alive connection is closed after this long
  (aiohttp's own keep-alive timer).
- MAX_CONNECTIONS: beyond this many open client connections, a new one gets a
  JSON 503 with Retry-After and is closed at once. The effective cap is also
  kept below the process's open-file limit (which the gateway raises to its
  hard limit at startup), leaving room for S3 connections and temporary files.

- MAX_HEAD_BYTES, MAX_HEADERS: what a request head may hold. aiohttp alone
  takes 128 lines of 8 KiB (1 MiB), which a client can then hold open by
  trickling its body: ~0.9 MiB of the gateway's memory per connection, not
  given back. Beyond MAX_HEAD_BYTES the client gets a JSON 431 and the
  connection is closed.

aiohttp's own answers to malformed requests (a header value with a stray CR,
as `curl -H "X-Auth-Token: $(cat token.txt)"` sends from a file with Windows
line endings; a request line with a space in it) come with an ERROR log line
and a traceback that quote the request, token and file name included: here
they are one INFO line that names the error's kind only.

Bodies have their own timeout, CLIENT_TIMEOUT, for a client that stops
sending (api/body.py) or stops reading (api/downloads.py).

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
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from ..api.headers import SERVER_NAME
from ..ops import metrics
from ..settings import Settings

# A request head is a few hundred bytes that any client sends at once; ten seconds is room for
# a slow link, and short enough that a thousand half-sent heads cannot hold the process's files.
HEAD_SECONDS = 10.0

log = logging.getLogger(__name__)

# An idle kept-alive connection is closed after this long. A proxy that keeps connections to the
# gateway must drop them first (nginx: keepalive_timeout 10s in its upstream block), or a request
# it sends as the gateway closes is lost; a browser reuses a connection within seconds or not at all.
KEEPALIVE_SECONDS = 15.0
# A request head: nginx's default (large_client_header_buffers 4 8k) forwards at most 32 KiB;
# twice that, so whatever a proxy in front forwards gets through, and a browser's cookies with it.
MAX_HEAD_BYTES = 64 * 1024
# A browser sends about 15 headers, a chain of proxies adds forwarding and tracing ones: 64 is
# twice what a busy request carries. One header line stays at aiohttp's (and nginx's) 8 KiB.
MAX_HEADERS = 64
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

_TOO_LARGE_BODY = json.dumps(
    {"error": {"code": "headers_too_large", "message": f"a request head may hold {MAX_HEAD_BYTES} bytes"}}
).encode()
_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Server: " + SERVER_NAME.encode() + b"\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n\r\n" + _TOO_LARGE_BODY
)
# aiohttp's own log of malformed requests quotes them: it goes nowhere.
_SILENT = logging.getLogger("file_uploader.server.aiohttp_errors")
_SILENT.disabled = True


def _head_size(message: RawRequestMessage) -> int:
    """About the bytes of a parsed request head: its request line and header lines."""
    line = len(message.method) + len(message.path) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in message.raw_headers)


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
        self._head_bytes = 0  # of the request head being received; -1 once it is complete
        self._body: StreamReader | None = None  # of the last request whose head was complete

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
            and (self._body is None or self._body.is_eof())  # not the rest of the last body
        ):
            self._arm_head_deadline()  # the first byte of the next request on this connection
        requests_before = self._request_count
        super().data_received(data)
        if self._head_bytes < 0 or self._manager is None or self.transport is None:
            return
        if self._request_count == requests_before:  # still in the head
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_head()
            return
        message, self._body = self._messages[-1] if self._messages else (None, None)
        if isinstance(message, RawRequestMessage) and _head_size(message) > MAX_HEAD_BYTES:
            self._messages.pop()  # complete in one piece, and too large: never handled
            self._refuse_head()
        self._head_bytes = -1  # the head is complete: what follows is its body

    def _refuse_head(self) -> None:
        metrics.CLIENTS_CUT_OFF.labels("headers_too_large").inc()
        writable: Any = self.transport
        writable.write(_TOO_LARGE_RESPONSE)
        self._head_bytes = -1
        self.force_close()

    def _arm_head_deadline(self) -> None:
        if self._head_handle is not None:
            self._head_handle.cancel()
        self._head_armed_for = self._request_count
        self._head_bytes = 0
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

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        # aiohttp's own answers to malformed requests, which no app signal sees.
        if isinstance(exc, HttpProcessingError):
            # The client's mistake: one line naming its kind only (aiohttp's message quotes the request).
            log.info("malformed request refused with %d: %s", status, type(exc).__name__)
            logger, self.logger = self.logger, _SILENT
            try:
                response = super().handle_error(request, status, exc, message)
            finally:
                self.logger = logger
        else:
            response = super().handle_error(request, status, exc, message)
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
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_SECONDS)
        kwargs.setdefault("max_headers", MAX_HEADERS)
        super().__init__(app, **kwargs)
        self._cap = connection_cap(settings)
        self._head_timeout = HEAD_SECONDS

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
