"""`python -m file_uploader gc`: unfinished multipart uploads are aborted, young ones kept."""

from __future__ import annotations

import base64
import datetime
import re

import pytest

from file_uploader.admin.gc import parse_age
from file_uploader.settings import Settings
from file_uploader.storage import open_storage
from file_uploader.storage.sweep import abort_stale_uploads, collect_garbage

from ..faultproxy import Fault, FaultProxy
from ..helpers import open_uploads, run_admin

GATEWAY_KEY = "files/" + "ab" * 32 + "/crashed.bin"
OTHER_KEY = "backups/not-ours.bin"


def start_upload(s3, bucket: str, key: str) -> str:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"left behind")
    return upload_id


def open_keys(s3, bucket: str) -> list[str]:
    return sorted(upload["Key"] for upload in open_uploads(s3, bucket))


@pytest.mark.process
def test_gc_command_aborts_the_gateways_stale_uploads_and_says_so(s3_url, bucket, s3, tmp_path):
    upload_id = start_upload(s3, bucket, GATEWAY_KEY)
    start_upload(s3, bucket, OTHER_KEY)
    result = run_admin(s3_url, bucket, tmp_path, "gc", "--older-than", "0s")
    assert result.returncode == 0, result.stderr
    assert upload_id in result.stdout
    assert "aborted 1 multipart upload(s)" in result.stdout
    assert open_keys(s3, bucket) == [OTHER_KEY]  # outside files/: not the gateway's to abort


def initiated_now(key: str):
    """Rewrite a ListMultipartUploads answer so that `key`'s upload started just now.

    moto reports the same fixed Initiated date (in 2010) for every upload, so
    an upload can only look young if the test says so on the way through.
    """
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pattern = re.compile(rf"(<Key>{re.escape(key)}</Key>.*?<Initiated>)[^<]*(</Initiated>)", re.S)

    def rewrite(body: bytes) -> bytes:
        return pattern.sub(rf"\g<1>{now}\g<2>", body.decode()).encode()

    return rewrite


async def test_gc_keeps_uploads_younger_than_the_age(settings, s3, s3_url, bucket):
    old_id = start_upload(s3, bucket, GATEWAY_KEY)
    young_key = GATEWAY_KEY.replace("crashed", "in-progress")
    start_upload(s3, bucket, young_key)
    proxy = await FaultProxy(s3_url).start()
    try:
        proxy.add(Fault("ListMultipartUploads", action="rewrite", rewrite=initiated_now(young_key)))
        async with open_storage(Settings(**{**settings.__dict__, "s3_endpoint_url": proxy.url})) as storage:
            aborted = await abort_stale_uploads(storage, datetime.timedelta(hours=1))
    finally:
        await proxy.close()
    assert [upload.upload_id for upload in aborted] == [old_id]
    assert open_keys(s3, bucket) == [young_key]


@pytest.mark.parametrize(
    ("text", "seconds"), [("0s", 0), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800)]
)
def test_ages_parse(text, seconds):
    assert parse_age(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "1w", "1 hour"])
def test_a_bad_age_is_refused(text):
    with pytest.raises(ValueError):
        parse_age(text)


async def test_gc_keeps_a_live_resumable_upload_however_old(client, auth, settings, s3, bucket):
    """A tus upload may sit idle until it expires: gc aborts only the crashed plain upload."""
    response = await client.post(
        "/api/uploads",
        headers={
            **auth,
            "Tus-Resumable": "1.0.0",
            "Upload-Length": "100",
            "Upload-Metadata": "filename " + base64.b64encode(b"resumable.bin").decode(),
        },
    )
    assert response.status == 201, await response.text()
    tus_keys = open_keys(s3, bucket)
    assert len(tus_keys) == 1  # the tus upload has its multipart upload open
    crashed_id = start_upload(s3, bucket, GATEWAY_KEY)
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.upload_id for upload in collected.aborted] == [crashed_id]
    assert open_keys(s3, bucket) == tus_keys


async def test_gc_works_with_keys_s3_xml_cannot_carry_planted_in_the_bucket(settings, s3, bucket):
    """Keys with U+FFFF (the gateway refuses such names) planted among files and upload state:
    another user's stale upload is still aborted."""
    for root in ("files/", "uploads/"):
        s3.put_object(Bucket=bucket, Key=f"{root}{'cd' * 32}/x\uffffy", Body=b"planted")
    stale = start_upload(s3, bucket, GATEWAY_KEY)
    async with open_storage(settings) as storage:
        collected = await collect_garbage(storage, datetime.timedelta(0))
    assert [upload.upload_id for upload in collected.aborted] == [stale]
    assert open_uploads(s3, bucket) == []
