"""JavaScript clients run by Node (tests/node/): installed once from the lock file, driven as subprocesses."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"


def node_clients() -> Path:
    """tests/node/ with its packages installed (`npm ci`, once); skips where Node is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the JavaScript clients")
    if not (NODE_DIR / "node_modules" / "tus-js-client").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_DIR


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
