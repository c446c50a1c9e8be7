"""docker/: the image and the compose stack agree with the code (no Docker engine is needed)."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from file_uploader.app import create_app
from file_uploader.settings import ENV_NAMES, Settings

from ..helpers import ROOT

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
GATEWAY = COMPOSE["services"]["gateway"]
# Read by botocore rather than by Settings.from_env.
BOTOCORE_VARIABLES = {
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_MAX_ATTEMPTS",
    "AWS_CA_BUNDLE",
}


def _instructions(name: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.startswith(name + " ")]


def _setting_names() -> set[str]:
    """Every environment variable Settings.from_env reads."""
    return set(ENV_NAMES)


def test_the_image_starts_the_app_factory_with_gunicorn() -> None:
    [cmd] = _instructions("CMD")
    command = yaml.safe_load(cmd)  # exec form: a JSON array, so gunicorn is PID 1 and gets SIGTERM
    assert command[0] == "gunicorn"
    module, factory = command[1].split(":")
    assert inspect.iscoroutinefunction(getattr(importlib.import_module(module), factory))
    config = command[command.index("-c") + 1]
    assert (ROOT / config).is_file()
    copied = [shlex.split(line)[0] for line in _instructions("COPY")]
    assert config in copied and "file_uploader" in copied


def test_the_image_is_slim_non_root_and_caches_dependencies() -> None:
    [base] = _instructions("FROM")
    assert "slim" in base
    [user] = _instructions("USER")
    assert user.strip() not in ("root", "0")
    copies = [shlex.split(line)[0] for line in _instructions("COPY")]
    assert copies.index("requirements.txt") < copies.index("file_uploader")
    assert any("pip install -r requirements.txt" in run for run in _instructions("RUN"))


async def test_the_image_port_and_healthcheck_match_the_app() -> None:
    [expose] = _instructions("EXPOSE")
    assert int(expose) == Settings.port == 8080
    assert "PORT=8080" in DOCKERFILE
    [healthcheck] = _instructions("HEALTHCHECK")
    path = re.search(r"/\w+", healthcheck.split("CMD", 1)[1].split("}", 1)[1])[0]
    app = await create_app(Settings(s3_bucket="unused"))
    routes = {resource.canonical for resource in app.router.resources()}
    assert path == "/healthz" and path in routes


def test_every_variable_the_compose_file_passes_is_a_setting() -> None:
    names = _setting_names()
    assert {"S3_ENDPOINT_URL", "PORT", "GRACEFUL_TIMEOUT", "WORKERS"} <= names  # the parse works
    passed = set(GATEWAY["environment"])
    assert passed - names - BOTOCORE_VARIABLES == set()


def test_every_variable_in_env_example_is_a_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert listed - _setting_names() - BOTOCORE_VARIABLES == set()


def test_the_compose_stack_wires_gateway_proxy_and_minio() -> None:
    assert GATEWAY["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (COMPOSE_FILE.parent / GATEWAY["build"]["context"] / GATEWAY["build"]["dockerfile"]).is_file()
    assert GATEWAY["env_file"] == ["../.env"]  # a plain path: `{path, required}` needs Compose 2.24+
    environment = GATEWAY["environment"]
    assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"
    minio = COMPOSE["services"]["minio"]
    assert "127.0.0.1:${MINIO_PORT:-9000}:9000" in minio["ports"]  # root credentials stay on this host
    assert "minio-data:/data" in minio["volumes"] and "minio-data" in COMPOSE["volumes"]
    # Replicas publish no host port of their own; the proxy is the one address.
    assert "ports" not in GATEWAY and str(environment["PORT"]) in GATEWAY["expose"]
    proxy = COMPOSE["services"]["proxy"]
    assert "${HTTP_PORT:-8080}:8080" in proxy["ports"]
    nginx = (COMPOSE_FILE.parent / "nginx.conf.template").read_text()
    assert f"set $gateway gateway:{environment['PORT']};" in nginx
    assert "proxy_request_buffering off;" in nginx and "client_max_body_size 0;" in nginx
    mounted = {volume.split(":")[0] for volume in proxy["volumes"]}
    assert mounted == {"./nginx.conf.template", "./nginx-resolver.envsh"}
    assert all((COMPOSE_FILE.parent / name).is_file() for name in mounted)


def test_every_replica_signs_share_links_with_one_required_secret() -> None:
    # Interpolated once from .env for all replicas; unset or empty stops compose.
    assert GATEWAY["environment"]["SHARE_SECRET"].startswith("${SHARE_SECRET:?")


def test_every_service_that_carries_uploads_stops_gracefully() -> None:
    proxy = COMPOSE["services"]["proxy"]
    assert proxy["stop_signal"] == "SIGQUIT"  # nginx's graceful stop; SIGTERM drops connections
    for service in (GATEWAY, proxy):
        assert service["stop_grace_period"] == "${STOP_TIMEOUT:-40}s"
    assert 40 > Settings.graceful_timeout
    makefile = (ROOT / "Makefile").read_text()
    assert "--stop-timeout $(STOP_TIMEOUT)" in makefile
    assert "STOP_TIMEOUT ?= $(shell expr $(GRACEFUL_TIMEOUT) + 10)" in makefile


def test_nginx_passes_the_clients_host_port_scheme_and_address_and_the_gateways_trust_it() -> None:
    nginx = (COMPOSE_FILE.parent / "nginx.conf.template").read_text()
    for header in ("Host $http_host", "X-Forwarded-Host $http_host", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in nginx
    # The edge: the address it saw replaces whatever a client claimed (appending would let a
    # forged one through, the host's bridge address being in the trusted ranges).
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx
    assert 'proxy_set_header Forwarded "";' in nginx
    trusted = GATEWAY["environment"]["TRUSTED_PROXIES"]
    assert trusted.startswith("${TRUSTED_PROXIES:-")  # .env may replace it
    default = Settings.from_env({"S3_BUCKET": "b", "TRUSTED_PROXIES": trusted.split(":-", 1)[1].rstrip("}")})
    assert {str(network) for network in default.trusted_proxies} == {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
    }


def test_the_build_context_is_only_what_the_image_copies() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*"  # everything out (.env, .venv, .git, ...), then back in:
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {shlex.split(line)[0] for line in _instructions("COPY")}
    assert included == copied


@pytest.mark.parametrize(
    ("path", "valid"), [(COMPOSE_FILE, True), (Path("broken.yml"), False)], ids=["ours", "broken"]
)
def test_the_compose_file_is_valid_compose(path: Path, valid: bool, tmp_path: Path) -> None:
    if not valid:
        path = tmp_path / path
        path.write_text("services:\n  gateway:\n    imagee: x\n")
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode == 0) == valid, done.stdout + done.stderr
