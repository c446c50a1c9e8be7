"""A fault-injecting HTTP proxy between the gateway and S3 (moto or RGW), for the tests.

It forwards every request to the real S3 endpoint unchanged, except the ones
a `Fault` matches (by method and query parameters), which it answers with an
S3 error document, a connection reset in the middle of the request body, a
delay, a body it stops reading (an S3 that stopped taking a part, as Ceph RGW
did) or reads slowly, or forwards with one bit of the body flipped: the
corruption in transit that a checksum exists to catch. `down()` makes it reset every
connection, as if S3 were unreachable. `ignore_conditions()` drops
If-Match and If-None-Match from what it forwards: an engine without
conditional writes, as the gateway's write probe then finds it. Loopback
only; one proxy per test. `proxy_in_a_thread` runs one beside gateway
processes that a test starts and waits for with blocking calls;
`proxy_process` runs one in its own process (`python -m tests.faultproxy`),
where its timing does not share a GIL with the test's own clients.

For an https engine it can speak TLS on both sides (`tls=(cert, key)` to
serve, `upstream_ca` to trust the engine): the gateway then talks https to
the proxy as it would to the engine, and the bit flips between the two TLS
connections, where only the gateway's own checksum can notice it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ssl
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

from devtools.ports import child_server, free_port

# The conditions of a conditional write, which `ignore_conditions` drops.
_CONDITIONS = {"if-match", "if-none-match"}
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
    `after_bytes` of the body, then reset the connection), "stall" (read
    `after_bytes` of the body, then neither read nor answer until the proxy
    closes: a socket nobody reads never learns that its peer went, and the
    client addresses of the connections held are in `held`), "delay" (wait
    `seconds`, then forward), "throttle" (read the body at `rate` bytes a
    second, wait `seconds`, then forward), "rewrite" (forward, then pass S3's
    response body through `rewrite`) or "corrupt" (forward the body with the
    lowest bit of its byte at `at_byte` flipped; None: the middle byte).
    """

    operation: str
    action: str = "error"
    status: int = 500
    code: str = "InternalError"
    times: int | None = None
    after_bytes: int = 64 * 1024
    seconds: float = 0.0
    at_byte: int | None = None
    rate: int = 1024 * 1024
    held: list[tuple[str, int]] = dataclasses.field(default_factory=list)
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


async def _throttled(request: web.Request, rate: int, then: float) -> bytes:
    """The body, read at `rate` bytes a second in steps of a tenth of a second; `then` seconds later."""
    step = max(1, rate // 10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    body = bytearray()
    while chunk := await request.content.read(step):
        body += chunk
        await asyncio.sleep(max(0.0, started + len(body) / rate - loop.time()))
    await asyncio.sleep(then)
    return bytes(body)


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
        self.conditions_ignored = False
        self._closing = asyncio.Event()  # set by close(): stalled requests let go
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

    def ignore_conditions(self) -> None:
        self.conditions_ignored = True

    def count(self, operation: str) -> int:
        return sum(1 for op, _ in self.calls if op == operation)

    async def start(self, port: int = 0) -> FaultProxy:
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
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=serving)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"{'https' if serving else 'http'}://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        self._closing.set()
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
            if fault.action == "stall":
                await request.content.readexactly(min(fault.after_bytes, request.content_length or 0))
                assert request.transport is not None
                fault.held.append(request.transport.get_extra_info("peername")[:2])
                await self._closing.wait()
                return _reset(request)
            if fault.action == "delay":
                await asyncio.sleep(fault.seconds)
            if fault.action == "throttle":
                return await self._forward(request, body=await _throttled(request, fault.rate, fault.seconds))
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
        dropped = _HOP | _CONDITIONS if self.conditions_ignored else _HOP
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
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


@contextlib.contextmanager
def proxy_in_a_thread(upstream: str) -> Iterator[FaultProxy]:
    """A FaultProxy on its own event loop: the gateway process is started and waited for with
    blocking calls, which must not stop the proxy from answering it."""
    loop = asyncio.new_event_loop()
    proxy = FaultProxy(upstream)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(proxy.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextlib.contextmanager
def proxy_process(upstream: str, *, ignore_conditions: bool = False) -> Iterator[str]:
    """A FaultProxy in a process of its own, in front of `upstream`; yields its URL."""
    port = free_port()
    args = [sys.executable, "-m", "tests.faultproxy", "--port", str(port), "--upstream", upstream]
    root = Path(__file__).resolve().parent.parent
    with child_server(args + (["--ignore-conditions"] if ignore_conditions else []), port, cwd=root):
        yield f"http://127.0.0.1:{port}"


async def _serve(port: int, upstream: str, ignore_conditions: bool) -> None:
    proxy = FaultProxy(upstream)
    if ignore_conditions:
        proxy.ignore_conditions()
    await proxy.start(port)
    await asyncio.Event().wait()  # until terminated


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.faultproxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ignore-conditions", action="store_true")
    options = parser.parse_args()
    asyncio.run(_serve(options.port, options.upstream, options.ignore_conditions))
