"""CORS in Chromium: tus-js-client on a page from another origin uploads, and resumes after the network drops.

The page is served by a plain HTTP server on its own port (another origin
than the gateway's), and loads tus-js-client, the file the gateway's own page
vendors (api/static/vendor/tus.min.js, from npm). It reaches the gateway
process through tests/cutproxy.py, which drops the connection mid-upload.
Everything a script needs is then read across origins: the preflights without
a token, `Location` after the creation, `Upload-Offset` on the HEAD before the
resume. test_cors.py checks the headers themselves.
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..cutproxy import CutProxy
from ..helpers import ROOT, all_keys, free_port, new_token

VENDORED = ROOT / "file_uploader" / "api" / "static" / "vendor" / "tus.min.js"
SIZE = 8_000_000
CUT_AFTER = 3_000_000

# The other site's page: one file input, and tus-js-client driven from the test.
# state.responses records what the script could read of each answer.
PAGE = """<!doctype html>
<meta charset="utf-8">
<title>another site</title>
<script src="tus.min.js"></script>
<input type="file" id="file">
<script>
window.state = null;
window.upload = (endpoint, token, retryDelays) => {
  const file = document.getElementById("file").files[0];
  const state = window.state = { responses: [], retries: [], done: false, error: null };
  const upload = new tus.Upload(file, {
    endpoint,
    headers: { "X-Auth-Token": token },
    metadata: { filename: file.name, filetype: file.type },
    retryDelays,
    onAfterResponse: (request, response) => {
      state.responses.push({
        method: request.getMethod(),
        status: response.getStatus(),
        offset: response.getHeader("Upload-Offset"),
        location: response.getHeader("Location"),
        requestId: response.getHeader("X-Request-ID"),
      });
    },
    onShouldRetry: (error, attempt, options) => {
      state.retries.push(String(error));
      return tus.defaultOptions.onShouldRetry(error, attempt, options);
    },
    onSuccess: () => { state.done = true; },
    onError: (error) => { state.error = String(error); },
  });
  upload.start();
};
</script>
"""


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The other site, at http://127.0.0.1:<its port>; the only origin in the gateway's CORS_ORIGINS.

    Requested before gateway_process, which reads CORS_ORIGINS from the environment.
    """
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text(PAGE)
    shutil.copy(VENDORED, root / "tus.min.js")
    handler = functools.partial(QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("CORS_ORIGINS", url)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy(site, gateway_process) -> Iterator[CutProxy]:
    with CutProxy(int(gateway_process.rsplit(":", 1)[1])) as cut:
        yield cut


def stored(base_url: str, token: str, name: str) -> bytes:
    request = urllib.request.Request(f"{base_url}/api/files/{name}", headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def upload(page, path: Path, endpoint: str, token: str, retry_delays: list[int] | None) -> None:
    page.set_input_files("#file", str(path))
    page.evaluate("([e, t, r]) => upload(e, t, r)", [endpoint, token, retry_delays])


def finished(page) -> dict:
    page.wait_for_function("() => state.done || state.error")
    return page.evaluate("() => state")


@pytest.mark.slow  # a few seconds: two uploads, one of 8 MB cut and resumed
def test_tus_js_client_on_another_origin_uploads_then_resumes_after_the_network_drops(
    site, gateway_process, browser_page, proxy, tmp_path
):
    page = browser_page
    token = new_token()
    endpoint = proxy.url + "/api/uploads/"
    page.goto(site + "/index.html")
    assert page.evaluate("() => typeof tus.Upload") == "function"

    # An upload: the creation's Location and the request id are readable across origins.
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(100_000))
    upload(page, small, endpoint, token, None)
    state = finished(page)
    assert state["error"] is None and state["done"]
    post = state["responses"][0]
    assert (post["method"], post["status"]) == ("POST", 201)
    assert post["location"].startswith(endpoint) and post["requestId"]
    assert stored(gateway_process, token, "small.bin") == small.read_bytes()

    # The network drops mid-upload; tus-js-client retries, and once it is back,
    # reads Upload-Offset from a HEAD and sends only the rest.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(SIZE))
    proxy.cut_after(CUT_AFTER)
    upload(page, big, endpoint, token, [0, 500, 1000, 2000, 4000])
    assert proxy.cut_done.wait(15), "the upload never reached the cut"
    page.wait_for_function("() => state.retries.length > 0")  # it saw the network go
    proxy.restore()
    state = finished(page)
    assert state["error"] is None and state["done"], state
    heads = [r for r in state["responses"] if r["method"] == "HEAD" and r["status"] == 200]
    assert heads, state["responses"]
    resumed_at = int(heads[-1]["offset"])
    assert 0 < resumed_at < SIZE
    last = state["responses"][-1]
    assert (last["method"], last["status"], last["offset"]) == ("PATCH", 204, str(SIZE))
    assert stored(gateway_process, token, "big.bin") == big.read_bytes()
    assert proxy.upstream_bytes < 100_000 + CUT_AFTER + SIZE  # resumed, not sent again from 0


def test_a_page_from_an_origin_not_listed_cannot_upload(
    site, gateway_process, browser_page, tmp_path, s3, bucket
):
    """http://localhost:<port> is another origin than http://127.0.0.1:<port>: its preflight is refused."""
    page = browser_page
    page.goto(site.replace("127.0.0.1", "localhost") + "/index.html")
    path = tmp_path / "refused.bin"
    path.write_bytes(b"refused")
    upload(page, path, gateway_process + "/api/uploads/", new_token(), None)
    state = finished(page)
    assert state["error"] and not state["done"] and state["responses"] == []
    assert all_keys(s3, bucket) == []
    # The gateway saw the preflight, refused it, and saw nothing else from this page.
    log = (tmp_path / "gateway.log").read_text()
    assert "method=OPTIONS route=/api/uploads/ status=403" in log
    assert "method=POST" not in log
