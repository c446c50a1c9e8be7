"""The package as pip installs it: its own requirements are enough for a server that starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from devtools.ports import child_server

from .helpers import ACCESS_KEY, ROOT, SECRET_KEY, free_port

# The interpreter under the venv: it sees none of the venv's packages, only what the install put in.
BARE_PYTHON = getattr(sys, "_base_executable", sys.executable)


@pytest.mark.slow
@pytest.mark.process
def test_pip_install_gives_a_server_that_starts_and_the_client_command(tmp_path, s3_url, bucket):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(site), str(ROOT)],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(site),  # and nothing of the checkout or the venv
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": s3_url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": os.devnull,
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    # -s: not the user's site-packages either; the working directory holds no checkout.
    with child_server([BARE_PYTHON, "-s", "-m", "file_uploader"], port, cwd=tmp_path, env=env, timeout=60):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as ready:
            assert json.load(ready)["status"] == "ready"
    script = site / "bin" / "file-uploader"
    token = subprocess.run(
        [BARE_PYTHON, "-s", str(script), "token"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert token.returncode == 0, token.stderr
    assert len(token.stdout.strip()) == 36
