"""A folder as one zip, streamed from S3 with bounded memory.

The zip is written by stream-zip (PyPI `stream-zip`, the UK Department for
Business and Trade's): a well-kept, pure-Python streaming zip writer that
never needs the whole archive or a whole member in memory, writes each
member's sizes and CRC after its data (data descriptors), and switches to
ZIP64 by itself where it must (`ZIP_AUTO`: a member past 4 GiB, an offset past
4 GiB, more than 65,535 members). Its zip64 records and data descriptors are
the part of the format that home-grown writers get wrong.

stream-zip is synchronous: it runs in one of ZIP_WORKERS threads of its own
(never the event loop, nor the default executor other work shares), and pulls
each file's bytes from S3 through the event loop one chunk at a time
(`asyncio.run_coroutine_threadsafe`), so one zip in flight holds about a chunk
of S3 bytes, the deflate state and one output chunk, whatever the folder's
size: the figure `make bench` measures. At most ZIP_WORKERS zips are written
at once in a process; the next waits up to S3_POOL_WAIT_SECONDS, then is
refused (StorageBusy, 503 with Retry-After).

Members are deflated at level 1: most of what people zip to download
(photos, videos, archives) does not compress, and level 1 keeps a zip near
the speed of the S3 reads while still shrinking text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import stat
import threading
from collections.abc import AsyncGenerator, Generator, Iterator
from typing import Any

from stream_zip import ZIP_AUTO, stream_zip

from ..sizes import S3_POOL_WAIT_SECONDS
from .errors import FolderNotFound, StorageBusy
from .files import Files, ObjectInfo
from .keys import file_key, user_prefix

# Zips written at once in a process, each in its own thread: each holds one S3 download
# connection and a core while it deflates.
ZIP_WORKERS = 4
# The size of the chunks stream-zip hands back, and so of each write to the client.
ZIP_CHUNK_BYTES = 64 * 1024
DEFLATE_LEVEL = 1
_FILE_MODE = stat.S_IFREG | 0o644
_DONE = object()
log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The client went away: the zip's thread stops pulling bytes."""


class Zips:
    def __init__(self, files: Files) -> None:
        self.files = files
        self._pool = concurrent.futures.ThreadPoolExecutor(ZIP_WORKERS, thread_name_prefix="zip")
        self._slots = asyncio.Semaphore(ZIP_WORKERS)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def members(
        self, uid: str, folder: str, selection: list[str] | None = None
    ) -> list[tuple[str, ObjectInfo]]:
        """The files under `folder` (a name ending in /), expired ones left out; FolderNotFound
        if there is none. `selection`: only these names (in the folder, each a file or a
        sub-folder ending in /), FileNotFound for one that is not there."""
        if selection is not None:
            return await self._selected(uid, folder, selection)
        found = [entry async for page in self.files.list_live(uid, folder) for entry in page]
        if not found:
            raise FolderNotFound("nothing is stored under this folder")
        return found

    async def _selected(self, uid: str, folder: str, selection: list[str]) -> list[tuple[str, ObjectInfo]]:
        found: dict[str, ObjectInfo] = {}
        for name in dict.fromkeys(selection):  # once each, in the order given
            if name.endswith("/"):
                for entry in await self.members(uid, folder + name):
                    found.setdefault(*entry)
            else:
                found[folder + name] = await self.files.stat(file_key(uid, folder + name))
        return list(found.items())

    async def folder(
        self, uid: str, folder: str, members: list[tuple[str, ObjectInfo]]
    ) -> AsyncGenerator[bytes]:
        """The zip of `members` (from `members()`), each named below the folder's own last segment:
        `photos/` holds `photos/a.jpg`, `photos/2024/b.jpg`."""
        try:
            async with asyncio.timeout(S3_POOL_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise StorageBusy("too many zips are being written: try again") from None
        try:
            loop = asyncio.get_running_loop()
            stop = threading.Event()
            root = folder.rstrip("/").rsplit("/", 1)[-1] + "/"
            key_prefix = user_prefix(uid)

            pulled: list[Generator[bytes]] = []

            def member_files() -> Iterator[tuple[str, datetime.datetime, int, Any, Iterator[bytes]]]:
                for name, info in members:
                    chunks = self._pulled(loop, stop, key_prefix + name)
                    pulled.append(chunks)
                    member = root + name[len(folder) :]
                    yield (
                        member,
                        info.last_modified,
                        _FILE_MODE,
                        ZIP_AUTO(info.size, level=DEFLATE_LEVEL),
                        chunks,
                    )

            archive: Generator[bytes] = stream_zip(member_files(), chunk_size=ZIP_CHUNK_BYTES)  # type: ignore[assignment]
            pending: concurrent.futures.Future[Any] | None = None
            try:
                while True:
                    pending = self._pool.submit(next, archive, _DONE)
                    chunk = await asyncio.wrap_future(pending)
                    if chunk is _DONE:
                        return
                    yield chunk
            finally:
                # Cut short (the client went away, S3 failed): the thread stops at its next pull;
                # once it has (a cancelled await does not stop a thread), the zip and its readers
                # are closed there, which gives back the S3 connection they held.
                stop.set()
                if pending is not None and not pending.done():
                    with contextlib.suppress(BaseException):
                        await asyncio.wrap_future(pending)
                await loop.run_in_executor(self._pool, _close, archive, pulled)
        finally:
            self._slots.release()

    def _pulled(self, loop: asyncio.AbstractEventLoop, stop: threading.Event, key: str) -> Generator[bytes]:
        """The file's bytes, read on the event loop, handed to the zip's thread a chunk at a time."""
        chunks = self.files.read(key)
        try:
            while True:
                if stop.is_set():
                    raise _Stopped
                try:
                    yield asyncio.run_coroutine_threadsafe(_next(chunks), loop).result()
                except StopAsyncIteration:
                    return
        finally:
            # The file's S3 connection goes back however the zip ended.
            asyncio.run_coroutine_threadsafe(chunks.aclose(), loop).result()


async def _next(chunks: AsyncGenerator[bytes]) -> bytes:
    return await anext(chunks)


def _close(archive: Generator[bytes], pulled: list[Generator[bytes]]) -> None:
    """Close the zip and every file reader it opened, in the zip's thread: closing a generator
    does not close the iterator it was looping over, and a reader left to the garbage collector
    would give its S3 connection back from whatever thread collects it (or never)."""
    try:
        archive.close()
    finally:
        for chunks in pulled:
            try:
                chunks.close()
            except Exception:
                log.debug("a zip member's reader failed as it closed", exc_info=True)
