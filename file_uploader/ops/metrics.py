"""The gateway's Prometheus metrics, in the process's default registry.

Kept free of aiohttp so that the storage layer can count its S3 calls and uploads here. Under
gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR, and `exposition()`
adds up every worker's files, whichever worker answers the scrape.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

# Upload and download latencies span milliseconds to hours; the tail buckets matter.
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)

HTTP_REQUESTS = Counter(
    "file_uploader_http_requests", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "file_uploader_http_request_duration_seconds",
    "Time from a request's arrival until its handler returned",
    ["method", "route"],
    buckets=_SECONDS,
)
UPLOADED_BYTES = Counter("file_uploader_uploaded_bytes", "Bytes received in request bodies")
DOWNLOADED_BYTES = Counter("file_uploader_downloaded_bytes", "Bytes of files sent to clients")
# Uploads by kind: "put" (PUT /api/files/...) or "tus" (each PATCH, or creation with a body).
UPLOADS_IN_FLIGHT = Gauge(
    "file_uploader_uploads_in_flight",
    "Upload requests being received right now",
    ["kind"],
    multiprocess_mode="livesum",  # the sum over the workers that are alive
)
UPLOADS_COMPLETED = Counter("file_uploader_uploads_completed", "Files stored in S3", ["kind"])
UPLOADS_ABORTED = Counter(
    "file_uploader_uploads_aborted",
    "Upload requests that failed; a failed tus PATCH keeps what was committed before it",
    ["kind", "reason"],
)
S3_SECONDS = Histogram(
    "file_uploader_s3_request_duration_seconds",
    "Time spent in one S3 call (for GetObject, until its body was read)",
    ["operation"],
    buckets=_SECONDS,
)
S3_POOL_TIMEOUTS = Counter(
    "file_uploader_s3_pool_timeouts",
    "S3 calls refused (503) because no connection of their lane came free in S3_POOL_WAIT_SECONDS",
    ["lane"],
)
S3_SEND_STALLS = Counter(
    "file_uploader_s3_send_stalls",
    "Request bodies (parts, small files) S3 took nothing of for S3_SEND_STALL_SECONDS: their "
    "connections dropped, the call then retried by botocore or failed (503)",
    ["operation"],
)
PARTS_SPILLED = Counter(
    "file_uploader_parts_spilled",
    "Parts moved from memory to a temporary file because memory was contended",
)
CLIENTS_CUT_OFF = Counter(
    "file_uploader_clients_cut_off",
    "Client connections the gateway closed: reason header_timeout (a request head not complete "
    "in time), headers_too_large (a request head over 64 KiB), send_timeout (a response "
    "not read for CLIENT_TIMEOUT) or max_connections",
    ["reason"],
)
S3_ERRORS = Counter(
    "file_uploader_s3_errors",
    "S3 calls that failed, by the storage error they became and S3's error code (empty: no answer)",
    ["operation", "error", "code"],
)

# Webhooks (hooks/webhooks.py).
WEBHOOKS_SENT = Counter("file_uploader_webhooks_sent", "Events delivered to WEBHOOK_URL (a 2xx answer)")
WEBHOOKS_RETRIED = Counter(
    "file_uploader_webhooks_retried",
    "Webhook deliveries that failed and will be tried again, by the HTTP status or the error",
    ["reason"],
)
WEBHOOKS_DROPPED = Counter(
    "file_uploader_webhooks_dropped",
    "Events never delivered: reason queue_full (the queue was full: the longest user's newest "
    "dropped), refused (the receiver answered a 4xx other than 408, 425, 429: not retried), "
    "stopped (still queued when the process stopped) or expired (retried for WEBHOOK_RETRY_SECONDS); "
    "with the journal, queue_full and stopped events are still delivered from the bucket",
    ["reason"],
)
WEBHOOK_QUEUE = Gauge(
    "file_uploader_webhook_queue",
    "Events waiting to be delivered (or being delivered)",
    multiprocess_mode="livesum",
)
WEBHOOK_BACKLOG = Gauge(
    "file_uploader_webhook_backlog",
    "Events in the bucket's journal not delivered yet (counted every few seconds, up to WEBHOOK_BACKLOG)",
    multiprocess_mode="livemax",
)


# What the write probe found (storage/probe.py); the same in every worker.
S3_INTEGRITY = Gauge(
    "file_uploader_s3_integrity",
    "1 for the integrity mode in force: the checksum each part carries and who verifies it",
    ["checksum", "verified_by"],
    multiprocess_mode="livemax",
)
S3_CAPABILITY = Gauge(
    "file_uploader_s3_capability",
    "1 if the write probe found S3 to enforce it (checksum_<name>, etag_is_md5, if_none_match, if_match)",
    ["capability"],
    multiprocess_mode="livemax",
)


def report_s3(integrity: dict[str, object], capabilities: dict[str, bool]) -> None:
    S3_INTEGRITY.clear()
    S3_INTEGRITY.labels(str(integrity["checksum"]), str(integrity["verified_by"])).set(1)
    for name, found in capabilities.items():
        S3_CAPABILITY.labels(name).set(int(found))


@contextlib.contextmanager
def s3_call(operation: str, *, count_errors: bool = True) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        if count_errors:
            S3_ERRORS.labels(operation, type(exc).__name__, getattr(exc, "s3_code", None) or "").inc()
        raise
    finally:
        S3_SECONDS.labels(operation).observe(time.perf_counter() - started)


def exposition() -> bytes:
    """This process's metrics, or every worker's in multiprocess mode, in the text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
