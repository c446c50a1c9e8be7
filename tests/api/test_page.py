"""The web page in a real browser: headless Chromium driven by Playwright against a gateway process."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from ..helpers import ROOT, new_token

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
# The switches Debian's chromium needs to run headless as root in a container,
# and to keep it from phoning home during a test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no browser at /usr/bin/chromium: `apt-get install chromium` (.ci/run does it in CI)",
)


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def listed_names(base_url: str, token: str) -> list[str]:
    request = urllib.request.Request(f"{base_url}/api/files", headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_upload_list_download_and_delete_through_the_page(gateway_process, browser_page, tmp_path):
    page = browser_page
    token = new_token()
    first = os.urandom(300_000)
    second = b"second file\n" * 1000  # 12,000 bytes

    page.goto(gateway_process + "/")
    assert "only key to your files" in page.locator(".warning").inner_text()
    page.fill("#token", token)
    page.click("#token-use")
    page.set_input_files(
        "#picker",
        [
            {"name": "photo one.bin", "mimeType": "application/octet-stream", "buffer": first},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": second},
        ],
    )

    # Each upload has its own row, finished with a progress bar full.
    page.wait_for_selector('#uploads li.done[data-name="photo one.bin"]')
    page.wait_for_selector('#uploads li.done[data-name="notes.txt"]')
    rows = page.locator("#files tbody tr")
    rows.nth(1).wait_for()
    assert rows.count() == 2
    assert page.locator('#files tr[data-name="photo one.bin"]').get_attribute("data-size") == "300000"
    assert page.locator('#files tr[data-name="photo one.bin"] .size').inner_text() == "300 kB"
    assert page.locator('#files tr[data-name="notes.txt"] .size').inner_text() == "12 kB"
    assert sorted(listed_names(gateway_process, token)) == ["notes.txt", "photo one.bin"]

    # Size and date sort largest / newest first; a second click reverses.
    page.click('button.sort[data-key="size"]')
    assert rows.nth(0).get_attribute("data-name") == "photo one.bin"
    page.click('button.sort[data-key="size"]')
    assert rows.nth(0).get_attribute("data-name") == "notes.txt"
    page.click('button.sort[data-key="name"]')
    page.click('button.sort[data-key="name"]')
    assert rows.nth(0).get_attribute("data-name") == "photo one.bin"
    page.click('button.sort[data-key="name"]')
    assert rows.nth(0).get_attribute("data-name") == "notes.txt"

    with page.expect_download() as download_info:
        page.click('#files tr[data-name="photo one.bin"] button.download')
    download = download_info.value
    assert download.suggested_filename == "photo one.bin"
    saved = tmp_path / "downloaded.bin"
    download.save_as(saved)
    assert saved.read_bytes() == first

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.click('#files tr[data-name="notes.txt"] button.delete')
    page.locator('#files tr[data-name="notes.txt"]').wait_for(state="detached")
    assert listed_names(gateway_process, token) == ["photo one.bin"]

    # The token survives a reload: it is kept in the browser.
    page.reload()
    page.locator('#files tr[data-name="photo one.bin"]').wait_for()
    assert page.input_value("#token") == token


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """MAX_FILE_SIZE for a gateway_process requested after this fixture."""
    monkeypatch.setenv("MAX_FILE_SIZE", "1000")
    return 1000


def test_refusals_are_explained_and_a_dismissed_delete_keeps_the_file(
    small_limit, gateway_process, browser_page
):
    page = browser_page
    page.goto(gateway_process + "/")
    page.fill("#token", "not a uuid")
    page.click("#token-use")
    assert "looks like" in page.locator("#token-status").inner_text()
    assert page.locator("#upload-section").is_hidden()

    token = new_token()
    page.fill("#token", token)
    page.click("#token-use")
    page.set_input_files("#picker", [{"name": "keep.txt", "mimeType": "text/plain", "buffer": b"keep"}])
    page.locator('#files tr[data-name="keep.txt"]').wait_for()
    page.set_input_files("#picker", [{"name": "big.bin", "mimeType": "text/plain", "buffer": b"x" * 5000}])
    failed = page.locator('#uploads li.failed[data-name="big.bin"] .detail')
    assert "too big for this server" in failed.inner_text()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click('#files tr[data-name="keep.txt"] button.delete')
    page.click("#refresh")
    page.locator('#files tr[data-name="keep.txt"]').wait_for()
    assert listed_names(gateway_process, token) == ["keep.txt"]


def test_a_cancelled_upload_stores_nothing(gateway_process, browser_page):
    page = browser_page
    token = new_token()
    page.goto(gateway_process + "/")
    page.fill("#token", token)
    page.click("#token-use")
    # Throttle uploads to 100 kB/s so there is time to press Cancel mid-way.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 100_000},
    )
    slow = {"name": "slow.bin", "mimeType": "text/plain", "buffer": b"x" * 2_000_000}
    page.set_input_files("#picker", [slow])
    row = page.locator('#uploads li[data-name="slow.bin"]')
    page.wait_for_function(
        "() => / of 2.0 MB · /.test(document.querySelector('#uploads li .detail').textContent)"
    )
    row.locator(".cancel").click()
    # XMLHttpRequest fires "abort" only for a request still in flight.
    assert "Cancelled" in row.locator(".detail").inner_text()
    assert row.locator("progress").evaluate("bar => bar.value") < 1
    assert listed_names(gateway_process, token) == []


def test_the_share_button_shows_a_working_link(gateway_process, browser_page):
    page = browser_page
    token = new_token()
    page.goto(gateway_process + "/")
    page.fill("#token", token)
    page.click("#token-use")
    page.set_input_files("#picker", [{"name": "shared.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.locator('#files tr[data-name="shared.txt"]').wait_for()
    page.click('#files tr[data-name="shared.txt"] button.share')
    page.wait_for_selector("#share-box:not([hidden])")
    url = page.input_value("#share-url")
    assert "/s/" in url and token not in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"hello"
