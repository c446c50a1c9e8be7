"""What each S3 engine enforces, and what botocore sends it: the facts the gateway is built on.

Three engines, each a real server on a real socket: moto's server (the
suite's `s3_url`), and Ceph RGW 16 from Debian (devtools/rgw.py) over http
and over https, its certificate signed by a CA made for the run. Every client
here uses the settings the gateway's storage layer is moving to:
`request_checksum_calculation="when_required"` and
`payload_signing_enabled=False` (see devtools/ENGINES.md).

Where an engine does not enforce a rule, its test asserts what it does
instead (for example, that it stores a body whose checksum is wrong), so that
an upgrade that changes the behaviour fails here and gets noticed. The
expected outcome per engine sits next to each test; devtools/ENGINES.md is
the same table in prose.

The RGW cases skip, saying why, where Ceph is not installed
(devtools/system-deps.sh installs it); under CI (the CI variable set) they
fail instead, so that CI cannot pass without running them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import socket
import ssl
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, FlexibleChecksumError, MissingDependencyException

from devtools.rgw import RgwEngine, RgwStartError, running_rgw

from ..helpers import reset_moto
from .conftest import require_ceph

MOTO, RGW = "moto", "rgw"
STORED = "stored"  # an outcome: the engine accepted the request and kept the body
BODY = b"what the client meant to store\n" * 4
OTHER = b"what arrived after a bit flip!\n" * 4  # as long as BODY
assert len(BODY) == len(OTHER)
OPERATIONS = ["PutObject", "UploadPart"]  # the two that carry a file's bytes


@dataclass(frozen=True)
class Engine:
    """One S3 endpoint under test, with a bucket of its own."""

    name: str  # the test id: moto, rgw-http, rgw-https
    kind: str  # MOTO or RGW: what it enforces does not depend on the scheme
    url: str
    verify: str | bool  # the CA file for https
    access_key: str
    secret_key: str
    bucket: str


def s3_client(engine: Engine, *, checksums: str = "when_required", sign_payload: bool | None = False):
    """A plain boto3 client: `checksums` is request_checksum_calculation, `sign_payload`
    payload_signing_enabled (None: botocore's default)."""
    s3_options: dict[str, object] = {"addressing_style": "path"}
    if sign_payload is not None:
        s3_options["payload_signing_enabled"] = sign_payload
    return boto3.client(
        "s3",
        endpoint_url=engine.url,
        region_name="us-east-1",
        aws_access_key_id=engine.access_key,
        aws_secret_access_key=engine.secret_key,
        verify=engine.verify,
        config=Config(
            request_checksum_calculation=checksums,
            s3=s3_options,
            # One attempt: a refusal (even a 500) is the fact under test, not a reason to retry.
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


@functools.cache
def _bucket_maker(url: str, verify: str | bool, access_key: str, secret_key: str):
    """The client that makes each test's bucket, one per engine and process: building a boto3
    client costs 20 to 50 ms of CPU, more than most tests here. It only ever creates buckets; the
    tests get clients of their own (`s3_client`), which some of them change (event handlers)."""
    return s3_client(Engine("", "", url, verify, access_key, secret_key, ""))


def _new_engine(name: str, url: str, verify: str | bool, access_key: str, secret_key: str) -> Engine:
    engine = Engine(
        name, name.split("-")[0], url, verify, access_key, secret_key, f"facts-{uuid.uuid4().hex[:12]}"
    )
    _bucket_maker(url, verify, access_key, secret_key).create_bucket(Bucket=engine.bucket)
    return engine


@pytest.fixture
def moto_engine(s3_url: str) -> Iterator[Engine]:
    """moto's server, shared with the rest of the suite, with a bucket of the test's own: gone
    with all the server holds once the test ends (tests/conftest.py's `bucket` says why)."""
    yield _new_engine("moto", s3_url, True, "moto-key", "moto-secret")
    reset_moto(s3_url)


@pytest.fixture(scope="session")
def rgw_http(rgw: RgwEngine) -> Engine:
    return _new_engine("rgw-http", rgw.http_url, True, rgw.access_key, rgw.secret_key)


@pytest.fixture(scope="session")
def rgw_https(rgw: RgwEngine) -> Engine:
    return _new_engine("rgw-https", rgw.https_url, rgw.ca_file, rgw.access_key, rgw.secret_key)


@pytest.fixture(params=["moto", "rgw-http", "rgw-https"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each engine in turn; RGW starts only when a test asks for it (the cluster is thrown away whole)."""
    return request.getfixturevalue(
        {"moto": "moto_engine", "rgw-http": "rgw_http", "rgw-https": "rgw_https"}[request.param]
    )


@pytest.fixture
def s3(engine: Engine):
    return s3_client(engine)


@pytest.fixture
def key() -> str:
    return f"facts/{uuid.uuid4().hex}"


def error_code(call: Callable[[], object]) -> str:
    """The S3 error code `call` got ("404" where the answer had no body to name one), or "ok"."""
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return "ok"


def content(s3, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if there is no such key."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchKey":
            return None
        raise


def record_headers(s3) -> list[dict[str, str]]:
    """The headers of every request `s3` sends from now on, as sent (names in lower case)."""
    sent: list[dict[str, str]] = []

    def record(request, **_: object) -> None:
        sent.append({name.lower(): _text(value) for name, value in request.headers.items()})

    s3.meta.events.register("before-send.s3", record)
    return sent


def alter_body_after_signing(s3, body: bytes) -> None:
    """PutObject and UploadPart send `body`, not the one signed and checksummed: a corruption on the way."""

    def swap(request, **_: object) -> None:
        request.body = body

    for operation in OPERATIONS:
        s3.meta.events.register_first(f"before-send.s3.{operation}", swap)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), bit by bit: botocore computes it only with awscrt, which is not installed."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


# Each checksum a caller can compute itself and hand to botocore: parameter -> (header, value of data).
CHECKSUMS: dict[str, tuple[str, Callable[[bytes], str]]] = {
    "ContentMD5": ("content-md5", lambda data: b64(hashlib.md5(data).digest())),
    "ChecksumCRC32": ("x-amz-checksum-crc32", lambda data: b64(zlib.crc32(data).to_bytes(4, "big"))),
    "ChecksumCRC32C": ("x-amz-checksum-crc32c", lambda data: b64(crc32c(data).to_bytes(4, "big"))),
    "ChecksumSHA256": ("x-amz-checksum-sha256", lambda data: b64(hashlib.sha256(data).digest())),
}


def test_crc32c_helper_matches_the_published_check_value() -> None:
    """RFC 3720's check value: the helper the CRC32C cases rely on is the real CRC-32C."""
    assert crc32c(b"123456789") == 0xE3069283


def _upload(s3, engine: Engine, key: str, operation: str, body: bytes = BODY, **params: str) -> object:
    """PutObject, or UploadPart into a fresh multipart upload of `key`."""
    if operation == "PutObject":
        return s3.put_object(Bucket=engine.bucket, Key=key, Body=body, **params)
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    return s3.upload_part(
        Bucket=engine.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body, **params
    )


# --- What botocore 1.43 sends ----------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
def test_when_required_sends_no_checksum_and_a_content_length(engine, s3, key, operation) -> None:
    """With "when_required", a body goes as it is, even over https: Content-Length, no checksum, no chunks."""
    sent = record_headers(s3)
    _upload(s3, engine, key, operation)
    headers = sent[-1]
    assert headers["content-length"] == str(len(BODY))
    assert not [name for name in headers if name.startswith("x-amz-checksum") or name == "content-md5"]
    assert "transfer-encoding" not in headers and "content-encoding" not in headers
    assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"


@pytest.mark.parametrize("parameter", CHECKSUMS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_checksum_the_caller_computed_travels_as_a_plain_header(
    engine, s3, key, operation, parameter
) -> None:
    """Checksum<ALG>= / ContentMD5= become one header next to Content-Length; every engine accepts it.

    botocore computes nothing when a request already has an x-amz-checksum-*
    header, and a Content-MD5 is a plain header: no aws-chunked trailer, even
    over https.
    """
    header, checksum = CHECKSUMS[parameter]
    sent = record_headers(s3)
    _upload(s3, engine, key, operation, **{parameter: checksum(BODY)})
    headers = sent[-1]
    assert headers[header] == checksum(BODY)
    assert headers["content-length"] == str(len(BODY))
    assert "x-amz-trailer" not in headers and "content-encoding" not in headers


# botocore's own checksum (ChecksumAlgorithm=, or any body under "when_supported"):
# a header over http; over https an aws-chunked body with a trailer and no
# Content-Length, which RGW 16 refuses with 411 MissingContentLength.
BOTOCORE_CHECKSUM = {"moto": "ok", "rgw-http": "ok", "rgw-https": "MissingContentLength"}


@pytest.mark.parametrize(
    ("checksums", "params"),
    [("when_supported", {}), ("when_required", {"ChecksumAlgorithm": "CRC32"})],
    ids=["when_supported", "ChecksumAlgorithm"],
)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_checksum_botocore_computes_is_a_trailer_over_https(
    engine, key, operation, checksums, params
) -> None:
    s3 = s3_client(engine, checksums=checksums)
    sent = record_headers(s3)
    outcome = error_code(lambda: _upload(s3, engine, key, operation, **params))
    headers = sent[-1]
    if engine.url.startswith("https"):
        assert headers["content-encoding"] == "aws-chunked"
        assert headers["x-amz-trailer"] == "x-amz-checksum-crc32"
        assert headers["transfer-encoding"] == "chunked" and "content-length" not in headers
    else:
        assert headers["x-amz-checksum-crc32"] == CHECKSUMS["ChecksumCRC32"][1](BODY)
    assert outcome == BOTOCORE_CHECKSUM[engine.name]


def test_botocore_computes_no_crc32c_without_awscrt(moto_engine, key) -> None:
    """awscrt is not installed: ChecksumAlgorithm="CRC32C" fails in the client, nothing is sent."""
    assert importlib.util.find_spec("awscrt") is None
    s3 = s3_client(moto_engine)
    sent = record_headers(s3)
    with pytest.raises(MissingDependencyException):
        s3.put_object(Bucket=moto_engine.bucket, Key=key, Body=BODY, ChecksumAlgorithm="CRC32C")
    assert sent == []


@pytest.mark.parametrize("operation", OPERATIONS)
def test_botocore_hashes_the_body_unless_payload_signing_is_off(engine, key, operation) -> None:
    """payload_signing_enabled left unset: a SHA-256 of every body, even over https with a checksum header.

    botocore skips the payload hash over https only when the checksum header
    is one it chose itself (or Content-MD5); a caller's x-amz-checksum-* does
    not count. So a gateway that sends its own CRC32 must set
    payload_signing_enabled=False to avoid hashing every byte twice.
    """
    s3 = s3_client(engine, sign_payload=None)
    sent = record_headers(s3)
    _upload(s3, engine, key, operation, ChecksumCRC32=CHECKSUMS["ChecksumCRC32"][1](BODY))
    assert sent[-1]["x-amz-content-sha256"] == hashlib.sha256(BODY).hexdigest()


# --- What each engine verifies ---------------------------------------------------------------------

# A body whose checksum header does not match it: the error code the engine
# refuses it with, or STORED when it keeps the body. moto 5.2.5 verifies no
# checksum at all (its source says "TODO: AWS computes the provided value and
# verifies it"); RGW 16 verifies Content-MD5 only.
WRONG_CHECKSUM = {
    "ContentMD5": {MOTO: STORED, RGW: "BadDigest"},
    "ChecksumCRC32": {MOTO: STORED, RGW: STORED},
    "ChecksumCRC32C": {MOTO: STORED, RGW: STORED},
    "ChecksumSHA256": {MOTO: STORED, RGW: STORED},
}


@pytest.mark.parametrize("parameter", CHECKSUMS)
def test_put_object_with_a_wrong_checksum(engine, s3, key, parameter) -> None:
    expected = WRONG_CHECKSUM[parameter][engine.kind]
    wrong = CHECKSUMS[parameter][1](OTHER)
    outcome = error_code(
        lambda: s3.put_object(Bucket=engine.bucket, Key=key, Body=BODY, **{parameter: wrong})
    )
    if expected == STORED:
        assert outcome == "ok"
        assert content(s3, engine.bucket, key) == BODY
    else:
        assert outcome == expected
        assert content(s3, engine.bucket, key) is None


@pytest.mark.parametrize("parameter", CHECKSUMS)
def test_upload_part_with_a_wrong_checksum(engine, s3, key, parameter) -> None:
    expected = WRONG_CHECKSUM[parameter][engine.kind]
    wrong = CHECKSUMS[parameter][1](OTHER)
    outcome = error_code(lambda: _upload(s3, engine, key, "UploadPart", **{parameter: wrong}))
    assert outcome == ("ok" if expected == STORED else expected)


# A wrong x-amz-checksum-crc32 sent with x-amz-sdk-checksum-algorithm (what
# ChecksumAlgorithm= adds): moto keeps the wrong value and returns it on
# GetObject, whose body botocore then refuses to read (it validates response
# checksums by default); RGW 16 keeps no checksum, so the read succeeds.
READ_BACK_WRONG_CHECKSUM = {MOTO: "FlexibleChecksumError", RGW: "ok"}


def test_reading_an_object_stored_with_a_wrong_checksum(engine, s3, key) -> None:
    wrong = CHECKSUMS["ChecksumCRC32"][1](OTHER)
    s3.put_object(Bucket=engine.bucket, Key=key, Body=BODY, ChecksumAlgorithm="CRC32", ChecksumCRC32=wrong)
    try:
        outcome = "ok" if s3.get_object(Bucket=engine.bucket, Key=key)["Body"].read() == BODY else "other"
    except FlexibleChecksumError:
        outcome = "FlexibleChecksumError"
    assert outcome == READ_BACK_WRONG_CHECKSUM[engine.kind]


# The SigV4 payload hash (x-amz-content-sha256 with payload signing on) of a
# body altered after signing: RGW checks it, moto does not.
PAYLOAD_HASH_MISMATCH = {MOTO: STORED, RGW: "XAmzContentSHA256Mismatch"}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_body_that_does_not_match_its_signed_payload_hash(engine, key, operation) -> None:
    s3 = s3_client(engine, sign_payload=True)
    sent = record_headers(s3)
    alter_body_after_signing(s3, OTHER)
    outcome = error_code(lambda: _upload(s3, engine, key, operation))
    assert sent[-1]["x-amz-content-sha256"] == hashlib.sha256(BODY).hexdigest()
    expected = PAYLOAD_HASH_MISMATCH[engine.kind]
    assert outcome == ("ok" if expected == STORED else expected)
    if operation == "PutObject":
        assert content(s3, engine.bucket, key) == (OTHER if expected == STORED else None)


def test_a_body_altered_under_unsigned_payload_is_stored_by_every_engine(engine, key) -> None:
    """UNSIGNED-PAYLOAD and no checksum: nothing protects the bytes; what arrives is kept."""
    s3 = s3_client(engine)
    alter_body_after_signing(s3, OTHER)
    s3.put_object(Bucket=engine.bucket, Key=key, Body=BODY)
    assert content(s3, engine.bucket, key) == OTHER


# The checksum an engine sends back in the PutObject / UploadPart response
# when the caller sent x-amz-checksum-crc32 itself: moto echoes it only when
# x-amz-sdk-checksum-algorithm names the algorithm too; RGW 16 never does.
ECHO = {
    "checksum header": {MOTO: False, RGW: False},
    "checksum header and algorithm": {MOTO: True, RGW: False},
}


@pytest.mark.parametrize("sent", ECHO)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_which_engines_echo_the_checksum(engine, s3, key, operation, sent) -> None:
    crc = CHECKSUMS["ChecksumCRC32"][1](BODY)
    params = {"ChecksumCRC32": crc, **({"ChecksumAlgorithm": "CRC32"} if "algorithm" in sent else {})}
    response = _upload(s3, engine, key, operation, **params)
    assert response.get("ChecksumCRC32") == (crc if ECHO[sent][engine.kind] else None)


# --- Conditional writes ----------------------------------------------------------------------------


def test_put_if_none_match_star_refuses_an_existing_key(engine, s3, key) -> None:
    s3.put_object(Bucket=engine.bucket, Key=key, Body=b"first")
    outcome = error_code(
        lambda: s3.put_object(Bucket=engine.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    )
    assert outcome == "PreconditionFailed"
    assert content(s3, engine.bucket, key) == b"first"


def test_put_if_none_match_star_stores_a_new_key(engine, s3, key) -> None:
    s3.put_object(Bucket=engine.bucket, Key=key, Body=b"new", IfNoneMatch="*")
    assert content(s3, engine.bucket, key) == b"new"


# PutObject with If-Match: the ETag as S3 returns it ("quoted"), bare, or
# another object's. RGW 16 compares If-Match with its stored ETag, which has no
# quotes, so a quoted ETag never matches there: a gateway must strip them.
IF_MATCH = {
    "quoted, matching": {MOTO: STORED, RGW: "PreconditionFailed"},
    "bare, matching": {MOTO: STORED, RGW: STORED},
    "quoted, not matching": {MOTO: "PreconditionFailed", RGW: "PreconditionFailed"},
    "bare, not matching": {MOTO: "PreconditionFailed", RGW: "PreconditionFailed"},
}


@pytest.mark.parametrize("case", IF_MATCH)
def test_put_if_match(engine, s3, key, case) -> None:
    etag = s3.put_object(Bucket=engine.bucket, Key=key, Body=b"first")["ETag"]
    if "not matching" in case:
        etag = s3.put_object(Bucket=engine.bucket, Key=f"{key}-other", Body=b"other")["ETag"]
    if_match = etag if case.startswith("quoted") else etag.strip('"')
    outcome = error_code(
        lambda: s3.put_object(Bucket=engine.bucket, Key=key, Body=b"second", IfMatch=if_match)
    )
    expected = IF_MATCH[case][engine.kind]
    assert outcome == ("ok" if expected == STORED else expected)
    assert content(s3, engine.bucket, key) == (b"second" if expected == STORED else b"first")


# If-Match on a key that does not exist: moto answers 404, RGW 412; neither stores.
IF_MATCH_MISSING_KEY = {MOTO: "NoSuchKey", RGW: "PreconditionFailed"}


def test_put_if_match_on_a_missing_key_stores_nothing(engine, s3, key) -> None:
    outcome = error_code(
        lambda: s3.put_object(
            Bucket=engine.bucket, Key=key, Body=b"x", IfMatch='"0123456789abcdef0123456789abcdef"'
        )
    )
    assert outcome == IF_MATCH_MISSING_KEY[engine.kind]
    assert content(s3, engine.bucket, key) is None


def _multipart(s3, engine: Engine, key: str, body: bytes) -> tuple[str, list[dict[str, object]]]:
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=engine.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=body)["ETag"]
    return upload_id, [{"PartNumber": 1, "ETag": etag}]


# CompleteMultipartUpload with a condition on an existing key: moto honours
# If-None-Match: * (412, the upload stays open); RGW 16 ignores both
# conditions and replaces the object; nobody checks If-Match.
COMPLETE_CONDITION = {
    "If-None-Match: *": {MOTO: "PreconditionFailed", RGW: STORED},
    "If-Match: another ETag": {MOTO: STORED, RGW: STORED},
}


@pytest.mark.parametrize("condition", COMPLETE_CONDITION)
def test_complete_multipart_upload_with_a_condition_on_an_existing_key(engine, s3, key, condition) -> None:
    s3.put_object(Bucket=engine.bucket, Key=key, Body=b"first")
    params = {"IfNoneMatch": "*"} if "None" in condition else {"IfMatch": "0123456789abcdef0123456789abcdef"}
    upload_id, parts = _multipart(s3, engine, key, b"second")
    outcome = error_code(
        lambda: s3.complete_multipart_upload(
            Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **params
        )
    )
    expected = COMPLETE_CONDITION[condition][engine.kind]
    assert outcome == ("ok" if expected == STORED else expected)
    assert content(s3, engine.bucket, key) == (b"second" if expected == STORED else b"first")
    if expected != STORED:
        s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)


def test_complete_multipart_upload_if_none_match_star_stores_a_new_key(engine, s3, key) -> None:
    upload_id, parts = _multipart(s3, engine, key, b"new")
    s3.complete_multipart_upload(
        Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
    )
    assert content(s3, engine.bucket, key) == b"new"


# --- Multipart uploads -----------------------------------------------------------------------------

# Completing with fewer parts than were uploaded (leftovers past the last one):
# moto assembles the listed parts; RGW 16 refuses ("total parts mismatch" in
# its log) with InvalidPart, so a gateway cannot leave unlisted parts behind.
COMPLETE_SUBSET = {MOTO: STORED, RGW: "InvalidPart"}


def test_complete_multipart_upload_with_a_part_left_out(engine, s3, key) -> None:
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    etags = [
        s3.upload_part(Bucket=engine.bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        for n, body in ((1, b"kept"), (2, b"left over"))
    ]
    outcome = error_code(
        lambda: s3.complete_multipart_upload(
            Bucket=engine.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]}]},
        )
    )
    expected = COMPLETE_SUBSET[engine.kind]
    assert outcome == ("ok" if expected == STORED else expected)
    assert content(s3, engine.bucket, key) == (b"kept" if expected == STORED else None)
    if expected != STORED:
        s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)


# The ETag in CompleteMultipartUpload's response: RGW 16 sends an empty <ETag/>
# (HeadObject has the right one); moto sends it quoted, as AWS does.
def test_the_etag_complete_multipart_upload_returns(engine, s3, key) -> None:
    upload_id, parts = _multipart(s3, engine, key, b"body")
    response = s3.complete_multipart_upload(
        Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    head = s3.head_object(Bucket=engine.bucket, Key=key)["ETag"]
    assert head.startswith('"') and head.endswith('-1"')
    assert response["ETag"] == {MOTO: head, RGW: ""}[engine.kind]


def test_a_single_empty_part_completes_as_an_empty_object(engine, s3, key) -> None:
    upload_id, parts = _multipart(s3, engine, key, b"")
    s3.complete_multipart_upload(
        Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    assert content(s3, engine.bucket, key) == b""


def test_complete_multipart_upload_without_parts_is_malformed_xml(engine, s3, key) -> None:
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    outcome = error_code(
        lambda: s3.complete_multipart_upload(
            Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": []}
        )
    )
    assert outcome == "MalformedXML"
    s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)


def test_parts_but_the_last_must_be_5_mib(engine, s3, key) -> None:
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    ids = {"Bucket": engine.bucket, "Key": key, "UploadId": upload_id}
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(**ids, PartNumber=n, Body=b"x" * 100)["ETag"]}
        for n in (1, 2)
    ]
    outcome = error_code(
        lambda: s3.complete_multipart_upload(
            Bucket=engine.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    )
    assert outcome == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)


