"""What a user may set, read once from the environment (and `.env`).

Each setting is one field of `Settings`, written once: its environment name is
the field's name in capitals, and its group, parser and documentation sit in
the field's metadata. `.env.example` and the table in docs/operations.md are
generated from them (`python -m devtools.settings_doc`), and a test keeps them
current. What is not a user's business (lease and lock periods, pool waits,
queue lengths, thumbnail safety limits) is a named constant beside the code
that uses it, with the reason for its value (sizes.py, and the modules). A few
of those stay fields of `Settings`, made with `fixed` and read from no
variable, so that the code built from `Settings` takes them from one place
and a test can pass another value (a one-second upload expiry, read-back
mode); what the probe decides (conditional writes) is one of them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dotenv import load_dotenv

from .formats import FLAG_WORDS, parse_flag
from .sizes import (
    DEFAULT_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MAX_UPLOADS_PER_USER,
    MIN_PART_SIZE,
    PARTS_IN_FLIGHT,
    PARTS_PER_SIZE_STEP,
    UPLOAD_EXPIRY_SECONDS,
    WEBHOOK_BACKLOG,
    GiB,
    MiB,
    PartPlan,
    TiB,
    format_size,
    parse_size,
    part_size_for,
)

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# What S3_CHECKSUM may name (storage/checksums.py says what each costs and does).
S3_CHECKSUMS = ("crc32", "crc32c", "sha256", "md5", "off")
# What the gateway does when the probe finds that S3 does not verify S3_CHECKSUM: send
# Content-MD5 instead (always, for a user), or keep it and warn (storage/probe.py; the tests of
# what S3 keeps of a checksum it does not verify).
S3_CHECKSUM_FALLBACKS = ("md5", "warn")
# What S3_SSE may name (storage/encryption.py says what each sends on which call).
S3_SSE_MODES = ("none", "sse-s3", "sse-kms", "sse-c")
SSE_C_KEY_BYTES = 32  # S3: SSE-C is AES-256, so its key is 256 bits


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


def _customer_key(name: str, value: str) -> bytes:
    """The base64 of 32 bytes (`openssl rand -base64 32`). An error never shows the value: a secret."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(f"{name} is not base64 (make one with: openssl rand -base64 32)") from None
    if len(key) != SSE_C_KEY_BYTES:
        raise SettingsError(f"{name} must be {SSE_C_KEY_BYTES} bytes once base64-decoded, got {len(key)}")
    return key


def _usable_cpus() -> int:
    # The CPUs this process may run on (a container's cpuset), not the host's count.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _text(name: str, value: str) -> str:
    return value


def _quota(name: str, value: str) -> int:
    size = _size(name, value)
    if size < 1:
        raise SettingsError(f"{name} must be at least 1 byte (leave it unset for no quota)")
    return size


def parse_port(name: str, value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a TCP port from 1 to 65535, got {value!r}") from None
    if not 1 <= port <= 65535:
        # 0 would listen on a port the kernel picks, which nobody could be told.
        raise SettingsError(f"{name} must be a TCP port from 1 to 65535, got {port}")
    return port


# A host name as DNS spells it: dot-separated labels of letters, digits and inner hyphens.
_HOST_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?", re.IGNORECASE)


def _host(name: str, value: str) -> str:
    """An IP address (IPv4, IPv6) or a host name; `999.1.1.1` is neither (all its labels are numbers)."""
    host = value.strip()
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(host) and not host.rstrip(".").rsplit(".", 1)[-1].isdigit():
        return host
    raise SettingsError(f"{name} must be an IP address (0.0.0.0, ::1) or a host name, got {value!r}")


def _http_url(name: str, value: str) -> str:
    parsed = urllib.parse.urlsplit(value.strip())
    try:
        parsed.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        parsed = parsed._replace(netloc="")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        # Not the value itself: a URL may carry credentials.
        raise SettingsError(f"{name} must be an http:// or https:// URL such as http://127.0.0.1:9000")
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


def _http_urls(name: str, value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_http_url(name, item) for item in value.split(",") if item.strip()))


