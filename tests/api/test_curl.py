"""The seed's curl examples, run verbatim (but for the port) against `python -m file_uploader`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import pytest

TOKEN = "18ce71ad-1391-46c7-91de-56948fda0d8a"


def curl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["curl", "-sS", *args], input=stdin, capture_output=True, timeout=60, check=False)


def sh(command: str, cwd: Path) -> str:
    return subprocess.run(
        command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=60, check=True
    ).stdout


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "bash").write_bytes(Path("/bin/bash").read_bytes())
    (tmp_path / ".bash_profile").write_text("export PATH=$HOME/bin:$PATH\n")
    (tmp_path / "file1").write_bytes(b"file one\n")
    return tmp_path


def test_seed_examples_upload_list_and_delete(gateway_process, files):
    base = gateway_process.replace("http://127.0.0.1:", "http://localhost:")
    header = f'-H "X-Auth-Token: {TOKEN}"'
    for command in [
        f"curl {header} --upload-file bash {base}/api/files/bash",
        f"curl {header} --upload-file .bash_profile {base}/api/files/bash_profile",
        f"curl {header} --upload-file file1 {base}/api/files/file1",
    ]:
        assert sh(command, files) == ""  # 204: no body
    assert sh(f"curl {header} {base}/api/files", files) == '["bash", "bash_profile", "file1"]'
    assert sh(f"curl {header} -X DELETE {base}/api/files/bash_profile", files) == ""
    assert json.loads(sh(f"curl {header} {base}/api/files", files)) == ["bash", "file1"]


def test_curl_download_is_byte_exact(gateway_process, files):
    auth = f"X-Auth-Token: {TOKEN}"
    assert (
        curl(
            "-f", "-H", auth, "--upload-file", str(files / "bash"), f"{gateway_process}/api/files/bin/bash"
        ).returncode
        == 0
    )
    result = curl("-f", "-H", auth, f"{gateway_process}/api/files/bin/bash")
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256((files / "bash").read_bytes()).digest()


def test_curl_upload_from_a_pipe_is_chunked_and_stored(gateway_process, tmp_path):
    data = bytes(range(256)) * 50_000  # 12.8 MB: several parts
    result = curl(
        "-f",
        "-v",
        "-H",
        f"X-Auth-Token: {TOKEN}",
        "--upload-file",
        "-",
        f"{gateway_process}/api/files/piped",
        stdin=data,
    )
    assert result.returncode == 0, result.stderr
    assert b"Transfer-Encoding: chunked" in result.stderr
    result = curl("-f", "-H", f"X-Auth-Token: {TOKEN}", f"{gateway_process}/api/files/piped")
    assert result.stdout == data


def test_curl_with_a_bad_token_sends_no_body(gateway_process, tmp_path):
    """A 1 GiB upload with a bad token: curl asks with Expect: 100-continue and is refused at once."""
    big = tmp_path / "big"
    with big.open("wb") as file:
        file.truncate(1024**3)  # sparse: costs no disk
    result = curl(
        "-H",
        "X-Auth-Token: nope",
        "--upload-file",
        str(big),
        "-w",
        "\n%{http_code} %{size_upload}",
        f"{gateway_process}/api/files/big",
    )
    body, status_and_sent = result.stdout.rsplit(b"\n", 1)
    status, sent = status_and_sent.split()
    assert status == b"401"
    assert int(sent) == 0
    assert json.loads(body)["error"]["code"] == "invalid_token"


def test_curl_sees_json_errors(gateway_process):
    auth = f"X-Auth-Token: {TOKEN}"
    result = curl("-H", auth, "-w", " %{http_code}", f"{gateway_process}/api/files/missing")
    body, status = result.stdout.rsplit(b" ", 1)
    assert status == b"404" and json.loads(body)["error"]["code"] == "not_found"
    result = curl(
        "--path-as-is",
        "-H",
        auth,
        "-w",
        " %{http_code}",
        "-X",
        "PUT",
        "--data-binary",
        "x",
        f"{gateway_process}/api/files/a/../../b",
    )
    body, status = result.stdout.rsplit(b" ", 1)
    assert status == b"400" and json.loads(body)["error"]["code"] == "invalid_name"


def test_the_token_is_not_in_the_gateway_log(gateway_process, tmp_path):
    curl("-H", f"X-Auth-Token: {TOKEN}", f"{gateway_process}/api/files")
    log_file = tmp_path / "gateway.log"
    deadline = time.monotonic() + 10
    # The access log line is written just after the response has gone out.
    while "/api/files" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = log_file.read_text()
    assert "/api/files" in log  # the request log line is there
    assert TOKEN not in log
