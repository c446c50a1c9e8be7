"""Upload requests: anyone with the link adds files to one folder of the owner, within its limits,
and can do nothing else."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import urllib.request

import pytest
from yarl import URL

from file_uploader.app import create_app
from file_uploader.sizes import MiB
from file_uploader.storage.keys import FILES_ROOT, REQUEST_INDEX_ROOT, REQUESTS_ROOT

from ..faultproxy import Fault, FaultProxy
from ..helpers import CHROMIUM, NO_CHROMIUM, all_keys, new_token


@pytest.fixture
async def second(aiohttp_client, app_for, settings):
    """A second gateway on the same bucket: another replica."""
    return await aiohttp_client(await app_for(settings))


async def make_request(client, auth, **options) -> dict:
    response = await client.post("/api/requests", json=options, headers=auth)
    assert response.status == 201, await response.text()
    return await response.json()


def stored_files(s3, bucket) -> list[str]:
    return sorted(key.split("/", 2)[2] for key in all_keys(s3, bucket) if key.startswith(FILES_ROOT))


async def curl_upload(url: str, path, *extra: str) -> tuple[int, str]:
    """`curl --upload-file`, as the person holding the link would; its status and body."""
    curl = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        *extra,
        "--upload-file",
        str(path),
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(curl.communicate(), 60)
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


async def test_a_request_for_2_files_and_1_mib_takes_two_and_refuses_the_rest_storing_nothing(
    client, auth, s3, bucket, tmp_path
):
    made = await make_request(client, auth, folder="inbox", max_files=2, max_bytes=MiB)
    assert made["folder"] == "inbox/" and made["url"].endswith(f"/r/{made['id']}")
    small = tmp_path / "a.txt"
    small.write_bytes(b"a" * 1000)
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * (MiB + 1))
    status, body = await curl_upload(f"{made['url']}/big.bin", big)
    assert status == 413, body
    assert stored_files(s3, bucket) == []
    for name in ("one.txt", "two.txt"):
        assert (await curl_upload(f"{made['url']}/{name}", small))[0] == 204
    status, body = await curl_upload(f"{made['url']}/three.txt", small)
    assert status == 409 and json.loads(body)["error"]["code"] == "request_full"
    assert stored_files(s3, bucket) == ["inbox/one.txt", "inbox/two.txt"]
    owner = await (await client.get("/api/files", headers=auth)).json()
    assert owner == ["inbox/one.txt", "inbox/two.txt"]
    listed = await (await client.get("/api/requests", headers=auth)).json()
    assert [(item["id"], item["files"], item["bytes"]) for item in listed] == [(made["id"], 2, 2000)]


async def test_the_link_gives_no_way_to_list_read_replace_or_delete(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="inbox/")
    path = URL(made["url"]).path
    assert (await client.put(f"{path}/secret.txt", data=b"mine")).status == 204
    for method in ("GET", "HEAD", "DELETE", "PATCH", "POST"):
        response = await client.request(method, f"{path}/secret.txt")
        assert response.status in (404, 405), method
        assert b"mine" not in await response.read()
    page = await client.get(path)
    assert page.status == 200 and "secret.txt" not in await page.text()
    replaced = await client.put(f"{path}/secret.txt", data=b"replaced")
    assert replaced.status == 409 and (await replaced.json())["error"]["code"] == "file_exists"
    for name in ("../escape.txt", "sub/dir.txt", "%2e%2e"):
        assert (await client.put(URL(f"{path}/{name}", encoded=True), data=b"x")).status in (400, 404, 405)
    assert stored_files(s3, bucket) == ["inbox/secret.txt"]
    assert await (await client.get("/api/files/inbox/secret.txt", headers=auth)).read() == b"mine"


async def test_a_request_with_a_password_refuses_without_it(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="in", password="let me in")
    path = URL(made["url"]).path
    refused = await client.put(f"{path}/f.txt", data=b"x")
    assert refused.status == 401 and (await refused.json())["error"]["code"] == "password_required"
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:let me in").decode()}
    assert (await client.put(f"{path}/f.txt", data=b"x", headers=basic)).status == 204
    assert stored_files(s3, bucket) == ["in/f.txt"]


async def test_the_file_limit_is_exact_over_two_replicas(client, second, auth, s3, bucket):
    made = await make_request(client, auth, folder="race", max_files=3)
    path = URL(made["url"]).path

    async def send(index: int) -> int:
        response = await (client if index % 2 else second).put(f"{path}/f{index}.txt", data=b"x" * 100)
        return response.status

    statuses = await asyncio.gather(*(send(index) for index in range(12)))
    assert statuses.count(204) == 3 and statuses.count(409) == 9
    assert len(stored_files(s3, bucket)) == 3


async def test_a_file_that_landed_keeps_its_room_when_what_follows_it_fails(
    aiohttp_client, settings, auth, s3_url, s3, bucket, monkeypatch
):
    """The file is stored, then a step after it (here: whether it replaced a public file) finds S3
    failing, and the sender gets an error. The file is there all the same, so the request does not
    take its room back: a request for 1 file never ends up holding 2."""
    # S3 fails every time: botocore's retries (backing off up to 1 s, then 2 s) only delay the error.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proxy = await FaultProxy(s3_url).start()
    try:
        gw = await aiohttp_client(await create_app(dataclasses.replace(settings, s3_endpoint_url=proxy.url)))
        made = await make_request(gw, auth, folder="one", max_files=1)
        path = URL(made["url"]).path
        proxy.add(Fault("GET other", match=lambda request: "/pub/" in request.path))
        failed = await gw.put(f"{path}/first.txt", data=b"x" * 100)
        assert failed.status == 502  # S3 answered 500: storage_error
        assert stored_files(s3, bucket) == ["one/first.txt"]
        proxy.clear()
        second = await gw.put(f"{path}/second.txt", data=b"x" * 100)
        assert second.status == 409
        assert stored_files(s3, bucket) == ["one/first.txt"]
    finally:
        await proxy.close()


async def test_the_owners_quota_covers_what_lands(aiohttp_client, app_for, settings, s3, bucket):
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, user_quota=1000)))
    auth = {"X-Auth-Token": new_token()}
    made = await make_request(client, auth, folder="q")
    path = URL(made["url"]).path
    assert (await client.put(f"{path}/fits.bin", data=b"x" * 600)).status == 204
    over = await client.put(f"{path}/over.bin", data=b"x" * 600)
    assert over.status == 413 and (await over.json())["error"]["code"] == "quota_exceeded"
    assert stored_files(s3, bucket) == ["q/fits.bin"]
    # What was refused gave its room back: the request still takes a file that fits.
    assert (await client.put(f"{path}/small.bin", data=b"x" * 100)).status == 204


async def test_an_ended_request_takes_nothing_more(client, auth, s3, bucket):
    made = await make_request(client, auth, folder="x", expires_in=60)
    path = URL(made["url"]).path
    assert (await client.delete(f"/api/requests/{made['id']}", headers=auth)).status == 204
    assert (await client.put(f"{path}/f", data=b"x")).status == 404
    assert (await client.get(path)).status == 404
    assert not [key for key in all_keys(s3, bucket) if key.startswith((REQUESTS_ROOT, REQUEST_INDEX_ROOT))]


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({}, "invalid_folder"),
        ({"folder": "/"}, "invalid_folder"),
        ({"folder": "a", "max_files": 0}, "invalid_max_files"),
        ({"folder": "a", "max_bytes": -1}, "invalid_max_bytes"),
        ({"folder": "a", "expires_in": 0}, "invalid_expiry"),
        ({"folder": "a", "password": ""}, "invalid_password"),
        ({"folder": "a/../b"}, "invalid_name"),
    ],
)
async def test_bad_request_options_are_refused(client, auth, options, code):
    response = await client.post("/api/requests", json=options, headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code


@pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)
def test_the_request_page_sends_files_in_chromium(gateway_process, browser_page, s3, bucket):
    token = new_token()
    body = json.dumps({"folder": "from-page", "max_files": 1}).encode()
    create = urllib.request.Request(
        f"{gateway_process}/api/requests",
        data=body,
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(create, timeout=10) as response:
        url = json.load(response)["url"]
    page = browser_page
    page.goto(url)
    page.set_input_files(
        "#request-files",
        [
            {"name": "hello.txt", "mimeType": "text/plain", "buffer": b"hello from a browser"},
            {"name": "second.txt", "mimeType": "text/plain", "buffer": b"one too many"},
        ],
    )
    page.click("#request-send")
    page.locator('#request-results li[data-name="second.txt"][data-status]').wait_for()
    assert page.locator('#request-results li[data-name="hello.txt"]').get_attribute("data-status") == "sent"
    # Refused at its tus creation: the request took its one file.
    second = page.locator('#request-results li[data-name="second.txt"]')
    assert second.get_attribute("data-status") == "409"
    assert "taken its 1 files" in second.locator(".detail").inner_text()
    assert stored_files(s3, bucket) == ["from-page/hello.txt"]
