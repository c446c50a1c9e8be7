"""`python -m file_uploader purge`: everything of one user goes, nothing of anyone else."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from file_uploader.app import create_app
from file_uploader.storage.keys import file_key, user_id

from ..helpers import ROOT, all_keys, new_token, open_uploads

pytestmark = pytest.mark.process


def purge(s3_url: str, bucket: str, cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "S3_ENDPOINT_URL": s3_url, "S3_BUCKET": bucket, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "file_uploader", "purge", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_purge_deletes_every_file_of_one_user_only(s3_url, bucket, s3, tmp_path):
    victim, bystander = new_token(), new_token()
    for name in ["a", "b", "dir/c"]:
        s3.put_object(Bucket=bucket, Key=file_key(user_id(victim), name), Body=b"x")
    s3.create_multipart_upload(Bucket=bucket, Key=file_key(user_id(victim), "open"))
    kept = file_key(user_id(bystander), "a")
    s3.put_object(Bucket=bucket, Key=kept, Body=b"x")

    dry = purge(s3_url, bucket, tmp_path, "--token", victim)
    assert dry.returncode == 1 and "3 files" in dry.stdout
    assert len(all_keys(s3, bucket)) == 4
    done = purge(s3_url, bucket, tmp_path, "--token", victim, "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 3 files and aborted 1" in done.stdout
    assert victim not in done.stdout + done.stderr
    assert all_keys(s3, bucket) == [kept]
    assert open_uploads(s3, bucket) == []
    assert purge(s3_url, bucket, tmp_path, "--token", "nope", "--yes").returncode == 2


async def test_purge_leaves_nothing_of_a_live_resumable_upload(
    aiohttp_client, settings, s3, s3_url, bucket, tmp_path
):
    """A tus upload with bytes committed has state and a tail under uploads/<user>/: both go."""
    token = new_token()
    client = await aiohttp_client(await create_app(settings))
    tus = {"X-Auth-Token": token, "Tus-Resumable": "1.0.0"}
    created = await client.post(
        "/api/uploads",
        headers={
            **tus,
            "Upload-Length": "100000",
            "Upload-Metadata": "filename " + base64.b64encode(b"r").decode(),
        },
    )
    assert created.status == 201
    patched = await client.patch(
        created.headers["Location"],
        data=b"x" * 1000,
        headers={**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patched.status == 204
    uid = user_id(token)
    assert any(key.startswith(f"uploads/{uid}/") for key in all_keys(s3, bucket))  # the state and tail

    done = purge(s3_url, bucket, tmp_path, "--token", token, "--yes")

    assert done.returncode == 0, done.stderr
    assert [key for key in all_keys(s3, bucket) if uid in key] == []
    assert open_uploads(s3, bucket) == []
