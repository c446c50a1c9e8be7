"""`make run-dev`'s compose stack, checked through nginx: MinIO, gateway replicas, the proxy.

The tests run in this order on one stack, as an operator would use it: start,
serve, scale, stop pieces, `make stop-dev` last.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from .harness import (
    AUTH,
    CURL_STATUS,
    PROJECT,
    Checkout,
    MiB,
    Poller,
    curl,
    download_sha256,
    follow,
    random_file,
    replica_metrics,
    report,
    route_count,
    slow_upload,
    status_of,
    wait_until_serving,
)

pytestmark = pytest.mark.deploy

# What a container gets before SIGKILL when nothing else is said (docker and podman alike).
ENGINE_DEFAULT_STOP = 10
# A 20 MiB upload at 1 MiB/s lasts ~20 s: longer than ENGINE_DEFAULT_STOP, shorter than GRACEFUL_TIMEOUT.
SLOW_SIZE = 20 * MiB
# Start whatever is stopped, recreate nothing (whether `stop SERVICE` also stopped its dependents or not).
START = ("up", "--detach", "--no-recreate")


def _file_url(stack: Checkout, name: str) -> str:
    return f"{stack.url}/api/files/{urllib.parse.quote(name)}"


def _put(path: Path, url: str) -> str:
    return curl(*CURL_STATUS[1:], *AUTH, "--upload-file", str(path), url).stdout


def test_make_run_dev_returns_once_the_proxy_serves(stack: Checkout) -> None:
    """No 502 window at startup: from the moment `make run-dev` returns, every request is served."""
    statuses = collections.Counter(status for _, status in stack.after_start)
    assert sum(statuses.values()) > 20
    assert set(statuses) == {200}, f"the proxy's answers in the 5 s after make run-dev returned: {statuses}"


def test_every_service_is_healthy_and_gateways_run_gunicorn_as_pid_1_not_root(stack: Checkout) -> None:
    engine = stack.engine
    services = {service: engine.containers(service) for service in ("minio", "gateway", "proxy")}
    assert [len(services[s]) for s in ("minio", "gateway", "proxy")] == [1, 2, 1], services
    for names in services.values():
        for name in names:
            engine.wait_healthy(name, timeout=30)
    for name in services["gateway"]:
        command = engine("exec", name, "cat", "/proc/1/cmdline").split("\0")
        assert any(part.endswith("/gunicorn") for part in command[:2]), command
        assert engine("exec", name, "id", "-u").strip() != "0"
    report(f"healthy: {', '.join(name for names in services.values() for name in names)}")


def test_upload_list_download_delete_through_the_proxy_with_curl(stack: Checkout, tmp_path: Path) -> None:
    sha = random_file(tmp_path / "a.bin", 3 * MiB)
    url = _file_url(stack, "docs/a file.bin")
    assert _put(tmp_path / "a.bin", url) == "204"
    listing = json.loads(curl(*AUTH, f"{stack.url}/api/files").stdout)
    assert "docs/a file.bin" in listing
    assert curl(*AUTH, "-o", str(tmp_path / "back.bin"), url).returncode == 0
    assert hashlib.sha256((tmp_path / "back.bin").read_bytes()).hexdigest() == sha
    assert curl(*CURL_STATUS[1:], *AUTH, "-X", "DELETE", url).stdout == "204"
    gone = curl(*AUTH, "-w", "\n%{http_code}", url).stdout.rsplit("\n", 1)
    assert gone[1] == "404" and json.loads(gone[0])["error"]["code"] == "not_found"


def test_a_chunked_upload_streams_through_the_proxy(stack: Checkout, tmp_path: Path) -> None:
    sha = random_file(tmp_path / "c.bin", 20 * MiB)
    url = _file_url(stack, "chunked.bin")
    with (tmp_path / "c.bin").open("rb") as body:
        done = subprocess.run(
            ["curl", "-v", *CURL_STATUS[1:], *AUTH, "--upload-file", "-", url],
            stdin=body,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "Transfer-Encoding: chunked" in done.stderr
    assert done.stdout == "204", done.stderr[-2000:]
    assert download_sha256(url) == sha


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _temp_dirs(stack: Checkout, proxy: str) -> list[str]:
    """Where this nginx build writes request bodies and responses it buffers."""
    built = stack.engine("exec", proxy, "nginx", "-V", check=False)
    built += stack.engine("exec", proxy, "sh", "-c", "nginx -V 2>&1", check=False)
    paths = {
        option.split("=", 1)[1]
        for option in built.split()
        if option.startswith(("--http-client-body-temp-path=", "--http-proxy-temp-path="))
    }
    assert paths, built
    return sorted(paths)


def test_a_200_mib_upload_streams_through_nginx_in_bounded_memory(stack: Checkout, tmp_path: Path) -> None:
    """Neither nginx nor a gateway holds the body: no proxy temp file, memory far below 200 MiB."""
    engine = stack.engine
    [proxy] = engine.containers("proxy")
    workers = [pid for name in engine.containers("gateway") for pid in _children(engine.pid(name))]
    nginx_workers = _children(engine.pid(proxy))
    temp_dirs = _temp_dirs(stack, proxy)
    before = {}
    for pid in workers + nginx_workers:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM restarts from VmRSS
        before[pid] = _kib(pid, "VmRSS")
    sha = random_file(tmp_path / "big.bin", 200 * MiB)
    url = _file_url(stack, "big.bin")
    temp_files = []
    started = time.monotonic()
    upload = subprocess.Popen(
        [*CURL_STATUS, *AUTH, "--upload-file", str(tmp_path / "big.bin"), url],
        stdout=subprocess.PIPE,
        text=True,
    )
    while upload.poll() is None:
        found = engine("exec", proxy, "find", *temp_dirs, "-type", "f", check=False)
        temp_files += found.split()
        time.sleep(0.3)
    seconds = time.monotonic() - started
    assert upload.stdout.read() == "204"
    growth = {pid: (_kib(pid, "VmHWM") - before[pid]) / 1024 for pid in before}
    gateway_growth = max(growth[pid] for pid in workers)
    nginx_growth = max(growth[pid] for pid in nginx_workers)
    report(
        f"200 MiB upload through nginx: {200 / seconds:.0f} MiB/s, peak RSS growth: gateway worker "
        f"{gateway_growth:.0f} MiB, nginx worker {nginx_growth:.1f} MiB; nginx temp files: {len(temp_files)}"
    )
    assert temp_files == [], f"nginx buffered the upload to disk: {temp_files[:5]}"
    assert gateway_growth < 120, growth
    assert nginx_growth < 16, growth
    assert download_sha256(url) == sha


def test_replicas_restarted_or_added_are_followed_without_an_error_window(stack: Checkout) -> None:
    engine = stack.engine
    old = {engine.address(name) for name in engine.containers("gateway")}
    with Poller(stack.url + "/healthz") as poller:
        # Stopped and started again, each replica comes back with a new address.
        # (Removing them is not possible under podman-compose: the proxy's
        # container requires theirs.)
        stack.compose("stop", "gateway")
        stack.compose(*START)
        recreated = time.monotonic()
        names = engine.containers("gateway")
        for name in names:
            engine.wait_healthy(name)
        healthy = time.monotonic()
        time.sleep(5)  # past nginx's `valid=2s`: any address it kept would show now
    new = {engine.address(name) for name in names}
    # Fresh addresses: a proxy that kept the old ones has nowhere to send requests.
    assert len(new) == 2 and new.isdisjoint(old), (old, new)
    after = [(moment, status) for moment, status in poller.results if moment > recreated]
    served = [moment for moment, status in after if status == 200]
    assert served, f"nothing served through the proxy after the replicas restarted: {after[-5:]}"
    errors = collections.Counter(status for moment, status in after if moment > served[0] and status != 200)
    waiting = collections.Counter(status for moment, status in after if moment < served[0])
    later = len(after) - sum(waiting.values())
    report(
        f"replicas restarted: nginx served again {served[0] - recreated:.1f} s after `start` (all healthy "
        f"at {healthy - recreated:.1f} s; before that {dict(waiting)}), then {later} requests, "
        f"{sum(errors.values())} failed"
    )
    # At most one cached DNS answer (2 s) of stale addresses, 1 s of connect timeout each.
    assert served[0] < healthy + 5
    assert not errors, f"errors after the first answer from the new replicas: {errors}"

    # Scaled out: the third replica gets its share without touching the proxy.
    stack.make_vars["GATEWAY_REPLICAS"] = "3"
    stack.compose("up", "--detach", "--no-recreate")
    names = engine.containers("gateway")
    assert len(names) == 3
    for name in names:
        engine.wait_healthy(name)
    time.sleep(3)  # nginx asks DNS again
    route = "/api/openapi.json"
    before = {name: route_count(replica_metrics(engine, name), route) for name in names}
    statuses = collections.Counter(status_of(stack.url + route) for _ in range(60))
    assert statuses == {200: 60}
    served_by = {name: route_count(replica_metrics(engine, name), route) - before[name] for name in names}
    report(f"60 requests over 3 replicas: {sorted(served_by.values())}")
    assert all(count >= 3 for count in served_by.values()), served_by


# What a client may claim in the headers a proxy sets: nginx replaces them all.
FORGED = (
    *("-H", "X-Forwarded-For: 203.0.113.9", "-H", "X-Forwarded-Host: evil.example"),
    *("-H", "X-Forwarded-Proto: https", "-H", "Forwarded: for=203.0.113.9;host=evil.example;proto=https"),
)

ECHO = """
import http.server, json
class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"echo": dict(self.headers)}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("0.0.0.0", 8080), Echo).serve_forever()
"""


def test_the_proxy_passes_the_clients_host_port_scheme_and_address(stack: Checkout) -> None:
    """A container that joins as "gateway" gets requests, and sees what the client asked for."""
    engine = stack.engine
    [proxy] = engine.containers("proxy")
    [network] = engine.networks(proxy)
    image = engine.inspect(engine.containers("gateway")[0], "{{.Config.Image}}")
    echo = f"{PROJECT}-echo"
    engine("rm", "--force", echo, check=False)
    engine(
        *("run", "--detach", "--name", echo, "--network", network, "--network-alias", "gateway"),
        *(image, "python", "-c", ECHO),
    )
    try:
        seen = None
        deadline = time.monotonic() + 30
        while seen is None and time.monotonic() < deadline:
            reply = curl(*FORGED, f"{stack.url}/echo").stdout
            seen = json.loads(reply)["echo"] if reply.startswith('{"echo"') else time.sleep(0.1)
    finally:
        engine("rm", "--force", echo, check=False)
    assert seen, "nginx never sent a request to the new container named gateway"
    host = f"127.0.0.1:{stack.http_port}"
    assert (seen.get("Host"), seen.get("X-Forwarded-Host")) == (host, host), seen
    assert (seen.get("X-Forwarded-Port"), seen.get("X-Forwarded-Proto")) == (str(stack.http_port), "http"), (
        seen
    )
    # nginx is the edge: it says the address it saw, and drops what the client claimed.
    assert ipaddress.ip_address(seen.get("X-Forwarded-For", "-")), seen
    assert "Forwarded" not in seen, seen


def test_the_gateways_trust_nginx_for_links_and_the_client_address_and_nothing_the_client_forged(
    stack: Checkout,
) -> None:
    engine = stack.engine
    created = curl(
        *AUTH, *FORGED, "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Length: 3",
        "-H", "Upload-Metadata: filename YS50eHQ=", "-H", "X-Request-ID: deploy-forwarded-1",
        "-X", "POST", "-D", "-", "-o", "/dev/null", f"{stack.url}/api/uploads/",
    ).stdout  # fmt: skip
    location = next(
        line.split(":", 1)[1].strip() for line in created.splitlines() if line.lower().startswith("location:")
    )
    assert location.startswith(f"http://127.0.0.1:{stack.http_port}/api/uploads/"), created
    [proxy] = engine.containers("proxy")
    lines = [
        line
        for name in engine.containers("gateway")
        for line in engine.logs(name).splitlines()
        if "request_id=deploy-forwarded-1 " in line
    ]
    assert len(lines) == 1, lines
    client = lines[0].split(" client=", 1)[1].split()[0]
    report(f"request log through nginx: client={client} (nginx at {engine.address(proxy)})")
    assert ipaddress.ip_address(client) and client not in ("203.0.113.9", engine.address(proxy)), lines[0]


def test_share_links_are_valid_on_every_replica_and_name_the_clients_host_and_port(
    stack: Checkout, tmp_path: Path
) -> None:
    engine = stack.engine
    random_file(tmp_path / "s.bin", 100 * 1024)
    url = _file_url(stack, "shared.bin")
    assert _put(tmp_path / "s.bin", url) == "204"
    links = [json.loads(curl(*AUTH, "-X", "POST", url + "/share").stdout)["url"] for _ in range(8)]
    assert all(link.startswith(f"http://127.0.0.1:{stack.http_port}/s/") for link in links), links[0]
    named = json.loads(
        curl(*AUTH, "-H", f"Host: localhost:{stack.http_port}", "-X", "POST", url + "/share").stdout
    )
    assert named["url"].startswith(f"http://localhost:{stack.http_port}/s/"), named
    paths = [urllib.parse.urlsplit(link).path for link in links]
    fetch = (
        "import sys, urllib.request, urllib.error\n"
        "def get(path):\n"
        "    try:\n"
        "        return urllib.request.urlopen('http://127.0.0.1:8080' + path).status\n"
        "    except urllib.error.HTTPError as error:\n"
        "        return error.code\n"
        f"print(*[get(path) for path in {paths!r} * 2])"
    )
    by_replica = {name: engine.exec_python(name, fetch).split() for name in engine.containers("gateway")}
    for name, statuses in by_replica.items():
        assert set(statuses) == {"200"}, f"{name}: {collections.Counter(statuses)}"
    through_proxy = collections.Counter(status_of(link) for link in links * 2)
    assert through_proxy == {200: 16}, through_proxy
    report(f"share links: 8 links x {len(by_replica)} replicas x 2 workers' turns, all 200")


def _survives(stack: Checkout, tmp_path: Path, stop: list[str], what: str) -> None:
    sha = random_file(tmp_path / "slow.bin", SLOW_SIZE)
    url = _file_url(stack, f"slow-{what}.bin")
    with slow_upload(tmp_path / "slow.bin", url) as upload:
        time.sleep(3)
        started = time.monotonic()
        stack.compose(*stop, timeout=180)
        took = time.monotonic() - started
        status, errors = upload.communicate(timeout=120)
    report(f"upload in flight while {what} stopped: answered {status or 'nothing'}, stop took {took:.0f} s")
    assert status == "204", f"the upload was cut when {what} stopped ({took:.0f} s): {errors}"
    assert took > ENGINE_DEFAULT_STOP  # it waited for the upload, past the engine's default
    stack.compose(*START)
    wait_until_serving(stack.url + "/readyz")
    assert download_sha256(url) == sha


def test_an_upload_survives_stopping_the_proxy(stack: Checkout, tmp_path: Path) -> None:
    _survives(stack, tmp_path, ["stop", "proxy"], "the proxy")


def test_an_upload_survives_stopping_the_gateways(stack: Checkout, tmp_path: Path) -> None:
    _survives(stack, tmp_path, ["stop", "gateway"], "the gateways")


def test_make_logs_follows_every_service(stack: Checkout) -> None:
    command = ["make", "--no-print-directory", "logs", f"HTTP_PORT={stack.http_port}"]
    command += [f"{name}={value}" for name, value in stack.make_vars.items()]
    output = follow(command, stack.path, stack.environment(), seconds=8)
    assert "Booting worker" in output  # gunicorn, in each replica
    assert '"GET /healthz HTTP/1.1" 200' in output  # nginx's access log
    assert "9000" in output  # MinIO (or its stand-in) says where S3 listens


def test_stop_dev_lets_an_upload_finish_and_keeps_the_files(stack: Checkout, tmp_path: Path) -> None:
    engine = stack.engine
    kept = random_file(tmp_path / "kept.bin", MiB)
    kept_url = _file_url(stack, "kept.bin")
    assert _put(tmp_path / "kept.bin", kept_url) == "204"
    sha = random_file(tmp_path / "slow.bin", SLOW_SIZE)
    url = _file_url(stack, "slow-stop-dev.bin")
    with slow_upload(tmp_path / "slow.bin", url) as upload:
        time.sleep(3)
        started = time.monotonic()
        stack.make("stop-dev", timeout=300)
        took = time.monotonic() - started
        status, errors = upload.communicate(timeout=120)
    report(
        f"upload in flight during make stop-dev: answered {status or 'nothing'}, stop-dev took {took:.0f} s"
    )
    assert status == "204", f"make stop-dev cut the upload ({took:.0f} s): {errors}"
    assert engine.containers("gateway") == engine.containers("proxy") == engine.containers("minio") == []
    volumes = engine("volume", "ls", "--format", "{{.Name}}").split()
    assert any(name.startswith(PROJECT) and name.endswith("minio-data") for name in volumes), volumes
    started = time.monotonic()
    stack.make("run-dev")
    report(f"make run-dev again (image built already): {time.monotonic() - started:.0f} s")
    assert download_sha256(kept_url) == kept
    assert download_sha256(url) == sha
