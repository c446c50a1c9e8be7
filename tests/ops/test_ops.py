"""Health and readiness probes, /metrics, request ids and the request log."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import subprocess
from collections.abc import Iterator

import pytest

from devtools.ports import free_port
from file_uploader.app import create_app
from file_uploader.ops.logs import JsonFormatter
from file_uploader.settings import Settings
from file_uploader.storage import open_storage
from file_uploader.storage.keys import user_id
from file_uploader.storage.sweep import collect_garbage

from ..helpers import metric, metric_samples, new_token, path_of, start_moto


@pytest.fixture
def own_moto() -> Iterator[tuple[int, list[subprocess.Popen]]]:
    """A moto server this test may stop and start again on the same port."""
    port = free_port()
    processes = [start_moto(port)]
    yield port, processes
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


async def test_healthz_needs_no_token_and_no_s3(aiohttp_client, settings: Settings, monkeypatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    dead = dataclasses.replace(settings, s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    client = await aiohttp_client(await create_app(dead))
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


@pytest.mark.slow
async def test_readyz_follows_s3_going_away_and_coming_back(
    aiohttp_client, settings: Settings, own_moto, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    port, processes = own_moto
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    ours = dataclasses.replace(settings, s3_endpoint_url=f"http://127.0.0.1:{port}", s3_create_bucket=True)
    client = await aiohttp_client(await create_app(ours))
    response = await client.get("/readyz")
    assert response.status == 200, await response.text()
    ready = await response.json()
    assert ready["status"] == "ready"
    assert ready["s3"]["integrity"] == {"checksum": "md5", "verified_by": "gateway", "etags_compared": True}

    processes[0].terminate()
    processes[0].wait(timeout=10)
    response = await client.get("/readyz")
    assert response.status == 503
    error = (await response.json())["error"]
    assert error["code"] == "not_ready" and "unreachable" in error["message"]

    processes.append(start_moto(port))  # a new, empty moto: the bucket is gone
    response = await client.get("/readyz")
    assert response.status == 503
    assert "does not exist" in (await response.json())["error"]["message"]

    s3.create_bucket(Bucket=ours.s3_bucket)
    response = await client.get("/readyz")
    assert response.status == 200


async def test_metrics_count_an_upload_a_download_and_an_abort(
    aiohttp_client, app_for, settings: Settings
) -> None:
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, max_file_size=1000)))
    auth = {"X-Auth-Token": new_token()}
    before = await metric_samples(client)

    assert (await client.put("/api/files/a.bin", data=b"x" * 600, headers=auth)).status == 204
    assert len(await (await client.get("/api/files/a.bin", headers=auth)).read()) == 600

    async def too_big():
        for _ in range(3):
            yield b"y" * 500

    response = await client.put("/api/files/big.bin", data=too_big(), headers=auth)
    assert response.status == 413

    after = await metric_samples(client)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("file_uploader_uploads_completed_total", kind="put") == 1
    assert grew("file_uploader_uploads_aborted_total", kind="put", reason="file_too_large") == 1
    assert grew("file_uploader_uploaded_bytes_total") >= 600 + 1000
    assert grew("file_uploader_downloaded_bytes_total") == 600
    assert metric(after, "file_uploader_uploads_in_flight", kind="put") == 0
    route = "/api/files/{name}"
    assert grew("file_uploader_http_requests_total", method="PUT", route=route, status="204") == 1
    assert grew("file_uploader_http_requests_total", method="PUT", route=route, status="413") == 1
    assert grew("file_uploader_http_request_duration_seconds_count", method="GET", route=route) == 1
    assert grew("file_uploader_s3_request_duration_seconds_count", operation="PutObject") == 1
    missing = {"operation": "HeadObject", "error": "FileNotFound", "code": "404"}
    assert grew("file_uploader_s3_errors_total", **missing) == 0
    await client.head("/api/files/missing", headers=auth)
    after = await metric_samples(client)
    assert grew("file_uploader_s3_errors_total", **missing) == 1


async def test_a_sane_request_id_is_kept_and_returned(client, auth) -> None:
    response = await client.get("/api/files", headers={**auth, "X-Request-ID": "trace-42.a"})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "trace-42.a"


@pytest.mark.parametrize("incoming", [None, "has space", "x" * 200, "new\\nline"])
async def test_a_missing_or_odd_request_id_is_replaced(client, auth, incoming) -> None:
    headers = dict(auth) if incoming is None else {**auth, "X-Request-ID": incoming}
    response = await client.get("/api/files", headers=headers)
    rid = response.headers["X-Request-ID"]
    assert rid != incoming and len(rid) == 32


async def test_errors_and_early_refusals_carry_a_request_id(client) -> None:
    assert "X-Request-ID" in (await client.get("/api/files")).headers  # 401 from middleware
    response = await client.put(
        "/api/files/x", data=b"abc", headers={"Expect": "100-continue", "X-Request-ID": "early-1"}
    )
    assert response.status == 401  # answered by the expect handler, before any middleware
    assert response.headers["X-Request-ID"] == "early-1"


async def test_request_log_has_route_and_user_id_but_never_the_token(client, caplog) -> None:
    token = new_token()
    caplog.set_level(logging.INFO, logger="file_uploader.access")
    response = await client.put(
        "/api/files/secret-name.txt", data=b"hi", headers={"X-Auth-Token": token, "X-Request-ID": "r-1"}
    )
    assert response.status == 204
    [record] = [r for r in caplog.records if r.name == "file_uploader.access"]
    line = record.getMessage()
    assert "request_id=r-1" in line and "method=PUT" in line and "status=204" in line
    assert "route=/api/files/{name}" in line and "secret-name" not in line
    assert f"user={user_id(token)}" in line and token not in line
    assert "bytes_in=2" in line and "duration_ms=" in line

    as_json = json.loads(JsonFormatter().format(record))
    assert as_json["request_id"] == "r-1" and as_json["status"] == "204" and as_json["bytes_in"] == 2
    assert as_json["user"] == user_id(token) and token not in json.dumps(as_json)


async def test_s3_metrics_name_only_real_s3_operations(
    aiohttp_client, app_for, settings: Settings, s3, bucket
) -> None:
    """Every S3 call is counted under its own operation name: gc's aborts as AbortMultipartUpload,
    tus state reads as GetObject; no made-up names."""
    client = await aiohttp_client(await app_for(settings))
    auth = {"X-Auth-Token": new_token(), "Tus-Resumable": "1.0.0"}
    created = await client.post(
        "/api/uploads", headers={**auth, "Upload-Length": "10", "Upload-Metadata": "filename eA=="}
    )
    location = path_of(created.headers["Location"])
    assert (await client.head(location, headers=auth)).status == 200
    stale = s3.create_multipart_upload(Bucket=bucket, Key="files/" + "ab" * 32 + "/crashed")["UploadId"]
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.upload_id for upload in collected.aborted] == [stale]

    samples = await metric_samples(client)
    operations = {
        dict(labels)["operation"]
        for name, labels in samples
        if name == "file_uploader_s3_request_duration_seconds_count"
    }
    assert {"AbortMultipartUpload", "ListMultipartUploads", "GetObject"} <= operations
    assert operations <= set(s3.meta.service_model.operation_names)
