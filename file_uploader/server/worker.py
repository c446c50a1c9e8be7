"""The gunicorn worker: aiohttp's uvloop worker with the graceful stop of lifecycle.py.

    gunicorn file_uploader.app:create_app -c gunicorn.conf.py

Each worker process builds its own app (and so its own S3 client) in its own loop.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.worker import GunicornUVLoopWebWorker

from ..ops.loop import send_headers_and_body_apart
from ..settings import load_settings
from .lifecycle import drain, runner_for

# gunicorn restarts a worker silent for this long (gunicorn.conf.py). The event loop answers
# gunicorn's heartbeat between any two steps, so only a loop blocked this long (a bug) trips it;
# uploads and downloads of any length never do.
WORKER_TIMEOUT = 30


class GracefulWorker(GunicornUVLoopWebWorker):
    """aiohttp's uvloop worker; on SIGTERM it drains as lifecycle.drain() says."""

    _runner: web.AppRunner | None = None
    _stopping = False

    def init_process(self) -> None:
        send_headers_and_body_apart()  # this worker always runs on uvloop
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()  # the factory named on the command line: file_uploader.app:create_app
        make_app: Any = self.wsgi  # type: ignore[has-type]
        self._settings = load_settings()

        async def make_runner() -> web.AppRunner:
            # aiohttp's worker accepts a runner from the factory: keep it, to stop its sites.
            app = await make_app()
            self._runner = runner_for(app, self._settings, logger=self.log)
            return self._runner

        self.wsgi = make_runner

    def handle_exit(self, sig: int, frame: object) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._runner is None:  # not serving yet
            super().handle_exit(sig, frame)
            return
        self._drain_task = self.loop.create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: object) -> None:
        assert self._runner is not None
        try:
            await drain(self._runner, self._settings)
        finally:
            super().handle_exit(sig, frame)
            self._notify_waiter_done()  # wake the serve loop now, not at its next 1 s tick
