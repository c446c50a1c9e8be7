"""Server-side encryption (S3_SSE) as engines apply it: SSE-S3 and SSE-KMS with a key id on moto
(which records what each object was asked for), SSE-C on Ceph RGW over https (which encrypts
with the customer key and refuses to read the object back without it).

moto accepts SSE-C's headers but neither encrypts nor asks for the key again, so what proves
the gateway sent the key on every call is RGW: an upload, a Range read, a thumbnail and a tus
upload all round-trip, and a plain read without the key is refused by the engine.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import os
import secrets
from collections.abc import Iterator

import botocore.exceptions
import pytest
from PIL import Image

from file_uploader.settings import Settings
from file_uploader.sizes import MIN_PART_SIZE
from file_uploader.storage import open_storage
from file_uploader.storage.errors import StorageError
from file_uploader.storage.keys import file_key, user_id

from ..helpers import chunked, path_of
from .conftest import RGW_KMS_KEY_ID, own_bucket, rgw_s3, rgw_settings

PART = MIN_PART_SIZE
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}
KMS_KEY = "arn:aws:kms:us-east-1:111122223333:key/file-uploader-test"


def png(width: int = 200, height: int = 100) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


async def upload_every_way(gw, auth, data: bytes) -> list[str]:
    """The same bytes through each route: PutObject, multipart, chunked, tus; the names stored."""
    assert (await gw.put("/api/files/small.bin", data=data[:1000], headers=auth)).status == 204
    assert (await gw.put("/api/files/multipart.bin", data=data, headers=auth)).status == 204
    assert (await gw.put("/api/files/chunked.bin", data=chunked(data), headers=auth)).status == 204
    name = base64.b64encode(b"tus.bin").decode()
    created = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": f"filename {name}"},
    )
    assert created.status == 201
    url = path_of(created.headers["Location"])
    first = await gw.patch(
        url, data=data[: PART + 1], headers={**auth, **TUS, **OCTETS, "Upload-Offset": "0"}
    )
    assert first.status == 204
    rest = {**auth, **TUS, **OCTETS, "Upload-Offset": str(PART + 1)}
    assert (await gw.patch(url, data=data[PART + 1 :], headers=rest)).status == 204
    return ["small.bin", "multipart.bin", "chunked.bin", "tus.bin"]


# moto: what each object was asked to be encrypted with.


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"s3_sse": "sse-kms", "s3_sse_kms_key_id": KMS_KEY},
            {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY},
        ),
        ({"s3_sse": "sse-s3"}, {"ServerSideEncryption": "AES256"}),
    ],
    ids=["sse-kms", "sse-s3"],
)
async def test_every_object_the_gateway_writes_asks_for_the_configured_encryption(
    aiohttp_client, app_for, settings, token, auth, s3, bucket, changes, expected
):
    gw = await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART, **changes)))
    data = os.urandom(2 * PART + 5)
    names = await upload_every_way(gw, auth, data)
    for name in names:
        head = s3.head_object(Bucket=bucket, Key=file_key(user_id(token), name))
        assert {field: head.get(field) for field in expected} == expected, name
        assert await (await gw.get(f"/api/files/{name}", headers=auth)).read() == (
            data[:1000] if name == "small.bin" else data
        )
    # The gateway's own objects too (the tus upload's state), not only the files.
    state = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="uploads/").get("Contents", [])]
    assert state
    for key in state:
        assert (
            s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption")
            == expected["ServerSideEncryption"]
        )


# Ceph RGW over https: SSE-C really encrypts with the operator's key.


@pytest.fixture
def rgw_bucket(rgw, monkeypatch) -> Iterator[tuple[object, str]]:
    """A bucket of the test's own on RGW over https, and a client of it; the gateway trusts the
    cluster's CA through AWS_CA_BUNDLE."""
    monkeypatch.setenv("AWS_CA_BUNDLE", rgw.ca_file)
    client = rgw_s3(rgw, https=True)
    with own_bucket(client, "sse") as bucket:
        yield client, bucket


def _over_https(rgw, bucket: str, **sse: object) -> Settings:
    """The gateway on RGW over https with the encryption settings `sse`, in parts of 5 MiB."""
    return rgw_settings(rgw, bucket, https=True, part_size=PART, client_timeout=5, **sse)


