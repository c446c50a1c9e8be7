"""JavaScript clients run by Node (tests/node/): installed once from the lock file, driven as subprocesses."""

from __future__ import annotations

import asyncio
import fcntl
import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


def npm_installed(directory: Path, package: str, why: str) -> Path:
    """`directory` with the packages of its lock file installed (`npm ci`, once, until `package` is
    there); skips, saying `why`, where Node is missing. The install holds a lock on the directory:
    under pytest-xdist two workers may ask at once, and `npm ci` starts by deleting node_modules."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are needed for {why}")
    with (directory / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "node_modules" / package).is_dir():
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=directory,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return directory


def node_clients() -> Path:
    """tests/node/ with its packages installed (`npm ci`, once); skips where Node is missing."""
    return npm_installed(NODE_DIR, "tus-js-client", "the JavaScript clients")


async def tus_js_upload(
    endpoint: str, token: str, path: Path, name: str, *, parallel: int = 1, chunk: int | None = None
) -> dict:
    """Upload `path` as `name` with tus-js-client; what tus_upload.mjs printed (url, retries)."""
    script = node_clients() / "tus_upload.mjs"
    args = [endpoint, token, str(path), name, str(parallel), str(chunk or "")]
    process = await asyncio.create_subprocess_exec(
        "node", str(script), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, (out.decode(), err.decode())
    return json.loads(out.decode().strip().splitlines()[-1])