def _names(name: str, value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))


# RFC 7518 §3.2: an HS256 key is at least as long as the hash, 256 bits.
MIN_JWT_SECRET_BYTES = 32


def _jwt_secret(name: str, value: str) -> str:
    if len(value.encode()) < MIN_JWT_SECRET_BYTES:
        raise SettingsError(
            f"{name} must be at least {MIN_JWT_SECRET_BYTES} bytes (RFC 7518: an HS256 key is no shorter "
            'than its hash), e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return value


Parser = Callable[[str, str], Any]

# The groups, in the order .env.example and docs/operations.md show them.
S3 = "S3"
HTTP = "HTTP"
UPLOADS = "Uploads"
FEATURES = "Features"
AUTH = "Identity and hooks"
GROUPS = (S3, HTTP, UPLOADS, FEATURES, AUTH)


def setting(
    group: str,
    doc: str,
    parse: Parser = _text,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    shown: str | None = None,
    example: str | None = None,
    secret: bool = False,
) -> Any:
    """A field of `Settings` that a user sets: environment name = the field's name in capitals.

    `doc` is what .env.example and docs/operations.md say about it; `shown`, its
    default as they print it (else worked out from the default); `example`, a
    value .env.example suggests. A `secret` is never in the dataclass's repr.
    """
    metadata = {"group": group, "doc": doc, "parse": parse, "shown": shown, "example": example}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, repr=not secret, metadata=metadata)
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


def fixed(default: Any) -> Any:
    """A field of `Settings` that no environment variable sets: `default` is a named constant (its
    reason beside it) or what the probe decides. Code built from `Settings` reads it like any
    other, and a test may pass another value (read-back mode, a one-second expiry)."""
    return dataclasses.field(default=default, metadata={"fixed": True})


