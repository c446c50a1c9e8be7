"""A TCP proxy in front of the gateway that a test cuts, as a network is cut, for the browser tests.

It forwards bytes both ways, unchanged, and counts those going to the gateway.
`cut_after(n)` drops every connection (a TCP reset on both sides) once `n`
bytes have gone upstream in all, and refuses new connections until
`restore()`: to the browser, the network went away mid-upload; to the
gateway, the client did. Given several gateway ports, it hands each new
connection to the next in turn: several gateway processes behind one
address. It runs its own event loop in a thread, so that a synchronous
Playwright test can drive it. Loopback only; one per test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from devtools.ports import free_port

_CHUNK = 64 * 1024


class CutProxy:
    def __init__(self, target_port: int, *more_ports: int) -> None:
        self.target_port = target_port
        self._ports = [target_port, *more_ports]
        self.connections = 0  # accepted so far, each given to the next port in turn
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream_bytes = 0  # bytes sent towards the gateway, all connections together
        self.cut_done = threading.Event()
        self._cut_at: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    def __enter__(self) -> CutProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._cut())
        self._call(self._finish_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut_after(self, more_bytes: int) -> None:
        """Cut once `more_bytes` more bytes have gone upstream (counted from now)."""
        self.cut_done.clear()
        self._cut_at = self.upstream_bytes + more_bytes

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        self._call(self._listen())

    def _call(self, coroutine: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _finish_tasks(self) -> None:
        """Let the connections' tasks end (their sockets are closed): none is destroyed pending."""
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _cut(self) -> None:
        self._cut_at = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        self.cut_done.set()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        port = self._ports[self.connections % len(self._ports)]
        self.connections += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer.transport, writer.transport}
        self._transports |= pair
        await asyncio.gather(
            self._pump(client_reader, writer, upstream=True),
            self._pump(reader, client_writer, upstream=False),
        )
        self._transports -= pair

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
                if upstream:
                    self.upstream_bytes += len(data)
                    if self._cut_at is not None and self.upstream_bytes >= self._cut_at:
                        await self._cut()
                        return
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if not upstream:
                writer.close()
