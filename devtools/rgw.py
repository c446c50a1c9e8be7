"""A throwaway single-node Ceph cluster with RADOS Gateway: a real S3 engine on loopback.

Why: moto is an emulator; the gateway must also work against a real S3 engine,
whose rules differ (which checksums it verifies, conditional writes, what
botocore may send it over https). Ceph's RGW is one that Debian packages
(`devtools/system-deps.sh` installs it), so the tests start their own.

What runs, all as children of this process, all on 127.0.0.1:

- one monitor (msgr2 only, on a kernel-picked port);
- one OSD on memstore: objects live in the OSD's RAM, so nothing is written
  to disk and a cluster starts in seconds; pools have one replica;
- radosgw, serving S3 over http and https (a CA made here signs the
  certificate; `RgwEngine.ca_file` is what a client trusts).

No ceph-mgr (it only serves status and dashboards; pools are created by the
monitor without it) and no cephx (loopback, throwaway: no keyrings to make).
Every path (configuration, data, logs, admin sockets, pid files) is under the
caller's workdir and every tool gets `--conf`, so nothing reads or writes
/etc/ceph or /var/lib/ceph, and two clusters run side by side on one machine
(two test sessions in two worktrees): each has its own fsid, ports and files.

The daemons run in the foreground, in their own sessions (a Ctrl-C in a
terminal reaches this process only, which stops them in order), and on Linux
die with this process even if it is killed (PR_SET_PDEATHSIG).

    python -m devtools.rgw [--bucket NAME] [--workdir DIR]   # one cluster until Ctrl-C
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

# The Debian packages that hold them: ceph-mon, ceph-osd, radosgw, ceph-common.
BINARIES = ("monmaptool", "ceph-mon", "ceph-osd", "ceph", "radosgw", "radosgw-admin")
INSTALL_HINT = "devtools/system-deps.sh installs them (as root)"
# From an empty workdir to S3 answering: under 2 s on a quiet machine, a few
# seconds on two busy cores; past this something is wrong.
START_TIMEOUT = 60.0
# How long stopping waits for a daemon to exit after SIGTERM before SIGKILL.
STOP_GRACE = 3.0
# Lines of each daemon's log quoted in a startup error.
LOG_TAIL = 25


@dataclass(frozen=True)
class RgwEngine:
    """How to reach a running cluster's S3 endpoints."""

    http_url: str
    https_url: str
    ca_file: str  # PEM of the CA that signed the https certificate (127.0.0.1 and localhost)
    # The https certificate and its key: what a test proxy in front of the
    # engine serves, so that clients trusting `ca_file` trust it too.
    cert_file: str
    key_file: str
    access_key: str
    secret_key: str
    version: str  # Ceph's, e.g. "16.2.15"
    # With several radosgw daemons (running_rgw_cluster): each one's own http endpoint, the
    # first one's being `http_url`.
    rgw_http_urls: tuple[str, ...] = ()


class RgwStartError(RuntimeError):
    """The cluster did not come up; the message ends with the tail of each daemon's log."""


def unavailable_reason() -> str | None:
    """None when Ceph's programs are installed; else why a cluster cannot start (for pytest.skip)."""
    if not sys.platform.startswith("linux"):
        return f"Ceph's daemons run on Linux only, not {sys.platform}"
    missing = [name for name in BINARIES if shutil.which(name) is None]
    if missing:
        return f"Ceph is not installed (no {', '.join(missing)}): {INSTALL_HINT}"
    try:
        import cryptography  # noqa: F401  (the https certificate is made with it)
    except ImportError:
        return "the Python package cryptography is missing (it is in requirements-dev.txt)"
    return None


@contextlib.contextmanager
def running_rgw(
    workdir: Path, *, config: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT
) -> Iterator[RgwEngine]:
    """A cluster for the duration of the block, its files under `workdir` (left there for reading logs).

    `workdir` must be empty or not exist yet.

    `config` adds or overrides [global] options of ceph.conf, e.g.
    {"debug_rgw": "20"} to log every request's headers in workdir/log/client.rgw.log,
    or {"memstore_device_bytes": str(8 << 30)} to store more than 2 GiB (in RAM).
    Every daemon is stopped when the block ends, however it ends.
    """
    reason = unavailable_reason()
    if reason:
        raise RgwStartError(reason)
    workdir = Path(workdir).resolve()
    with _Cluster(workdir, config or {}, timeout) as cluster:
        yield cluster.start()


