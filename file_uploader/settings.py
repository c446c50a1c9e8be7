"""Every knob of the gateway, read once from the environment (and `.env`).

`Settings.from_env()` is the only place that knows a variable's name; the rest
of the code reads attributes of a frozen `Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from dotenv import load_dotenv

from .formats import FLAG_WORDS, parse_flag
from .sizes import DEFAULT_PART_SIZE, MAX_OBJECT_SIZE, MIN_PART_SIZE, GiB, MiB, parse_size

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What S3_CHECKSUM may name (storage/checksums.py says what each costs and does).
S3_CHECKSUMS = ("crc32", "crc32c", "sha256", "md5", "off")
# What the gateway does when the probe finds that S3 does not verify
# S3_CHECKSUM: send Content-MD5 instead, or keep it and warn (storage/probe.py).
S3_CHECKSUM_FALLBACKS = ("md5", "warn")


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with."""


def _bool(name: str, value: str) -> bool:
    try:
        return parse_flag(value)
    except ValueError:
        raise SettingsError(f"{name} must be a boolean ({FLAG_WORDS}), got {value!r}") from None


def _size(name: str, value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _text(name: str, value: str) -> str:
    return value


def _file(name: str, value: str) -> str:
    if not os.path.isfile(value):
        raise SettingsError(f"{name} must name a file, and {value!r} is not one")
    return value


def _quota(name: str, value: str) -> int:
    size = _size(name, value)
    if size < 1:
        raise SettingsError(f"{name} must be at least 1 byte (leave it unset for no quota)")
    return size


def _http_url(name: str, value: str) -> str:
    parsed = urllib.parse.urlsplit(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        # Not the value itself: a URL may carry credentials.
        raise SettingsError(f"{name} must be an http:// or https:// URL")
    return value.strip()


def _one_of(choices: tuple[str, ...], *, upper: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        value = value.strip().upper() if upper else value.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def _at_least(minimum: float, parse: Callable[[str], Any], what: str) -> Callable[[str, str], Any]:
    def read(name: str, value: str) -> Any:
        try:
            number = parse(value)
        except ValueError:
            raise SettingsError(f"{name} must be {what}, got {value!r}") from None
        if number < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {number}")
        return number

    return read


def _whole(minimum: int) -> Callable[[str, str], int]:
    return _at_least(minimum, int, "a whole number")


def _seconds(minimum: float) -> Callable[[str, str], float]:
    return _at_least(minimum, float, "a number of seconds")


# An origin as browsers send it in `Origin`: scheme, host and an optional port; no path.
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:[0-9]{1,5})?")
ANY_ORIGIN = "*"
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _origin(name: str, value: str) -> str:
    """`https://Files.Example.com:443/` -> `https://files.example.com`: as a browser writes it."""
    origin = value.strip().lower().removesuffix("/")
    if not _ORIGIN.fullmatch(origin):
        raise SettingsError(
            f"{name} takes origins: a scheme, a host and perhaps a port, such as "
            f"https://files.example.com or http://localhost:3000 (no path), got {value.strip()!r}"
        )
    default_port = ":443" if origin.startswith("https:") else ":80"
    return origin.removesuffix(default_port)


def _origins(name: str, value: str) -> tuple[str, ...]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if ANY_ORIGIN in items:
        if len(items) > 1:
            raise SettingsError(f"{name} is either * or a list of origins, not both")
        return (ANY_ORIGIN,)
    return tuple(dict.fromkeys(_origin(name, item) for item in items))


def _networks(name: str, value: str) -> tuple[IpNetwork, ...]:
    networks = []
    for item in value.split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise SettingsError(
                f"{name} takes IP addresses and networks such as 10.0.0.5 or 172.16.0.0/12, "
                f"got {item.strip()!r}"
            ) from None
    return tuple(networks)


# Each environment variable (besides S3_BUCKET / BUCKET): the field it sets
# and how its text is read.
ENV_VARIABLES: dict[str, tuple[str, Callable[[str, str], object]]] = {
    "S3_ENDPOINT_URL": ("s3_endpoint_url", _text),
    "S3_CREATE_BUCKET": ("s3_create_bucket", _bool),
    "AWS_REGION": ("aws_region", _text),
    "AWS_ACCESS_KEY_ID": ("aws_access_key_id", _text),
    "AWS_SECRET_ACCESS_KEY": ("aws_secret_access_key", _text),
    "S3_MAX_CONNECTIONS": ("s3_max_connections", _whole(1)),
    "S3_MAX_ATTEMPTS": ("s3_max_attempts", _whole(1)),
    "S3_DOWNLOAD_CONNECTIONS": ("s3_download_connections", _whole(0)),
    "S3_UPLOAD_CONNECTIONS": ("s3_upload_connections", _whole(0)),
    "S3_POOL_TIMEOUT": ("s3_pool_timeout", _seconds(0.1)),
    "S3_CONDITIONAL_WRITES": ("s3_conditional_writes", _bool),
    "S3_CHECKSUM": ("s3_checksum", _one_of(S3_CHECKSUMS)),
    "S3_CHECKSUM_FALLBACK": ("s3_checksum_fallback", _one_of(S3_CHECKSUM_FALLBACKS)),
    "S3_CA_BUNDLE": ("s3_ca_bundle", _file),
    "HOST": ("host", _text),
    "PORT": ("port", _whole(0)),
    "LOG_LEVEL": ("log_level", _one_of(LOG_LEVELS, upper=True)),
    "LOG_FORMAT": ("log_format", _one_of(LOG_FORMATS)),
    "HEADER_TIMEOUT": ("header_timeout", _seconds(0.1)),
    "KEEPALIVE_TIMEOUT": ("keepalive_timeout", _seconds(0.1)),
    "SEND_TIMEOUT": ("send_timeout", _seconds(0.1)),
    "MAX_CONNECTIONS": ("max_connections", _whole(1)),
    "PART_SIZE": ("part_size", _size),
    "PARTS_IN_FLIGHT": ("parts_in_flight", _whole(1)),
    "MEMORY_BUDGET": ("memory_budget", _size),
    "SPILL_AFTER": ("spill_after", _seconds(0)),
    "SPOOL_BUDGET": ("spool_budget", _size),
    "MAX_FILE_SIZE": ("max_file_size", _size),
    "BODY_READ_TIMEOUT": ("body_read_timeout", _seconds(0.1)),
    "MAX_UPLOADS_PER_USER": ("max_uploads_per_user", _whole(0)),
    "UPLOAD_EXPIRY": ("upload_expiry", _seconds(1)),
    "UPLOAD_LOCK_SECONDS": ("upload_lock_seconds", _seconds(1)),
    "SHARE_SECRET": ("share_secret", _text),
    "SHARE_MAX_SECONDS": ("share_max_seconds", _whole(1)),
    "PUBLIC_URL": ("public_url", _origin),
    "TRUSTED_PROXIES": ("trusted_proxies", _networks),
    "CORS_ORIGINS": ("cors_origins", _origins),
    "GRACEFUL_TIMEOUT": ("graceful_timeout", _whole(0)),
    "WORKERS": ("workers", _whole(1)),
    "WORKER_TIMEOUT": ("worker_timeout", _whole(1)),
    "THUMBNAIL_MAX_PIXELS": ("thumbnail_max_pixels", _whole(1)),
    "THUMBNAIL_MAX_BYTES": ("thumbnail_max_bytes", _size),
    "THUMBNAIL_WORKERS": ("thumbnail_workers", _whole(1)),
    "USER_QUOTA": ("user_quota", _quota),
    "QUOTA_LEASE_SECONDS": ("quota_lease_seconds", _seconds(3)),
    "WEBHOOK_URL": ("webhook_url", _http_url),
    "WEBHOOK_SECRET": ("webhook_secret", _text),
    "WEBHOOK_QUEUE": ("webhook_queue", _whole(1)),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    s3_bucket: str
    s3_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    s3_create_bucket: bool = True
    host: str = "0.0.0.0"
    port: int = 8080
    part_size: int = DEFAULT_PART_SIZE
    parts_in_flight: int = 4
    s3_max_connections: int = 64
    s3_max_attempts: int = 5
    # Of S3_MAX_CONNECTIONS, the connections downloads may hold (streaming to
    # clients) and those parts of uploads may hold; the rest is kept for the
    # short calls (listings, HEAD, multipart bookkeeping, tus state), so none
    # of the three can starve the others. 0: the default share (3/8 and 1/2).
    s3_download_connections: int = 0
    s3_upload_connections: int = 0
    # Seconds a request waits for a free S3 connection of its kind before it
    # gets 503 with Retry-After (aiobotocore's own pool would wait forever).
    s3_pool_timeout: float = 10.0
    # Whether the S3 honours If-None-Match: * and If-Match on PutObject
    # (AWS since 2024, MinIO, moto): tus locks and commits compare-and-swap
    # when it does (storage/resumable.py says what remains when it does not).
    s3_conditional_writes: bool = True
    s3_checksum: str = "crc32"  # see storage/checksums.py
    s3_checksum_fallback: str = "md5"  # see storage/probe.py
    # PEM file of the CAs to trust for an https S3_ENDPOINT_URL (a private
    # CA); None: botocore's default (certifi, or AWS_CA_BUNDLE).
    s3_ca_bundle: str | None = None
    max_file_size: int = MAX_OBJECT_SIZE
    body_read_timeout: float = 60.0
    # Per process; 0: no limit. High enough that a parallel client (xargs -P 50
    # curl) never sees it: MEMORY_BUDGET, shared fairly, is what makes uploads wait.
    max_uploads_per_user: int = 128
    memory_budget: int = 512 * MiB
    # While memory is short, how often parts whose clients keep them waiting longer than
    # this are moved to temporary files (storage/parts.py).
    spill_after: float = 1.0
    # Disk that parts in temporary files may take, all uploads together.
    spool_budget: int = 8 * GiB
    log_level: str = "INFO"
    # A tus upload not PATCHed for this long expires (Upload-Expires).
    upload_expiry: float = 24 * 3600.0
    # Lease of a tus upload's lock: renewed every third of it while a PATCH
    # runs; a lock left by a killed process frees itself after this long.
    upload_lock_seconds: float = 20.0
    # Key of the HMAC that signs share links; None: a random one per process.
    share_secret: str | None = dataclasses.field(default=None, repr=False)
    share_max_seconds: int = 7 * 24 * 3600
    # Browsers and proxies (ops/proxies.py, api/cors.py). The origin that share links, public
    # links and tus Locations start with (https://files.example.com); None: each request's own,
    # as the trusted proxies forwarded it.
    public_url: str | None = None
    # Peers whose X-Forwarded-* / Forwarded headers are believed; none by default.
    trusted_proxies: tuple[IpNetwork, ...] = ()
    # Origins whose scripts may call the API (CORS); ("*",): any; (): no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    log_format: str = "text"  # or "json": one JSON object per line
    # Client connections (ops/connections.py): a request head must be complete
    # this many seconds after its first byte (or after the connection opened)...
    header_timeout: float = 10.0
    # ...an idle keep-alive connection is closed after this long...
    keepalive_timeout: float = 15.0
    # ...a response its client takes no bytes of for this long is cut off...
    send_timeout: float = 30.0
    # ...and a process holds at most this many (fewer if its open-file limit is lower).
    max_connections: int = 1000
    # Seconds uploads in flight get to finish after SIGTERM before they are aborted.
    graceful_timeout: int = 30
    workers: int = dataclasses.field(default_factory=_usable_cpus)  # gunicorn
    worker_timeout: int = 30  # gunicorn: a worker silent this long is restarted
    # Thumbnails (storage/thumbnails.py): images with more pixels than this are refused
    # before decoding (decompression bombs); each decode holds up to 4 bytes a pixel.
    thumbnail_max_pixels: int = 40_000_000
    thumbnail_max_bytes: int = 32 * MiB  # larger files get no thumbnail
    thumbnail_workers: int = 2  # threads decoding images, and images open at once
    # Bytes one user may store, counting uploads in progress; None: no quota (storage/quotas.py).
    user_quota: int | None = None
    # Lease of a reservation for an upload in progress: renewed every third of it while the
    # upload runs; a reservation left by a killed process frees itself after this long.
    quota_lease_seconds: float = 60.0
    # Where events (file.stored, file.deleted) are POSTed, signed with WEBHOOK_SECRET;
    # None: no webhooks (ops/webhooks.py).
    webhook_url: str | None = dataclasses.field(default=None, repr=False)
    webhook_secret: str | None = dataclasses.field(default=None, repr=False)
    # Events one process keeps queued for the receiver; more are dropped (and counted).
    webhook_queue: int = 10_000

    def __post_init__(self) -> None:
        for name, value, choices in (
            ("LOG_FORMAT", self.log_format, LOG_FORMATS),
            ("LOG_LEVEL", self.log_level, LOG_LEVELS),
            ("S3_CHECKSUM", self.s3_checksum, S3_CHECKSUMS),
            ("S3_CHECKSUM_FALLBACK", self.s3_checksum_fallback, S3_CHECKSUM_FALLBACKS),
        ):
            if value not in choices:
                raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if not self.s3_bucket:
            raise SettingsError("S3_BUCKET (or BUCKET) must name the bucket that holds the files")
        if self.part_size < MIN_PART_SIZE:
            raise SettingsError(
                f"PART_SIZE must be at least {MIN_PART_SIZE // MiB} MiB (S3's minimum part size), "
                f"got {self.part_size} bytes"
            )
        if self.memory_budget < self.part_size:
            raise SettingsError("MEMORY_BUDGET must be at least PART_SIZE: an upload holds a part at a time")
        if self.s3_max_connections < self.parts_in_flight:
            raise SettingsError("S3_MAX_CONNECTIONS must be at least PARTS_IN_FLIGHT")
        if self.webhook_url and not self.webhook_secret:
            raise SettingsError("WEBHOOK_URL needs WEBHOOK_SECRET: every event is signed with it")
        downloads, uploads = self.s3_lanes()[:2]
        if downloads < 1 or uploads < 1 or downloads + uploads >= self.s3_max_connections:
            raise SettingsError(
                "S3_DOWNLOAD_CONNECTIONS and S3_UPLOAD_CONNECTIONS must each be at least 1 and leave "
                "at least one of S3_MAX_CONNECTIONS for listings and other short calls"
            )

    def s3_lanes(self) -> tuple[int, int, int]:
        """S3_MAX_CONNECTIONS split into (downloads, uploads, short calls)."""
        total = self.s3_max_connections
        downloads = self.s3_download_connections or max(1, total * 3 // 8)
        uploads = self.s3_upload_connections or max(1, total // 2)
        return downloads, uploads, total - downloads - uploads

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: `os.environ`); unset or empty names keep their defaults."""
        env = os.environ if env is None else env
        values: dict[str, object] = {"s3_bucket": env.get("S3_BUCKET") or env.get("BUCKET") or ""}
        for var, (field, parse) in ENV_VARIABLES.items():
            if env.get(var):
                values[field] = parse(var, env[var])
        return cls(**values)  # type: ignore[arg-type]


def load_settings() -> Settings:
    """Settings from the environment, with `.env` (if any) filling in what is unset."""
    load_dotenv()
    return Settings.from_env()