def test_list_parts_pages(engine, s3, key) -> None:
    upload_id = s3.create_multipart_upload(Bucket=engine.bucket, Key=key)["UploadId"]
    for number in (1, 2, 3):
        s3.upload_part(Bucket=engine.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=b"p")
    first = s3.list_parts(Bucket=engine.bucket, Key=key, UploadId=upload_id, MaxParts=2)
    assert [part["PartNumber"] for part in first["Parts"]] == [1, 2]
    assert first["IsTruncated"] and first["NextPartNumberMarker"] == 2
    rest = s3.list_parts(Bucket=engine.bucket, Key=key, UploadId=upload_id, MaxParts=2, PartNumberMarker=2)
    assert [part["PartNumber"] for part in rest["Parts"]] == [3]
    assert not rest["IsTruncated"]
    s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)


# Calls naming an upload id that does not exist (never did, or was aborted or
# completed). Only AbortMultipartUpload agrees everywhere. moto answers
# UploadPart and CompleteMultipartUpload with a bare 500; RGW answers
# ListParts with NoSuchKey and CompleteMultipartUpload with 500 InternalError
# (which botocore's retry modes retry).
UNKNOWN_UPLOAD = {
    "UploadPart": {MOTO: "500", RGW: "NoSuchUpload"},
    "ListParts": {MOTO: "NoSuchUpload", RGW: "NoSuchKey"},
    "CompleteMultipartUpload": {MOTO: "500", RGW: "InternalError"},
    "AbortMultipartUpload": {MOTO: "NoSuchUpload", RGW: "NoSuchUpload"},
}