@contextlib.contextmanager
def running_rgw_cluster(
    workdir: Path, *, osds: int = 3, rgws: int = 2, timeout: float = START_TIMEOUT
) -> Iterator[_Cluster]:
    """A cluster of `osds` OSDs (pools of `osds` replicas, serving with one OSD down) and `rgws`
    radosgw daemons (their endpoints `engine.rgw_http_urls`), to break while it serves:
    `cluster.kill("osd.1")`, `cluster.kill("client.rgw.2")`. The daemons' names are in
    `cluster.daemons`."""
    reason = unavailable_reason()
    if reason:
        raise RgwStartError(reason)
    with _Cluster(Path(workdir).resolve(), {}, timeout, osds=osds, rgws=rgws) as cluster:
        cluster.engine = cluster.start()
        yield cluster


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports nobody listens on now: the kernel's picks, held until all are made."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class _Cluster:
    """Builds the cluster step by step under a deadline; as a context manager, always stops it."""

    engine: RgwEngine

    def __init__(
        self, workdir: Path, config: Mapping[str, str], timeout: float, *, osds: int = 1, rgws: int = 1
    ) -> None:
        self.osds = osds
        self.rgws = rgws
        self.dir = workdir
        self.conf = workdir / "ceph.conf"
        self.logs = workdir / "log"
        self.extra_config = config
        self.deadline = time.monotonic() + timeout
        self.daemons: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> _Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> RgwEngine:
        self.dir.mkdir(parents=True, exist_ok=True)
        if any(self.dir.iterdir()):
            raise RgwStartError(f"{self.dir} is not empty: a cluster needs a workdir of its own")
        for name in ("log", "run", "crash", "tls"):
            (self.dir / name).mkdir()
        mon_port, http_port, https_port, *more_rgw_ports = free_ports(2 + self.rgws)
        ca_file, cert_file, key_file = _make_tls_files(self.dir / "tls")
        fsid = str(uuid.uuid4())
        self._write_conf(fsid, mon_port, http_port, https_port, cert_file, key_file)

        # The monitor: its store made from a one-monitor map, then the daemon.
        monmap = self.dir / "monmap"
        one_monitor = ["--create", "--fsid", fsid, "--addv", "a", f"[v2:127.0.0.1:{mon_port}]", str(monmap)]
        self._tool(["monmaptool", *one_monitor], "monmaptool")
        self._tool(["ceph-mon", *self._c(), "--mkfs", "-i", "a", "--monmap", str(monmap)], "ceph-mon --mkfs")
        self._daemon("mon.a", ["ceph-mon", "-f", *self._c(), "-i", "a"])

        # The OSDs: each registered with the monitor (which answers once it is up), its store made, started.
        for _ in range(self.osds):
            osd_uuid = str(uuid.uuid4())
            osd_id = self._tool(["ceph", *self._c(), "osd", "new", osd_uuid], "ceph osd new").strip()
            (self.dir / f"osd.{osd_id}").mkdir()
            mkfs = ["ceph-osd", *self._c(), "--no-mon-config", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid]
            self._tool(mkfs, "ceph-osd --mkfs")
            self._daemon(f"osd.{osd_id}", ["ceph-osd", "-f", *self._c(), "-i", osd_id])

        # radosgw creates its pools itself and answers S3 once they are usable. More daemons
        # share its pools, each on an http port of its own.
        self._daemon("client.rgw", ["radosgw", "-f", *self._c(), "-n", "client.rgw"])
        http_url = f"http://127.0.0.1:{http_port}"
        https_url = f"https://127.0.0.1:{https_port}"
        self._wait_for_s3(http_url, None)
        self._wait_for_s3(https_url, ssl.create_default_context(cafile=str(ca_file)))
        rgw_http_urls = [http_url]
        for number, port in enumerate(more_rgw_ports, start=2):
            name = f"client.rgw.{number}"
            (self.dir / name).mkdir()
            frontend = ["--rgw_frontends", f"beast endpoint=127.0.0.1:{port}"]
            self._daemon(name, ["radosgw", "-f", *self._c(), "-n", name, *frontend])
            rgw_http_urls.append(f"http://127.0.0.1:{port}")
        for url in rgw_http_urls[1:]:
            self._wait_for_s3(url, None)

        access_key = "rgw" + secrets.token_hex(8)
        secret_key = secrets.token_urlsafe(30)
        user = ["user", "create", "--uid", "tester", "--display-name", "tester"]
        keys = ["--access-key", access_key, "--secret-key", secret_key]
        self._tool(["radosgw-admin", *self._c(), *user, *keys], "radosgw-admin user create")
        return RgwEngine(
            http_url=http_url,
            https_url=https_url,
            ca_file=str(ca_file),
            cert_file=str(cert_file),
            key_file=str(key_file),
            access_key=access_key,
            secret_key=secret_key,
            version=self._version(),
            rgw_http_urls=tuple(rgw_http_urls),
        )

    def _c(self) -> list[str]:
        return ["--conf", str(self.conf)]

    def _write_conf(
        self, fsid: str, mon_port: int, http_port: int, https_port: int, cert: Path, key: Path
    ) -> None:
        d = self.dir
        options = {
            "fsid": fsid,
            "mon_host": f"[v2:127.0.0.1:{mon_port}]",
            "public_addr": "127.0.0.1",
            "cluster_addr": "127.0.0.1",
            "ms_bind_msgr1": "false",
            # Loopback and throwaway: no cephx, so no keyrings to make or pass around.
            "auth_cluster_required": "none",
            "auth_service_required": "none",
            "auth_client_required": "none",
            # Without cephx there is no "secure" mode, the only one radosgw offers its monitor by default.
            "ms_mon_client_mode": "crc",
            # Everything under workdir; $name is e.g. mon.a, osd.0, client.rgw, client.admin.
            "keyring": str(d / "keyring"),
            "run_dir": str(d / "run"),
            "admin_socket": "$run_dir/$name.$pid.asok",
            "pid_file": "$run_dir/$name.pid",
            "crash_dir": str(d / "crash"),
            "log_file": str(self.logs / "$name.log"),
            "mon_cluster_log_file": str(self.logs / "cluster.log"),
            "debug_rocksdb": "1/5",  # the monitor's store: statistics, not news
            "mon_data": str(d / "$name"),
            "osd_data": str(d / "$name"),
            "rgw_data": str(d / "$name"),
            # One OSD (or more: running_rgw_cluster), data in RAM, pools of one replica per OSD,
            # all on this one host; with several, they keep serving with one OSD down.
            "osd_objectstore": "memstore",
            "memstore_device_bytes": str(2 << 30),  # a ceiling, not an allocation
            "osd_pool_default_size": str(self.osds),
            "osd_pool_default_min_size": str(max(1, self.osds - 1)),
            "mon_allow_pool_size_one": "true",
            "mon_warn_on_pool_no_redundancy": "false",
            "osd_crush_chooseleaf_type": "0",
            # Each pool radosgw makes and each step of the OSD's boot is a new
            # cluster map; the monitor batches changes for a second by default.
            "paxos_propose_interval": "0.05",
            # The monitor's store is small: no refusal to start on a nearly full disk.
            "mon_data_avail_crit": "1",
            "mon_data_avail_warn": "2",
            # radosgw makes seven pools: few placement groups each peer fast on one OSD.
            "osd_pool_default_pg_num": "8",
            "osd_pool_default_pgp_num": "8",
            "osd_pool_default_pg_autoscale_mode": "off",
            # S3 on both ports; 32 threads serve the tests' concurrency (the default is 512).
            "rgw_frontends": (
                f"beast endpoint=127.0.0.1:{http_port} ssl_endpoint=127.0.0.1:{https_port}"
                f" ssl_certificate={cert} ssl_private_key={key}"
            ),
            "rgw_thread_pool_size": "32",
            # Deleted objects' data is reclaimed by RGW's garbage collector, after
            # two hours by default: soon instead, as memstore keeps it in RAM.
            "rgw_gc_obj_min_wait": "60",
            "rgw_gc_processor_period": "60",
            **self.extra_config,
        }
        lines = ["# Written by devtools/rgw.py for one throwaway cluster.", "[global]"]
        lines += [f"{name} = {value}" for name, value in options.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    def _daemon(self, name: str, args: list[str]) -> None:
        """Start a daemon in the foreground; stdout and stderr to log/NAME.out, its log to log/NAME.log."""
        with (self.logs / f"{name}.out").open("ab") as out:
            self.daemons[name] = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )

    def _tool(self, args: list[str], what: str) -> str:
        """Run a command line tool to completion; fail fast if a daemon dies or the deadline passes."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            tool = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.dir)
            try:
                while tool.poll() is None:
                    self._check(what)
                    time.sleep(0.05)
            finally:
                if tool.poll() is None:
                    tool.kill()
                    tool.wait()
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if tool.returncode != 0:
            said = "\n".join((stderr or stdout).splitlines()[-LOG_TAIL:])
            raise self._failure(f"{what} exited with {tool.returncode}:\n{said}")
        return stdout

    def _wait_for_s3(self, url: str, context: ssl.SSLContext | None) -> None:
        """Poll until radosgw answers anonymous S3 requests at `url` (a 200 listing no buckets)."""
        while True:
            self._check(f"radosgw on {url}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=context):
                    return
            except urllib.error.HTTPError:
                return  # an S3 error is an answer
            except (OSError, ssl.SSLError):
                time.sleep(0.1)

    def _check(self, step: str) -> None:
        """Raise if a daemon has exited or the deadline has passed while waiting for `step`."""
        for name, process in self.daemons.items():
            if process.poll() is not None:
                raise self._failure(f"{name} exited with {process.returncode} while waiting for {step}")
        if time.monotonic() > self.deadline:
            raise self._failure(f"timed out waiting for {step}")

    def _failure(self, message: str) -> RgwStartError:
        tails = []
        # Daemons' stdout/stderr first: where they say why they exited.
        for path in [*sorted(self.logs.glob("*.out")), *sorted(self.logs.glob("*.log"))]:
            lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            if lines:
                tails.append(f"--- {path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return RgwStartError("\n".join([f"Ceph RGW did not start: {message}", *tails]))

    def _version(self) -> str:
        out = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"ceph version (\S+)", out)
        return match.group(1) if match else out.strip()

    def kill(self, name: str) -> None:
        """SIGKILL one daemon (`osd.1`, `client.rgw.2`): a node lost while it serves."""
        process = self.daemons[name]
        process.kill()
        process.wait()

    def rss_bytes(self) -> int:
        """The daemons' resident memory now, summed (Linux)."""
        total = 0
        for process in self.daemons.values():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{process.pid}/status").read_text()
                match = re.search(r"VmRSS:\s+(\d+) kB", status)
                total += int(match.group(1)) * 1024 if match else 0
        return total

    def stop(self) -> None:
        """Stop the daemons newest first (radosgw, OSD, monitor): each exits in a fraction of a second.

        The other order costs seconds: an OSD or radosgw whose monitor is gone
        waits for it before exiting. A daemon that ignores SIGTERM for
        STOP_GRACE seconds gets SIGKILL.
        """
        for process in reversed(self.daemons.values()):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _die_with_parent(parent: int):
    """A preexec_fn: the child gets SIGKILL when its parent dies (Linux's PR_SET_PDEATHSIG).

    So no daemon outlives a test run that is killed outright (SIGKILL, OOM),
    when no finally-block runs. The signal is tied to the forking thread:
    start clusters from a thread that lives as long as they should.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl
            os._exit(1)

    return preexec


def _make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost: paths of both PEMs and the key.

    Both carry the extensions a strict verifier (Python 3.13's
    VERIFY_X509_STRICT) wants: key usages and key identifiers.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devtools.rgw test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(x509, signs_certificates=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(x509, signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _key_usage(x509, *, signs_certificates: bool):
    """A CA signs certificates (and CRLs); a server signs its TLS handshakes (ECDHE with an EC key)."""
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
        **dict.fromkeys(unused, False),
    )


def main() -> None:
    """Start one cluster, print how to reach it, run until Ctrl-C (or SIGTERM)."""
    parser = argparse.ArgumentParser(prog="python -m devtools.rgw", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", help="create this bucket once the cluster is up")
    parser.add_argument(
        "--workdir", type=Path, help="an empty folder to keep the cluster's files in (default: a temp dir)"
    )
    args = parser.parse_args()
    if reason := unavailable_reason():
        sys.exit(reason)
    # SIGTERM (e.g. from a bench script) stops the cluster as Ctrl-C does; so
    # does SIGINT even where a shell started us with it ignored (`cmd &`).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rgw-")))
        cluster = stack.enter_context(_Cluster(workdir.resolve(), {}, START_TIMEOUT))
        try:
            engine = cluster.start()
            if args.bucket:
                _create_bucket(engine, args.bucket)
            seconds, mib = time.monotonic() - started, cluster.rss_bytes() / 2**20
            print(f"# Ceph {engine.version} RGW up in {seconds:.1f} s, daemons' RSS {mib:.0f} MiB")
            print(f"# files and logs in {workdir}")
            print(f"S3_ENDPOINT_URL={engine.http_url}")
            print(f"# or over https: S3_ENDPOINT_URL={engine.https_url} AWS_CA_BUNDLE={engine.ca_file}")
            print(f"AWS_ACCESS_KEY_ID={engine.access_key}")
            print(f"AWS_SECRET_ACCESS_KEY={engine.secret_key}")
            if args.bucket:
                print(f"S3_BUCKET={args.bucket}")
            print("# Ctrl-C stops it", flush=True)
            signal.pause()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)


def _create_bucket(engine: RgwEngine, bucket: str) -> None:
    import boto3  # a dev requirement; only this option needs it

    boto3.client(
        "s3",
        endpoint_url=engine.http_url,
        region_name="us-east-1",
        aws_access_key_id=engine.access_key,
        aws_secret_access_key=engine.secret_key,
    ).create_bucket(Bucket=bucket)


if __name__ == "__main__":
    main()
