"""A fault-injecting HTTP proxy between the gateway and S3 (moto or RGW), for the tests.

It forwards every request to the real S3 endpoint unchanged, except the ones
a `Fault` matches (by method and query parameters), which it answers with an
S3 error document, a connection reset in the middle of the request body, a
delay, or forwards with one bit of the body flipped: the corruption in
transit that a checksum exists to catch. `down()` makes it reset every
connection, as if S3 were unreachable. Loopback only; one proxy per test.

For an https engine it can speak TLS on both sides (`tls=(cert, key)` to
serve, `upstream_ca` to trust the engine): the gateway then talks https to
the proxy as it would to the engine, and the bit flips between the two TLS
connections, where only the gateway's own checksum can notice it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
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
    if method == "PUT" and not q and isinstance(query, web.Request) and query.path.count("/") > 1:
        return "PutObject"
    if method == "POST" and "uploads" in q:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in q:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in q:
        return "AbortMultipartUpload"
    if method == "GET" and "uploads" in q:
        return "ListMultipartUploads"
    if method == "GET" and "uploadId" in q:
        return "ListParts"
    return f"{method} other"


@dataclasses.dataclass
class Fault:
    """What to do to matching requests, for the first `times` of them (None: always).

    `action` is "error" (answer `status` with S3 error `code`), "reset" (read
    `after_bytes` of the body, then reset the connection), "delay" (wait
    `seconds`, then forward), "rewrite" (forward, then pass S3's response
    body through `rewrite`) or "corrupt" (forward the body with the lowest
    bit of its byte at `at_byte` flipped; None: the middle byte).
    """

    operation: str
    action: str = "error"
    status: int = 500
    code: str = "InternalError"
    times: int | None = None
    after_bytes: int = 64 * 1024
    seconds: float = 0.0
    at_byte: int | None = None
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
    def __init__(
        self, upstream: str, *, upstream_ca: str | None = None, tls: tuple[str, str] | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self._upstream_tls = ssl.create_default_context(cafile=upstream_ca) if upstream_ca else None
        self._tls = tls  # (certificate, key) PEM files to serve https with
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
        connector = aiohttp.TCPConnector(ssl=self._upstream_tls) if self._upstream_tls else None
        self._session = aiohttp.ClientSession(auto_decompress=False, connector=connector)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown: a delayed request must not hold up the end of a test.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        serving = None
        if self._tls:
            serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            serving.load_cert_chain(*self._tls)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=serving)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if serving else 'http'}://127.0.0.1:{port}"
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
            if fault.action == "corrupt":
                body = bytearray(await request.read())
                if body:
                    body[len(body) // 2 if fault.at_byte is None else fault.at_byte] ^= 1
                return await self._forward(request, body=bytes(body))
        return await self._forward(request)

    async def _forward(
        self,
        request: web.Request,
        rewrite: Callable[[bytes], bytes] | None = None,
        body: bytes | None = None,
    ) -> web.Response:
        assert self._session is not None
        if body is None:
            body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        # The Host the gateway signed (SigV4 covers it): an engine that checks
        # signatures (RGW) refuses the request under any other.
        headers["Host"] = request.host
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
