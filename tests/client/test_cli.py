"""The command-line client and the purge command, run as processes against a real gateway."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import pytest

from file_uploader.client.cli import build_parser
from file_uploader.sizes import MiB

from ..faultproxy import Fault
from ..helpers import ROOT, free_port, new_token, run_gateway
from ..processes.test_hostile import proxy_in_a_thread

pytestmark = pytest.mark.process


def cli(
    *args: str, url: str, token: str | None, cwd=None, bearer: str | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "FILE_UPLOADER_URL": url, "COLUMNS": "120", "PYTHONPATH": str(ROOT)}
    env.pop("FILE_UPLOADER_TOKEN", None)
    env.pop("FILE_UPLOADER_BEARER", None)
    if token:
        env["FILE_UPLOADER_TOKEN"] = token
    if bearer:
        env["FILE_UPLOADER_BEARER"] = bearer
    return subprocess.run(
        [sys.executable, "-m", "file_uploader.client", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_token_prints_a_new_uuid():
    first = cli("token", url="http://unused", token=None)
    second = cli("token", url="http://unused", token=None)
    assert first.returncode == 0
    assert uuid.UUID(first.stdout.strip()) != uuid.UUID(second.stdout.strip())


def test_an_id_made_before_ids_lost_their_leading_dash_goes_after_a_double_dash():
    parser = build_parser()
    assert parser.parse_args(["revoke", "--", "-ZkqVA5LGU7aLGsrp_SMCg"]).ids == ["-ZkqVA5LGU7aLGsrp_SMCg"]
    assert parser.parse_args(["end-request", "--", "-Zk", "AbC"]).ids == ["-Zk", "AbC"]


def test_put_ls_get_rm_round_trip(gateway_process, tmp_path):
    token = new_token()
    small = tmp_path / "notes.txt"
    small.write_bytes(b"hello world\n")
    big = tmp_path / "photo.jpg"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))

    put = cli("put", str(small), str(big), url=gateway_process, token=token)
    assert put.returncode == 0, put.stderr
    assert "photo.jpg" in put.stderr  # the progress bars go to stderr

    listing = cli("ls", url=gateway_process, token=token)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["name", "size", "modified"]
    assert [row[:3] for row in rows[1:]] == [["notes.txt", "12", "bytes"], ["photo.jpg", "3.1", "MB"]]

    out = tmp_path / "copy.jpg"
    got = cli("get", "photo.jpg", "-o", str(out), url=gateway_process, token=token)
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == big.read_bytes()
    assert not (tmp_path / "copy.jpg.part").exists()

    stdout_get = ["get", "notes.txt", "-o", "-"]
    to_stdout = subprocess.run(
        [
            sys.executable,
            "-m",
            "file_uploader.client",
            "--url",
            gateway_process,
            "--token",
            token,
            *stdout_get,
        ],
        capture_output=True,
        timeout=60,
    )
    assert to_stdout.stdout == b"hello world\n"

    removed = cli("rm", "notes.txt", "photo.jpg", url=gateway_process, token=token)
    assert removed.returncode == 0, removed.stderr
    assert cli("ls", url=gateway_process, token=token).stdout.splitlines()[1:] == []


def test_put_as_stores_under_another_name_with_options_instead_of_env(gateway_process, tmp_path):
    token = new_token()
    source = tmp_path / "local.bin"
    source.write_bytes(b"\x00\x01")
    args = ("--url", gateway_process, "--token", token)
    put = cli(*args, "put", str(source), "--as", "dir/remote name.bin", url="http://unused", token=None)
    assert put.returncode == 0, put.stderr
    got = cli(*args, "get", "dir/remote name.bin", url="http://unused", token=None, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "remote name.bin").read_bytes() == b"\x00\x01"


def test_share_prints_a_link_that_works_without_a_token(gateway_process, tmp_path):
    token = new_token()
    source = tmp_path / "shared.txt"
    source.write_bytes(b"for a colleague")
    assert cli("put", str(source), url=gateway_process, token=token).returncode == 0
    shared = cli("share", "shared.txt", "--expires", "10m", url=gateway_process, token=token)
    assert shared.returncode == 0, shared.stderr
    link = shared.stdout.strip()
    assert "/s/" in link and token not in link
    with urllib.request.urlopen(link, timeout=10) as response:
        assert response.read() == b"for a colleague"


def test_links_are_made_with_limits_listed_and_revoked(gateway_process, tmp_path):
    token = new_token()
    source = tmp_path / "limited.txt"
    source.write_bytes(b"twice")
    assert cli("put", str(source), url=gateway_process, token=token).returncode == 0
    shared = cli(
        "share", "limited.txt", "--max-downloads", "2", "--password", "pw", url=gateway_process, token=token
    )
    assert shared.returncode == 0, shared.stderr
    link = shared.stdout.strip()
    request = urllib.request.Request(
        link, headers={"Authorization": "Basic " + base64.b64encode(b":pw").decode()}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == b"twice"
    listed = cli("links", url=gateway_process, token=token)
    assert listed.returncode == 0, listed.stderr
    link_id, used, *_ = listed.stdout.split("\t")
    assert used == "1/2" and link.endswith(link_id)
    assert cli("revoke", link_id, url=gateway_process, token=token).returncode == 0
    assert cli("links", url=gateway_process, token=token).stdout == ""


def test_expiry_upload_requests_and_folder_zips_from_the_command_line(gateway_process, tmp_path):
    token = new_token()
    source = tmp_path / "note.txt"
    source.write_bytes(b"note")
    assert cli("put", str(source), "--as", "docs/note.txt", url=gateway_process, token=token).returncode == 0
    expired = cli("expire", "docs/note.txt", "1h", url=gateway_process, token=token)
    assert expired.returncode == 0 and "expires 20" in expired.stderr, expired.stderr
    kept = cli("expire", "docs/note.txt", "never", url=gateway_process, token=token)
    assert kept.returncode == 0 and "expires never" in kept.stderr
    zipped = cli("get", "docs/", url=gateway_process, token=token, cwd=tmp_path)
    assert zipped.returncode == 0, zipped.stderr
    assert zipfile.ZipFile(tmp_path / "docs.zip").read("docs/note.txt") == b"note"
    made = cli("request", "inbox", "--max-files", "1", url=gateway_process, token=token)
    assert made.returncode == 0, made.stderr
    upload = urllib.request.Request(made.stdout.strip() + "/sent.txt", data=b"sent", method="PUT")
    with urllib.request.urlopen(upload, timeout=10) as response:
        assert response.status == 204
    listed = cli("requests", url=gateway_process, token=token)
    request_id, files, *_ = listed.stdout.split("\t")
    assert files == "1/1"
    assert cli("end-request", request_id, url=gateway_process, token=token).returncode == 0
    assert cli("requests", url=gateway_process, token=token).stdout == ""


def test_errors_are_one_line_and_a_failing_status(gateway_process, tmp_path):
    token = new_token()
    missing = cli("rm", "nothing-here", url=gateway_process, token=token)
    assert missing.returncode == 1
    assert "nothing-here" in missing.stderr and "404" in missing.stderr
    no_token = cli("ls", url=gateway_process, token=None)
    assert no_token.returncode == 1 and "FILE_UPLOADER_TOKEN" in no_token.stderr
    bad_token = cli("ls", url=gateway_process, token="not-a-uuid")
    assert bad_token.returncode == 1 and "must be a UUID" in bad_token.stderr
    down = cli("ls", url=f"http://127.0.0.1:{free_port()}", token=token)
    assert down.returncode == 1 and "cannot reach" in down.stderr
    assert "Traceback" not in missing.stderr + no_token.stderr + bad_token.stderr + down.stderr


def test_ls_folder_shows_one_level_and_rm_r_removes_a_folder(gateway_process, tmp_path):
    token = new_token()
    source = tmp_path / "x.txt"
    source.write_bytes(b"x")
    for name in ["photos/a.jpg", "photos/2024/b.jpg", "photos/2024/c.jpg", "top.txt"]:
        assert cli("put", str(source), "--as", name, url=gateway_process, token=token).returncode == 0

    listing = cli("ls", "photos", url=gateway_process, token=token)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["photos/2024/", "photos/a.jpg"]

    removed = cli("rm", "-r", "photos/2024", "top.txt", url=gateway_process, token=token)
    assert removed.returncode == 0, removed.stderr
    assert "deleted photos/2024/ (2 files" in removed.stderr and "deleted top.txt" in removed.stderr
    remaining = cli("ls", url=gateway_process, token=token).stdout.splitlines()[1:]
    assert [line.split()[0] for line in remaining] == ["photos/a.jpg"]
    assert cli("rm", "-r", "nothing/", url=gateway_process, token=token).returncode == 1


def test_usage_prints_what_is_stored_against_the_quota(s3_url, bucket, tmp_path):
    token = new_token()
    with run_gateway(s3_url, bucket, tmp_path, USER_QUOTA="1MiB") as url:
        upload = tmp_path / "half.bin"
        upload.write_bytes(b"h" * 512 * 1024)
        assert cli("put", str(upload), url=url, token=token).returncode == 0
        shown = cli("usage", url=url, token=token)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == "512.0 KiB used of 1.0 MiB (50%), 1 files\n"
        as_json = cli("usage", "--json", url=url, token=token)
        assert json.loads(as_json.stdout) == {
            "used": 512 * 1024,
            "quota": 1024 * 1024,
            "files": 1,
            "reserved": 0,
        }


def test_usage_without_a_quota_says_so(gateway_process):
    shown = cli("usage", url=gateway_process, token=new_token())
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "0 bytes used (no quota), 0 files\n"


def test_a_bearer_token_is_a_user_of_a_gateway_that_takes_jwts(s3_url, bucket, tmp_path):
    import time

    import jwt

    secret = "the operator's application and the gateway share this"
    claims = {"iss": "my-app", "sub": "carol", "exp": int(time.time()) + 300}
    token = jwt.encode(claims, secret, algorithm="HS256")
    source = tmp_path / "carol.txt"
    source.write_bytes(b"carol's")
    with run_gateway(s3_url, bucket, tmp_path / "gw", AUTH_JWT_SECRET=secret, AUTH_UUID_TOKENS="0") as url:
        put = cli("--bearer", token, "put", str(source), url=url, token=None)
        assert put.returncode == 0, put.stderr
        listing = cli("ls", url=url, token=None, bearer=token)
        assert "carol.txt" in listing.stdout
        refused = cli("ls", url=url, token=new_token())
        assert refused.returncode != 0


def shown_speed(stderr: str) -> float:
    """The last speed the progress bars showed, in bytes per second."""
    value, unit = re.findall(r"([\d.]+) (|k|M|G)B/s", stderr)[-1]
    return float(value) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9}[unit]


@pytest.mark.slow
def test_the_speed_shown_after_an_upload_counts_until_the_file_is_stored(s3_url, bucket, tmp_path):
    """S3 takes 5 s to complete the multipart upload: the speed shown is the file's size over the
    whole upload, not the rate its bytes were read at (which was several times higher)."""
    data = tmp_path / "big.bin"
    data.write_bytes(os.urandom(16 * MiB))
    with (
        proxy_in_a_thread(s3_url) as proxy,
        run_gateway(proxy.url, bucket, tmp_path / "gateway", PART_SIZE="5MiB") as url,
    ):
        proxy.add(Fault("CompleteMultipartUpload", action="delay", seconds=5))
        started = time.monotonic()
        put = cli("put", str(data), url=url, token=new_token())
        real = data.stat().st_size / (time.monotonic() - started)
    assert put.returncode == 0, put.stderr
    shown = shown_speed(put.stderr)
    print(f"shown {shown / 1e6:.2f} MB/s, real {real / 1e6:.2f} MB/s (with the client's own start)")
    assert real * 0.95 < shown < real * 1.3


def test_the_installed_file_uploader_command_runs_from_any_directory(tmp_path):
    """`make` installs the checkout into .venv as a package, so its script works outside it."""
    script = Path(sys.prefix) / "bin" / "file-uploader"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([str(script), "token"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert uuid.UUID(done.stdout.strip())