@pytest.mark.parametrize("operation", UNKNOWN_UPLOAD)
def test_calls_on_an_aborted_upload(engine, s3, key, operation) -> None:
    upload_id, parts = _multipart(s3, engine, key, b"part")
    s3.abort_multipart_upload(Bucket=engine.bucket, Key=key, UploadId=upload_id)
    ids = {"Bucket": engine.bucket, "Key": key, "UploadId": upload_id}
    calls = {
        "UploadPart": lambda: s3.upload_part(**ids, PartNumber=1, Body=b"late"),
        "ListParts": lambda: s3.list_parts(**ids),
        "CompleteMultipartUpload": lambda: s3.complete_multipart_upload(
            **ids, MultipartUpload={"Parts": parts}
        ),
        "AbortMultipartUpload": lambda: s3.abort_multipart_upload(**ids),
    }
    assert error_code(calls[operation]) == UNKNOWN_UPLOAD[operation][engine.kind]


# --- Reading, listing, deleting --------------------------------------------------------------------


def test_missing_keys(engine, s3, key) -> None:
    """GetObject: NoSuchKey; HeadObject: a bare 404; DeleteObject: 204 all the same."""
    assert error_code(lambda: s3.get_object(Bucket=engine.bucket, Key=key)) == "NoSuchKey"
    assert error_code(lambda: s3.head_object(Bucket=engine.bucket, Key=key)) == "404"
    response = s3.delete_object(Bucket=engine.bucket, Key=key)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_list_objects_v2_pages(engine, s3, key) -> None:
    for name in ("a/1", "a/2", "b/1"):
        s3.put_object(Bucket=engine.bucket, Key=f"{key}/{name}", Body=b"x")
    first = s3.list_objects_v2(Bucket=engine.bucket, Prefix=f"{key}/", MaxKeys=2)
    assert [item["Key"] for item in first["Contents"]] == [f"{key}/a/1", f"{key}/a/2"]
    assert first["IsTruncated"] and first["KeyCount"] == 2
    rest = s3.list_objects_v2(
        Bucket=engine.bucket, Prefix=f"{key}/", MaxKeys=2, ContinuationToken=first["NextContinuationToken"]
    )
    assert [item["Key"] for item in rest["Contents"]] == [f"{key}/b/1"]
    assert not rest["IsTruncated"]
    after = s3.list_objects_v2(Bucket=engine.bucket, Prefix=f"{key}/", StartAfter=f"{key}/a/1")
    assert [item["Key"] for item in after["Contents"]] == [f"{key}/a/2", f"{key}/b/1"]


