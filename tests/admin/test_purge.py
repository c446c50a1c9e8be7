"""`python -m file_uploader purge`: everything of one user goes, nothing of anyone else."""

from __future__ import annotations

import base64
import dataclasses
import subprocess

import pytest

from file_uploader.storage import open_storage
from file_uploader.storage.keys import file_key, user_id
from file_uploader.storage.quotas import ledger_key
from file_uploader.storage.sweep import purge_all, purge_user

from ..helpers import all_keys, new_token, open_uploads, path_of, run_admin

pytestmark = pytest.mark.process


def purge(s3_url: str, bucket: str, cwd, *args: str) -> subprocess.CompletedProcess:
    return run_admin(s3_url, bucket, cwd, "purge", *args)


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
    aiohttp_client, app_for, settings, s3, s3_url, bucket, tmp_path
):
    """A tus upload with bytes committed has state and a tail under uploads/<user>/: both go."""
    token = new_token()
    client = await aiohttp_client(await app_for(settings))
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
        path_of(created.headers["Location"]),
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


async def test_purge_all_removes_every_user_and_leaves_foreign_keys(
    aiohttp_client, app_for, settings, s3, s3_url, bucket, tmp_path
):
    """Files, public library entries, thumbnails, tus state and open uploads of two users go;
    keys outside the gateway's prefixes (even ones that start like them) and their uploads stay."""
    client = await aiohttp_client(await app_for(settings))
    for token in (new_token(), new_token()):
        auth = {"X-Auth-Token": token}
        response = await client.put("/api/files/pic.gif", data=GIF, headers={**auth, "X-Public": "true"})
        assert response.status == 204
        assert (
            await client.get("/api/files/pic.gif", params={"thumbnail": "64"}, headers=auth)
        ).status == 200
        tus = {**auth, "Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": "filename dA=="}
        assert (await client.post("/api/uploads", headers=tus)).status == 201
    foreign = ["backups/db.sql", "filesystem.txt", "library", "thumbs.db", "pub"]
    for key in foreign:
        s3.put_object(Bucket=bucket, Key=key, Body=b"not the gateway's")
    foreign_upload = s3.create_multipart_upload(Bucket=bucket, Key="backups/big.tar")["UploadId"]
    roots = ("files/", "uploads/", "pub/", "library/", "thumbs/")
    assert {key.split("/", 1)[0] + "/" for key in all_keys(s3, bucket) if "/" in key} >= set(roots)

    dry = purge(s3_url, bucket, tmp_path, "--all")
    assert dry.returncode == 1 and "2 files" in dry.stdout and "2 unfinished uploads" in dry.stdout
    done = purge(s3_url, bucket, tmp_path, "--all", "--yes")

    assert done.returncode == 0, done.stderr
    assert "deleted 2 files" in done.stdout
    assert sorted(all_keys(s3, bucket)) == sorted(foreign)
    assert [upload["UploadId"] for upload in open_uploads(s3, bucket)] == [foreign_upload]
    assert purge(s3_url, bucket, tmp_path, "--all", "--token", new_token()).returncode == 2


async def test_purge_of_one_user_takes_their_library_entries_and_thumbnails(
    aiohttp_client, app_for, settings, s3, s3_url, bucket, tmp_path
):
    client = await aiohttp_client(await app_for(settings))
    victim, bystander = new_token(), new_token()
    for token in (victim, bystander):
        auth = {"X-Auth-Token": token}
        await client.put("/api/files/pic.gif", data=GIF, headers={**auth, "X-Public": "true"})
        await client.get("/api/files/pic.gif", params={"thumbnail": "64"}, headers=auth)
    before = len(all_keys(s3, bucket))

    done = purge(s3_url, bucket, tmp_path, "--token", victim, "--yes")

    assert done.returncode == 0, done.stderr
    assert len(all_keys(s3, bucket)) == before // 2
    assert [key for key in all_keys(s3, bucket) if user_id(victim) in key] == []
    listed = await (await client.get("/api/public")).json()
    assert len(listed["files"]) == 1
    assert (await client.get("/" + listed["files"][0]["url"].split("/", 3)[3])).status == 200


# The smallest GIF: one transparent pixel.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


async def test_purge_removes_the_users_quota_ledger(
    aiohttp_client, app_for, settings, s3, s3_url, bucket, tmp_path
):
    token = new_token()
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, user_quota=1024)))
    assert (await client.put("/api/files/a", data=b"x" * 100, headers={"X-Auth-Token": token})).status == 204
    assert ledger_key(user_id(token)) in all_keys(s3, bucket)
    done = purge(s3_url, bucket, tmp_path, "--token", token, "--yes")
    assert done.returncode == 0, done.stderr
    assert all_keys(s3, bucket) == []
    # The gateway that kept the ledger in memory starts again from an empty one.
    usage = await client.get("/api/usage", headers={"X-Auth-Token": token})
    assert await usage.json() == {"used": 0, "quota": 1024, "files": 0, "reserved": 0}


# A key S3's XML cannot carry (U+FFFF), planted in S3 directly: the gateway refuses such names.
UNCARRIED = "x\uffffy"


async def test_purge_all_deletes_a_key_s3_xml_cannot_carry_and_everyone_elses(settings, s3, bucket):
    planted = file_key(user_id(new_token()), "a") + UNCARRIED
    s3.put_object(Bucket=bucket, Key=planted, Body=b"planted")
    s3.put_object(Bucket=bucket, Key=file_key(user_id(new_token()), "b"), Body=b"x")
    async with open_storage(settings) as storage:
        purged = await purge_all(storage, really=True)
    assert purged.files == 2
    assert all_keys(s3, bucket) == []


async def test_purge_of_one_user_deletes_a_key_s3_xml_cannot_carry(settings, s3, bucket):
    token = new_token()
    s3.put_object(Bucket=bucket, Key=file_key(user_id(token), "a") + UNCARRIED, Body=b"planted")
    s3.put_object(Bucket=bucket, Key=file_key(user_id(token), "b"), Body=b"x")
    async with open_storage(settings) as storage:
        purged = await purge_user(storage, user_id(token), really=True)
    assert purged.files == 2
    assert all_keys(s3, bucket) == []
