"""`make run`: the gateway, plus a throwaway in-memory S3 when none is configured.

With no S3 endpoint and no AWS credentials in the environment or `.env`, a
fresh checkout has nowhere to put files, so this starts moto's S3 server on a
free loopback port as a child process, points the gateway at it and stops it
when the gateway stops. With S3 configured it only runs the gateway.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping

import boto3
from dotenv import load_dotenv

from devtools.ports import child_server, free_port
from file_uploader import __main__ as cli
from file_uploader.settings import Settings, SettingsError

LOCAL_BUCKET = "file-uploader"
MOTO_START_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def wants_local_s3(env: Mapping[str, str]) -> bool:
    """True when nothing says where S3 is: no endpoint, no credentials, no profile."""
    return not any(env.get(name) for name in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"))


def _die_with_parent() -> None:
    # If the gateway is killed outright (SIGKILL), moto must not outlive it.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def local_s3() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for as long as the block runs; yields its URL."""
    port = free_port()
    with child_server(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        port,
        timeout=MOTO_START_SECONDS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    ):
        yield f"http://127.0.0.1:{port}"


def _banner(s3_url: str, port: str) -> str:
    base = f"http://localhost:{port}"
    token = uuid.uuid4()
    return f"""
================================================================================
 No S3 is configured (no S3_ENDPOINT_URL and no AWS credentials in the
 environment or .env), so a local in-memory S3 server is running at
 {s3_url} for this session only.
 Files live in MEMORY and are GONE when `make run` stops. It joins a large
 file's parts in memory too: a 1 GiB upload takes it about 4 GiB for a moment.
 For storage that lasts, copy .env.example to .env and point it at S3 or MinIO.

 Try it (any UUID is a user):
   TOKEN={token}
   curl -H "X-Auth-Token: $TOKEN" --upload-file README.md {base}/api/files/README.md
   curl -H "X-Auth-Token: $TOKEN" {base}/api/files
   curl -H "X-Auth-Token: $TOKEN" {base}/api/files/README.md
   curl -H "X-Auth-Token: $TOKEN" -X DELETE {base}/api/files/README.md
 Stop with Ctrl-C.
================================================================================
"""


def main() -> int:
    load_dotenv()
    if not wants_local_s3(os.environ):
        return cli.main([])
    if not (os.environ.get("S3_BUCKET") or os.environ.get("BUCKET")):
        os.environ["S3_BUCKET"] = LOCAL_BUCKET
    # moto accepts any credentials; these only keep botocore from looking further.
    os.environ["AWS_ACCESS_KEY_ID"] = "local"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "local"
    try:  # a bad setting is said in one line now, not after the banner
        settings = Settings.from_env({**os.environ, "S3_ENDPOINT_URL": "http://127.0.0.1:1"})
    except SettingsError as exc:
        print(f"file_uploader: {exc}", file=sys.stderr)
        return 2
    with local_s3() as s3_url:
        os.environ["S3_ENDPOINT_URL"] = s3_url
        # The in-memory S3 starts empty: its bucket is made here, so that S3_CREATE_BUCKET keeps
        # the value it was given (the gateway's own check then finds the bucket there).
        local = boto3.client("s3", endpoint_url=s3_url, region_name=settings.aws_region)
        where = {} if settings.aws_region == "us-east-1" else {"LocationConstraint": settings.aws_region}
        local.create_bucket(
            Bucket=settings.s3_bucket, **({"CreateBucketConfiguration": where} if where else {})
        )
        print(_banner(s3_url, str(settings.port)), flush=True)
        return cli.main([])


if __name__ == "__main__":
    sys.exit(main())