async def test_sse_c_round_trips_on_rgw_and_the_engine_refuses_a_read_without_the_key(
    aiohttp_client, app_for, rgw, rgw_bucket, token, auth
):
    client, bucket = rgw_bucket
    key = secrets.token_bytes(32)
    gw = await aiohttp_client(await app_for(_over_https(rgw, bucket, s3_sse="sse-c", s3_sse_c_key=key)))
    ready = await (await gw.get("/readyz")).json()
    assert ready.get("status", "ok") != "unready", ready
    data = os.urandom(2 * PART + 5)
    names = await upload_every_way(gw, auth, data)
    for name in names:
        expected = data[:1000] if name == "small.bin" else data
        assert await (await gw.get(f"/api/files/{name}", headers=auth)).read() == expected, name
        head = await gw.head(f"/api/files/{name}", headers=auth)
        assert head.status == 200 and int(head.headers["Content-Length"]) == len(expected)
    ranged = await gw.get(
        "/api/files/multipart.bin", headers={**auth, "Range": f"bytes={PART - 3}-{PART + 2}"}
    )
    assert ranged.status == 206 and await ranged.read() == data[PART - 3 : PART + 3]

    assert (await gw.put("/api/files/picture.png", data=png(), headers=auth)).status == 204
    thumb = await gw.get("/api/files/picture.png", params={"thumbnail": "64"}, headers=auth)
    assert thumb.status == 200, await thumb.text()
    assert Image.open(io.BytesIO(await thumb.read())).size == (64, 32)

    # The engine holds them encrypted: without the key it refuses; with it, the bytes are there.
    stored = file_key(user_id(token), "multipart.bin")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.get_object(Bucket=bucket, Key=stored)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(botocore.exceptions.ClientError):
        client.head_object(Bucket=bucket, Key=file_key(user_id(token), "small.bin"))
    got = client.get_object(Bucket=bucket, Key=stored, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == data
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_the_write_probe_sends_the_customer_key_so_rgw_over_http_refuses_it(rgw, rgw_bucket):
    """RGW refuses SSE-C over plain http (the key would travel in clear): that the probe is
    refused there shows it sends the key, and the gateway is not ready, saying why."""
    _, bucket = rgw_bucket
    settings = rgw_settings(
        rgw,
        bucket,
        s3_sse="sse-c",
        s3_sse_c_key=secrets.token_bytes(32),
    )
    async with open_storage(settings) as storage:
        with pytest.raises(
            StorageError, match=r"the write probe failed: S3 refused PutObject \(InvalidRequest\)"
        ):
            await storage.readiness.ensure_ready()


async def test_sse_kms_with_a_key_id_round_trips_on_rgw_and_each_object_names_the_key(
    aiohttp_client, app_for, rgw, rgw_bucket, token, auth
):
    client, bucket = rgw_bucket
    gw = await aiohttp_client(
        await app_for(_over_https(rgw, bucket, s3_sse="sse-kms", s3_sse_kms_key_id=RGW_KMS_KEY_ID))
    )
    data = os.urandom(2 * PART + 5)
    for name in await upload_every_way(gw, auth, data):
        expected = data[:1000] if name == "small.bin" else data
        assert await (await gw.get(f"/api/files/{name}", headers=auth)).read() == expected, name
        head = client.head_object(Bucket=bucket, Key=file_key(user_id(token), name))
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", RGW_KMS_KEY_ID), (
            name
        )


async def test_sse_c_reaches_the_server_side_copies_of_a_tus_upload_completed_past_stray_parts(
    aiohttp_client, app_for, rgw, rgw_bucket, token, auth
):
    """The one place the gateway copies inside S3 (UploadPartCopy, trimming a tus upload that RGW
    would only complete with a failed PATCH's stray parts): source and new part both need the key."""
    client, bucket = rgw_bucket
    key = secrets.token_bytes(32)
    gw = await aiohttp_client(await app_for(_over_https(rgw, bucket, s3_sse="sse-c", s3_sse_c_key=key)))
    created = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Defer-Length": "1", "Upload-Metadata": "filename Zg=="},
    )
    url = path_of(created.headers["Location"])
    headers = {**auth, **TUS, **OCTETS, "Upload-Offset": "0"}
    wrong = "sha1 " + base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    refused = await gw.patch(
        url, data=os.urandom(3 * PART + 1), headers={**headers, "Upload-Checksum": wrong}
    )
    assert refused.status == 460  # its three parts stay in the multipart upload
    data = os.urandom(PART + 1024 * 1024)
    response = await gw.patch(url, data=data, headers={**headers, "Upload-Length": str(len(data))})
    assert response.status == 204, await response.text()
    assert await (await gw.get("/api/files/f", headers=auth)).read() == data
    stored = client.get_object(
        Bucket=bucket, Key=file_key(user_id(token), "f"), SSECustomerAlgorithm="AES256", SSECustomerKey=key
    )
    assert stored["Body"].read() == data
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


async def test_sse_c_reaches_a_tus_concatenation_copies_and_reads_of_its_partial_uploads(
    aiohttp_client, app_for, rgw, rgw_bucket, token, auth
):
    """A final upload copies its partial uploads' objects inside S3 (UploadPartCopy) and reads
    short ones back (a ranged GetObject): each needs the customer key (storage/tus/concat.py)."""
    client, bucket = rgw_bucket
    key = secrets.token_bytes(32)
    gw = await aiohttp_client(await app_for(_over_https(rgw, bucket, s3_sse="sse-c", s3_sse_c_key=key)))
    pieces = [os.urandom(1024), os.urandom(2 * PART + 7), os.urandom(3)]  # joined, copied, copied
    urls = []
    for piece in pieces:
        created = await gw.post(
            "/api/uploads/",
            data=piece,
            headers={**auth, **TUS, **OCTETS, "Upload-Concat": "partial", "Upload-Length": str(len(piece))},
        )
        assert created.status == 201, await created.text()
        urls.append(created.headers["Location"])
    final = await gw.post(
        "/api/uploads/",
        headers={
            **auth,
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": "filename Zg==",
        },
    )
    assert final.status == 201, await final.text()
    data = b"".join(pieces)
    assert await (await gw.get("/api/files/f", headers=auth)).read() == data
    stored = client.get_object(
        Bucket=bucket, Key=file_key(user_id(token), "f"), SSECustomerAlgorithm="AES256", SSECustomerKey=key
    )
    assert stored["Body"].read() == data
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
