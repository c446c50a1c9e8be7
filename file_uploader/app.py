"""The application: `create_app()` is what gunicorn and `python -m file_uploader` run.

Everything the gateway does is wired here, on one screen: the storage opened
once per process, the middlewares in the order a request meets them, and the
route table.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from .api import (
    cors,
    direct,
    files,
    forms,
    health,
    links,
    page,
    public,
    requests,
    share,
    sign_in,
    tus,
    uploads,
    usage,
)
from .api import resumable_draft as draft
from .api.access import access_middleware, add_request_id
from .api.auth import auth_middleware
from .api.errors import error_middleware
from .api.headers import security_headers
from .api.openapi import OPENAPI_PATH
from .api.openapi import serve as openapi
from .appkeys import BLOCKING_HOOKS, IDENTITIES, IN_FLIGHT, KNOWN_S3, SETTINGS, SHARE_KEY, STORAGE, WEBHOOKS
from .hooks import webhooks
from .hooks.blocking import BlockingHooks
from .identity import Identities
from .ops import malloc
from .ops.inflight import RequestsInFlight
from .settings import Settings, load_settings
from .storage import open_storage
from .storage.errors import StorageFailure
from .storage.probe import Capabilities

log = logging.getLogger(__name__)

# After refusing a request whose body it will not read, aiohttp reads and
# discards the rest for up to `lingering_time` before closing, so that the
# client sees the refusal (closing on unread data sends a TCP reset that can
# destroy the response in flight). Its default of 10 s would let a refused
# client push gigabytes; one second is enough to deliver a small JSON error.
LINGERING_SECONDS = 1.0

MIDDLEWARES = [
    access_middleware,  # outermost: logs and counts every request, errors included
    webhooks.after_response,  # a request's events go out once its response (or error) is written
    error_middleware,  # every failure becomes the one JSON error shape
    cors.preflight_middleware,  # CORS preflights (CORS_ORIGINS): answered here, with no token
    auth_middleware,  # X-Auth-Token or Authorization: Bearer -> the user's id, for /api/
    health.storage_ready_middleware,  # the bucket is there before any request that needs S3
]

ROUTES = [
    # Operations: no token.
    web.get("/healthz", health.healthz),
    web.get("/readyz", health.readyz),
    web.get("/metrics", health.metrics_page),
    # The web page and the API's description.
    web.get("/", page.index),
    web.static("/static/", page.STATIC),
    web.get(OPENAPI_PATH, openapi, allow_head=False),
    web.get(sign_in.SIGN_IN, sign_in.sign_in, allow_head=False),  # where the page signs in (AUTH_ISSUER)
    # Files.
    web.get(files.FILES, files.list_files, allow_head=False),
    web.put(files.FILE, uploads.put_file, expect_handler=uploads.expect_upload),
    web.get(files.FILE, files.get_file, allow_head=False),
    web.head(files.FILE, files.head_file),
    web.delete(files.FILE, files.delete_file),  # a folder too: <folder>/?recursive=1
    web.patch(files.FILE, files.patch_file),  # {"public": true|false}
    web.post(files.FILES, forms.upload_form, expect_handler=forms.expect_form),  # multipart/form-data
    web.get(usage.USAGE, usage.usage, allow_head=False),  # bytes stored against USER_QUOTA
    # Straight to S3 (DIRECT_UPLOADS): presigned parts, checked before completion (@uppy/aws-s3).
    web.post(direct.DIRECT, direct.create),
    web.post(direct.DIRECT_PART, direct.sign_part),
    web.get(direct.DIRECT_PARTS, direct.list_parts, allow_head=False),
    web.post(direct.DIRECT_COMPLETE, direct.complete),
    web.delete(direct.DIRECT_UPLOAD, direct.abort),
    # The public library: no token.
    web.get(public.PUBLIC, public.list_public, allow_head=False),
    web.get(files.PUBLIC_FILE, public.serve_public, name=files.PUBLIC_FILE_NAME, allow_head=False),
    # Share links: POST .../share matches no method of the file routes above.
    web.post(links.SHARE, links.create_link),
    web.post(links.DOWNLOAD_LINK, links.create_download_link),  # the page's downloads: stateless
    web.get(links.LINKS, links.list_links, allow_head=False),
    web.delete(links.LINK, links.revoke_link),
    web.get(links.SHARED, links.serve_link, name=links.SHARED_NAME, allow_head=False),
    # Upload requests: anyone with the link adds files to one folder of the owner.
    web.post(requests.REQUESTS, requests.create_request),
    web.get(requests.REQUESTS, requests.list_requests, allow_head=False),
    web.delete(requests.REQUEST, requests.end_request),
    web.get(requests.REQUEST_PAGE, requests.page, name=requests.REQUEST_PAGE_NAME, allow_head=False),
    web.put(requests.REQUEST_FILE, requests.put_file, expect_handler=requests.expect_upload),
    # ... and resumably, with tus (the page's way): only uploads made under the request.
    web.post(requests.REQUEST_UPLOADS, requests.TUS.create, expect_handler=requests.TUS.expect),
    web.head(requests.REQUEST_UPLOAD, requests.TUS.head),
    web.patch(requests.REQUEST_UPLOAD, requests.TUS.patch, expect_handler=requests.TUS.expect),
    web.delete(requests.REQUEST_UPLOAD, requests.TUS.terminate),
    # Resumable uploads: tus 1.0.0, and the IETF draft on the same routes (a request with
    # Upload-Draft-Interop-Version is the draft's: api/resumable_draft.py).
    *[
        route
        for path in (tus.UPLOADS, tus.UPLOADS + "/")
        for route in (
            web.route(hdrs.METH_OPTIONS, path, draft.options(tus.options)),
            web.post(
                path,
                draft.either(tus.create, draft.create),
                expect_handler=draft.expect_either(tus.expect_patch),
            ),
        )
    ],
    web.route(hdrs.METH_OPTIONS, tus.UPLOAD, draft.options(tus.options)),
    web.head(tus.UPLOAD, draft.either(tus.head, draft.head)),
    web.patch(
        tus.UPLOAD,
        draft.either(tus.patch, draft.patch),
        expect_handler=draft.expect_either(tus.expect_patch),
    ),
    web.delete(tus.UPLOAD, draft.either(tus.terminate, draft.cancel)),
]


async def storage_context(app: web.Application) -> AsyncIterator[None]:
    """One S3 client and one Storage for this process, opened inside its event loop.

    The bucket is checked (or created) and the write probe run before the
    first request; should either fail, the gateway starts anyway and retries
    before each request that needs S3 (storage_ready_middleware), while
    /readyz says why it is not ready.
    """
    async with open_storage(app[SETTINGS], known=app.get(KNOWN_S3)) as storage:
        try:
            await storage.readiness.ensure_ready()
        except StorageFailure as exc:
            log.warning("S3 at %s is not usable yet: %s", app[SETTINGS].s3_where(), exc)
        app[STORAGE] = storage
        yield


async def webhooks_context(app: web.Application) -> AsyncIterator[None]:
    """With WEBHOOK_URL: this process's webhook sender, listening to the storage layer's events,
    stopped (its queue given a few seconds to drain) before the storage closes."""
    settings = app[SETTINGS]
    if not settings.webhook_url or not settings.webhook_secret:
        yield
        return
    journal = app[STORAGE].journal
    hooks = webhooks.Webhooks(
        settings.webhook_url,
        settings.webhook_secret.encode(),
        journal=journal,
        retry_seconds=settings.webhook_retry_seconds,
    )
    await hooks.start()
    app[WEBHOOKS] = hooks
    app[STORAGE].events.connect(hooks.listen, journal)
    try:
        yield
    finally:
        app[STORAGE].events.connect(None)
        await hooks.stop()


async def identities_context(app: web.Application) -> AsyncIterator[None]:
    """Whose a bearer token is (AUTH_*): one HTTP client per process for the providers' keys and
    the auth callback."""
    app[IDENTITIES] = identities = Identities.from_settings(app[SETTINGS])
    try:
        yield
    finally:
        await identities.close()


async def blocking_hooks_context(app: web.Application) -> AsyncIterator[None]:
    """With HOOK_URL: this process's sender of the pre-create and pre-finish hooks."""
    settings = app[SETTINGS]
    if not settings.hook_url or not settings.hook_secret:
        yield
        return
    app[BLOCKING_HOOKS] = hooks = BlockingHooks(
        settings.hook_url,
        settings.hook_secret.encode(),
        seconds=settings.hook_timeout,
        fail_open=settings.hook_fail_open,
    )
    try:
        yield
    finally:
        await hooks.close()


async def create_app(
    settings: Settings | None = None, *, known_s3: Capabilities | None = None
) -> web.Application:
    """The gateway, configured by `settings` (else the environment and .env).

    `known_s3`: what an earlier write probe found the same S3 (endpoint and
    S3_CHECKSUM) to enforce; the app then skips its own probe at startup (see
    `open_storage`). Gunicorn and `python -m file_uploader` never pass it.
    """
    settings = settings or load_settings()
    malloc.keep_part_memory()  # each worker process, before its first part
    app = web.Application(middlewares=MIDDLEWARES, handler_args={"lingering_time": LINGERING_SECONDS})
    app[SETTINGS] = settings
    if known_s3 is not None:
        app[KNOWN_S3] = known_s3
    app[SHARE_KEY] = share.share_key(settings)
    app[IN_FLIGHT] = RequestsInFlight()
    app.cleanup_ctx.append(identities_context)
    app.cleanup_ctx.append(blocking_hooks_context)
    app.cleanup_ctx.append(storage_context)
    app.cleanup_ctx.append(webhooks_context)  # after the storage: stopped before it
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(links.scripted_challenge)
    app.on_response_prepare.append(cors.cors_headers)
    app.router.add_routes(ROUTES)
    return app
