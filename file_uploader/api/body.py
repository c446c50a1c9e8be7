"""Reading request bodies: as a stream of chunks, within the limits, and `Expect: 100-continue`.

aiohttp answers `Expect: 100-continue` itself, before any middleware runs,
unless the route has its own `expect_handler`. Every route that takes a body
has one (`expect_body`), which runs the route's own checks first, so that a
bad token, name, length or an upload slot the user does not have is refused
before the client sends a byte of the body.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http import HttpVersion11

from ..appkeys import SETTINGS
from ..settings import Settings
from ..sizes import format_size
from .errors import (
    BODY_TIMEOUT,
    EXPECTATION_FAILED,
    FILE_TOO_LARGE,
    INCOMPLETE_BODY,
    INVALID_FORM,
    ApiError,
    as_api_error,
    error_response,
)

ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]
# A route's checks before its body: plain, or a coroutine when they need S3 (USER_QUOTA).
Check = Callable[[web.Request], Awaitable[None] | None]


def file_too_large(limit: int) -> ApiError:
    return FILE_TOO_LARGE(limit=format_size(limit))


def declared_length(request: web.Request, settings: Settings) -> int | None:
    """The body's length if the client declared it (None for chunked), within MAX_FILE_SIZE."""
    length = request.content_length
    if length is None:
        return None if request.body_exists else 0
    if length > settings.max_file_size:
        raise file_too_large(settings.max_file_size)
    return length


def _incomplete() -> ApiError:
    return INCOMPLETE_BODY()


class ClientWaits:
    """CLIENT_TIMEOUT over each wait for a client's next bytes, with one timer for a whole body.

    The timeout counts only the time spent waiting for the client: between
    two reads the upload may wait for memory or for its own parts in flight,
    which is not the client's doing, so one deadline for the whole body would
    not do. An `asyncio.timeout` around every read did it exactly, at the cost
    of a timer set and cancelled (and the lookups of the running loop and
    task) per read: ~5 % of the event loop's samples in the profile of an
    upload, a few thousand reads per GiB. Here a read only notes when its wait
    began and ended; one timer, set at the first wait, looks when it fires: a
    wait under way for CLIENT_TIMEOUT cancels the reading task, which the read
    turns into BODY_TIMEOUT; a younger wait sets the timer again for when it
    would be due; no wait under way, and the next one sets it.

    A reader wraps each read in `with waits:`, which turns that cancel into
    BODY_TIMEOUT and lets any other one through.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._since: float | None = None  # when the wait under way began (None: not waiting)
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None  # the task that reads
        self._cancelling = 0  # its cancel requests before ours
        self.expired = False

    def start(self) -> None:
        """A wait for the client's bytes begins."""
        self._since = self._loop.time()
        if self._timer is None:
            self._task = asyncio.current_task()
            self._cancelling = self._task.cancelling() if self._task is not None else 0
            self._timer = self._loop.call_at(self._since + self._seconds, self._look)

    def stop(self) -> None:
        """The wait is over (bytes came, or the read failed)."""
        self._since = None

    def __enter__(self) -> None:
        self.start()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self.stop()
        if kind is asyncio.CancelledError and self.timed_out():
            raise BODY_TIMEOUT(seconds=self._seconds) from None

    def timed_out(self) -> bool:
        """Was the CancelledError at hand ours (the wait timed out), and nobody else's?"""
        if not self.expired or self._task is None:
            return False
        return self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        self._timer = None
        if self._since is None:
            return
        due = self._since + self._seconds
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._look)
        elif self._task is not None:
            self.expired = True
            self._task.cancel()


async def read_body(request: web.Request, limit: int | None = None) -> AsyncIterator[bytes]:
    """The request body as it arrives, held to MAX_FILE_SIZE (or a lower `limit`) and CLIENT_TIMEOUT."""
    settings = request.app[SETTINGS]
    content = request.content
    limit = settings.max_file_size if limit is None else limit
    total = 0
    waits = ClientWaits(settings.client_timeout)
    try:
        while True:
            with waits:
                try:
                    # readchunk hands over aiohttp's buffers as received, without
                    # joining them into a new bytes object first.
                    chunk, _ = await content.readchunk()
                except Exception as exc:  # what aiohttp raises for a connection lost midway
                    raise _incomplete() from exc
            if not chunk:
                # An empty read is either the end of one HTTP chunk or the end of
                # the body; ask the stream which. (aiohttp's shared empty-body
                # reader answers (b"", True) to everyone after its first use, so
                # the flag alone would loop forever.)
                if content.at_eof():
                    return
                continue
            total += len(chunk)
            if total > limit:
                raise file_too_large(limit)
            yield chunk
    finally:
        waits.close()


# How much of a multipart body part is asked for at a time. aiohttp's reader
# copies each piece once more to find the boundary; pieces this size keep that
# to a few copies per byte while the loop runs a few thousand times a second.
PART_READ_SIZE = 256 * 1024


async def read_part(
    request: web.Request, part: BodyPartReader, *, limited: bool = True, most: int | None = None
) -> AsyncIterator[bytes]:
    """One file of a multipart/form-data body as it arrives, held to CLIENT_TIMEOUT and
    (if `limited`) MAX_FILE_SIZE or a lower `most`, like a whole body."""
    settings = request.app[SETTINGS]
    limit = (settings.max_file_size if most is None else most) if limited else None
    total = 0
    waits = ClientWaits(settings.client_timeout)
    try:
        while True:
            with waits:
                try:
                    chunk = await part.read_chunk(PART_READ_SIZE)
                except ValueError as exc:  # aiohttp's word for a body that breaks the multipart rules
                    raise INVALID_FORM(problem="is malformed") from exc
                except Exception as exc:
                    raise _incomplete() from exc
            if not chunk:
                if not part.at_eof():
                    # The body ended where the part's closing boundary should be: aiohttp hands
                    # over what came (with the CRLF before the missing boundary) as if complete.
                    raise INVALID_FORM(problem="ends without its closing boundary")
                return
            total += len(chunk)
            if limit is not None and total > limit:
                raise file_too_large(limit)
            yield chunk
    finally:
        waits.close()


def expect_body(check: Check, headers: dict[str, str] | None = None) -> ExpectHandler:
    """An expect handler that runs `check` (awaited if it is a coroutine) and answers
    `100 Continue` only if it passes.

    A refusal (whatever `check` raises, as its JSON error, with `headers`
    added) goes out before the body; the connection is then closed, since the
    body that may follow will not be read.
    """

    async def expect(request: web.Request) -> web.StreamResponse | None:
        try:
            checked = check(request)
            if inspect.isawaitable(checked):
                await checked
        except Exception as exc:
            error = as_api_error(exc)
            error.headers.update(headers or {})
            response = error_response(error)
            response.force_close()
            return response
        if request.version != HttpVersion11:
            return None
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            response = error_response(EXPECTATION_FAILED(expect=expect))
            response.force_close()
            return response
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the response has not started
        return None

    return expect
