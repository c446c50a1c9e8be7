"""Folders: listing one level with prefix and delimiter=/, page by page; deleting one recursively."""

from __future__ import annotations

import asyncio

import pytest

from file_uploader.storage.keys import file_key, user_id

from ..helpers import all_keys, new_token, open_uploads, raw_request


async def put(client, auth, name: str, data: bytes = b"x", **headers: str) -> None:
    response = await client.put(f"/api/files/{name}", data=data, headers={**auth, **headers})
    assert response.status == 204, await response.text()


async def page(client, auth, **query: str) -> dict:
    response = await client.get("/api/files", params=query, headers=auth)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_folder_lists_its_files_and_sub_folders_only(client, auth):
    for name in [
        "top.txt",
        "photos/a.jpg",
        "photos/b.jpg",
        "photos/2024/c.jpg",
        "photos/2025/d/e.jpg",
        "photosx",
    ]:
        await put(client, auth, name)
    root = await page(client, auth, delimiter="/")
    assert root["folders"] == ["photos/"]
    assert [f["name"] for f in root["files"]] == ["photosx", "top.txt"]
    photos = await page(client, auth, prefix="photos/", delimiter="/")
    assert photos["prefix"] == "photos/"
    assert photos["folders"] == ["photos/2024/", "photos/2025/"]
    assert [f["name"] for f in photos["files"]] == ["photos/a.jpg", "photos/b.jpg"]
    assert set(photos["files"][0]) == {"name", "size", "modified", "public"}
    assert photos["next"] is None
    # Without a delimiter: everything under the prefix, flat.
    flat = await page(client, auth, prefix="photos/2")
    assert [f["name"] for f in flat["files"]] == ["photos/2024/c.jpg", "photos/2025/d/e.jpg"]
    assert flat["folders"] == []


async def test_pages_follow_each_other_across_files_and_folders(client, auth):
    names = ["d/a", "d/b/x", "d/c", "d/e/y", "d/e/z", "d/f"]
    for name in names:
        await put(client, auth, name)
    seen, after = [], None
    while True:
        query = {"prefix": "d/", "delimiter": "/", "limit": "2", **({"after": after} if after else {})}
        result = await page(client, auth, **query)
        seen += [f["name"] for f in result["files"]] + result["folders"]
        after = result["next"]
        if after is None:
            break
    assert sorted(seen) == ["d/a", "d/b/", "d/c", "d/e/", "d/f"]


async def test_the_old_flat_listing_is_unchanged_without_page_parameters(client, auth):
    await put(client, auth, "a/b")
    response = await client.get("/api/files", headers=auth)
    assert await response.json() == ["a/b"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"delimiter": ","}, "invalid_delimiter"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "1001"}, "invalid_limit"),
    ],
)
async def test_bad_listing_parameters_are_400(client, auth, query, code):
    response = await client.get("/api/files", params=query, headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code


@pytest.mark.slow
async def test_a_folder_of_more_than_1000_entries_lists_in_pages_and_deletes_in_batches(
    client, auth, s3, bucket
):
    """1,100 files and 20 sub-folders: more than one S3 page, and more than one DeleteObjects batch."""
    uid = user_id(auth["X-Auth-Token"])
    names = [f"big/f{n:04d}" for n in range(1100)] + [f"big/sub{n:02d}/x" for n in range(20)]
    # Put straight into S3 (as the gateway would have): 1,120 PUTs through the gateway add nothing.
    await asyncio.gather(
        *(
            asyncio.to_thread(s3.put_object, Bucket=bucket, Key=file_key(uid, name), Body=b"")
            for name in names
        )
    )
    await put(client, auth, "kept/outside")
    files, folders, after, pages = [], [], None, 0
    while True:
        result = await page(client, auth, prefix="big/", delimiter="/", **({"after": after} if after else {}))
        files += [f["name"] for f in result["files"]]
        folders += result["folders"]
        pages += 1
        if (after := result["next"]) is None:
            break
    assert pages == 2
    assert files == names[:1100]
    assert folders == [f"big/sub{n:02d}/" for n in range(20)]

    response = await client.delete("/api/files/big/", params={"recursive": "1"}, headers=auth)
    assert response.status == 200, await response.text()
    assert (await response.json())["deleted"] == 1120
    assert all_keys(s3, bucket) == [file_key(uid, "kept/outside")]


async def test_deleting_a_folder_takes_everything_under_it_and_nothing_beside_it(client, auth, s3, bucket):
    uid = user_id(auth["X-Auth-Token"])
    for name in ["dir/a", "dir/sub/b", "dir", "dirt/c", "other"]:
        await put(client, auth, name)
    await put(client, auth, "dir/pub.txt", **{"X-Public": "true"})
    # An unfinished upload aimed into the folder: a tus upload, and a bare multipart upload.
    tus = {**auth, "Tus-Resumable": "1.0.0"}
    created = await client.post(
        "/api/uploads", headers={**tus, "Upload-Length": "10", "Upload-Metadata": "filename ZGlyL3R1cw=="}
    )
    assert created.status == 201
    s3.create_multipart_upload(Bucket=bucket, Key=file_key(uid, "dir/crashed"))

    response = await client.delete("/api/files/dir/", params={"recursive": "1"}, headers=auth)
    assert response.status == 200
    assert await response.json() == {"folder": "dir/", "deleted": 3, "aborted": 2}
    assert sorted(all_keys(s3, bucket)) == sorted(file_key(uid, name) for name in ["dir", "dirt/c", "other"])
    assert open_uploads(s3, bucket) == []
    assert (await (await client.get("/api/public")).json())["files"] == []


async def test_a_folder_is_deleted_only_when_asked_recursively_and_404_when_empty(client, auth):
    await put(client, auth, "dir/a")
    response = await client.delete("/api/files/dir/", headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "folder_not_recursive"
    response = await client.delete("/api/files/nothing/", params={"recursive": "1"}, headers=auth)
    assert response.status == 404
    other = {"X-Auth-Token": new_token()}
    response = await client.delete("/api/files/dir/", params={"recursive": "1"}, headers=other)
    assert response.status == 404
    status, _ = await raw_request(client, "DELETE", "/api/files/a/../?recursive=1", auth)
    assert status == 400


async def test_a_folder_holding_a_key_s3_xml_cannot_carry_is_deleted(client, auth, s3, bucket):
    """A key with U+FFFF, planted in S3 directly (the gateway refuses such names): DeleteObjects
    names keys in XML, which cannot carry it, so the folder's delete must not depend on it."""
    uid = user_id(auth["X-Auth-Token"])
    await put(client, auth, "dir/a")
    s3.put_object(Bucket=bucket, Key=file_key(uid, "dir/a") + "\uffff", Body=b"planted")

    response = await client.delete("/api/files/dir/", params={"recursive": "1"}, headers=auth)
    assert response.status == 200, await response.text()
    assert (await response.json())["deleted"] == 2
    assert all_keys(s3, bucket) == []
