"""The gateway against real S3 engines: moto's server, and Ceph RGW 16 over http and over https.

Each test runs once per engine (`target`), each time against a bucket of its
own, with the gateway's default settings but 5 MiB parts; over https the
gateway trusts the cluster's CA through botocore's AWS_CA_BUNDLE. The gateway runs
in-process on a real socket, or as `python -m file_uploader` processes for
tuspy. What differs between the engines (which checksums they verify, how a
corrupted byte is caught) is asserted per engine, from the table in
devtools/ENGINES.md and docs/s3-engines.md.

The corruption tests put tests/faultproxy.py between the gateway and the
engine and flip one bit of a body after the gateway computed its checksum.
For RGW over https the proxy speaks TLS on both sides with the cluster's own
certificate: the gateway talks https to it exactly as to RGW, and the bit
flips between the two TLS connections, where only the gateway's checksum
can tell.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests
from botocore.config import Config
from tusclient.client import TusClient
from yarl import URL

from file_uploader.app import create_app
from file_uploader.settings import Settings
from file_uploader.sizes import MIN_PART_SIZE, MiB
from file_uploader.storage import open_storage
from file_uploader.storage.keys import MAX_NAME_BYTES, user_id, user_prefix
from file_uploader.storage.sweep import collect_garbage, purge_user

from ..faultproxy import Fault, FaultProxy
from ..helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    chunked,
    metric,
    metric_samples,
    path_of,
    run_admin,
    run_gateway,
)

MOTO, RGW = "moto", "rgw"
ENGINES = ["moto", "rgw-http", "rgw-https"]
PART = MIN_PART_SIZE  # the smallest part S3 allows keeps the bodies small
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}

# What the startup probe finds on each engine (for S3_CHECKSUM=crc32 and its
# fallback), and so what /readyz reports.
FOUND = {
    MOTO: {
        "integrity": {"checksum": "md5", "verified_by": "gateway", "etags_compared": True},
        "capabilities": {
            "checksums": {"crc32": "ignored", "md5": "ignored"},
            "etag_is_md5": True,
            "if_none_match": True,
            "if_match": True,
        },
    },
    RGW: {
        "integrity": {"checksum": "md5", "verified_by": "s3", "etags_compared": True},
        "capabilities": {
            "checksums": {"crc32": "ignored", "md5": "enforced"},
            "etag_is_md5": True,
            "if_none_match": True,
            "if_match": True,
        },
    },
}


@functools.cache
def _client(url: str, access_key: str, secret_key: str, ca_file: str | None):
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        verify=ca_file or True,
        config=Config(
            request_checksum_calculation="when_required",
            s3={"addressing_style": "path"},
            max_pool_connections=16,
        ),
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """One S3 engine, with a bucket of this test's own."""

    name: str  # moto, rgw-http, rgw-https
    kind: str  # MOTO or RGW: what it enforces does not depend on the scheme
    url: str
    access_key: str
    secret_key: str
    bucket: str
    ca_file: str | None = None  # https: the CA the gateway is told to trust
    tls: tuple[str, str] | None = None  # https: the engine's certificate and key, for a proxy

    def client(self):
        """A plain boto3 client, to see what the engine really holds (one per engine and process:
        building one costs 20 to 50 ms of CPU, and it keeps nothing between calls)."""
        return _client(self.url, self.access_key, self.secret_key, self.ca_file)

    def settings(self, **changes: object) -> Settings:
        settings = Settings(
            s3_bucket=self.bucket,
            s3_endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            part_size=PART,
            client_timeout=5,
        )
        return dataclasses.replace(settings, **changes)

    def env(self) -> dict[str, str]:
        """The same settings for a gateway process (besides S3_ENDPOINT_URL and S3_BUCKET)."""
        env = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        env["PART_SIZE"] = str(PART)
        if self.ca_file:
            env["AWS_CA_BUNDLE"] = self.ca_file
        return env


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, s3_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    """Each engine in turn; RGW's cluster starts with the first test that needs it."""
    bucket = f"gw-{uuid.uuid4().hex[:12]}"
    if request.param == "moto":
        found = Target("moto", MOTO, s3_url, ACCESS_KEY, SECRET_KEY, bucket)
    else:
        rgw = request.getfixturevalue("rgw")
        https = request.param == "rgw-https"
        found = Target(
            request.param,
            RGW,
            rgw.https_url if https else rgw.http_url,
            rgw.access_key,
            rgw.secret_key,
            bucket,
            ca_file=rgw.ca_file if https else None,
            tls=(rgw.cert_file, rgw.key_file) if https else None,
        )
    if found.ca_file:  # the in-process gateway's botocore reads it, as a deployment's would
        monkeypatch.setenv("AWS_CA_BUNDLE", found.ca_file)
    s3 = found.client()
    s3.create_bucket(Bucket=bucket)
    yield found
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):  # 1,000 a page: RGW's cap
        if page.get("Contents"):
            keys = [{"Key": item["Key"]} for item in page["Contents"]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


@pytest.fixture
async def gateway(aiohttp_client, app_for, target: Target):
    """The gateway in-process on a real socket, with its default settings and 5 MiB parts."""
    return await aiohttp_client(await app_for(target.settings()))


@pytest.fixture
async def proxy(target: Target) -> AsyncIterator[FaultProxy]:
    """A fault proxy standing in for the engine, over https where the engine is."""
    if target.tls:
        found = FaultProxy(target.url, upstream_ca=target.ca_file, tls=target.tls)
    else:
        found = FaultProxy(target.url)
    await found.start()
    yield found
    await found.close()


def open_uploads(target: Target) -> list[dict]:
    return target.client().list_multipart_uploads(Bucket=target.bucket).get("Uploads", [])


async def no_open_uploads(target: Target) -> bool:
    for _ in range(100):  # an abort can land just after the response
        if not open_uploads(target):
            return True
        await asyncio.sleep(0.05)
    return False


async def content(gateway, auth, name: str) -> tuple[int, bytes]:
    response = await gateway.get(f"/api/files/{name}", headers=auth)
    return response.status, await response.read()


# Files ------------------------------------------------------------------------------------------


async def test_files_are_stored_listed_served_and_deleted_byte_exact(gateway, target, auth):
    files = {
        "a/small.txt": os.urandom(1000),
        "b/multipart.bin": os.urandom(2 * PART + 123),
        "c/chunked.bin": os.urandom(PART + 77),
        "d/empty": b"",
    }
    for name, data in files.items():
        body = chunked(data) if name == "c/chunked.bin" else data
        response = await gateway.put(f"/api/files/{name}", data=body, headers=auth)
        assert response.status == 204, (name, await response.text())
    assert await (await gateway.get("/api/files", headers=auth)).json() == sorted(files)
    for name, data in files.items():
        assert await content(gateway, auth, name) == (200, data), name

    big = files["b/multipart.bin"]
    ranged = {**auth, "Range": f"bytes={PART - 10}-{PART + 9}"}  # across the parts' boundary
    response = await gateway.get("/api/files/b/multipart.bin", headers=ranged)
    assert response.status == 206
    assert await response.read() == big[PART - 10 : PART + 10]
    head = await gateway.head("/api/files/b/multipart.bin", headers=auth)
    assert int(head.headers["Content-Length"]) == len(big)

    assert (await gateway.delete("/api/files/a/small.txt", headers=auth)).status == 204
    assert (await content(gateway, auth, "a/small.txt"))[0] == 404
    assert "a/small.txt" not in await (await gateway.get("/api/files", headers=auth)).json()
    assert open_uploads(target) == []


async def test_a_name_of_the_longest_allowed_length_fits_the_engines_key_limit(gateway, auth):
    """RGW refuses keys over 1,024 bytes (InvalidObjectName); the gateway's name limit stays within."""
    longest = "é" * (MAX_NAME_BYTES // 2) + "x" * (MAX_NAME_BYTES % 2)  # two bytes a letter
    assert len(longest.encode()) == MAX_NAME_BYTES
    path = f"/api/files/{URL.build(path=longest).raw_path}"
    assert (await gateway.put(URL(path, encoded=True), data=b"long", headers=auth)).status == 204
    assert await (await gateway.get("/api/files", headers=auth)).json() == [longest]
    assert await (await gateway.get(URL(path, encoded=True), headers=auth)).read() == b"long"
    response = await gateway.put(URL(path + "x", encoded=True), data=b"longer", headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_name"


@pytest.mark.slow
async def test_a_listing_follows_the_pages_past_one_thousand_files(gateway, target, token, auth):
    """RGW, as AWS, answers at most 1,000 keys a page whatever MaxKeys says."""
    prefix = user_prefix(user_id(token))
    names = [f"n/{number:04d}" for number in range(1005)]
    s3 = target.client()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket=target.bucket, Key=prefix + name, Body=b"x"), names))
    assert await (await gateway.get("/api/files", headers=auth)).json() == names


