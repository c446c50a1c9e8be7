"""The README's curl block, run top to bottom with bash against a gateway process, as a reader would."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from ..helpers import ROOT

README = ROOT / "README.md"
TOKEN = "18ce71ad-1391-46c7-91de-56948fda0d8a"


def curl_block() -> str:
    """The README's first ```sh block that uses curl."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)
    return next(block for block in blocks if "curl " in block)


def answers(output: str) -> list:
    """The JSON bodies curl printed, one after the other (they end with no newline)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(output):
        value, at = decoder.raw_decode(output, at)
        found.append(value)
        while at < len(output) and output[at].isspace():
            at += 1
    return found


def test_the_readme_curl_block_runs_top_to_bottom(gateway_process, tmp_path: Path):
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 a report\n" * 1000)
    # Every curl of the block fails on an error status (a 404 would otherwise pass as a JSON body).
    (tmp_path / ".curlrc").write_text("fail-with-body\nsilent\nshow-error\n")
    script = curl_block().replace("http://localhost:8080", gateway_process)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CURL_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed, shared = answers(done.stdout)
    assert listed == ["report.pdf"]
    assert shared["url"].startswith(f"{gateway_process}/s/")
    assert (tmp_path / "copy.pdf").read_bytes() == (tmp_path / "report.pdf").read_bytes()
    kept = subprocess.run(
        ["curl", "-sS", "-H", f"X-Auth-Token: {TOKEN}", f"{gateway_process}/api/files"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(kept.stdout) == ["listing.txt"]
