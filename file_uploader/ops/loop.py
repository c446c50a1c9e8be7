"""The event loop the gateway runs on: uvloop when it is installed.

uvloop moves bytes between sockets with less CPU than asyncio's own loop. On
it, aiohttp can also hand a request's headers and an 8 MiB part to the socket
as two buffers; see `new_event_loop`.
"""

from __future__ import annotations

import asyncio

import aiohttp.http_writer


def send_headers_and_body_apart() -> None:
    """Let aiohttp pass headers and body to the socket as two buffers (uvloop only).

    aiohttp joins the headers and the first body chunk into one new bytes
    object unless the loop's writelines() is safe: it assumes unsafe before
    Python 3.12.9 because of a bug in asyncio's 3.12 transports. uvloop's
    writelines() is its own and sends the buffers as they are, so the join
    would only copy every part once more (CPU, and a second copy of each part
    in memory while it is sent). The profile put that join at about a quarter
    of an upload's CPU time on Python 3.11. This sets a module constant of
    aiohttp (pinned in requirements.txt): check it when upgrading aiohttp.
    """
    aiohttp.http_writer.SKIP_WRITELINES = False


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    send_headers_and_body_apart()
    return uvloop.new_event_loop()
