"""The page's resumable uploads in Chromium: the network cut mid-upload, a reload, the resume.

The page (api/static/app.js) uploads through tus with tus-js-client. The
browser reaches the gateway process through tests/cutproxy.py, a TCP proxy
that drops every connection once so many bytes have gone through and refuses
new ones until it is restored: to the browser the network went away, to the
gateway the client did. The gateway commits what arrived before the cut
(storage/tus/), and the upload goes on from there.
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.request
from pathlib import Path

import pytest

from ..cutproxy import CutProxy
from ..helpers import all_keys, new_token, open_uploads, run_gateway

SIZE = 8_000_000  # about one S3 part (8 MiB): the resumed upload completes a multipart upload
CUT_AFTER = 3_000_000  # bytes to the gateway before the network goes


@pytest.fixture
def proxy(gateway_process):
    with CutProxy(int(gateway_process.rsplit(":", 1)[1])) as cut:
        yield cut


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """A file on disk, so that the browser sees the same file (size and date) when it is chosen again."""
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def stored(base_url: str, token: str, name: str) -> bytes:
    request = urllib.request.Request(f"{base_url}/api/files/{name}", headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def server_offset(base_url: str, token: str, upload_url: str) -> int:
    """Upload-Offset as the gateway says it, asked directly (not through the proxy), once the
    PATCH the cut broke has committed what arrived (a second or so: it writes the tail to S3)."""
    path = upload_url.split("/api/uploads/", 1)[1]
    request = urllib.request.Request(
        f"{base_url}/api/uploads/{path}",
        method="HEAD",
        headers={"X-Auth-Token": token, "Tus-Resumable": "1.0.0"},
    )
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(request, timeout=10) as response:
            offset = int(response.headers["Upload-Offset"])
        if offset > 0 or time.monotonic() > deadline:
            return offset
        time.sleep(0.1)


def stored_uploads(page) -> list[dict]:
    """What tus-js-client keeps in localStorage to find an upload again."""
    return page.evaluate(
        "() => Object.keys(localStorage).filter(k => k.startsWith('tus::'))"
        ".map(k => JSON.parse(localStorage.getItem(k)))"
    )


def start(page, proxy: CutProxy) -> str:
    token = new_token()
    page.goto(proxy.url + "/")
    page.fill("#token", token)
    page.click("#token-use")
    page.locator("#files-section").wait_for()
    return token


def cut_mid_upload(page, proxy: CutProxy, path: Path) -> None:
    proxy.cut_after(CUT_AFTER)
    page.set_input_files("#picker", str(path))
    assert proxy.cut_done.wait(15), "the upload never reached the cut"


@pytest.mark.slow  # a few seconds: 8 MB through a proxy, a cut, a retry
def test_a_dropped_connection_resumes_by_itself_where_it_stopped(
    gateway_process, browser_page, proxy, big_file
):
    page = browser_page
    token = start(page, proxy)
    cut_mid_upload(page, proxy, big_file)
    row = page.locator('#uploads li[data-name="big.bin"]')
    # The page says what happened while the network is down, and keeps the upload.
    page.locator('#uploads li.retrying[data-name="big.bin"]').wait_for()
    assert "Connection lost" in row.locator(".detail").inner_text()
    [entry] = stored_uploads(page)
    offset = server_offset(gateway_process, token, entry["uploadUrl"])
    assert 0 < offset < SIZE  # what arrived before the cut is kept

    proxy.restore()
    page.locator('#uploads li.done[data-name="big.bin"]').wait_for()
    assert "resumed at" in row.locator(".detail").inner_text()
    assert stored(gateway_process, token, "big.bin") == big_file.read_bytes()
    # Resumed, not restarted: everything that went to the gateway, the cut attempt included,
    # is less than the cut attempt plus the whole file again.
    assert proxy.upstream_bytes < CUT_AFTER + SIZE
    assert stored_uploads(page) == []


@pytest.mark.slow
def test_after_a_reload_the_upload_is_offered_and_resumes_byte_exact(
    gateway_process, browser_page, proxy, big_file, tmp_path, s3, bucket
):
    page = browser_page
    token = start(page, proxy)
    cut_mid_upload(page, proxy, big_file)
    [entry] = stored_uploads(page)
    offset = server_offset(gateway_process, token, entry["uploadUrl"])  # once the cut PATCH committed
    assert 0 < offset < SIZE
    # Reloaded while the network is down (the browser shows its error page), then again once it is back.
    with pytest.raises(Exception, match="ERR_CONNECTION_REFUSED"):
        page.reload()
    page.wait_for_url("chrome-error://**")
    proxy.restore()
    page.reload()
    assert page.url == proxy.url + "/"

    # The page offers the unfinished upload, with how far the gateway got.
    offered = page.locator('#unfinished li[data-name="big.bin"]')
    offered.wait_for()
    page.wait_for_function(
        "() => / of 8.0 MB stored/.test(document.querySelector('#unfinished li .detail').textContent)"
    )
    assert stored_uploads(page) == [entry]
    assert offered.locator("progress").evaluate("bar => bar.value") == pytest.approx(offset / SIZE)

    # Another file cannot resume it.
    other = tmp_path / "other" / "big.bin"
    other.parent.mkdir()
    other.write_bytes(b"not the same file")
    offered.locator(".resume-file").set_input_files(str(other))
    assert "not the file this upload started with" in offered.locator(".detail").inner_text()

    # The same file resumes from the gateway's offset.
    sent_before = proxy.upstream_bytes
    offered.locator(".resume-file").set_input_files(str(big_file))
    row = page.locator('#uploads li.done[data-name="big.bin"]')
    row.wait_for()
    assert "resumed at" in row.locator(".detail").inner_text()
    assert proxy.upstream_bytes - sent_before < SIZE - offset + 10_000  # the rest, and a few requests' heads
    assert stored(gateway_process, token, "big.bin") == big_file.read_bytes()
    page.locator('#files tr[data-name="big.bin"]').wait_for()
    assert page.locator("#unfinished-box").is_hidden()
    assert stored_uploads(page) == []
    assert open_uploads(s3, bucket) == []
    # Of the upload's state only its info is left, saying "done" until it expires: no tail, no lock.
    assert [key.rsplit(".", 1)[1] for key in all_keys(s3, bucket) if key.startswith("uploads/")] == ["info"]


def put(base_url: str, token: str, name: str, body: bytes) -> None:
    request = urllib.request.Request(
        f"{base_url}/api/files/{name}", data=body, method="PUT", headers={"X-Auth-Token": token}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def usage_bar(page, base_url: str, token: str) -> str:
    """Sign in on the page at `base_url` and read the usage bar once it shows."""
    page.goto(base_url + "/")
    page.fill("#token", token)
    page.click("#token-use")
    page.locator("#usage").wait_for()
    return page.locator("#usage-text").inner_text()


def test_the_usage_bar_shows_what_is_stored_against_the_quota(s3_url, bucket, tmp_path, browser_page):
    """With USER_QUOTA the bar is a meter of GET /api/usage; a refusal hides it."""
    page = browser_page
    token = new_token()
    with run_gateway(s3_url, bucket, tmp_path, USER_QUOTA="1000000") as base_url:
        put(base_url, token, "a.bin", b"a" * 250_000)
        put(base_url, token, "b.bin", b"b" * 500_000)
        assert usage_bar(page, base_url, token) == "750 kB of 1.0 MB used (2 files)"
        assert page.locator("#usage-meter").evaluate("meter => meter.value") == pytest.approx(0.75)

        page.route("**/api/usage", lambda route: route.fulfill(status=503, json={"error": "busy"}))
        page.click("#refresh")
        page.locator("#usage").wait_for(state="hidden")


def test_the_usage_bar_without_a_quota_says_what_is_stored(gateway_process, browser_page):
    page = browser_page
    token = new_token()
    put(gateway_process, token, "one.bin", b"1" * 1500)
    assert usage_bar(page, gateway_process, token) == "1.5 kB in 1 file"
    assert page.locator("#usage-meter").is_hidden()


@pytest.mark.slow  # 200 MiB through Chromium, two gateway processes and a cut
def test_a_large_file_goes_in_parallel_uploads_through_two_processes_and_resumes_after_a_cut(
    s3_url, bucket, s3, tmp_path, browser_page
):
    """The page sends a file of PARALLEL_FROM or more as four partial uploads (tus
    concatenation), whichever gateway process each connection reaches, then joins them."""
    path = tmp_path / "large.bin"
    path.write_bytes(os.urandom(200 * 1024 * 1024))
    page = browser_page
    with (
        run_gateway(s3_url, bucket, tmp_path / "one") as one,
        run_gateway(s3_url, bucket, tmp_path / "two") as two,
        CutProxy(int(one.rsplit(":", 1)[1]), int(two.rsplit(":", 1)[1])) as proxy,
    ):
        token = start(page, proxy)
        proxy.cut_after(80 * 1024 * 1024)
        page.set_input_files("#picker", str(path))
        assert proxy.cut_done.wait(120), "the upload never reached the cut"
        time.sleep(1)
        proxy.restore()
        page.locator('#uploads li.done[data-name="large.bin"]').wait_for(timeout=300_000)
        assert "resumed at" in page.locator('#uploads li[data-name="large.bin"] .detail').inner_text()
        assert (
            hashlib.sha256(stored(one, token, "large.bin")).digest()
            == hashlib.sha256(path.read_bytes()).digest()
        )
        for workdir in (tmp_path / "one", tmp_path / "two"):  # each process took bytes of it
            log = (workdir / "gateway.log").read_text()
            assert " method=PATCH " in log, workdir
        assert stored_uploads(page) == []
    assert open_uploads(s3, bucket) == []
