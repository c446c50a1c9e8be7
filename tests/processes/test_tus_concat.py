"""tus concatenation across gateway processes: partial uploads on either, joined by either."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import pytest
import requests

from file_uploader.sizes import KiB, MiB

from ..cutproxy import CutProxy
from ..helpers import new_token, open_uploads, run_gateway
from ..node_clients import tus_js_upload

# Every test here runs gateways as processes.
pytestmark = pytest.mark.process

PART = 5 * MiB
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def partial(base: str, auth: dict, data: bytes) -> str:
    created = requests.post(
        f"{base}/api/uploads/",
        data=data,
        headers={**auth, **TUS, **OCTETS, "Upload-Concat": "partial", "Upload-Length": str(len(data))},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    assert created.headers["Upload-Offset"] == str(len(data))
    return created.headers["Location"]


def sha256_of(base: str, auth: dict, name: str) -> str:
    digest = hashlib.sha256()
    with requests.get(f"{base}/api/files/{name}", headers=auth, stream=True, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(1 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def requests_in_log(workdir: Path, method: str) -> int:
    """How many `method` requests the process's access log shows."""
    return sum(
        1
        for line in (workdir / "gateway.log").read_text().splitlines()
        if "file_uploader.access" in line and f" method={method} " in line
    )


def test_partial_uploads_made_on_two_processes_are_joined_by_either(s3_url, bucket, s3, tmp_path):
    auth = {"X-Auth-Token": new_token()}
    settings = {"PART_SIZE": str(PART)}
    with (
        run_gateway(s3_url, bucket, tmp_path / "one", **settings) as one,
        run_gateway(s3_url, bucket, tmp_path / "two", **settings) as two,
    ):
        big, small = os.urandom(6 * MiB + 7), os.urandom(KiB)
        urls = [partial(one, auth, big), partial(two, auth, small), partial(one, auth, big[:100])]
        name = base64.b64encode(b"joined.bin").decode()
        final = requests.post(
            f"{two}/api/uploads/",
            headers={
                **auth,
                **TUS,
                "Upload-Concat": "final;" + " ".join(urls),
                "Upload-Metadata": f"filename {name}",
            },
            timeout=30,
        )
        assert final.status_code == 201, final.text
        whole = big + small + big[:100]
        assert sha256_of(one, auth, "joined.bin") == hashlib.sha256(whole).hexdigest()
        head = requests.head(final.headers["Location"].replace(two, one), headers={**auth, **TUS}, timeout=10)
        assert head.headers["Upload-Offset"] == str(len(whole))
        assert open_uploads(s3, bucket) == []


@pytest.mark.slow
async def test_tus_js_client_parallel_uploads_200_mib_through_two_processes_and_resumes_after_a_cut(
    s3_url, bucket, s3, tmp_path
):
    auth = {"X-Auth-Token": new_token()}
    data = os.urandom(200 * MiB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    settings = {"PART_SIZE": str(PART)}
    with (
        run_gateway(s3_url, bucket, tmp_path / "one", **settings) as one,
        run_gateway(s3_url, bucket, tmp_path / "two", **settings) as two,
        CutProxy(int(one.rsplit(":", 1)[1]), int(two.rsplit(":", 1)[1])) as proxy,
    ):
        proxy.cut_after(90 * MiB)  # mid-upload: every connection drops, and none is taken for a second

        def restore() -> None:
            proxy.cut_done.wait(300)
            threading.Event().wait(1)
            proxy.restore()

        restorer = threading.Thread(target=restore, daemon=True)
        restorer.start()
        result = await tus_js_upload(
            f"{proxy.url}/api/uploads/", auth["X-Auth-Token"], source, "big.bin", parallel=4
        )
        restorer.join(10)
        assert proxy.cut_done.is_set()
        assert result["retries"] >= 1
        assert sha256_of(one, auth, "big.bin") == hashlib.sha256(data).hexdigest()
        # Both processes took bytes of it (connections go to each in turn).
        assert requests_in_log(tmp_path / "one", "PATCH") >= 1
        assert requests_in_log(tmp_path / "two", "PATCH") >= 1
        assert open_uploads(s3, bucket) == []
