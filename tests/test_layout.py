"""The package's architecture, as a rule a test can check: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import file_uploader

PACKAGE = Path(file_uploader.__file__).parent


def imports(path: Path) -> set[str]:
    """Every module `path` imports, as absolute names (`from aiohttp import web` -> aiohttp.web)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    found = sorted((PACKAGE / folder).rglob("*.py"))
    assert found, folder
    return found


def test_only_the_storage_client_imports_aiobotocore_or_botocore():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path != PACKAGE / "storage" / "client.py"
        and any(name.split(".")[0] in ("aiobotocore", "botocore") for name in imports(path))
    ]
    assert offenders == []


def test_the_storage_layer_knows_nothing_of_aiohttp_web():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in modules("storage")
        if any(name == "aiohttp.web" or name.startswith("aiohttp.web_") for name in imports(path))
    ]
    assert offenders == []


def test_admin_commands_and_the_http_layer_reach_s3_only_through_storage():
    for folder in ("api", "admin", "ops"):
        for path in modules(folder):
            assert "file_uploader.storage.client" not in imports(path), path
            assert not any(".storage.client" in line for line in path.read_text().splitlines()), path


def test_nothing_in_the_package_needs_the_dev_tools():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(name.split(".")[0] in ("devtools", "moto", "tests") for name in imports(path))
    ]
    assert offenders == []
