"""What `make test-deploy` drives: a container engine, a checkout copy, its make targets and compose stack.

The checks run the product's own make targets (`make run-dev`, `stop-dev`,
`logs`, `docker-run`, `docker-logs`) in a copy of the checkout, with their
own ports and compose project, so a developer's `.env`, stack and MinIO data
are never touched. Everything is reached through real sockets with curl, or
inside the containers with the engine's `exec`.

Knobs, for running the checks against other files or another engine:
DEPLOY_SOURCE (the checkout whose product files are tested, default this
one), DEPLOY_ENGINE (docker or podman, default: docker if it answers),
DEPLOY_HTTP_PORT (the proxy's port, default a free one; files that cannot
move it need 8080).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Where the product files come from; another checkout (say, of older files) can be tested.
SOURCE = Path(os.environ.get("DEPLOY_SOURCE", ROOT)).resolve()
PROJECT = "fu-deploy-test"
TOKEN = "0b3c5f8e-8d3a-4f7e-9d61-2f4a1c9e7b10"
MiB = 1024 * 1024
# curl printing only the status code.
CURL_STATUS = ("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}")
AUTH = ("-H", f"X-Auth-Token: {TOKEN}")
# Lines for the closing summary of the run (stand-ins, timings, measurements).
REPORT: list[str] = []


def report(line: str) -> None:
    REPORT.append(line)
    print(line, flush=True)


class Engine:
    """The container engine: Docker where one answers, else podman, configured for this machine."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env

    @classmethod
    def detect(cls, workdir: Path) -> Engine:
        """DEPLOY_ENGINE (docker or podman) if set, else docker if it answers, else podman."""
        env = dict(os.environ)
        chosen = os.environ.get("DEPLOY_ENGINE")
        if chosen == "docker" or (
            chosen is None
            and shutil.which("docker")
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
        ):
            return cls("docker", env)
        if not shutil.which("podman"):
            raise RuntimeError(
                "no Docker engine answers and podman is not installed: run `make test-deploy` as root "
                "on Debian (it installs podman), or install Docker"
            )
        env["CONTAINERS_CONF"] = str(_containers_conf(workdir))
        return cls("podman", env)

    def __call__(self, *args: str, check: bool = True, timeout: float = 300, **kwargs) -> str:
        done = subprocess.run(
            [self.name, *args], env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(args)}: {done.returncode}\n{done.stdout}{done.stderr}")
        return done.stdout

    def containers(self, service: str, project: str = PROJECT) -> list[str]:
        """Running containers of one compose service, by the labels both compose tools set."""
        names = self(
            "ps",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        )
        return sorted(names.split())

    def inspect(self, name: str, template: str) -> str:
        return self("inspect", "--format", template, name).strip()

    def pid(self, name: str) -> int:
        """The host's process id of the container's PID 1."""
        return int(self.inspect(name, "{{.State.Pid}}"))

    def networks(self, name: str) -> list[str]:
        return self.inspect(name, "{{range $name, $v := .NetworkSettings.Networks}}{{$name}} {{end}}").split()

    def address(self, name: str) -> str:
        return self.inspect(name, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}").split()[0]

    def healthy(self, name: str) -> bool:
        """Run the container's health check once (podman runs none on its own without systemd)."""
        if self.name == "podman":
            done = subprocess.run(
                ["podman", "healthcheck", "run", name], env=self.env, capture_output=True, timeout=30
            )
            return done.returncode == 0
        return self.inspect(name, "{{.State.Health.Status}}") == "healthy"

    def wait_healthy(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(name):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is not healthy after {timeout} s:\n{self.logs(name)[-3000:]}")
            time.sleep(1)

    def logs(self, name: str) -> str:
        done = subprocess.run([self.name, "logs", name], env=self.env, capture_output=True, text=True)
        return done.stdout + done.stderr

    def exec_python(self, name: str, code: str, timeout: float = 60) -> str:
        return self("exec", name, "python", "-c", code, timeout=timeout)


def _containers_conf(workdir: Path) -> Path:
    """podman's settings for this kind of VM, kept to the harness (CONTAINERS_CONF).

    crun refuses the VM's hybrid cgroups (v1 controllers): runc runs. podman's
    default ulimits (nofile 1048576) exceed the VM's hard limit: use that limit.
    """
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    path = workdir / "containers.conf"
    runtime = 'runtime = "runc"\n' if shutil.which("runc") else ""
    path.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={hard}:{hard}", "nproc=32768:32768"]\n[engine]\n{runtime}'
    )
    return path


