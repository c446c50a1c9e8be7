"""Zip downloads of a folder: streamed from S3, read back by Python's zipfile, byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile

import pytest
from yarl import URL

from file_uploader.sizes import MiB

from ..helpers import chunked


async def put(client, auth, name: str, data) -> None:
    response = await client.put(f"/api/files/{name}", data=data, headers=auth)
    assert response.status == 204, await response.text()


@pytest.mark.slow  # 100 MiB through moto: the smaller zip tests stay in the edit loop
async def test_a_folder_zip_holds_every_file_byte_for_byte_one_of_them_100_mib(client, auth):
    big = os.urandom(MiB) * 100  # 100 MiB, sent in pieces
    small = {"photos/a.txt": b"alpha" * 1000, "photos/2024/b.bin": os.urandom(300_000), "photos/empty": b""}
    await put(client, auth, "photos/big.bin", chunked(big, 4 * MiB))
    for name, data in small.items():
        await put(client, auth, name, data)
    await put(client, auth, "elsewhere.txt", b"not in the zip")
    response = await client.get("/api/files/photos/", params={"format": "zip"}, headers=auth)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="photos.zip"')
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert archive.testzip() is None
    expected = {"photos/big.bin": big, **small}
    assert sorted(archive.namelist()) == sorted(expected)
    for name, data in expected.items():
        assert hashlib.sha256(archive.read(name)).digest() == hashlib.sha256(data).digest(), name


async def test_a_folder_needs_format_zip_and_something_in_it(client, auth):
    await put(client, auth, "f/x", b"x")
    response = await client.get("/api/files/f/", headers=auth)
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_format"
    empty = await client.get("/api/files/nothing/", params={"format": "zip"}, headers=auth)
    assert empty.status == 404
    assert (await client.get("/api/files/f/", params={"format": "zip"})).status == 401


async def test_a_link_to_a_folder_serves_its_zip_and_counts_a_download(client, auth):
    await put(client, auth, "shared/one.txt", b"one")
    await put(client, auth, "shared/two.txt", b"two")
    made = await client.post("/api/files/shared/share", json={"max_downloads": 1}, headers=auth)
    assert made.status == 404  # a file named "shared" does not exist: a folder's name ends in /
    link = await (
        await client.post("/api/files/shared//share", json={"max_downloads": 1}, headers=auth)
    ).json()
    path = URL(link["url"]).path
    response = await client.get(path, params={"format": "zip"})
    assert response.status == 200 and response.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert {name: archive.read(name) for name in archive.namelist()} == {
        "shared/one.txt": b"one",
        "shared/two.txt": b"two",
    }
    assert (await client.get(path, params={"format": "zip"})).status == 410


async def test_expired_files_are_left_out_of_a_zip(client, auth):
    await put(client, auth, "z/keep.txt", b"keep")
    response = await client.put("/api/files/z/gone.txt", data=b"gone", headers={**auth, "X-Expires-In": "1"})
    assert response.status == 204
    await asyncio.sleep(1.2)
    response = await client.get("/api/files/z/", params={"format": "zip"}, headers=auth)
    assert zipfile.ZipFile(io.BytesIO(await response.read())).namelist() == ["z/keep.txt"]


async def test_a_client_that_goes_away_midway_leaves_the_gateway_serving(client, auth):
    await put(client, auth, "cut/big.bin", chunked(os.urandom(MiB) * 20, 4 * MiB))
    for _ in range(6):  # more than the zip threads: each cut zip gave its thread back
        response = await client.get("/api/files/cut/", params={"format": "zip"}, headers=auth)
        await response.content.read(100_000)
        response.close()
    response = await client.get("/api/files/cut/", params={"format": "zip"}, headers=auth)
    assert response.status == 200
    assert zipfile.ZipFile(io.BytesIO(await response.read())).namelist() == ["cut/big.bin"]


async def test_a_selection_of_a_folder_zips_only_the_names_given(client, auth):
    for name in ("sel/a.txt", "sel/b.txt", "sel/sub/c.txt", "sel/other.txt"):
        await put(client, auth, name, name.encode())
    query = [("format", "zip"), ("name", "a.txt"), ("name", "sub/"), ("name", "b.txt")]
    response = await client.get("/api/files/sel/", params=query, headers=auth)
    assert response.status == 200, await response.text()
    archive = zipfile.ZipFile(io.BytesIO(await response.read()))
    assert {name: archive.read(name) for name in archive.namelist()} == {
        "sel/a.txt": b"sel/a.txt",
        "sel/sub/c.txt": b"sel/sub/c.txt",
        "sel/b.txt": b"sel/b.txt",
    }
    missing = await client.get("/api/files/sel/", params=[("format", "zip"), ("name", "nope")], headers=auth)
    assert missing.status == 404
