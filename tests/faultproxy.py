"""A fault-injecting HTTP proxy between the gateway and moto, for the tests.

It forwards every request to the real S3 endpoint unchanged, except the ones
a `Fault` matches (by method and query parameters), which it answers with an
S3 error document, a connection reset in the middle of the request body, or a
delay. `down()` makes it reset every connection, as if S3 were unreachable.
Loopback only; one proxy per test.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import aiohttp
from aiohttp import web

# Headers that belong to one hop, not to the request being forwarded.
_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade", "expect"}

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>injected by faultproxy</Message>"
    "<RequestId>faultproxy</RequestId></Error>"
)


def s3_call(method: str, query: web.Request | dict) -> str:
    """Name the S3 operation of a request from its method and query (path-style)."""
    q = query.query if isinstance(query, web.Request) else query
    if method == "PUT" and "partNumber" in q:
        return "UploadPart"
    if method == "POST" and "uploads" in q:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload"
    if method == "GET" and "uploads" in q:
        return "ListMultipartUploads"
    return f"{method} other"


@dataclasses.dataclass
class Fault:
    """What to do to matching requests, for the first `times` of them (None: always).

    `action` is "error" (answer `status` with S3 error `code`), "reset" (read
    `after_bytes` of the body, then reset the connection), "delay" (wait
    `seconds`, then forward) or "rewrite" (forward, then pass S3's response
    body through `rewrite`).
    """

    operation: str
    action: str = "error"
    status: int = 500
    code: str = "InternalError"
    times: int | None = None
    after_bytes: int = 64 * 1024
    seconds: float = 0.0
    match: Callable[[web.Request], bool] = lambda request: True
    rewrite: Callable[[bytes], bytes] = lambda body: body
    hits: int = 0

    def applies(self, request: web.Request) -> bool:
        if s3_call(request.method, request) != self.operation or not self.match(request):
            return False
        return self.times is None or self.hits < self.times


def _reset(request: web.Request) -> web.Response:
    """Reset the connection; the response returned goes nowhere."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=499)


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str]] = []  # (operation, query string), in order
        self.is_down = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def down(self) -> None:
        self.is_down = True

    def up(self) -> None:
        self.is_down = False

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)

    async def start(self) -> FaultProxy:
        # auto_decompress=False and raw bytes both ways: the proxy must not
        # change what the gateway signed or what S3 answered.
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: a delayed request must not hold up the end of a test.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        operation = s3_call(request.method, request)
        if self.is_down:
            return _reset(request)
        self.calls.append((operation, request.query_string))
        fault = next((f for f in self.faults if f.applies(request)), None)
        if fault is not None:
            fault.hits += 1
            if fault.action == "error":
                await request.read()  # as S3 does: the client finishes sending first
                return web.Response(
                    status=fault.status,
                    text=ERROR_XML.format(code=fault.code),
                    content_type="application/xml",
                )
            if fault.action == "reset":
                await request.content.readexactly(min(fault.after_bytes, request.content_length or 0))
                return _reset(request)
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            if fault.action == "rewrite":
                return await self._forward(request, fault.rewrite)
        return await self._forward(request)

    async def _forward(
        self, request: web.Request, rewrite: Callable[[bytes], bytes] | None = None
    ) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            if rewrite is not None:
                payload = rewrite(payload)
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                out["Content-Length"] = upstream.headers["Content-Length"]  # botocore reads it
            return web.Response(status=upstream.status, body=payload, headers=out)
