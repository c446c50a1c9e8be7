"""How many requests are being handled, so that a graceful stop can wait for them."""

from __future__ import annotations

import asyncio


class RequestsInFlight:
    def __init__(self) -> None:
        self.count = 0
        self.draining = False  # set by a graceful stop: keep-alive clients are sent away
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
