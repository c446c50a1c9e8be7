"""Resumable (tus) uploads to an upload request, /r/{id}/uploads: the request's limits taken at
creation, its password at every request, only its own uploads reachable, and a cut upload resumed;
through tuspy and raw HTTP, against moto."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import os
import socket
import time

import pytest
import requests
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from yarl import URL

from file_uploader.appkeys import STORAGE
from file_uploader.sizes import KiB, MiB

from ..cutproxy import CutProxy
from ..helpers import new_token, open_uploads, path_of
from .test_requests import make_request, stored_files
from .test_tus import OCTETS, PART, TUS, gateway, leftovers, metadata, payload, state_keys


def uploads_url(client, made: dict) -> str:
    """The request's tus endpoint, on the test server's real address (for tuspy)."""
    return str(client.make_url(URL(made["url"]).path + "/uploads"))


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


async def tus_send(client, made: dict, name: str, data: bytes, headers: dict | None = None) -> None:
    """tuspy sends `data` as `name` to the request (in a thread: it blocks, the server is this loop's)."""
    tus = TusClient(uploads_url(client, made), headers=headers or {})

    def send() -> None:
        tus.uploader(file_stream=io.BytesIO(data), metadata={"filename": name}, chunk_size=MiB).upload()

    await asyncio.to_thread(send)


async def create(client, made: dict, name: str, length: int | None, **headers: str):
    sizes = {"Upload-Length": str(length)} if length is not None else {"Upload-Defer-Length": "1"}
    return await client.post(
        URL(made["url"]).path + "/uploads",
        headers={**TUS, **sizes, "Upload-Metadata": metadata(name), **headers},
    )


async def request_record(client, auth, made: dict) -> tuple[int, int]:
    listed = await (await client.get("/api/requests", headers=auth)).json()
    [item] = [item for item in listed if item["id"] == made["id"]]
    return item["files"], item["bytes"]


async def test_a_request_for_2_files_and_1_mib_takes_two_tus_uploads_and_refuses_the_rest_storing_nothing(
    client, auth, s3, bucket
):
    made = await make_request(client, auth, folder="inbox", max_files=2, max_bytes=MiB)
    big = await create(client, made, "big.bin", MiB + 1)
    assert big.status == 413 and (await big.json())["error"]["code"] == "upload_too_large"
    assert big.headers["Tus-Resumable"] == "1.0.0"
    await tus_send(client, made, "one.bin", payload(300 * KiB))
    await tus_send(client, made, "two.bin", payload(600 * KiB))
    # 124 KiB left, and no file: the third is refused whatever its size, before anything is made.
    third = await create(client, made, "three.bin", 10)
    assert third.status == 409 and (await third.json())["error"]["code"] == "request_full"
    assert stored_files(s3, bucket) == ["inbox/one.bin", "inbox/two.bin"]
    assert await (await client.get("/api/files/inbox/two.bin", headers=auth)).read() == payload(600 * KiB)
    assert await request_record(client, auth, made) == (2, 900 * KiB)
    assert open_uploads(s3, bucket) == [] and leftovers(s3, bucket) == []


async def test_an_upload_past_the_bytes_left_is_refused_at_creation(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox", max_bytes=MiB)
    await tus_send(client, made, "first.bin", payload(700 * KiB))
    over = await create(client, made, "second.bin", 400 * KiB)
    assert over.status == 413
    assert stored_files(s3, bucket) == ["inbox/first.bin"]
    assert open_uploads(s3, bucket) == []
    await tus_send(client, made, "second.bin", payload(300 * KiB))  # what is left still fits
    assert await request_record(client, auth, made) == (2, 1000 * KiB)


@pytest.mark.process
def test_an_upload_cut_short_resumes_where_it_stopped(s3_url, s3, bucket, tmp_path):
    """A gateway process (a test server cancels a handler whose client went away, which a real
    one does not): the cut PATCH commits what arrived, and tuspy resumes from there."""
    with gateway(s3_url, bucket, tmp_path) as base:
        cut_and_resume(base, s3, bucket)


def cut_and_resume(base: str, s3, bucket: str) -> None:
    owner = {"X-Auth-Token": new_token()}
    made = requests.post(
        f"{base}/api/requests", json={"folder": "inbox", "max_files": 1}, headers=owner, timeout=10
    ).json()
    data = payload(2 * PART + 777)
    sent = PART + 3 * MiB  # a full part and a tail
    tus = TusClient(f"{made['url']}/uploads")
    location = tus.uploader(file_stream=io.BytesIO(data), metadata={"filename": "cut.bin"}).create_url()
    assert path_of(location).startswith(URL(made["url"]).path + "/uploads/")
    # A PATCH for the whole file whose connection dies after `sent` bytes.
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            f"PATCH {path_of(location)} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n"
            "Content-Type: application/offset+octet-stream\r\n\r\n".encode()
            + data[:sent]
        )
    deadline = time.monotonic() + 15
    while True:  # the gateway commits what arrived
        head = requests.head(location, headers=TUS, timeout=5)
        assert head.status_code == 200
        offset = int(head.headers["Upload-Offset"])
        if offset == sent or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert offset == sent
    resumed = tus.uploader(file_stream=io.BytesIO(data), url=location)
    assert resumed.offset == sent  # tuspy asked the server
    resumed.upload()
    got = requests.get(f"{base}/api/files/inbox/cut.bin", headers=owner, timeout=10)
    assert got.content == data
    [listed] = requests.get(f"{base}/api/requests", headers=owner, timeout=10).json()
    assert (listed["files"], listed["bytes"]) == (1, len(data))
    assert open_uploads(s3, bucket) == [] and leftovers(s3, bucket) == []


async def test_the_tus_url_reaches_only_uploads_made_under_the_request(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox")
    other = await make_request(client, auth, folder="other")
    base = URL(made["url"]).path + "/uploads"
    # The owner's own upload, and one made under another request: unknown here.
    own = await client.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Length": "10", "Upload-Metadata": metadata("mine.bin")},
    )
    theirs = await create(client, other, "theirs.bin", 10)
    for location in (own.headers["Location"], theirs.headers["Location"]):
        upload_id = path_of(location).rsplit("/", 1)[1]
        assert (await client.head(f"{base}/{upload_id}", headers=TUS)).status == 404
        sent = await client.patch(
            f"{base}/{upload_id}", data=b"x" * 10, headers={**TUS, **OCTETS, "Upload-Offset": "0"}
        )
        assert sent.status == 404
        assert (await client.delete(f"{base}/{upload_id}", headers=TUS)).status == 404
    # Nothing lists or reads: not the endpoint, not an upload, not a file.
    await tus_send(client, made, "sent.bin", b"sent")
    assert (await client.get(base)).status == 405
    mine = await create(client, made, "mine2.bin", 4)
    assert (await client.get(path_of(mine.headers["Location"]))).status == 405
    # A name taken is refused at creation: nothing is replaced.
    taken = await create(client, made, "sent.bin", 5)
    assert taken.status == 409 and (await taken.json())["error"]["code"] == "file_exists"
    for name in ("../up.bin", "sub/dir.bin"):
        assert (await create(client, made, name, 5)).status == 400
    # Terminating its own finished upload forgets the upload, never the file.
    await tus_send(client, made, "kept.bin", b"kept")
    assert await (await client.get("/api/files/inbox/kept.bin", headers=auth)).read() == b"kept"
    assert "inbox/kept.bin" in stored_files(s3, bucket)


async def test_a_wrong_password_is_refused_at_every_request(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="locked", password="open sesame")
    for headers in ({}, basic("wrong")):
        refused = await create(client, made, "f.bin", 3, **headers)
        assert refused.status == 401 and (await refused.json())["error"]["code"] == "password_required"
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    created = await create(client, made, "f.bin", 3, **basic("open sesame"))
    assert created.status == 201
    url = path_of(created.headers["Location"])
    assert (await client.head(url, headers=TUS)).status == 401
    sent = await client.patch(
        url, data=b"abc", headers={**TUS, **OCTETS, "Upload-Offset": "0", **basic("no")}
    )
    assert sent.status == 401
    assert stored_files(s3, bucket) == []
    sent = await client.patch(
        url, data=b"abc", headers={**TUS, **OCTETS, "Upload-Offset": "0", **basic("open sesame")}
    )
    assert sent.status == 204
    assert stored_files(s3, bucket) == ["locked/f.bin"]


async def test_a_script_that_asks_for_the_password_itself_gets_no_basic_challenge(client, auth):
    """The request's page asks in its own field: a Basic challenge would make the browser open its
    own prompt over the page, and hold the request until it is answered."""
    made = await make_request(client, auth, folder="locked", password="open sesame")
    scripted = await create(client, made, "f.bin", 3, **{"X-Requested-With": "XMLHttpRequest"})
    assert scripted.status == 401 and (await scripted.json())["error"]["code"] == "password_required"
    assert "WWW-Authenticate" not in scripted.headers
    assert "WWW-Authenticate" in (await create(client, made, "f.bin", 3)).headers


async def test_tuspy_with_the_password_sends_and_without_it_fails(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="locked", password="pw")
    with pytest.raises(TusCommunicationError):
        await tus_send(client, made, "no.bin", b"no")
    await tus_send(client, made, "yes.bin", b"yes", basic("pw"))
    assert stored_files(s3, bucket) == ["locked/yes.bin"]


async def test_a_terminated_upload_gives_its_room_back(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox", max_files=1, max_bytes=1000)
    created = await create(client, made, "a.bin", 1000)
    url = path_of(created.headers["Location"])
    assert (
        await client.patch(url, data=b"x" * 400, headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    ).status == 204
    assert await request_record(client, auth, made) == (1, 1000)
    assert (await create(client, made, "b.bin", 1)).status == 409
    assert (await client.delete(url, headers=TUS)).status == 204
    assert await request_record(client, auth, made) == (0, 0)
    assert open_uploads(s3, bucket) == [] and state_keys(s3, bucket) == []
    await tus_send(client, made, "b.bin", b"b" * 1000)
    assert stored_files(s3, bucket) == ["inbox/b.bin"]


async def test_an_expired_upload_gives_its_room_back_when_gc_removes_it(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, upload_expiry=1)))
    made = await make_request(client, auth, folder="inbox", max_files=1)
    created = await create(client, made, "late.bin", 100)
    url = path_of(created.headers["Location"])
    assert await request_record(client, auth, made) == (1, 100)
    await asyncio.sleep(1.1)
    late = await client.patch(url, data=b"x" * 100, headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    assert late.status == 410 and (await late.json())["error"]["code"] == "upload_expired"
    assert await client.app[STORAGE].resumable.expire(time.time()) == 1
    assert await request_record(client, auth, made) == (0, 0)
    assert open_uploads(s3, bucket) == [] and state_keys(s3, bucket) == []


async def test_the_owners_quota_covers_what_lands(aiohttp_client, app_for, settings, s3, bucket):
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, user_quota=1000)))
    auth = {"X-Auth-Token": new_token()}
    made = await make_request(client, auth, folder="q")
    await tus_send(client, made, "fits.bin", b"x" * 600)
    over = await create(client, made, "over.bin", 600)
    assert over.status == 413 and (await over.json())["error"]["code"] == "quota_exceeded"
    assert await request_record(client, auth, made) == (1, 600)  # the refused one took nothing
    assert stored_files(s3, bucket) == ["q/fits.bin"]


