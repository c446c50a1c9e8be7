"""The package's architecture, as a rule a test can check: who may import what.

Each module sits on a layer (LAYERS, lowest first, as docs/development.md's map
draws them) and imports only from its own layer or those below; within the
package, no chain of imports comes back to where it started.
"""

from __future__ import annotations

import ast
from pathlib import Path

import file_uploader

PACKAGE = Path(file_uploader.__file__).parent

# Lowest first. A module's layer is that of the longest name here its own name starts with.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # What everything stands on: the version, sizes, yes/no and time formats, settings, metrics, logs,
    # the loop, in-flight counting.
    (
        "ground",
        (
            "file_uploader",
            "file_uploader.sizes",
            "file_uploader.formats",
            "file_uploader.settings",
            "file_uploader.ops",
        ),
    ),
    ("storage", ("file_uploader.storage",)),  # every S3 call
    ("hooks", ("file_uploader.hooks",)),  # what listens to the storage layer's events
    ("identity", ("file_uploader.identity",)),  # whose a bearer token is (JWTs, the auth callback)
    ("app keys", ("file_uploader.appkeys",)),  # the typed keys the app and its requests carry
    ("http", ("file_uploader.api",)),  # routes, middleware, errors
    ("app", ("file_uploader.app",)),  # the wiring
    # Processes built on the layers below: the server (handed the app), admin commands, the client.
    ("processes", ("file_uploader.server", "file_uploader.admin", "file_uploader.client")),
    ("entry points", ("file_uploader.__main__", "file_uploader.cli")),
]


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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def package_imports(path: Path) -> set[str]:
    """The package's own modules `path` imports (relative imports resolved; `from x import y`
    is module x.y when that is a module, else x)."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            bases = [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module or ""
            bases = [(base, tuple(alias.name for alias in node.names))]
        else:
            continue
        for base, names in bases:
            if not base.split(".")[0] == "file_uploader":
                continue
            submodules = [f"{base}.{name}" for name in names if f"{base}.{name}" in MODULES]
            found.update(submodules or [base])
            if len(submodules) < len(names):
                found.add(base)
    found.discard(own)
    return found


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), index)
        for index, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is on no layer: add it to LAYERS (and to docs/development.md's map)"
    return max(matches)[1]


def test_every_module_is_on_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
        for module, imported_modules in sorted(graph.items())
        for imported in sorted(imported_modules)
        if layer_of(imported) > layer_of(module)
    ]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            cycles.append([*trail[trail.index(module) :], module])
            return
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return cycles


GRAPH = {module: package_imports(path) for module, path in MODULES.items()}


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(GRAPH) == []


def test_the_package_has_no_import_cycle():
    assert import_cycles(GRAPH) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    """What the two tests above would have said of the old ops/ (lifecycle importing the app,
    webhooks importing storage, access importing appkeys), and of two modules importing each other."""
    old = {
        "file_uploader.ops.lifecycle": {"file_uploader.app"},
        "file_uploader.appkeys": {"file_uploader.ops.webhooks"},
        "file_uploader.ops.webhooks": {"file_uploader.storage.events"},
        "file_uploader.ops.access": {"file_uploader.appkeys"},
        "file_uploader.app": {"file_uploader.ops.access"},
    }
    assert upward_imports(old) == [
        "file_uploader.ops.access (ground) imports file_uploader.appkeys (app keys)",
        "file_uploader.ops.lifecycle (ground) imports file_uploader.app (app)",
        "file_uploader.ops.webhooks (ground) imports file_uploader.storage.events (storage)",
    ]
    looped = {
        "file_uploader.app": {"file_uploader.api.files"},
        "file_uploader.api.files": {"file_uploader.app"},
    }
    assert import_cycles(looped) == [
        ["file_uploader.api.files", "file_uploader.app", "file_uploader.api.files"]
    ]


def modules(folder: str) -> list[Path]:
    found = sorted((PACKAGE / folder).rglob("*.py"))
    assert found, folder
    return found


# The S3 client: its calls, its connection, and what its errors mean.
S3_CLIENT = [PACKAGE / "storage" / name for name in ("client.py", "connection.py", "s3_errors.py")]


def test_only_the_storage_client_and_its_connection_import_aiobotocore_or_botocore():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path not in S3_CLIENT
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
    for folder in ("api", "admin", "ops", "hooks", "server"):
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