async def test_a_share_link_serves_the_file_without_a_token(gateway, auth):
    data = os.urandom(PART + 10)
    assert (await gateway.put("/api/files/shared.bin", data=data, headers=auth)).status == 204
    created = await gateway.post("/api/files/shared.bin/share", headers=auth)
    assert created.status == 200, await created.text()
    link = URL((await created.json())["url"])
    response = await gateway.get(link.path_qs)
    assert response.status == 200 and await response.read() == data
    response = await gateway.get(link.path_qs, headers={"Range": "bytes=-5"})
    assert response.status == 206 and await response.read() == data[-5:]


async def test_a_body_is_stored_only_if_it_matches_its_content_md5(gateway, auth):
    data = os.urandom(3000)
    right = {**auth, "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode()}
    wrong = {**auth, "Content-MD5": base64.b64encode(hashlib.md5(b"other").digest()).decode()}
    response = await gateway.put("/api/files/other", data=data, headers=wrong)
    assert response.status == 400 and (await response.json())["error"]["code"] == "digest_mismatch"
    assert (await content(gateway, auth, "other"))[0] == 404
    assert (await gateway.put("/api/files/right", data=data, headers=right)).status == 204
    assert await content(gateway, auth, "right") == (200, data)


async def test_gc_aborts_an_abandoned_upload_and_purge_removes_a_user(gateway, target, token, auth):
    s3, uid = target.client(), user_id(token)
    crashed = s3.create_multipart_upload(Bucket=target.bucket, Key=user_prefix(uid) + "crashed")
    s3.upload_part(
        Bucket=target.bucket, Key=crashed["Key"], UploadId=crashed["UploadId"], PartNumber=1, Body=b"x"
    )
    assert (await gateway.put("/api/files/kept", data=b"kept", headers=auth)).status == 204
    created = await gateway.post(
        "/api/uploads", headers={**auth, **TUS, "Upload-Length": "10", "Upload-Metadata": "filename eA=="}
    )
    assert created.status == 201

    async with open_storage(target.settings()) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
        assert [upload.upload_id for upload in collected.aborted] == [crashed["UploadId"]]
        assert len(open_uploads(target)) == 1  # the live tus upload's, however old
        purged = await purge_user(storage, uid, really=True)
    assert (purged.files, purged.aborted) == (1, 1)
    assert open_uploads(target) == []
    assert s3.list_objects_v2(Bucket=target.bucket).get("KeyCount") == 0


# Resumable uploads ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.process
def test_tuspy_resumes_an_upload_on_another_gateway_process_byte_exact(target, tmp_path, auth):
    data = os.urandom(2 * PART + 777)
    path = tmp_path / "resumed.bin"
    path.write_bytes(data)
    with run_gateway(target.url, target.bucket, tmp_path / "gw1", **target.env()) as first:
        uploader = TusClient(f"{first}/api/uploads/", headers=auth).uploader(
            file_path=str(path), metadata={"filename": "resumed.bin"}, chunk_size=PART + 3 * MiB
        )
        uploader.upload_chunk()  # one PATCH: a full part and a tail, then the gateway stops
        location = uploader.url.split("/api/", 1)[1]
    with run_gateway(target.url, target.bucket, tmp_path / "gw2", **target.env()) as second:
        resumed = TusClient(f"{second}/api/uploads/", headers=auth).uploader(
            file_path=str(path), url=f"{second}/api/{location}", upload_checksum=True
        )
        assert resumed.offset == PART + 3 * MiB  # tuspy asked the second gateway
        resumed.upload()
        assert requests.get(f"{second}/api/files", headers=auth, timeout=10).json() == ["resumed.bin"]
        assert requests.get(f"{second}/api/files/resumed.bin", headers=auth, timeout=30).content == data
    assert open_uploads(target) == []


async def test_a_tus_upload_completes_past_the_parts_a_failed_patch_left(gateway, target, auth, caplog):
    """A PATCH refused for its Upload-Checksum leaves three parts in S3; the upload then ends
    after one part and a tail. RGW refuses to complete without the stray part: the gateway
    completes with it and trims the object back by a server-side copy."""
    created = await gateway.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": "filename Zg=="},
    )
    url = path_of(created.headers["Location"])
    refused = os.urandom(3 * PART + 1)
    wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    headers = {**auth, **TUS, **OCTETS, "Upload-Offset": "0"}
    response = await gateway.patch(url, data=refused, headers={**headers, "Upload-Checksum": wrong})
    assert response.status == 460
    [upload] = open_uploads(target)
    s3 = target.client()
    parts = s3.list_parts(Bucket=target.bucket, Key=upload["Key"], UploadId=upload["UploadId"])["Parts"]
    assert [part["PartNumber"] for part in parts] == [1, 2, 3]  # sent before the checksum failed

    data = os.urandom(PART + MiB)
    caplog.set_level(logging.INFO, logger="file_uploader.storage.tus.completion")
    response = await gateway.patch(url, data=data, headers={**headers, "Upload-Length": str(len(data))})
    assert response.status == 204, await response.text()
    assert await content(gateway, auth, "f") == (200, data)
    assert open_uploads(target) == []
    trimmed = any("completing past 1 stray parts" in record.getMessage() for record in caplog.records)
    assert trimmed == (target.kind == RGW)  # moto drops the parts a completion leaves out