# MaxKeys above 1000: RGW caps it at 1000 as AWS does; moto takes it as asked.
def test_list_objects_v2_max_keys_above_1000(engine, s3) -> None:
    page = s3.list_objects_v2(Bucket=engine.bucket, Prefix="none/", MaxKeys=5000)
    assert page["MaxKeys"] == {MOTO: 5000, RGW: 1000}[engine.kind]


def test_delete_objects_needs_no_content_md5(engine, key) -> None:
    """botocore 1.43 sends DeleteObjects a CRC32 header, not Content-MD5; even with neither, it works."""
    s3 = s3_client(engine)
    s3.put_object(Bucket=engine.bucket, Key=key, Body=b"x")

    def strip_checksums(request, **_: object) -> None:
        for name in list(request.headers):
            if name.lower().startswith("x-amz-checksum") or name.lower() == "content-md5":
                del request.headers[name]

    s3.meta.events.register("before-sign.s3", strip_checksums)
    sent = record_headers(s3)
    response = s3.delete_objects(Bucket=engine.bucket, Delete={"Objects": [{"Key": key}], "Quiet": True})
    assert not response.get("Errors")
    assert not [name for name in sent[-1] if name.startswith("x-amz-checksum") or name == "content-md5"]
    assert content(s3, engine.bucket, key) is None


