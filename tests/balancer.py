"""A TCP load balancer for the tests: one loopback port in front of several S3 endpoints.

Each new connection goes to the next backend in turn (round robin); a backend that refuses
the connection (its daemon was killed) is skipped for the next, as HAProxy's or nginx's
passive health checks do. Bytes pass through unchanged, so SigV4 signatures (which cover the
Host header, the balancer's own address) hold. It runs in the test's event loop; `connections`
counts what went to each backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from devtools.ports import free_port

_CHUNK = 64 * 1024


class Balancer:
    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = dict.fromkeys(backends, 0)
        self._turn = itertools.cycle(range(len(backends)))
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for _ in self.backends:
            backend = self.backends[next(self._turn)]
            try:
                opened = await asyncio.open_connection(*backend)
            except OSError:
                continue  # refused: its daemon is gone; the next one
            self.connections[backend] += 1
            return opened
        return None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect()
        if upstream is None:
            client_writer.close()
            return
        reader, writer = upstream
        pipes = [
            asyncio.create_task(self._pipe(client_reader, writer)),
            asyncio.create_task(self._pipe(reader, client_writer)),
        ]
        self._pipes.update(pipes)
        try:
            # Either side ending (a backend killed mid-request) ends both: the client sees its
            # connection drop, as behind a real balancer, and retries.
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for stream in (writer, client_writer):
                with contextlib.suppress(Exception):
                    stream.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(_CHUNK):
                writer.write(chunk)
                await writer.drain()