# What the engine enforces -----------------------------------------------------------------------


async def test_readyz_and_the_metrics_report_what_the_probe_found(gateway, target):
    response = await gateway.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready", "s3": FOUND[target.kind]}
    samples = await metric_samples(gateway)
    integrity = FOUND[target.kind]["integrity"]
    labels = {"checksum": integrity["checksum"], "verified_by": integrity["verified_by"]}
    assert metric(samples, "file_uploader_s3_integrity", **labels) == 1
    assert metric(samples, "file_uploader_s3_capability", capability="if_none_match") == 1
    assert metric(samples, "file_uploader_s3_capability", capability="checksum_md5") == (target.kind == RGW)


@pytest.mark.process
def test_the_probe_command_tries_every_checksum(target, tmp_path):
    done = run_admin(target.url, target.bucket, tmp_path, "probe", **target.env())
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    md5 = "enforced" if target.kind == RGW else "ignored"
    expected = {"crc32": "ignored", "crc32c": "ignored", "sha256": "ignored", "md5": md5}
    assert found["capabilities"]["checksums"] == expected
    assert found["integrity"] == FOUND[target.kind]["integrity"]
    assert target.client().list_objects_v2(Bucket=target.bucket).get("KeyCount") == 0  # cleaned up


def second_part(request) -> bool:
    return request.query.get("partNumber") == "2"


