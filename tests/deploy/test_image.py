"""docker/Dockerfile's image and `make docker-run` / `make docker-logs`, with a real engine.

The container of `make docker-run` needs an S3: it joins the compose stack's
network and uses its MinIO (DOCKER_RUN_ARGS, as an operator would pass
--network).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import standins
from .conftest import free_port
from .harness import (
    AUTH,
    CURL_STATUS,
    PROJECT,
    SOURCE,
    Checkout,
    MiB,
    copy_checkout,
    curl,
    follow,
    random_file,
    report,
    slow_upload,
    status_of,
    wait_until_serving,
)

pytestmark = pytest.mark.deploy

RUN = f"{PROJECT}-run"  # `make docker-run`'s image and container (IMAGE)
ENGINE_DEFAULT_STOP = 10


def test_the_build_context_holds_only_what_the_image_copies(stack: Checkout, workdir: Path) -> None:
    """What the builder receives: nothing of .env (its secrets), .venv, tests or .git."""
    engine = stack.engine
    probe = workdir / "context-probe"
    probe.mkdir()
    base = standins.product_images(SOURCE)[0]
    (probe / "Containerfile").write_text(f"FROM {base}\nCOPY . /context\n")
    tag = f"{PROJECT}-context-probe"
    engine("build", "--quiet", "-t", tag, "-f", str(probe / "Containerfile"), str(stack.path))
    try:
        entries = engine("run", "--rm", tag, "ls", "-A", "/context").split()
        size = engine("run", "--rm", tag, "du", "-sk", "/context").split()[0]
        secret = stack.dotenv()["SHARE_SECRET"]
        leaks = engine("run", "--rm", tag, "grep", "-rl", secret, "/context", check=False).split()
    finally:
        engine("rmi", "--force", tag, check=False)
    report(f"build context: {', '.join(sorted(entries))} ({int(size) / 1024:.1f} MiB)")
    assert (stack.path / ".env").is_file() and (stack.path / ".venv").exists()
    assert sorted(entries) == ["file_uploader", "gunicorn.conf.py", "requirements.txt"]
    assert leaks == []


@pytest.fixture(scope="module")
def docker_run(stack: Checkout, workdir: Path) -> Iterator[Checkout]:
    """`make docker-run` in a fresh checkout copy, which has no .env yet."""
    engine = stack.engine
    path = workdir / "docker-run"
    path.mkdir()
    [network] = engine.networks(engine.containers("minio")[0])
    password = stack.dotenv()["MINIO_ROOT_PASSWORD"]
    run_args = (
        f"--network {network} -e S3_ENDPOINT_URL=http://minio:9000 -e S3_BUCKET=file-uploader "
        f"-e AWS_ACCESS_KEY_ID=minioadmin -e AWS_SECRET_ACCESS_KEY={password}"
    )
    checkout = Checkout(copy_checkout(path), engine, free_port(), {"IMAGE": RUN, "DOCKER_RUN_ARGS": run_args})
    try:
        yield checkout
    finally:
        engine("rm", "--force", RUN, check=False)
        engine("rmi", "--force", RUN, check=False)


def test_make_docker_run_needs_no_env_file_and_replaces_its_container(docker_run: Checkout) -> None:
    engine = docker_run.engine
    assert not (docker_run.path / ".env").exists()
    started = time.monotonic()
    docker_run.make("docker-run", timeout=900)
    report(f"make docker-run (image build + start): {time.monotonic() - started:.0f} s")
    assert docker_run.dotenv()["SHARE_SECRET"]  # made for it, shared by its workers
    wait_until_serving(docker_run.url + "/readyz")
    first = engine.inspect(RUN, "{{.Id}}")
    docker_run.make("docker-run")  # while the first one runs
    wait_until_serving(docker_run.url + "/readyz")
    assert engine.inspect(RUN, "{{.Id}}") != first


def test_the_container_runs_gunicorn_as_pid_1_as_a_non_root_user_and_is_healthy(
    docker_run: Checkout,
) -> None:
    engine = docker_run.engine
    engine.wait_healthy(RUN, timeout=30)
    command = engine("exec", RUN, "cat", "/proc/1/cmdline").split("\0")
    assert any(part.endswith("/gunicorn") for part in command[:2]), command
    assert engine("exec", RUN, "id", "-un").strip() == "gateway"
    assert engine("exec", RUN, "ls", "-A", "/app").split() == [
        "file_uploader",
        "gunicorn.conf.py",
        "requirements.txt",
    ]


def test_its_workers_share_one_share_secret(docker_run: Checkout, tmp_path: Path) -> None:
    random_file(tmp_path / "s.bin", 1024)
    url = f"{docker_run.url}/api/files/s.bin"
    assert curl(*CURL_STATUS[1:], *AUTH, "--upload-file", str(tmp_path / "s.bin"), url).stdout == "204"
    link = json.loads(curl(*AUTH, "-X", "POST", url + "/share").stdout)["url"]
    assert link.startswith(f"http://127.0.0.1:{docker_run.http_port}/s/")
    statuses = collections.Counter(status_of(link) for _ in range(12))
    assert statuses == {200: 12}, statuses


def test_make_docker_logs_follows_the_container(docker_run: Checkout) -> None:
    command = ["make", "--no-print-directory", "docker-logs", f"IMAGE={RUN}"]
    output = follow(command, docker_run.path, docker_run.environment(), seconds=4)
    assert "Booting worker" in output and "route=/readyz status=200" in output


def test_an_upload_survives_docker_stop_within_graceful_timeout(docker_run: Checkout, tmp_path: Path) -> None:
    """`docker stop` as an operator types it: the container's own stop timeout applies."""
    engine = docker_run.engine
    random_file(tmp_path / "slow.bin", 20 * MiB)
    with slow_upload(tmp_path / "slow.bin", f"{docker_run.url}/api/files/slow.bin") as upload:
        time.sleep(3)
        started = time.monotonic()
        engine("stop", RUN, timeout=120)
        took = time.monotonic() - started
        status, errors = upload.communicate(timeout=120)
    report(f"upload in flight during `{engine.name} stop`: answered {status or 'nothing'}, took {took:.0f} s")
    assert status == "204", f"the upload was cut when the container stopped ({took:.0f} s): {errors}"
    assert took > ENGINE_DEFAULT_STOP
    assert int(engine.inspect(RUN, "{{.Config.StopTimeout}}")) >= 40
