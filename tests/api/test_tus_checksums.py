"""The tus checksum extension's algorithms (Upload-Checksum): crc32, crc32c and sha512 beside sha1,
sha256 and md5, each refused when wrong (460, nothing committed) and kept when right."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import zlib

import google_crc32c
import pytest
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from file_uploader.settings import Settings

from ..helpers import open_uploads
from .test_tus import PART, content, create, downloaded, gateway, listed, names, offset_of, patch, payload


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process, with 5 MiB parts."""
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART)))


def crc32(data: bytes) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


def crc32c(data: bytes) -> bytes:
    return google_crc32c.value(data).to_bytes(4, "big")


DIGESTS = {
    "crc32": crc32,
    "crc32c": crc32c,
    "sha512": lambda data: hashlib.sha512(data).digest(),
    "sha1": lambda data: hashlib.sha1(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "md5": lambda data: hashlib.md5(data).digest(),
}


def header(algorithm: str, data: bytes) -> dict[str, str]:
    return {"Upload-Checksum": f"{algorithm} {base64.b64encode(DIGESTS[algorithm](data)).decode()}"}


async def test_options_offers_crc32_crc32c_and_sha512_too(gw):
    response = await gw.options("/api/uploads/")
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == set(DIGESTS)


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha512"])
async def test_a_wrong_checksum_gets_460_and_a_right_one_is_kept(gw, auth, algorithm):
    data = payload(PART + 1000)
    url = await create(gw, auth, f"{algorithm}.bin", length=len(data))
    wrong = await patch(gw, auth, url, 0, data, **header(algorithm, data[:-1] + b"\0"))
    assert wrong.status == 460
    assert (await wrong.json())["error"]["code"] == "checksum_mismatch"
    assert await offset_of(gw, auth, url) == 0
    assert await names(gw, auth) == []
    # A PATCH of the first bytes, then the rest, each with its own checksum.
    first = await patch(gw, auth, url, 0, data[:1000], **header(algorithm, data[:1000]))
    assert first.status == 204
    rest = await patch(gw, auth, url, 1000, data[1000:], **header(algorithm, data[1000:]))
    assert rest.status == 204
    assert await content(gw, auth, f"{algorithm}.bin") == data


async def test_a_checksum_of_the_wrong_length_is_a_mismatch(gw, auth):
    url = await create(gw, auth, "short.bin", length=3)
    response = await patch(
        gw, auth, url, 0, b"abc", **{"Upload-Checksum": "crc32c " + base64.b64encode(b"ab").decode()}
    )
    assert response.status == 460


def uploader_with(algorithm: str) -> type[Uploader]:
    """tuspy's Uploader sending `algorithm` (tuspy takes the pair from the class, as its own
    crc32c and sha512 will come)."""

    class Digest:
        def __init__(self, data: bytes) -> None:
            self._digest = DIGESTS[algorithm](data)

        def digest(self) -> bytes:
            return self._digest

    return type(f"{algorithm}Uploader", (Uploader,), {"CHECKSUM_ALGORITHM_PAIR": (algorithm, Digest)})


@pytest.mark.process
@pytest.mark.parametrize("algorithm", ["crc32c", "sha512", "crc32"])
def test_tuspy_uploads_with_each_new_checksum(s3_url, bucket, s3, tmp_path, auth, algorithm):
    data = payload(2 * PART + 321)
    path = tmp_path / "summed.bin"
    path.write_bytes(data)
    with gateway(s3_url, bucket, tmp_path / "gw") as base:
        client = TusClient(f"{base}/api/uploads/", headers=auth)
        uploader = uploader_with(algorithm)(
            client=client,
            file_path=str(path),
            metadata={"filename": "summed.bin"},
            upload_checksum=True,
            chunk_size=PART,  # several PATCHes, each with its checksum
        )
        uploader.upload()
        assert listed(base, auth) == ["summed.bin"]
        assert downloaded(base, auth, "summed.bin") == data
    assert open_uploads(s3, bucket) == []