async def test_a_name_taken_while_uploading_refuses_the_file_and_keeps_the_one_there(
    client, auth, s3, bucket
):
    made = await make_request(client, auth, folder="inbox", max_files=5)
    created = await create(client, made, "same.bin", 5)
    assert (await client.put(URL(made["url"]).path + "/same.bin", data=b"first")).status == 204
    url = path_of(created.headers["Location"])
    late = await client.patch(url, data=b"later", headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    assert late.status == 409 and (await late.json())["error"]["code"] == "file_exists"
    assert await (await client.get("/api/files/inbox/same.bin", headers=auth)).read() == b"first"
    assert await request_record(client, auth, made) == (1, 5)  # the refused upload gave its room back
    assert open_uploads(s3, bucket) == [] and state_keys(s3, bucket) == []


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Upload-Defer-Length": "1"}, "length_required"),
        ({"Upload-Concat": "partial", "Upload-Length": "5"}, "invalid_concat"),
    ],
)
async def test_only_whole_files_of_a_declared_length_are_created(client, auth, s3, bucket, headers, code):
    made = await make_request(client, auth, folder="inbox")
    response = await client.post(
        URL(made["url"]).path + "/uploads", headers={**TUS, "Upload-Metadata": metadata("f.bin"), **headers}
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == code
    assert await request_record(client, auth, made) == (0, 0)
    assert state_keys(s3, bucket) == []


async def test_a_file_sent_keeps_whatever_expiry_its_sender_asks(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox")
    expiring = metadata("keeps.bin") + ",expires_in " + base64.b64encode(b"1").decode()
    created = await create(client, made, "keeps.bin", 4, **{"Upload-Metadata": expiring})
    url = path_of(created.headers["Location"])
    assert (
        await client.patch(url, data=b"keep", headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    ).status == 204
    await asyncio.sleep(1.2)
    assert await (await client.get("/api/files/inbox/keeps.bin", headers=auth)).read() == b"keep"


async def test_an_ended_request_takes_no_more_bytes_of_its_uploads(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox")
    created = await create(client, made, "a.bin", 10)
    url = path_of(created.headers["Location"])
    assert (await client.delete(f"/api/requests/{made['id']}", headers=auth)).status == 204
    sent = await client.patch(url, data=b"x" * 10, headers={**TUS, **OCTETS, "Upload-Offset": "0"})
    assert sent.status == 404
    assert stored_files(s3, bucket) == []


# The request's page in Chromium: tus-js-client, a cut, a reload, the resume -----------------

PAGE_FILE_SIZE = 8_000_000  # about one S3 part: the resumed upload completes a multipart upload


@pytest.mark.slow  # 8 MB through a proxy, a cut, a reload
def test_the_request_page_resumes_an_upload_cut_short_after_a_reload(
    gateway_process, browser_page, s3, bucket, tmp_path
):
    owner = {"X-Auth-Token": new_token()}
    made = requests.post(
        f"{gateway_process}/api/requests",
        json={"folder": "from-page", "max_files": 1},
        headers=owner,
        timeout=10,
    ).json()
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(PAGE_FILE_SIZE))
    page = browser_page
    with CutProxy(int(gateway_process.rsplit(":", 1)[1])) as proxy:
        page_url = proxy.url + URL(made["url"]).path
        page.goto(page_url)
        proxy.cut_after(3_000_000)
        page.set_input_files("#request-files", str(path))
        page.click("#request-send")
        assert proxy.cut_done.wait(15), "the upload never reached the cut"
        page.locator('#request-results li.retrying[data-name="big.bin"]').wait_for()
        [entry] = stored_uploads(page)
        assert f"/r/{made['id']}/uploads/" in entry["uploadUrl"]
        offset = committed_offset(entry["uploadUrl"].replace(proxy.url, gateway_process))
        assert 0 < offset < PAGE_FILE_SIZE
        # Reloaded once the network is back: the page lists what it did not finish.
        proxy.restore()
        page.reload()
        offered = page.locator('#request-unfinished li[data-name="big.bin"]')
        offered.wait_for()
        page.wait_for_function(
            "() => / of 8.0 MB sent/"
            ".test(document.querySelector('#request-unfinished li .detail').textContent)"
        )
        # The same file, chosen again, goes on from the gateway's offset.
        sent_before = proxy.upstream_bytes
        page.set_input_files("#request-files", str(path))
        page.click("#request-send")
        row = page.locator('#request-results li.done[data-name="big.bin"]')
        row.wait_for()
        assert "resumed at" in row.locator(".detail").inner_text()
        assert proxy.upstream_bytes - sent_before < PAGE_FILE_SIZE - offset + 20_000
        assert page.locator("#request-unfinished-box").is_hidden()
        assert stored_uploads(page) == []
    got = requests.get(f"{gateway_process}/api/files/from-page/big.bin", headers=owner, timeout=30)
    assert got.content == path.read_bytes()
    [listed] = requests.get(f"{gateway_process}/api/requests", headers=owner, timeout=10).json()
    assert (listed["files"], listed["bytes"]) == (1, PAGE_FILE_SIZE)  # one file's room, taken once
    assert open_uploads(s3, bucket) == []


def stored_uploads(page) -> list[dict]:
    """What tus-js-client keeps in localStorage to find an upload again."""
    return page.evaluate(
        "() => Object.keys(localStorage).filter(k => k.startsWith('tus::'))"
        ".map(k => JSON.parse(localStorage.getItem(k)))"
    )


def committed_offset(upload_url: str) -> int:
    """Upload-Offset as the gateway says it, once the PATCH the cut broke has committed."""
    deadline = time.monotonic() + 10
    while True:
        offset = int(requests.head(upload_url, headers=TUS, timeout=5).headers["Upload-Offset"])
        if offset > 0 or time.monotonic() > deadline:
            return offset
        time.sleep(0.1)


def test_the_request_page_sends_with_the_password_typed_and_says_when_it_is_missing(
    gateway_process, browser_page, s3, bucket
):
    owner = {"X-Auth-Token": new_token()}
    made = requests.post(
        f"{gateway_process}/api/requests",
        json={"folder": "locked", "password": "open sesame"},
        headers=owner,
        timeout=10,
    ).json()
    page = browser_page
    page.goto(made["url"])
    page.set_input_files("#request-files", [{"name": "a.txt", "mimeType": "text/plain", "buffer": b"a"}])
    page.click("#request-send")
    refused = page.locator('#request-results li[data-name="a.txt"][data-status="401"]')
    refused.wait_for()
    assert "needs its password" in refused.locator(".detail").inner_text()
    page.fill("#request-password", "open sesame")
    page.set_input_files("#request-files", [{"name": "b.txt", "mimeType": "text/plain", "buffer": b"b"}])
    page.click("#request-send")
    page.locator('#request-results li.done[data-name="b.txt"]').wait_for()
    assert stored_files(s3, bucket) == ["locked/b.txt"]
