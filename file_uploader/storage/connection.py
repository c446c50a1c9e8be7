"""The S3 client's configuration and factory, and the lanes that split its connection pool.

The connection pool, and why it is split in lanes. aiobotocore 3.10's
AIOHTTPSession gives aiohttp a `TCPConnector(limit=max_pool_connections)` and
a `ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)`; the
timeout aiohttp has for waiting for a free pooled connection (`connect`, or
`total`) is left unset, and AioConfig's `pool_timeout` connector argument is
read only by its httpx session. So with the aiohttp session a call waits for a
free connection for ever. And a streamed GetObject holds its connection until
the client of the download has taken the last byte: 64 downloads whose clients
never read held all 64 connections, and every other call of every user waited.
So each call takes a `Lane` first, a semaphore with a bounded wait:

- downloads (GetObject streamed to a client), 3/8 of S3_MAX_CONNECTIONS;
- uploads (UploadPart, PutObject of a file's or a tail's bytes, reading a tus
  tail back), 1/2 of it;
- short calls (listings, HEAD, DELETE, multipart bookkeeping, tus state and
  locks): whatever S3_MAX_CONNECTIONS leaves.

The lanes add up to the pool's size, so aiohttp's own wait never happens; a
call that waits S3_POOL_WAIT_SECONDS with none of its lane's connections coming
free raises StorageBusy (503 with Retry-After), and one in a lane that moves
waits its turn. Downloads cannot starve uploads or listings, nor the other way
round; a client that stops reading is cut off after CLIENT_TIMEOUT (api/downloads.py),
which gives its connection back.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession, get_session
from botocore.handlers import add_expect_header, convert_body_to_file_like_object

from ..ops import metrics
from ..settings import Settings
from ..sizes import S3_POOL_WAIT_SECONDS
from .budget import FairBudget, GaveUp
from .errors import StorageBusy


@functools.cache
def _session() -> AioSession:
    """One botocore session per process: it loads S3's service model (tens of thousands of
    small dicts) once, and every client made from it shares that. A session per client kept
    one copy per client alive as long as it was: the test suite, which builds a thousand apps,
    held 2.3 million objects, and its process took 50 s to exit."""
    return get_session()


class SharedTlsSession(AIOHTTPSession):
    """aiobotocore's aiohttp session, with one TLS context per process for each CA bundle.

    aiobotocore 3.10 builds a TLS context for each client it opens (the CA bundle parsed again,
    30-40 ms of CPU), even for an http:// endpoint. A context serves any number of connections
    on any loop, so one is built per CA bundle (botocore's default, or AWS_CA_BUNDLE /
    REQUESTS_CA_BUNDLE: the file as it is now, built again once it changes) and shared. The
    server opens one client per process and feels nothing; the test suite opens a thousand
    (one app per test) and spent most of each app's startup here. A client certificate or a
    proxy keeps aiobotocore's own context per client: those are changed after they are built.
    """

    _contexts: ClassVar[dict[object, ssl.SSLContext]] = {}

    def _build_ssl_contexts(self, proxy_url: str | None) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
        if self._cert_file or proxy_url:
            return super()._build_ssl_contexts(proxy_url)
        key: object = self._verify
        if isinstance(self._verify, str):
            try:
                found = os.stat(self._verify)
            except OSError:  # aiobotocore's own build says what is wrong with it
                return super()._build_ssl_contexts(proxy_url)
            key = (self._verify, found.st_ino, found.st_mtime_ns, found.st_size)
        if key not in self._contexts:
            self._contexts[key], _ = super()._build_ssl_contexts(None)
        return self._contexts[key], None


def s3_config(settings: Settings) -> AioConfig:
    s3: dict[str, object] = {
        # The SHA-256 payload signature that botocore adds over plain http
        # would hash every byte once more, at a third of CRC32's speed, for
        # what the part's own checksum (checksums.py) already covers. The
        # headers, that checksum among them, stay signed.
        "payload_signing_enabled": False,
    }
    if settings.s3_endpoint_url:
        # Path-style addressing: MinIO, Ceph and moto serve buckets under the
        # endpoint's own host name, not as virtual-host subdomains.
        s3["addressing_style"] = "path"
    return AioConfig(
        http_session_cls=SharedTlsSession,
        # Every part in flight holds a connection; concurrent uploads share the pool.
        max_pool_connections=settings.s3_max_connections,
        s3=s3,
        # The gateway computes its checksums itself and sends them as headers
        # (checksums.py); botocore adds one only where S3 requires it.
        request_checksum_calculation="when_required",
        # Downloads are streamed on as they arrive (files.Download); a
        # whole-object check at the end would come after the bytes went out.
        response_checksum_validation="when_required",
        # Backoff on throttling and transient errors; the attempts per call are
        # botocore's own AWS_MAX_ATTEMPTS (default 3, the first included).
        retries={"mode": "standard"},
    )


def open_client(settings: Settings) -> Any:
    """The aiobotocore S3 client for `settings`, as an async context manager.

    Open it inside the loop that will use it: the server does so once per
    process, admin commands once per run.
    """
    return _session().create_client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        # A private CA's certificate: botocore's own AWS_CA_BUNDLE.
        config=s3_config(settings),
    )


def open_presigner(settings: Settings) -> Any:
    """A client that only signs URLs (direct.py): SigV4 in the query string, for the endpoint
    the clients see (S3_PUBLIC_ENDPOINT_URL, else S3_ENDPOINT_URL). Signing makes no request, so
    this client opens no connection; it is separate because a URL is signed for its host."""
    endpoint = settings.s3_public_endpoint_url or settings.s3_endpoint_url
    s3: dict[str, object] = {"addressing_style": "path"} if endpoint else {}
    return _session().create_client(
        "s3",
        region_name=settings.aws_region,
        endpoint_url=endpoint,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        # botocore would sign an S3 URL with SigV2 in us-east-1; SigV4 signs the headers a
        # part's PUT must carry (its length and checksum), which S3 then holds the PUT to.
        config=AioConfig(signature_version="s3v4", s3=s3),
    )


def send_bodies_as_is(client: Any) -> None:
    """Let PutObject and UploadPart send a body without botocore's copies or waits.

    By default botocore wraps a `bytes` body in a BytesIO, which aiohttp then
    copies whole, and a request whose body has `read` (that BytesIO, a part's
    Pieces, a spool file) waits for `Expect: 100-continue`: a round trip per
    part, for an answer that could only refuse a part the gateway has
    already read from its client. Handed over as they are, bytes and pieces
    are written to the socket as they are. The profile of an upload through
    the gateway put these copies at about a third of its CPU time.
    """
    for operation in ("UploadPart", "PutObject"):
        client.meta.events.unregister(
            f"before-parameter-build.s3.{operation}", convert_body_to_file_like_object
        )
    client.meta.events.unregister("before-call.s3", add_expect_header)


class Lane(enum.Enum):
    DOWNLOAD = "download"
    UPLOAD = "upload"
    SHORT = "short"


class Lanes:
    """The S3 connections each kind of call may hold, and how long a call waits for one.

    Each lane is a FairBudget of connections with one user, the lane: its line is first come,
    first served, and its wait (`acquire` with `give_up`) keeps a call's place in line while
    it looks at the lane every `timeout` seconds.
    """

    def __init__(self, sizes: Mapping[Lane, int], timeout: float) -> None:
        self.timeout = timeout
        self._free = {lane: FairBudget(size) for lane, size in sizes.items()}
        self.given = dict.fromkeys(sizes, 0)  # connections given back so far, per lane

    @property
    def in_use(self) -> dict[Lane, int]:
        return {lane: budget.held for lane, budget in self._free.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Lanes:
        downloads, uploads, short = settings.s3_lanes()
        sizes = {Lane.DOWNLOAD: downloads, Lane.UPLOAD: uploads, Lane.SHORT: short}
        return cls(sizes, S3_POOL_WAIT_SECONDS)

    async def take(self, lane: Lane) -> None:
        """Take a connection of `lane`, waiting in line while the lane's connections come free.

        StorageBusy once none of them came free for `timeout` seconds: S3 (or the clients of
        the downloads) holds them all. A lane that moves is waited on, as long as the line is:
        500 concurrent uploads to a healthy S3 waited more than 10 s in line, and 62 of them got
        503 while a connection came free every few milliseconds.
        """
        seen = self.given[lane]

        def stuck() -> bool:
            nonlocal seen
            moved, seen = self.given[lane] != seen, self.given[lane]
            return not moved

        try:
            await self._free[lane].acquire(lane.value, 1, every=self.timeout, give_up=stuck)
        except GaveUp:
            metrics.S3_POOL_TIMEOUTS.labels(lane.value).inc()
            raise StorageBusy(f"no S3 connection came free for {self.timeout:g} s") from None

    def give(self, lane: Lane) -> None:
        self.given[lane] += 1
        self._free[lane].release(lane.value, 1)

    @contextlib.asynccontextmanager
    async def hold(self, lane: Lane) -> AsyncIterator[None]:
        await self.take(lane)
        try:
            yield
        finally:
            self.give(lane)
