"""Graceful stop, the same under `python -m file_uploader` and gunicorn.

aiohttp's own shutdown closes every connection first and drops any bytes that
arrive after that, so an upload whose body is still coming in could never
finish. Instead, on SIGTERM: stop accepting, wait (most of GRACEFUL_TIMEOUT)
for requests in flight while their connections still read, and only then let
aiohttp close what is left; the uploads it cancels abort their multipart
uploads, so nothing is left open in S3.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..appkeys import IN_FLIGHT
from ..settings import Settings, SettingsError
from .connections import GatewayRunner, raise_open_file_limit

log = logging.getLogger(__name__)

# Of GRACEFUL_TIMEOUT, what is kept for cancelling stragglers and aborting their uploads.
CANCEL_SECONDS = 2.0


def cancel_window(settings: Settings) -> float:
    return min(CANCEL_SECONDS, settings.graceful_timeout / 2)


def runner_for(app: web.Application, settings: Settings, **kwargs: Any) -> web.AppRunner:
    """The runner every server process uses: connection limits (connections.py), no aiohttp access log."""
    raise_open_file_limit()
    # aiohttp waits up to shutdown_timeout twice (for handlers, then after cancelling them).
    return GatewayRunner(
        app, settings, access_log=None, shutdown_timeout=cancel_window(settings) / 2, **kwargs
    )


async def drain(runner: web.AppRunner, settings: Settings) -> None:
    """Stop accepting connections, then wait for the requests in flight."""
    for site in list(runner.sites):
        await site.stop()
    in_flight = runner.app[IN_FLIGHT]
    in_flight.draining = True
    timeout = settings.graceful_timeout - cancel_window(settings)
    if in_flight.count:
        log.info("stopping: waiting up to %.1f s for %d requests in flight", timeout, in_flight.count)
    try:
        async with asyncio.timeout(timeout):
            await in_flight.idle()
    except TimeoutError:
        log.warning("stopping: cancelling %d requests still in flight", in_flight.count)


AppFactory = Callable[[Settings], Awaitable[web.Application]]


async def serve(make_app: AppFactory, settings: Settings, host: str, port: int) -> None:
    """What `python -m file_uploader` runs, until SIGINT or SIGTERM: the app `make_app` builds
    (its caller hands it `app.create_app`: the server sits above the app and never imports it)."""
    runner = runner_for(await make_app(settings), settings)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # in use, not an address of this host, a name that does not resolve
            raise SettingsError(
                f"cannot listen on {host} port {port} (HOST, PORT): {exc.strerror or exc}"
            ) from None
        log.info("serving on http://%s:%d (stop with Ctrl-C or SIGTERM)", host, port)
        received: list[signal.Signals] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stop_on(sig: signal.Signals) -> None:
            received.append(sig)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop_on, sig)
        await stop.wait()
        log.info("stopping (%s): no new connections", received[0].name)
        await drain(runner, settings)
    finally:
        await runner.cleanup()
        log.info("stopped")