async def test_a_part_corrupted_on_the_way_is_refused_and_the_upload_aborted(
    aiohttp_client, target, proxy, auth, caplog
):
    """RGW refuses the part for its Content-MD5 (BadDigest); moto stores it, and the gateway
    finds its ETag is not the MD5 it sent. Either way: 502, no object, no open upload."""
    gateway = await aiohttp_client(await create_app(target.settings(s3_endpoint_url=proxy.url)))
    old = os.urandom(1000)
    assert (await gateway.put("/api/files/f", data=old, headers=auth)).status == 204
    before = await metric_samples(gateway)
    fault = proxy.add(Fault("UploadPart", action="corrupt", match=second_part, times=1))
    caplog.set_level(logging.WARNING, logger="file_uploader")

    response = await gateway.put("/api/files/f", data=os.urandom(2 * PART + 5), headers=auth)

    assert fault.hits == 1
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "storage_error"
    assert await content(gateway, auth, "f") == (200, old)
    assert await no_open_uploads(target)
    code = "BadDigest" if target.kind == RGW else "ETagMismatch"
    labels = {"operation": "UploadPart", "error": "TransferCorrupted", "code": code}
    after = await metric_samples(gateway)
    assert (
        metric(after, "file_uploader_s3_errors_total", **labels)
        - metric(before, "file_uploader_s3_errors_total", **labels)
        == 1
    )
    [warning] = [r.getMessage() for r in caplog.records if "UploadPart" in r.getMessage()]
    assert ("BadDigest" in warning) if target.kind == RGW else ("ETag" in warning)
    assert target.bucket not in warning and "files/" not in warning


