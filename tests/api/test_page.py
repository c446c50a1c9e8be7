"""The web page in a real browser: headless Chromium driven by Playwright against a gateway process."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import zipfile

import pytest

from ..helpers import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    NO_CHROMIUM,
    all_keys,
    csp_violations,
    new_token,
    open_uploads,
)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)


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


def test_a_cancelled_upload_stores_nothing_and_leaves_nothing_open(gateway_process, browser_page, s3, bucket):
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
    # Progress shows the bytes, the speed and the time left.
    page.wait_for_function(
        "() => / of 2.0 MB · .*B\\/s · .* left/"
        ".test(document.querySelector('#uploads li .detail').textContent)"
    )
    row.locator(".cancel").click()
    # Cancel terminates the tus upload on the server (DELETE), then says so.
    row.locator(".detail", has_text="Cancelled").wait_for()
    assert "Nothing was stored" in row.locator(".detail").inner_text()
    assert row.locator("progress").evaluate("bar => bar.value") < 1
    assert listed_names(gateway_process, token) == []
    assert open_uploads(s3, bucket) == [] and all_keys(s3, bucket) == []
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('tus::'))") == []


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


def api_put(base_url: str, token: str, name: str, data: bytes, public: bool = False) -> None:
    headers = {"X-Auth-Token": token, **({"X-Public": "true"} if public else {})}
    request = urllib.request.Request(f"{base_url}/api/files/{name}", data=data, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204


def png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def test_folders_thumbnails_the_viewer_and_the_public_library_under_a_strict_csp(
    gateway_process, browser_page
):
    page = browser_page
    token = new_token()
    api_put(gateway_process, token, "photos/cat.png", png(400, 200))
    api_put(gateway_process, token, "photos/2024/notes.txt", b"notes")
    api_put(gateway_process, token, "top.txt", b"top")
    violations = csp_violations(page)

    response = page.goto(gateway_process + "/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "blob:" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    page.fill("#token", token)
    page.click("#token-use")

    # The top level shows the folder and the file beside it; a folder opens with a click.
    page.locator('#files tr.folder[data-folder="photos/"]').wait_for()
    page.locator('#files tr[data-name="top.txt"]').wait_for()
    page.click('#files tr.folder[data-folder="photos/"] button.open')
    page.locator('#files tr[data-name="photos/cat.png"]').wait_for()
    assert page.locator('#files tr.folder[data-folder="photos/2024/"]').count() == 1
    assert page.locator("#crumbs button").all_inner_texts() == ["All files", "photos"]

    # The image's thumbnail is fetched with the token and shown from a blob: URL.
    thumb = page.locator('#files tr[data-name="photos/cat.png"] td.thumb img')
    thumb.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('td.thumb img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert thumb.get_attribute("src").startswith("blob:")
    assert thumb.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 32]
    thumb.click()
    page.wait_for_function("() => document.querySelector('#viewer').open")
    page.wait_for_function("() => document.querySelector('#viewer-image').naturalWidth === 400")
    page.click("#viewer-close")

    # Made public from the list: the public library (no token) shows it with its thumbnail.
    page.check('#files tr[data-name="photos/cat.png"] input.public-toggle')
    item = page.locator('#library li[data-name="cat.png"] img')
    item.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('#library img'); return i.naturalWidth > 0; }"
    )
    assert token not in page.locator("#library").inner_html()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-folders.png"), full_page=True)

    # The breadcrumb goes back up; a folder is deleted after a confirmation.
    page.click('#crumbs button[data-folder=""]')
    page.locator('#files tr[data-name="top.txt"]').wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('#files tr.folder[data-folder="photos/"] button.delete-folder')
    page.locator('#files tr.folder[data-folder="photos/"]').wait_for(state="detached")
    assert listed_names(gateway_process, token) == ["top.txt"]
    page.click("#library-refresh")
    page.locator("#library li").first.wait_for(state="detached")
    assert violations == []


@pytest.mark.browser
def test_the_plain_form_uploads_without_javascript(gateway_process, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    token = new_token()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(java_script_enabled=False).new_page()
            page.set_default_timeout(15_000)
            page.goto(gateway_process + "/")
            assert page.locator("#upload-section").is_hidden()  # the script's page stays hidden
            page.fill("#plain-token", token)
            page.check('#plain-upload input[name="public"]')
            page.set_input_files(
                "#plain-files",
                [
                    {"name": "first.txt", "mimeType": "text/plain", "buffer": b"one"},
                    {
                        "name": "second.bin",
                        "mimeType": "application/octet-stream",
                        "buffer": os.urandom(50_000),
                    },
                ],
            )
            page.click("#plain-submit")
            page.locator("#results").wait_for()
            assert "Stored 2 of 2 files" in page.content()
        finally:
            browser.close()
    assert sorted(listed_names(gateway_process, token)) == ["first.txt", "second.bin"]
    with urllib.request.urlopen(f"{gateway_process}/api/public", timeout=10) as response:
        assert sorted(item["name"] for item in json.load(response)["files"]) == ["first.txt", "second.bin"]


def test_the_page_shares_with_limits_lists_and_revokes_links_zips_a_folder_and_makes_requests(
    gateway_process, browser_page, tmp_path
):
    page = browser_page
    token = new_token()
    page.goto(gateway_process + "/")
    page.fill("#token", token)
    page.click("#token-use")
    page.select_option("#upload-expires", "86400")
    page.set_input_files(
        "#picker",
        [
            {"name": "a.txt", "mimeType": "text/plain", "buffer": b"alpha"},
            {"name": "b.txt", "mimeType": "text/plain", "buffer": b"bravo"},
        ],
    )
    page.locator('#files tr[data-name="a.txt"]').wait_for()
    page.locator('#files tr[data-name="b.txt"]').wait_for()
    # The expiry chosen at upload went with the file (tus metadata).
    patch = urllib.request.Request(
        f"{gateway_process}/api/files/a.txt",
        data=json.dumps({"public": False}).encode(),
        headers={"X-Auth-Token": token, "Content-Type": "application/json"},
        method="PATCH",
    )
    with urllib.request.urlopen(patch, timeout=10) as response:
        assert json.load(response)["expires_at"]
    # A link with a password and one download: listed with its count, then revoked.
    page.click("#share-options summary")
    page.fill("#share-password", "s3cret")
    page.fill("#share-max", "1")
    page.click('#files tr[data-name="a.txt"] button.share')
    page.wait_for_selector("#share-box:not([hidden])")
    url = page.input_value("#share-url")
    item = page.locator("#links li").first
    item.wait_for()
    assert "0 of 1 downloads" in item.inner_text() and "password" in item.inner_text()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    item.locator("button.revoke").click()
    page.locator("#links-empty:not([hidden])").wait_for()
    # A folder downloads as one zip.
    move = urllib.request.Request(
        f"{gateway_process}/api/files/docs/c.txt",
        data=b"charlie",
        headers={"X-Auth-Token": token},
        method="PUT",
    )
    urllib.request.urlopen(move, timeout=10).close()
    page.click("#refresh")
    with page.expect_download() as download:
        page.click('#files tr[data-folder="docs/"] button.zip')
    saved = tmp_path / "docs.zip"
    download.value.save_as(saved)
    assert zipfile.ZipFile(saved).read("docs/c.txt") == b"charlie"
    # An upload request for the open folder: its URL takes a file.
    page.click('#files tr[data-folder="docs/"] button.open')
    page.click("#request-new")
    page.wait_for_selector("#request-box:not([hidden])")
    request_url = page.input_value("#request-url")
    sent = urllib.request.Request(f"{request_url}/d.txt", data=b"delta", method="PUT")
    with urllib.request.urlopen(sent, timeout=10) as response:
        assert response.status == 204
    assert "docs/d.txt" in listed_names(gateway_process, token)
