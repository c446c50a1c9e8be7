"""ops/malloc.py: glibc told to keep part memory, in a fresh process each time (it is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import ctypes, sys
from file_uploader.ops import malloc
kept = malloc.keep_part_memory()
# A freed 8 MiB block handed out again at the same address was kept; by default glibc
# maps the first one on its own and unmaps it when freed, so the second lands elsewhere.
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
first = libc.malloc(8 << 20)
libc.free(first)
second = libc.malloc(8 << 20)
print(kept, first == second)
"""


def run_check(env: dict[str, str]) -> str:
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run(
        [sys.executable, "-c", CHECK], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt is glibc's",
)


@glibc_only
def test_part_sized_blocks_are_kept_for_the_next_part() -> None:
    assert run_check({}) == "True True"


@glibc_only
def test_a_deployments_own_malloc_variables_are_left_alone() -> None:
    kept, _ = run_check({"MALLOC_ARENA_MAX": "4"}).split()
    assert kept == "False"


@glibc_only
def test_create_app_keeps_part_memory() -> None:
    code = (
        "import asyncio\n"
        "from file_uploader.ops import malloc\n"
        "from file_uploader.app import create_app\n"
        "from file_uploader.settings import Settings\n"
        "settings = Settings.from_env({'S3_BUCKET': 'b', 'S3_ENDPOINT_URL': 'http://127.0.0.1:9'})\n"
        "asyncio.run(create_app(settings))\n"
        "print(malloc._done)\n"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("MALLOC_", "GLIBC_"))}
    done = subprocess.run([sys.executable, "-c", code], env=clean, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "True"