# Names older versions read, each with what replaced it: set, they stop the gateway at startup
# rather than be silently ignored.
_INTERNAL = "a fixed internal period or limit now (file_uploader/sizes.py says why); remove it"
REMOVED: dict[str, str] = {
    "S3_MAX_ATTEMPTS": "use botocore's own AWS_MAX_ATTEMPTS (attempts per S3 call, the first included)",
    "S3_CA_BUNDLE": "use botocore's own AWS_CA_BUNDLE (a PEM file of the CAs to trust)",
    "S3_DOWNLOAD_CONNECTIONS": "derived from S3_MAX_CONNECTIONS now (3/8 of it); set that instead",
    "S3_UPLOAD_CONNECTIONS": "derived from S3_MAX_CONNECTIONS now (1/2 of it); set that instead",
    "HEADER_TIMEOUT": "use CLIENT_TIMEOUT (one timeout for a silent client)",
    "KEEPALIVE_TIMEOUT": "use CLIENT_TIMEOUT (one timeout for a silent client)",
    "SEND_TIMEOUT": "use CLIENT_TIMEOUT (one timeout for a silent client)",
    "BODY_READ_TIMEOUT": "use CLIENT_TIMEOUT (one timeout for a silent client)",
    "S3_CONDITIONAL_WRITES": (
        "the write probe finds whether S3 honours If-None-Match and If-Match, and the gateway "
        "sends them only then (docs/s3-engines.md); remove it"
    ),
    "S3_CHECKSUM_FALLBACK": (
        "where S3 does not verify S3_CHECKSUM the gateway always falls back to Content-MD5 (the "
        "former md5); for no checksum at all, set S3_CHECKSUM=off; remove it"
    ),
    "S3_EQUAL_PARTS_MAX_FILE_SIZE": (
        "use MAX_FILE_SIZE: with S3_EQUAL_PARTS, parts are sized so that S3_MAX_PARTS of them hold it"
    ),
    "UPLOAD_EXPIRY": "a fixed day after the last PATCH now (file_uploader/sizes.py says why); remove it",
    "SHARE_MAX_SECONDS": "a fixed week now (SigV4's own limit for a presigned URL; sizes.py); remove it",
    **dict.fromkeys(
        (
            "S3_POOL_TIMEOUT",
            "PARTS_IN_FLIGHT",
            "SPILL_AFTER",
            "UPLOAD_LOCK_SECONDS",
            "QUOTA_LEASE_SECONDS",
            "WEBHOOK_QUEUE",
            "WORKER_TIMEOUT",
            "THUMBNAIL_MAX_PIXELS",
            "THUMBNAIL_MAX_BYTES",
            "THUMBNAIL_WORKERS",
            "MAX_UPLOADS_PER_USER",
            "WEBHOOK_BACKLOG",
        ),
        _INTERNAL,
    ),
}
# Variables botocore reads itself, which the gateway does not copy: documented beside the
# settings (with an example value) because they are where its former S3_MAX_ATTEMPTS and
# S3_CA_BUNDLE went.
BOTOCORE_VARIABLES: dict[str, tuple[str, str]] = {
    "AWS_MAX_ATTEMPTS": (
        "Attempts per S3 call, the first included, with backoff (botocore's standard retry mode). "
        "Unset: botocore's default, 3.",
        "5",
    ),
    "AWS_CA_BUNDLE": (
        "For an https S3_ENDPOINT_URL whose certificate a private CA signed: that CA's certificate "
        "(a PEM file). Unset: the usual public CAs.",
        "/etc/ssl/private-ca.pem",
    ),
    "AWS_PROFILE": (
        "A profile of ~/.aws/config and ~/.aws/credentials to take the credentials (and region) from, "
        "instead of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
        "default",
    ),
}
# Other names a setting answers to (a deployment's older spelling).
ALIASES = {"S3_BUCKET": ("BUCKET",)}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting a user may set, grouped as .env.example shows them."""

    # --- S3 ---
    s3_bucket: str = setting(
        S3,
        "The one bucket that holds every user's files (required; BUCKET also works).",
        shown="required",
        example="file-uploader",
    )
    s3_endpoint_url: str | None = setting(
        S3,
        "Endpoint of an S3-compatible store (MinIO, Ceph RGW, moto...); unset: AWS S3. "
        "The compose stack of `make run-dev` sets it to its own MinIO; `make run` with no "
        "endpoint and no credentials starts an in-memory S3 of its own.",
        _http_url,
        default=None,
        example="http://127.0.0.1:9000",
    )
    s3_public_endpoint_url: str | None = setting(
        S3,
        "The S3 endpoint as clients reach it, for the URLs DIRECT_UPLOADS and DIRECT_DOWNLOADS hand "
        "out (a public name in front of a private S3_ENDPOINT_URL). Unset: S3_ENDPOINT_URL (or AWS).",
        _http_url,
        default=None,
        example="https://s3.example.com",
    )
    s3_create_bucket: bool = setting(
        S3, "Create the bucket at startup when it does not exist (1/0).", _bool, default=True
    )
    aws_region: str = setting(S3, "Region of the bucket.", default="us-east-1")
    aws_access_key_id: str | None = setting(
        S3,
        "S3 credentials; unset: botocore's usual chain (AWS_PROFILE, instance roles...).",
        default=None,
        example="minioadmin",
        secret=True,
    )
    aws_secret_access_key: str | None = setting(
        S3, "S3 credentials, with AWS_ACCESS_KEY_ID.", default=None, example="minioadmin", secret=True
    )
    s3_max_connections: int = setting(
        S3,
        "Connections the S3 client may hold open, shared by every request of the process. Downloads "
        "may hold 3/8 of them and parts of uploads 1/2; the rest is kept for listings, HEAD, deletes and "
        "multipart bookkeeping, so that neither kind can make the others wait.",
        _at_least(3, int, "a whole number"),
        default=64,
    )
    s3_checksum: str = setting(
        S3,
        "The checksum sent with each part for S3 to verify: crc32, crc32c, sha256, md5 (Content-MD5, "
        "which even old S3-compatible servers check) or off. At startup the gateway probes whether S3 "
        "really verifies it, and sends Content-MD5 instead where it does not (docs/s3-engines.md).",
        _one_of(S3_CHECKSUMS),
        default="crc32",
    )
    s3_max_parts: int = setting(
        S3,
        f"The most parts one multipart upload may have: S3's {MAX_PARTS:,}, or fewer for an engine that "
        "refuses more (Scaleway: 1,000). Part sizes are planned so that no upload sends a part past it; a "
        "body that would need more is refused with 413 (docs/s3-engines.md).",
        _whole(1),
        default=MAX_PARTS,
    )
    s3_equal_parts: bool = setting(
        S3,
        "Every part but the last of an upload the same size, also for bodies of unknown length (chunked "
        "PUT, forms, tus with a deferred length), whose parts otherwise grow: for Cloudflare R2, which "
        "refuses unequal parts (1/0). Their part size is chosen up front: PART_SIZE, "
        "grown until S3_MAX_PARTS parts hold MAX_FILE_SIZE, so set that to the largest file expected "
        "(100GiB with 10,000 parts: 11 MiB).",
        _bool,
        default=False,
    )
    s3_sse: str = setting(
        S3,
        "Server-side encryption asked for on every object the gateway writes: none (the bucket's "
        "default applies), sse-s3 (S3's own keys), sse-kms (with S3_SSE_KMS_KEY_ID) or sse-c (the key "
        "S3_SSE_C_KEY, sent on every write and read, copies, HEAD and thumbnails included; S3 keeps only "
        "its MD5, so a lost key is lost files) (docs/s3-engines.md).",
        _one_of(S3_SSE_MODES),
        default="none",
    )
    s3_sse_kms_key_id: str | None = setting(
        S3,
        "With S3_SSE=sse-kms: the KMS key's id, ARN or alias. Unset: the account's AWS-managed key.",
        default=None,
        example="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    s3_sse_c_key: bytes | None = setting(
        S3,
        "With S3_SSE=sse-c: the customer key, 32 random bytes in base64 (openssl rand -base64 32). The "
        "same on every process, and never changed: files written with one key cannot be read with another.",
        _customer_key,
        default=None,
        secret=True,
        example="",
    )

    # --- HTTP ---
    host: str = setting(HTTP, "Address to listen on.", _host, default="0.0.0.0")
    port: int = setting(HTTP, "Port to listen on (1-65535).", parse_port, default=8080)
    workers: int = setting(
        HTTP,
        "gunicorn worker processes (make start-gunicorn, Docker).",
        _whole(1),
        default_factory=_usable_cpus,
        shown="the CPUs the process may use",
        example="4",
    )
    max_connections: int = setting(
        HTTP,
        "Open client connections per process; over it, a new one gets 503 at once. Kept below the "
        "open-file limit (raised to its hard limit at startup) minus S3_MAX_CONNECTIONS and some room "
        "for temporary files.",
        _whole(1),
        default=1000,
    )
    client_timeout: float = setting(
        HTTP,
        "Seconds a client may stay silent: in the middle of a request body (the upload is aborted), or "
        "taking none of a response (a download nobody reads must not hold an S3 connection for ever) "
        "(docs/hostile-clients.md).",
        _seconds(0.1),
        default=60.0,
    )
    graceful_timeout: int = setting(
        HTTP,
        "After SIGTERM, seconds that uploads in flight get to finish; the rest are aborted (no "
        "multipart upload is left open).",
        _whole(0),
        default=30,
    )
    public_url: str | None = setting(
        HTTP,
        "The origin users reach the gateway at, when a proxy or load balancer stands in front of it: "
        "share links, public links (/p/...) and tus upload URLs start with it. A scheme, a host and "
        "perhaps a port; no path. Unset: each request's own, as a trusted proxy forwarded it "
        "(docs/browsers-and-proxies.md).",
        _origin,
        default=None,
        example="https://files.example.com",
    )
    trusted_proxies: tuple[IpNetwork, ...] = setting(
        HTTP,
        "Addresses or networks of the proxies in front of the gateway, comma-separated: only from "
        "these are X-Forwarded-For/-Proto/-Host/-Port (or Forwarded) believed, for links and the client "
        "address in the request log. Unset: nobody (the compose stack of `make run-dev` sets its own "
        "network's private ranges).",
        _networks,
        default=(),
        shown="unset (none)",
        example="10.0.0.5,172.16.0.0/12",
    )
    cors_origins: tuple[str, ...] = setting(
        HTTP,
        "Origins whose scripts may call the API from a browser (CORS), comma-separated, or * for any "
        "(safe here: the token is a header a script sets, never a cookie). Unset: no CORS headers.",
        _origins,
        default=(),
        shown="unset (no CORS)",
        example="https://app.example.com,http://localhost:3000",
    )
    log_level: str = setting(
        HTTP, "DEBUG, INFO, WARNING, ERROR or CRITICAL.", _one_of(LOG_LEVELS, upper=True), default="INFO"
    )
    log_format: str = setting(
        HTTP,
        "text, or json for one JSON object per line (the request log included).",
        _one_of(LOG_FORMATS),
        default="text",
    )

    # --- Uploads ---
    part_size: int = setting(
        UPLOADS,
        "Size of one multipart part (bytes, or 8MiB / 16M / 1GiB; S3 needs at least 5 MiB). Bigger parts "
        f"mean fewer S3 round trips and more memory: an upload keeps up to {PARTS_IN_FLIGHT} parts in "
        f"flight to S3 while it reads the next. A declared length too large for S3_MAX_PARTS parts grows "
        f"the part size for that upload; a chunked upload doubles it every {PARTS_PER_SIZE_STEP:,} parts "
        "(9 % of S3_MAX_PARTS), unless S3_EQUAL_PARTS.",
        _size,
        default=DEFAULT_PART_SIZE,
    )
    memory_budget: int = setting(
        UPLOADS,
        "Part data held in memory by all uploads together (at least PART_SIZE). An upload reserves a part "
        "before reading it and gives it back once S3 has it; at the cap, uploads wait (their sockets stop "
        "being read, so TCP slows the clients down) or move parts to disk, rather than fail.",
        _size,
        default=512 * MiB,
    )
    spool_budget: int = setting(
        UPLOADS,
        "Disk that parts in temporary files may take, all uploads together (parts of clients that keep "
        "them waiting while memory is short).",
        _size,
        default=8 * GiB,
    )
    max_file_size: int = setting(
        UPLOADS,
        "Largest file accepted (default: S3's own maximum object size). With S3_EQUAL_PARTS, also what "
        "the parts of a body of unknown length are sized for: set it to the largest file expected.",
        _size,
        default=MAX_OBJECT_SIZE,
    )
    user_quota: int | None = setting(
        UPLOADS,
        "Bytes one user may store, counting uploads in progress (10GiB, 500MiB...); past it, 413 "
        "quota_exceeded. Unset: no quota, and no S3 call for one (docs/quotas-and-webhooks.md).",
        _quota,
        default=None,
        shown="unset (no quota)",
        example="10GiB",
    )

    # --- Features ---
    direct_uploads: bool = setting(
        FEATURES,
        "Let signed-in users upload straight to S3 through presigned part URLs (/api/direct, "
        "@uppy/aws-s3's multipart mode): the quota is reserved for the declared size first, and each "
        "part's size and SHA-256 are checked before the file is stored (1/0; docs/api.md).",
        _bool,
        default=False,
    )
    direct_downloads: bool = setting(
        FEATURES,
        "Answer a file's download (the user's own, a share link's, the public library's; thumbnails "
        "and folder zips aside) with a 302 to a short-lived presigned S3 URL, with the "
        "Content-Disposition the gateway would send, instead of streaming it (1/0).",
        _bool,
        default=False,
    )
    share_secret: str | None = setting(
        FEATURES,
        'Key that signs share links (/s/...), any long random text (python -c "import secrets; '
        'print(secrets.token_urlsafe(32))"). Unset: each process makes a random one, so links die on '
        "restart and one worker's links are refused by the others: set it for any real deployment.",
        default=None,
        secret=True,
        example="",
    )
    webhook_url: str | None = setting(
        FEATURES,
        "Where each file.stored / file.deleted event is POSTed as JSON, after the client's response, "
        "retried with backoff. Unset: no webhooks (docs/quotas-and-webhooks.md).",
        _http_url,
        default=None,
        secret=True,
        example="https://hooks.example.com/files",
    )
    webhook_secret: str | None = setting(
        FEATURES,
        "Key of the X-Webhook-Signature header (sha256=<hex HMAC-SHA256 of the body>); required with "
        "WEBHOOK_URL.",
        default=None,
        secret=True,
        example="",
    )
    webhook_retry_seconds: float = setting(
        FEATURES,
        "How long an event the receiver does not take is retried (with backoff, from the bucket's "
        "journal, by any gateway process) before it is given up (docs/identity-and-hooks.md).",
        _seconds(1),
        default=86_400.0,
        shown="86400 (a day)",
    )
    # --- Identity and hooks (docs/identity-and-hooks.md) ---
    auth_uuid_tokens: bool = setting(
        AUTH,
        "Whether any UUID in X-Auth-Token is a user (a new UUID, a new empty space). Set 0 once another "
        "kind of identity below is set up, to accept only those.",
        _bool,
        default=True,
    )
    auth_jwt_secret: str | None = setting(
        AUTH,
        "The shared secret of HS256 JWTs your application signs (Authorization: Bearer <JWT>; at least "
        "32 bytes). The user is the token's (iss, sub).",
        _jwt_secret,
        default=None,
        secret=True,
        example="",
    )
    auth_jwks_url: str | None = setting(
        AUTH,
        "A JSON Web Key Set whose keys sign RS/PS/ES/EdDSA JWTs; fetched again when a token names a "
        "key it does not hold (a rotation), at most every 30 s.",
        _http_url,
        default=None,
        example="https://auth.example.com/.well-known/jwks.json",
    )
    auth_issuer: tuple[str, ...] = setting(
        AUTH,
        "The issuers (iss) whose JWTs are accepted, comma-separated; their keys come from "
        "<issuer>/.well-known/openid-configuration unless AUTH_JWKS_URL is set. The first one is where "
        "the web page signs in (authorization code with PKCE).",
        _http_urls,
        default=(),
        shown="unset (any iss, with AUTH_JWT_SECRET or AUTH_JWKS_URL)",
        example="https://keycloak.example.com/realms/acme",
    )
    auth_audience: tuple[str, ...] = setting(
        AUTH,
        "What a JWT's aud must contain (one of these, comma-separated); required with AUTH_JWKS_URL or "
        "AUTH_ISSUER. The first one is the web page's client id at the issuer.",
        _names,
        default=(),
        shown="unset (aud not checked)",
        example="file-uploader",
    )
    auth_quota_claim: str | None = setting(
        AUTH,
        "The JWT claim that carries the user's own quota in bytes, in place of USER_QUOTA.",
        default=None,
        example="storage_quota",
    )
    auth_hook_url: str | None = setting(
        AUTH,
        "The auth callback: asked (a signed POST) whose a bearer token is when the gateway cannot "
        "verify it itself; fails closed (503) when it does not answer.",
        _http_url,
        default=None,
        secret=True,
        example="https://app.example.com/internal/file-uploader/auth",
    )
    hook_url: str | None = setting(
        AUTH,
        "The blocking hooks: a signed POST before an upload's body is read (pre-create: may refuse it, "
        "or lower its size limit) and before the file is stored (pre-finish: may refuse it), for PUT, "
        "forms and tus (docs/identity-and-hooks.md).",
        _http_url,
        default=None,
        secret=True,
        example="https://app.example.com/internal/file-uploader/hooks",
    )
    hook_timeout: float = setting(
        AUTH,
        "Seconds HOOK_URL gets to answer, connecting included; no answer in time is HOOK_FAIL_OPEN's case.",
        _seconds(0.1),
        default=10.0,
    )
    hook_fail_open: bool = setting(
        AUTH,
        "What an upload gets when HOOK_URL does not answer in time, cannot be reached or answers neither "
        "2xx nor 4xx: 0 refuses it (503 hook_unavailable), 1 lets it through as if allowed (logged).",
        _bool,
        default=False,
    )
    hook_secret: str | None = setting(
        AUTH,
        "Key of the X-Hook-Signature header (sha256=<hex HMAC-SHA256 of the body>) of what the gateway "
        "POSTs to AUTH_HOOK_URL and HOOK_URL; required with either.",
        default=None,
        secret=True,
        example="",
    )

    # --- Not read from the environment: decided by the gateway (see `fixed`) ---
    # Compare-and-swap sends If-None-Match / If-Match where the write probe found S3 to honour
    # them (storage/cas.py); False keeps to the read-back rule even then.
    s3_conditional_writes: bool = fixed(True)
    # Where S3 does not verify S3_CHECKSUM: md5, or warn (keep it unverified).
    s3_checksum_fallback: str = fixed("md5")
    max_uploads_per_user: int = fixed(MAX_UPLOADS_PER_USER)
    upload_expiry: float = fixed(UPLOAD_EXPIRY_SECONDS)
    webhook_backlog: int = fixed(WEBHOOK_BACKLOG)

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
        if self.s3_max_parts > MAX_PARTS:
            raise SettingsError(
                f"S3_MAX_PARTS must be at most {MAX_PARTS:,} (S3's part numbers run from 1 to "
                f"{MAX_PARTS:,}), got {self.s3_max_parts}"
            )
        self._check_encryption()
        if self.memory_budget < self.part_size:
            raise SettingsError("MEMORY_BUDGET must be at least PART_SIZE: an upload holds a part at a time")
        if self.s3_equal_parts:
            self._check_equal_parts()
        if self.webhook_url and not self.webhook_secret:
            raise SettingsError("WEBHOOK_URL needs WEBHOOK_SECRET: every event is signed with it")
        self._check_identity()

    def _check_equal_parts(self) -> None:
        most = self.s3_max_parts * MAX_PART_SIZE
        if self.max_file_size > most:
            raise SettingsError(
                f"S3_EQUAL_PARTS needs a MAX_FILE_SIZE that S3_MAX_PARTS parts of 5 GiB (S3's largest "
                f"part) hold, at most {format_size(most)}: set it to the largest file expected"
            )
        equal = self.part_plan().equal or 0
        if equal > self.memory_budget:
            raise SettingsError(
                f"S3_EQUAL_PARTS sizes parts so that S3_MAX_PARTS of them hold MAX_FILE_SIZE: "
                f"{format_size(equal)} here, more than MEMORY_BUDGET; set MAX_FILE_SIZE to the largest "
                "file expected (100GiB with 10,000 parts: 11 MiB parts)"
            )

    def _check_encryption(self) -> None:
        if self.s3_sse not in S3_SSE_MODES:
            raise SettingsError(f"S3_SSE must be one of {', '.join(S3_SSE_MODES)}, got {self.s3_sse!r}")
        if (self.s3_sse == "sse-c") != (self.s3_sse_c_key is not None):
            raise SettingsError("S3_SSE=sse-c and S3_SSE_C_KEY go together: the one needs the other")
        if self.s3_sse_kms_key_id and self.s3_sse != "sse-kms":
            raise SettingsError("S3_SSE_KMS_KEY_ID is for S3_SSE=sse-kms only")
        if self.s3_sse == "sse-c" and (self.direct_uploads or self.direct_downloads):
            # Every request on an SSE-C object carries the key: a client given a URL would need it.
            raise SettingsError("DIRECT_UPLOADS and DIRECT_DOWNLOADS cannot work with S3_SSE=sse-c")

    def _check_identity(self) -> None:
        if self.auth_hook_url and not self.hook_secret:
            raise SettingsError("AUTH_HOOK_URL needs HOOK_SECRET: every question to it is signed with it")
        if self.hook_url and not self.hook_secret:
            raise SettingsError("HOOK_URL needs HOOK_SECRET: every hook it gets is signed with it")
        if (self.auth_jwks_url or self.auth_issuer) and not self.auth_audience:
            raise SettingsError(
                "AUTH_JWKS_URL and AUTH_ISSUER need AUTH_AUDIENCE: without it, any token the provider "
                "signed for any other application would be a user here"
            )
        jwts = self.auth_jwt_secret or self.auth_jwks_url or self.auth_issuer
        if self.auth_quota_claim and not jwts:
            raise SettingsError("AUTH_QUOTA_CLAIM needs JWTs: AUTH_JWT_SECRET, AUTH_JWKS_URL or AUTH_ISSUER")
        if not self.auth_uuid_tokens and not (jwts or self.auth_hook_url):
            raise SettingsError(
                "AUTH_UUID_TOKENS=0 leaves no way in: set AUTH_JWT_SECRET, AUTH_JWKS_URL, AUTH_ISSUER "
                "or AUTH_HOOK_URL too"
            )

    def part_plan(self) -> PartPlan:
        """How uploads are cut into parts on this engine: PART_SIZE, S3_MAX_PARTS, S3_EQUAL_PARTS."""
        equal = None
        if self.s3_equal_parts:
            # Bodies of unknown length: parts of which S3_MAX_PARTS hold the largest file accepted.
            equal = part_size_for(self.max_file_size, self.part_size, max_parts=self.s3_max_parts)
        return PartPlan(self.part_size, self.s3_max_parts, equal)

    def s3_where(self) -> str:
        """Where S3 is, for a log line: the endpoint's host and port (never credentials it may carry)."""
        if not self.s3_endpoint_url:
            return f"AWS S3 ({self.aws_region})"
        endpoint = urllib.parse.urlsplit(self.s3_endpoint_url)
        return f"{endpoint.hostname}:{endpoint.port or (443 if endpoint.scheme == 'https' else 80)}"

    def s3_lanes(self) -> tuple[int, int, int]:
        """S3_MAX_CONNECTIONS split into (downloads, uploads, short calls): 3/8, 1/2 and the rest."""
        total = self.s3_max_connections
        downloads = max(1, total * 3 // 8)
        uploads = max(1, total // 2)
        return downloads, uploads, total - downloads - uploads

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: `os.environ`); unset or empty names keep their defaults."""
        env = os.environ if env is None else env
        for name, replacement in REMOVED.items():
            if env.get(name):
                raise SettingsError(f"{name} is no longer a setting: {replacement}")
        values: dict[str, object] = {}
        for field in FIELDS:
            name = env_name(field)
            for spelling in (name, *ALIASES.get(name, ())):
                if env.get(spelling):
                    values[field.name] = field.metadata["parse"](spelling, env[spelling])
                    break
        if "s3_bucket" not in values:
            raise SettingsError("S3_BUCKET (or BUCKET) must name the bucket that holds the files")
        return cls(**values)  # type: ignore[arg-type]


# The fields a user sets; the `fixed` ones are not read from the environment.
FIELDS = tuple(field for field in dataclasses.fields(Settings) if "group" in field.metadata)


def env_name(field: dataclasses.Field[Any]) -> str:
    return field.name.upper()


# Every name `from_env` reads, aliases included.
ENV_NAMES = frozenset(
    spelling for field in FIELDS for spelling in (env_name(field), *ALIASES.get(env_name(field), ()))
)


def shown_default(field: dataclasses.Field[Any]) -> str:
    """A setting's default as .env.example and docs/operations.md print it."""
    if field.metadata["shown"] is not None:
        return str(field.metadata["shown"])
    value: Any = field.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "1" if value else "0"
    if field.metadata["parse"] is _size:
        for unit, size in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
            if value % size == 0:
                return f"{value // size}{unit}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def grouped() -> Iterator[tuple[str, list[dataclasses.Field[Any]]]]:
    """The settings of each group, in the order they are defined."""
    for group in GROUPS:
        yield group, [field for field in FIELDS if field.metadata["group"] == group]


def load_settings() -> Settings:
    """Settings from the environment, with `.env` (if any) filling in what is unset."""
    load_dotenv()
    return Settings.from_env()
