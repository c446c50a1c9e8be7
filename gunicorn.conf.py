"""gunicorn settings, read from the same environment (and .env) as the gateway.

    gunicorn file_uploader.app:create_app -c gunicorn.conf.py

Each worker calls create_app() in its own event loop, so each opens its own
S3 client. SIGTERM to the master is a graceful stop: workers stop accepting
and give requests in flight GRACEFUL_TIMEOUT seconds before they are
cancelled (and their multipart uploads aborted).
"""

import os
import shutil
import tempfile

# Workers share their metrics through files here (prometheus-client's
# multiprocess mode), so a scrape answered by any worker counts them all. It
# must be set before any worker imports prometheus_client.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="file_uploader-metrics-")

import sys  # noqa: E402

from file_uploader.ops import logs  # noqa: E402 (after the metrics directory is set)
from file_uploader.server.worker import WORKER_TIMEOUT  # noqa: E402
from file_uploader.settings import SettingsError, load_settings  # noqa: E402

try:
    _settings = load_settings()
except SettingsError as exc:
    # One line naming the setting, as `python -m file_uploader` prints it, not a traceback.
    sys.exit(f"file_uploader: {exc}")

_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = f"{_host}:{_settings.port}"
workers = _settings.workers
# aiohttp.GunicornUVLoopWebWorker, with a graceful stop that lets uploads finish.
worker_class = "file_uploader.server.worker.GracefulWorker"
timeout = WORKER_TIMEOUT
graceful_timeout = _settings.graceful_timeout
# The request log is file_uploader's own (access_middleware, first in app.py's MIDDLEWARES),
# not gunicorn's.
accesslog = None


def post_fork(server, worker):
    # After gunicorn's own logging setup, which resets the root logger.
    logs.configure(_settings.log_level, _settings.log_format)


# gunicorn's control socket (for gunicornc) sits at one fixed path per user, so
# two gateways on one host would fight over it; nothing here uses it.
control_socket_disable = True


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live gauges stop counting


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