# DeleteObjects with more than 1000 keys (AWS's limit): RGW refuses with a bare
# 400 (no error code); moto deletes them.
def test_delete_objects_with_more_than_1000_keys(engine, s3, key) -> None:
    objects = [{"Key": f"{key}/{n}"} for n in range(1001)]
    outcome = error_code(
        lambda: s3.delete_objects(Bucket=engine.bucket, Delete={"Objects": objects, "Quiet": True})
    )
    assert outcome == {MOTO: "ok", RGW: "400"}[engine.kind]


# Keys longer than 1024 bytes (AWS's limit): RGW refuses with InvalidObjectName; moto stores them.
def test_a_key_of_1025_bytes(engine, s3) -> None:
    long_key = "k" * 1025
    outcome = error_code(lambda: s3.put_object(Bucket=engine.bucket, Key=long_key, Body=b"x"))
    assert outcome == {MOTO: "ok", RGW: "InvalidObjectName"}[engine.kind]


# --- The engine itself -----------------------------------------------------------------------------


def test_https_serves_a_certificate_for_127_0_0_1_and_localhost_signed_by_the_ca(rgw) -> None:
    port = int(rgw.https_url.rsplit(":", 1)[1])
    trusting = ssl.create_default_context(cafile=rgw.ca_file)
    for host in ("127.0.0.1", "localhost"):
        with (
            socket.create_connection(("127.0.0.1", port)) as sock,
            trusting.wrap_socket(sock, server_hostname=host),
        ):
            pass
    with socket.create_connection(("127.0.0.1", port)) as sock, pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1")


