"""What S3's answers and the network's failures mean to the gateway: the storage layer's errors.

Every S3 call in client.py runs inside `translated`, which times it and turns what botocore and
aiohttp raise into errors.py's: a missing key, a range past the end, a busy S3, a failed
precondition, parts another writer replaced, bytes S3 received other than those sent. This table
is the one place that knows S3's error codes.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from ..ops import metrics
from .errors import (
    FileNotFound,
    PartsChanged,
    PreconditionFailed,
    RangeNotSatisfiable,
    StorageError,
    StorageFailure,
    StorageUnavailable,
    TransferCorrupted,
)

# The S3 client's logger: a refusal is logged as it was before this table had its own module,
# under the name operators may already filter on.
log = logging.getLogger("file_uploader.storage.client")

_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_BUSY_CODES = {"SlowDown", "ServiceUnavailable", "503", "RequestTimeout"}
# S3 computed a digest of the bytes it received and it is not the one sent:
# Content-MD5 (BadDigest, and AWS for x-amz-checksum-*), MinIO's x-amz-checksum-*,
# the SigV4 payload hash.
_CORRUPTION_CODES = {"BadDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch"}

# Set while probe.py sends requests meant to be refused: their refusals are
# findings, not faults, so they are neither logged as warnings nor counted.
_probing: contextvars.ContextVar[bool] = contextvars.ContextVar("probing", default=False)
# A conditional request found another version (AWS answers 409 ConditionalRequestConflict
# when two conditional writes to one key overlap).
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@contextlib.contextmanager
def translated(operation: str) -> Iterator[None]:
    """Time one S3 call, and turn what botocore and aiohttp raise into the storage layer's errors.

    A refusal is logged once, as a warning naming the operation and S3's
    error code, and counted by code (file_uploader_s3_errors_total): never
    the key or the bucket, which S3's message may carry. A missing key is an
    answer, not a refusal (DEBUG); so is a failed precondition, which the
    gateway asked for (INFO).
    """
    quiet = _probing.get()
    with metrics.s3_call(operation, count_errors=not quiet):
        try:
            yield
        except ClientError as exc:
            raise _refusal(operation, exc, quiet) from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            if not quiet:
                log.warning("S3 unreachable on %s (%s)", operation, type(exc).__name__)
            raise StorageUnavailable(f"S3 is unreachable ({operation})") from exc


def _refusal(operation: str, exc: ClientError, quiet: bool) -> StorageFailure:
    """The storage error for an S3 error answer, logged as its kind deserves."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    level = logging.DEBUG if quiet else logging.WARNING
    failure: StorageFailure
    if code in _NOT_FOUND_CODES:
        failure, level = FileNotFound("no such file"), logging.DEBUG
    elif code == "InvalidRange":
        failure, level = RangeNotSatisfiable(int(error.get("ActualObjectSize", 0) or 0)), logging.DEBUG
    elif code in _BUSY_CODES:
        failure = StorageUnavailable(f"S3 is busy ({code} on {operation})")
    elif code in _PRECONDITION_CODES:
        failure = PreconditionFailed(f"another version is there ({operation}: {code})", code)
        level = min(level, logging.INFO)
    elif code == "InvalidPart":
        # CompleteMultipartUpload named a part whose ETag S3 does not hold: another writer
        # replaced it (storage/tus/ records every part's ETag to find out).
        failure = PartsChanged(f"S3 holds other parts than recorded ({operation})")
        level = min(level, logging.INFO)
    elif code in _CORRUPTION_CODES:
        failure = TransferCorrupted(f"S3 refused {operation} ({code}): it received other bytes", code)
    else:
        failure = StorageError(f"S3 refused {operation} ({code})", code)
    failure.s3_code = code
    log.log(level, "S3 refused %s: %s (HTTP %s)", operation, code, status)
    return failure


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """Calls in this block are meant to be refused: no warnings, no error metrics (probe.py)."""
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)
