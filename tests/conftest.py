"""Fixtures: a real moto S3 server over HTTP, the gateway in-process and as a process."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import hypothesis
import pytest
from aiobotocore.client import AioClientCreator
from aiohttp import web, web_app
from botocore import regions
from botocore.client import ClientCreator
from botocore.hooks import EVENT_ALIASES, EventAliaser

from devtools.ports import child_server, free_port
from file_uploader.app import create_app
from file_uploader.settings import Settings
from file_uploader.storage import open_storage
from file_uploader.storage.probe import Capabilities

from .helpers import (
    ACCESS_KEY,
    CHROMIUM,
    CHROMIUM_ARGS,
    NO_CHROMIUM,
    ROOT,
    SECRET_KEY,
    Gateway,
    new_token,
    reset_moto,
    run_gateway,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs the gateway as a process is a process test, one that drives Chromium a
    browser test, one on Ceph RGW a slow test (its cluster takes a minute to start, and it has
    moto's twin in the edit loop), whatever its module."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "gateway_process" in fixtures:
            item.add_marker(pytest.mark.process)
        if "browser_page" in fixtures:
            item.add_marker(pytest.mark.browser)
        # An engine is chosen by a parameter ("rgw-http", "rgw-https") as often as by the fixture.
        callspec = getattr(item, "callspec", None)
        params = callspec.params.values() if callspec else ()
        if "rgw" in fixtures or any(isinstance(value, str) and value.startswith("rgw") for value in params):
            item.add_marker(pytest.mark.slow)


def share_what_botocore_builds_per_client() -> None:
    """Every S3 client of a worker uses what botocore built for the first from the same data,
    instead of building it again: the parsed S3 model, the client class made from it, the
    endpoint rules, and the cache of event names.

    A gateway makes one client per process; the suite makes one per app, a thousand a run, and
    botocore built each of these anew: the model's shapes and operations resolved again on the
    client's first calls, a class of ~100 methods, the S3 endpoint rule tree parsed again (with
    its cache of resolved endpoints), every event name aliased again. A new client and its first
    seven calls took 67 ms of CPU, 28 ms with these shared: a fifth of a worker's CPU. All four
    are made from the same JSON of the same loader and the same alias table, and nothing changes
    them after; each client keeps its own config, credentials, connections, retries and
    handlers, and every call still goes through aiobotocore to moto over HTTP. botocore and
    aiobotocore are pinned (requirements.txt): check this when upgrading them."""
    models: dict[tuple[str, str | None], Any] = {}
    classes: dict[tuple[int, int], tuple[Any, Any, type]] = {}
    providers: dict[tuple[int, int, Any], tuple[Any, Any, Any]] = {}
    aliases: dict[str, str] = {}
    load_model = ClientCreator._load_service_model
    create_class = AioClientCreator._create_client_class
    make_provider = regions.EndpointProvider
    make_aliaser = EventAliaser.__init__

    def load_once(self: ClientCreator, service_name: str, api_version: str | None = None) -> Any:
        key = (service_name, api_version)
        if key not in models:
            models[key] = load_model(self, service_name, api_version)
        return models[key]

    async def build_once(self: AioClientCreator, service_name: str, service_model: Any) -> type:
        emitter = self._event_emitter  # whose handlers add to the class
        key = (id(emitter), id(service_model))
        if key not in classes:  # the emitter and the model are kept: their ids stay theirs
            classes[key] = (emitter, service_model, await create_class(self, service_name, service_model))
        return classes[key][2]

    def provider_once(ruleset_data: Any, partition_data: Any, excluded_params: Any = None) -> Any:
        key = (id(ruleset_data), id(partition_data), frozenset(excluded_params or ()))
        if key not in providers:  # the loader's data is kept: its ids stay its own
            made = make_provider(
                ruleset_data=ruleset_data, partition_data=partition_data, excluded_params=excluded_params
            )
            providers[key] = (ruleset_data, partition_data, made)
        return providers[key][2]

    def aliaser(self: EventAliaser, event_emitter: Any, event_aliases: Any = None) -> None:
        make_aliaser(self, event_emitter, event_aliases)
        if self._event_aliases == EVENT_ALIASES:  # a copy's table is a copy of the same one
            self._alias_name_cache = aliases

    ClientCreator._load_service_model = load_once  # type: ignore[method-assign]
    AioClientCreator._create_client_class = build_once  # type: ignore[method-assign]
    regions.EndpointProvider = provider_once  # type: ignore[assignment,misc]
    EventAliaser.__init__ = aliaser  # type: ignore[method-assign]


share_what_botocore_builds_per_client()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the session imported and collected (a few hundred thousand objects) lives to its end:
    frozen out of the garbage collector's sight, every full collection stops walking it again."""
    gc.collect()
    gc.freeze()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """aiohttp keeps the middleware chain it builds for each (handler, apps) in an lru_cache of
    1,024 entries (web_app._cached_build_middleware), each holding its app: in a suite that builds
    an app per test, up to 1,024 dead apps, their storage and S3 clients, 600,000 objects that
    every full garbage collection walked. Emptied after each test, it holds the test's own."""
    cached = getattr(web_app, "_cached_build_middleware", None)
    if cached is not None:
        cached.cache_clear()