def test_rgw_reports_its_version(rgw) -> None:
    assert rgw.version.startswith("16.")


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (zombies have none)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_a_second_cluster_runs_beside_the_first_and_leaves_nothing_running(rgw, tmp_path) -> None:
    """Two test sessions (two worktrees) can each have a cluster; stopping one ends all its daemons."""
    with running_rgw(tmp_path / "second") as second:
        assert {second.http_url, second.https_url}.isdisjoint({rgw.http_url, rgw.https_url})
        engine = Engine("second", RGW, second.http_url, True, second.access_key, second.secret_key, "second")
        s3_client(engine).create_bucket(Bucket="second")
        assert len(_processes_mentioning(str(tmp_path / "second"))) == 3
    assert _processes_mentioning(str(tmp_path / "second")) == []
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(second.http_url.rsplit(":", 1)[1]))) != 0


def test_a_daemon_that_dies_at_startup_is_reported_with_its_log(tmp_path) -> None:
    """The error names the daemon and quotes its own words; nothing is left running."""
    require_ceph()
    with (
        pytest.raises(RgwStartError) as failure,
        running_rgw(tmp_path / "bad", config={"mon_data_avail_crit": "100"}),
    ):
        pass
    # The monitor's own reason (data disk "reached concerning levels") may not
    # reach its log before it exits: Ceph logs from a thread.
    assert "mon.a exited with 28" in str(failure.value)
    assert f"--- {tmp_path / 'bad' / 'log' / 'mon.a.log'}" in str(failure.value)
    assert _processes_mentioning(str(tmp_path / "bad")) == []
