"""The application factory: `create_app()` is what gunicorn and `python -m file_uploader` run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp import web

from . import handlers, openapi, ops, page, share, tus
from .auth import auth_middleware
from .bucket import BUCKET, BucketCheck, bucket_middleware
from .errors import error_middleware
from .limits import UPLOADS, UploadSlots
from .settings import Settings, load_settings
from .storage import Storage, StorageFailure
from .typedefs import SETTINGS, STORAGE

log = logging.getLogger(__name__)

# After refusing a request whose body it will not read, aiohttp reads and
# discards the rest for up to `lingering_time` before closing, so that the
# client sees the refusal (closing on unread data sends a TCP reset that can
# destroy the response in flight). Its default of 10 s would let a refused
# client push gigabytes; one second is enough to deliver a small JSON error.
LINGERING_SECONDS = 1.0


def s3_config(settings: Settings) -> AioConfig:
    # Integrity, end to end, with one checksum instead of two: every part and
    # object carries a CRC32 of its bytes (botocore's default flexible
    # checksum, `request_checksum_calculation="when_supported"`), which S3
    # verifies and refuses the part on a mismatch. The SHA-256 payload
    # signature that botocore adds over plain http would check the same bytes
    # again at a third of CRC32's speed, so it is turned off: the headers,
    # the CRC32 among them, stay signed (UNSIGNED-PAYLOAD in the signature).
    s3: dict[str, object] = {"payload_signing_enabled": False}
    if settings.s3_endpoint_url:
        # Path-style addressing: MinIO, Ceph and moto serve buckets under the
        # endpoint's own host name, not as virtual-host subdomains.
        s3["addressing_style"] = "path"
    return AioConfig(
        # Every part in flight holds a connection; concurrent uploads share the pool.
        max_pool_connections=settings.s3_max_connections,
        s3=s3,
        request_checksum_calculation="when_supported",
        # total_max_attempts counts the first try; botocore's max_attempts would not.
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
    )


def open_s3_client(settings: Settings) -> Any:
    """The aiobotocore S3 client for `settings`, as an async context manager.

    Open it inside the loop that will use it: the server does so once per
    process in `s3_storage`, admin commands once per run.
    """
    return get_session().create_client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        config=s3_config(settings),
    )


async def s3_storage(app: web.Application) -> AsyncIterator[None]:
    """One S3 client for this process, opened inside its event loop."""
    settings = app[SETTINGS]
    async with open_s3_client(settings) as client:
        storage = Storage(
            client,
            settings.s3_bucket,
            part_size=settings.part_size,
            parts_in_flight=settings.parts_in_flight,
            memory_budget=settings.memory_budget,
        )
        bucket = app[BUCKET] = BucketCheck(storage, create=settings.s3_create_bucket)
        try:
            await bucket.ensure()
        except StorageFailure as exc:
            # Start anyway: requests get 503 until S3 answers (bucket_middleware retries).
            log.warning("bucket %s is not usable yet: %s", settings.s3_bucket, exc)
        app[STORAGE] = storage
        yield


async def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or load_settings()
    app = web.Application(
        middlewares=[error_middleware, auth_middleware, bucket_middleware],
        handler_args={"lingering_time": LINGERING_SECONDS},
    )
    app[SETTINGS] = settings
    app[UPLOADS] = UploadSlots(settings.max_uploads_per_user)
    app.cleanup_ctx.append(s3_storage)
    handlers.add_routes(app)
    tus.add_routes(app)
    share.add_routes(app)
    page.add_routes(app)
    ops.add_ops(app)
    openapi.add_routes(app)
    return app
