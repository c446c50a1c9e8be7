"""Fixtures of `make test-deploy`: the engine, the images, and the compose stack of a checkout copy.

These tests carry the `deploy` marker, which setup.cfg leaves out of `make
test`; `make test-deploy` runs them (`pytest -m deploy tests/deploy`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import harness, standins
from .harness import PROJECT, Checkout, Engine, Poller, copy_checkout, report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pytest_terminal_summary(terminalreporter) -> None:
    if harness.REPORT:
        terminalreporter.section("make test-deploy: engine, images, timings, measurements")
        for line in harness.REPORT:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="session")
def engine(workdir: Path) -> Engine:
    chosen = Engine.detect(workdir)
    version = chosen("version", "--format", "{{.Client.Version}}").strip()
    report(f"engine: {chosen.name} {version}")
    if chosen.name == "podman":
        compose = subprocess.run(
            [str(harness.ROOT / ".venv/bin/podman-compose"), "--version"], capture_output=True, text=True
        ).stdout.splitlines()
        report(f"compose: {compose[0] if compose else 'podman-compose (version unknown)'}")
    return chosen


@pytest.fixture(scope="session")
def images(engine: Engine) -> dict[str, str]:
    """The product's images: pulled, or else stand-ins built here (and said so)."""
    started = time.monotonic()
    stand_ins = standins.ensure_images(engine.name, engine.env, log=print, root=harness.SOURCE)
    for name in standins.product_images(harness.SOURCE):
        if name in stand_ins:
            report(f"STAND-IN image {name}: {stand_ins[name]} (not the registry's image)")
        else:
            report(f"real image {name}: pulled from its registry")
    report(f"images ready in {time.monotonic() - started:.0f} s")
    return stand_ins


def remove_project(engine: Engine) -> None:
    """Whatever an earlier run of this project left: containers, networks, volumes."""
    label = f"label=com.docker.compose.project={PROJECT}"
    for _ in range(3):  # podman refuses to remove a container another one requires: those go first
        for name in engine("ps", "--all", "--filter", label, "--format", "{{.Names}}").split():
            engine("rm", "--force", name, check=False)
    for name in engine("volume", "ls", "--filter", label, "--format", "{{.Name}}").split():
        engine("volume", "rm", "--force", name, check=False)
    for name in engine("network", "ls", "--format", "{{.Name}}").split():
        if name.startswith(f"{PROJECT}_"):
            engine("network", "rm", name, check=False)


@pytest.fixture(scope="session")
def stack(engine: Engine, images: dict[str, str], workdir: Path) -> Iterator[Checkout]:
    """`make run-dev` in a checkout copy; its proxy polled for 5 s from the moment make returns."""
    remove_project(engine)
    path = workdir / "checkout"
    path.mkdir()
    checkout = Checkout(
        copy_checkout(path),
        engine,
        int(os.environ.get("DEPLOY_HTTP_PORT") or free_port()),
        {"MINIO_PORT": str(free_port()), "MINIO_CONSOLE_PORT": str(free_port())},
    )
    started = time.monotonic()
    try:
        checkout.make("run-dev", timeout=900)
        report(f"make run-dev (gateway image build + start): {time.monotonic() - started:.0f} s")
        with Poller(checkout.url + "/healthz") as poller:
            time.sleep(5)
        checkout.after_start = poller.results
        yield checkout
    finally:
        remove_project(engine)