async def test_a_small_file_corrupted_on_the_way_is_never_served(aiohttp_client, target, proxy, auth):
    """RGW refuses the PutObject, so the old version stays; moto stores the corrupted bytes,
    which the gateway deletes at once (the old version, already replaced, goes with them)."""
    gateway = await aiohttp_client(await create_app(target.settings(s3_endpoint_url=proxy.url)))
    old = os.urandom(1000)
    assert (await gateway.put("/api/files/f", data=old, headers=auth)).status == 204
    fault = proxy.add(Fault("PutObject", action="corrupt", times=1))

    response = await gateway.put("/api/files/f", data=os.urandom(1000), headers=auth)

    assert fault.hits == 1
    assert response.status == 502
    expected = (200, old) if target.kind == RGW else (404, b"")
    status, body = await content(gateway, auth, "f")
    assert (status, body if status == 200 else b"") == expected


# tus concatenation ------------------------------------------------------------------------------


async def test_partial_uploads_are_joined_inside_the_engine_byte_exact(gateway, target):
    """UploadPartCopy of the partial uploads' objects, and short ones joined through the gateway,
    into parts every engine accepts (storage/tus/concat.py)."""
    auth = {"X-Auth-Token": str(uuid.uuid4())}
    pieces = [os.urandom(size) for size in (1024, 6 * MiB, 3 * MiB, 7 * MiB + 5, 1)]
    urls = []
    for piece in pieces:
        created = await gateway.post(
            "/api/uploads/",
            data=piece,
            headers={**auth, **TUS, **OCTETS, "Upload-Concat": "partial", "Upload-Length": str(len(piece))},
        )
        assert created.status == 201, await created.text()
        urls.append(created.headers["Location"])
    name = base64.b64encode(b"joined.bin").decode()
    final = await gateway.post(
        "/api/uploads/",
        headers={
            **auth,
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": f"filename {name}",
        },
    )
    assert final.status == 201, await final.text()
    assert await content(gateway, auth, "joined.bin") == (200, b"".join(pieces))
    assert open_uploads(target) == []
