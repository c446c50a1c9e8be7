"""S3 faults, injected by a proxy between the gateway and moto: what survives, what is cleaned up."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os

import pytest

from file_uploader.app import create_app
from file_uploader.settings import Settings
from file_uploader.sizes import MIN_PART_SIZE

from ..faultproxy import Fault, FaultProxy
from ..helpers import all_keys, metric, metric_samples, open_uploads

PART = MIN_PART_SIZE
SIZE = PART + 1234  # two parts: the second one is where faults are injected


@pytest.fixture
async def proxy(s3_url):
    proxy = await FaultProxy(s3_url).start()
    yield proxy
    await proxy.close()


def through(settings: Settings, proxy: FaultProxy, **changes) -> Settings:
    """The test settings, with S3 reached through the proxy and small parts."""
    values = {**settings.__dict__, "s3_endpoint_url": proxy.url, "part_size": PART}
    return Settings(**{**values, **changes})


@pytest.fixture(autouse=True)
def _two_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two attempts per S3 call (botocore's AWS_MAX_ATTEMPTS): one retry is enough to prove
    retrying, and keeps backoff short."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")


@pytest.fixture
async def gateway(aiohttp_client, settings, proxy):
    gateway = await aiohttp_client(await create_app(through(settings, proxy)))
    proxy.calls.clear()  # the startup's write probe is not what these tests count
    return gateway


def second_part(request) -> bool:
    return request.query.get("partNumber") == "2"


async def assert_stored_exactly(gateway, auth, s3, bucket, name, data):
    response = await gateway.get(f"/api/files/{name}", headers=auth)
    assert response.status == 200
    assert hashlib.sha256(await response.read()).digest() == hashlib.sha256(data).digest()
    assert open_uploads(s3, bucket) == []


async def assert_nothing_left(s3, bucket):
    for _ in range(100):  # the abort can land just after the response
        if not open_uploads(s3, bucket):
            break
        await asyncio.sleep(0.05)
    assert open_uploads(s3, bucket) == []
    assert all_keys(s3, bucket) == []


@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
async def test_a_part_that_fails_once_is_retried_and_the_file_is_byte_exact(
    gateway, proxy, auth, s3, bucket, status, code
):
    fault = proxy.add(Fault("UploadPart", status=status, code=code, times=1, match=second_part))
    data = os.urandom(SIZE)
    response = await gateway.put("/api/files/f", data=data, headers=auth)
    assert response.status == 204, await response.text()
    assert fault.hits == 1
    assert proxy.count("UploadPart") == 3  # two parts, the second one twice
    await assert_stored_exactly(gateway, auth, s3, bucket, "f", data)


async def test_a_connection_reset_in_the_middle_of_a_part_is_retried(gateway, proxy, auth, s3, bucket):
    fault = proxy.add(Fault("UploadPart", action="reset", after_bytes=PART // 2, times=1, match=second_part))
    data = os.urandom(SIZE)
    response = await gateway.put("/api/files/f", data=data, headers=auth)
    assert response.status == 204, await response.text()
    assert fault.hits == 1
    await assert_stored_exactly(gateway, auth, s3, bucket, "f", data)


async def test_slow_s3_responses_still_give_a_byte_exact_file(gateway, proxy, auth, s3, bucket):
    proxy.add(Fault("UploadPart", action="delay", seconds=0.3))
    proxy.add(Fault("CompleteMultipartUpload", action="delay", seconds=0.3))
    data = os.urandom(SIZE)
    response = await gateway.put("/api/files/f", data=data, headers=auth)
    assert response.status == 204, await response.text()
    await assert_stored_exactly(gateway, auth, s3, bucket, "f", data)


async def test_a_transient_complete_failure_is_retried(gateway, proxy, auth, s3, bucket):
    proxy.add(Fault("CompleteMultipartUpload", status=500, code="InternalError", times=1))
    data = os.urandom(SIZE)
    response = await gateway.put("/api/files/f", data=data, headers=auth)
    assert response.status == 204, await response.text()
    assert proxy.count("CompleteMultipartUpload") == 2
    await assert_stored_exactly(gateway, auth, s3, bucket, "f", data)


@pytest.mark.parametrize(
    ("status", "code", "expected_status", "expected_code"),
    [
        (500, "InternalError", 502, "storage_error"),
        (503, "SlowDown", 503, "storage_unavailable"),
    ],
)
async def test_a_part_that_keeps_failing_ends_in_json_error_and_an_aborted_upload(
    gateway, proxy, auth, s3, bucket, status, code, expected_status, expected_code
):
    proxy.add(Fault("UploadPart", status=status, code=code, match=second_part))
    response = await gateway.put("/api/files/f", data=os.urandom(SIZE), headers=auth)
    assert response.status == expected_status
    assert (await response.json())["error"]["code"] == expected_code
    if expected_status == 503:
        assert response.headers["Retry-After"]
    assert proxy.count("AbortMultipartUpload") == 1
    await assert_nothing_left(s3, bucket)


async def test_a_part_whose_connection_keeps_resetting_ends_in_503_and_an_aborted_upload(
    gateway, proxy, auth, s3, bucket
):
    proxy.add(Fault("UploadPart", action="reset", after_bytes=1024, match=second_part))
    response = await gateway.put("/api/files/f", data=os.urandom(SIZE), headers=auth)
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "storage_unavailable"
    await assert_nothing_left(s3, bucket)


async def test_a_complete_that_keeps_failing_ends_in_502_and_an_aborted_upload(
    gateway, proxy, auth, s3, bucket
):
    proxy.add(Fault("CompleteMultipartUpload", status=500, code="InternalError"))
    response = await gateway.put("/api/files/f", data=os.urandom(SIZE), headers=auth)
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "storage_error"
    assert proxy.count("CompleteMultipartUpload") == 2  # AWS_MAX_ATTEMPTS
    await assert_nothing_left(s3, bucket)


async def test_a_failed_upload_through_faults_keeps_the_old_version(gateway, proxy, auth, s3, bucket):
    old = os.urandom(SIZE)
    assert (await gateway.put("/api/files/f", data=old, headers=auth)).status == 204
    proxy.add(Fault("UploadPart", status=500, match=second_part))
    assert (await gateway.put("/api/files/f", data=os.urandom(SIZE), headers=auth)).status == 502
    await assert_stored_exactly(gateway, auth, s3, bucket, "f", old)


async def test_s3_down_at_startup_gives_503_then_recovers_and_creates_the_bucket(
    aiohttp_client, settings, proxy, auth, s3, monkeypatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy.down()
    missing = f"{settings.s3_bucket}-late"  # does not exist yet: created once S3 is back
    gateway = await aiohttp_client(await create_app(through(settings, proxy, s3_bucket=missing)))
    for method, path in [("GET", "/api/files"), ("PUT", "/api/files/a"), ("GET", "/api/files/a")]:
        response = await gateway.request(method, path, data=b"x" if method == "PUT" else None, headers=auth)
        assert response.status == 503, (method, path)
        assert (await response.json())["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"]
    proxy.up()
    try:
        response = await gateway.put("/api/files/a", data=b"back", headers=auth)
        assert response.status == 204, await response.text()
        assert await (await gateway.get("/api/files/a", headers=auth)).read() == b"back"
    finally:
        for key in all_keys(s3, missing):
            s3.delete_object(Bucket=missing, Key=key)
        s3.delete_bucket(Bucket=missing)


@pytest.mark.slow
async def test_s3_going_down_later_gives_503_and_recovers(gateway, proxy, auth):
    assert (await gateway.put("/api/files/a", data=b"one", headers=auth)).status == 204
    proxy.down()
    response = await gateway.get("/api/files/a", headers=auth)
    assert response.status == 503
    assert response.headers["Retry-After"]
    proxy.up()
    assert await (await gateway.get("/api/files/a", headers=auth)).read() == b"one"


async def test_a_refusal_is_logged_once_with_operation_and_code_and_counted_by_code(
    gateway, proxy, auth, bucket, caplog
):
    before = await metric_samples(gateway)
    proxy.add(Fault("UploadPart", status=400, code="InvalidArgument", match=second_part))
    caplog.set_level(logging.WARNING, logger="file_uploader")
    response = await gateway.put("/api/files/secret-name", data=os.urandom(SIZE), headers=auth)
    assert response.status == 502
    assert (await response.json())["error"]["message"] == "S3 refused UploadPart (InvalidArgument)"
    [warning] = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    assert warning == "S3 refused UploadPart: InvalidArgument (HTTP 400)"
    assert "secret-name" not in caplog.text and bucket not in caplog.text
    after = await metric_samples(gateway)
    labels = {"operation": "UploadPart", "error": "StorageError", "code": "InvalidArgument"}
    grown = metric(after, "file_uploader_s3_errors_total", **labels)
    assert grown - metric(before, "file_uploader_s3_errors_total", **labels) == 1


async def test_readyz_says_why_while_the_write_probe_fails_and_recovers(
    aiohttp_client, settings, proxy, auth
):
    """S3 answers but refuses writes: /readyz says so, requests that need S3 are refused too,
    and both recover once a probe succeeds."""
    denied = proxy.add(Fault("PutObject", status=403, code="AccessDenied"))
    gateway = await aiohttp_client(await create_app(through(settings, proxy)))
    response = await gateway.get("/readyz")
    assert response.status == 503
    error = (await response.json())["error"]
    assert error == {
        "code": "not_ready",
        "message": "the write probe failed: S3 refused PutObject (AccessDenied)",
    }
    assert (await gateway.get("/api/files", headers=auth)).status == 502
    proxy.faults.remove(denied)
    response = await gateway.get("/readyz")
    assert response.status == 200
    assert (await response.json())["s3"]["capabilities"]["if_none_match"] is True
    assert (await gateway.get("/api/files", headers=auth)).status == 200