def copy_checkout(target: Path) -> Path:
    """The product's files (what git tracks, and new files not ignored) with their mtimes, plus .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=SOURCE,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (item.decode() for item in listed)):
        source = SOURCE / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # The venv of this checkout (podman-compose); the build context must leave it out.
    (target / ".venv").symlink_to(ROOT / ".venv")
    return target


@dataclass
class Checkout:
    """A copy of the checkout where the make targets run, with its own ports and project name."""

    path: Path
    engine: Engine
    http_port: int
    make_vars: dict[str, str] = field(default_factory=dict)
    # (time, status) of the proxy's /healthz, polled from when `make run-dev` returned.
    after_start: list[tuple[float, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in self.engine.env.items() if not k.startswith(("MAKE", "MFLAGS"))}
        env["COMPOSE_PROJECT_NAME"] = PROJECT
        return env

    def make(self, target: str, timeout: float = 600, **variables: str) -> subprocess.CompletedProcess:
        settings = {"HTTP_PORT": str(self.http_port), **self.make_vars, **variables}
        command = ["make", "--no-print-directory", target, *(f"{k}={v}" for k, v in settings.items())]
        done = subprocess.run(
            command, cwd=self.path, env=self.environment(), capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(f"make {target} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def compose(self, *args: str, timeout: float = 300, **env: str) -> str:
        """Compose as the Makefile runs it (the same tool, --env-file and file)."""
        tool = (
            [str(self.path / ".venv/bin/podman-compose")]
            if self.engine.name == "podman"
            else ["docker", "compose"]
        )
        settings = {"STOP_TIMEOUT": "40", "BUILDAH_FORMAT": "docker", "HTTP_PORT": str(self.http_port)}
        settings.update(self.make_vars)
        done = subprocess.run(
            [*tool, "--env-file", ".env", "-f", "docker/docker-compose.yml", *args],
            cwd=self.path,
            env={**self.environment(), **settings, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def dotenv(self) -> dict[str, str]:
        lines = (self.path / ".env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def curl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=timeout)


def status_of(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of a GET, or 0 when no HTTP answer came (refused, reset, timed out)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, urllib.error.URLError):
        return 0


def wait_until_serving(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while status_of(url) != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} does not answer 200 after {timeout} s")
        time.sleep(0.5)


class Poller:
    """GETs one URL every `interval` seconds in a thread; keeps (monotonic time, status)."""

    def __init__(self, url: str, interval: float = 0.1) -> None:
        self.url = url
        self.interval = interval
        self.results: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.results.append((time.monotonic(), status_of(self.url, timeout=3)))
            self._stop.wait(self.interval)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def random_file(path: Path, size: int) -> str:
    """Write `size` random bytes; return their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def download_sha256(url: str, token: str = TOKEN) -> str:
    """Stream a GET through sha256 (the body is never held whole)."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"X-Auth-Token": token})
    with urllib.request.urlopen(request, timeout=120) as response:
        while chunk := response.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def slow_upload(path: Path, url: str, rate: str = "1M") -> Iterator[subprocess.Popen]:
    """`curl --upload-file` at `rate` bytes/s in the background; yields the curl process."""
    process = subprocess.Popen(
        [*CURL_STATUS, "--limit-rate", rate, "-H", f"X-Auth-Token: {TOKEN}", "--upload-file", str(path), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def follow(command: list[str], cwd: Path, env: dict[str, str], seconds: float) -> str:
    """Run a command that follows logs for `seconds`, then stop it (its whole process group)."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    return output


def route_count(metrics: str, route: str) -> float:
    """file_uploader_http_requests_total summed over methods and statuses for one route."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("file_uploader_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def replica_metrics(engine: Engine, name: str) -> str:
    code = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/metrics').read().decode())"
    return engine.exec_python(name, code)