# A property's examples are timed against a deadline by default; here that measures the machine
# (two workers beside the servers they start), not the code, so the properties have none.
hypothesis.settings.register_profile("suite", deadline=None)
hypothesis.settings.load_profile("suite")


@pytest.fixture(autouse=True)
def _isolated_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's own AWS profile and credentials out of every test."""
    isolate_aws_environment(monkeypatch)


def isolate_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("S3_") or name in ("BUCKET", "PART_SIZE"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture(scope="session")
def s3_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in its own process, as a real S3 endpoint over HTTP (devtools/moto_s3.py:
    moto's S3 application alone, without moto.server's per-request search for the service)."""
    port = free_port()
    with (
        (tmp_path_factory.mktemp("moto") / "moto.log").open("w") as log,
        child_server(
            [sys.executable, "-m", "devtools.moto_s3", "-H", "127.0.0.1", "-p", str(port)],
            port,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
    ):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def s3(s3_url: str):
    """A plain boto3 client on the same server, to check what S3 really holds. One for the session:
    a boto3 client holds no state between calls, and building one costs more than most tests."""
    with pytest.MonkeyPatch.context() as monkeypatch:  # built before any test's own isolation
        isolate_aws_environment(monkeypatch)
        return boto3.client(
            "s3",
            endpoint_url=s3_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


@pytest.fixture
def bucket(s3, s3_url: str) -> Iterator[str]:
    """A bucket of the test's own on this worker's moto server.

    Afterwards the whole server is reset (moto's /moto-api/reset: every bucket, object and
    multipart upload gone, in one request) instead of aborting, listing, deleting and removing
    the bucket's contents (five requests and more, a tenth of an average test's CPU). The
    server is this worker's alone, its tests run one at a time, and nothing of the session
    lives in it: whatever a test left there, other buckets too, goes with it."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    reset_moto(s3_url)


@pytest.fixture
def settings(s3_url: str, bucket: str) -> Settings:
    return Settings(
        s3_bucket=bucket,
        s3_endpoint_url=s3_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        client_timeout=5,
    )


class ProbedS3:
    """What the write probe found each S3 of the session to enforce: probed once per endpoint and
    S3_CHECKSUM, then handed to every app built on it (`create_app(known_s3=...)`), which skips
    its own probe. A fresh app would otherwise spend ten and more S3 requests on it."""

    def __init__(self) -> None:
        self._found: dict[tuple[str | None, str], Capabilities] = {}

    async def findings(self, settings: Settings) -> Capabilities:
        key = (settings.s3_endpoint_url, settings.s3_checksum)
        if key not in self._found:
            async with open_storage(settings) as storage:
                await storage.readiness.ensure_ready()
                self._found[key] = storage.readiness.capabilities
        return self._found[key]


@pytest.fixture(scope="session")
def probed_s3() -> ProbedS3:
    return ProbedS3()


AppFor = Callable[[Settings], Awaitable[web.Application]]


@pytest.fixture
def app_for(probed_s3: ProbedS3) -> AppFor:
    """`create_app(settings)`, with the probe's answer for that S3 found once per session. For an S3
    the session's probe saw; a test of the probe itself, or of an S3 that is down or behind a
    fault proxy at startup, calls `create_app` instead."""

    async def build(settings: Settings) -> web.Application:
        return await create_app(settings, known_s3=await probed_s3.findings(settings))

    return build


@pytest.fixture
async def client(aiohttp_client, app_for: AppFor, settings: Settings):
    """An HTTP client talking to the gateway on a real socket."""
    return await aiohttp_client(await app_for(settings))


@pytest.fixture
def token() -> str:
    return new_token()


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"X-Auth-Token": token}


@pytest.fixture
def gateway_process(s3_url: str, bucket: str, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway process for one test; its log is tmp_path/gateway.log."""
    with run_gateway(s3_url, bucket, tmp_path) as url:
        yield url


@pytest.fixture
def browser_page():
    """A page in headless Chromium (Debian's, driven by Playwright); skips where there is none."""
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()
