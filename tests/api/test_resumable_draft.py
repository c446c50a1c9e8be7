"""The IETF draft "Resumable Uploads for HTTP" beside tus: a small client written from the draft
(raw HTTP/1.1 over a socket, to see the 104), curl, and the tus protocol on the same uploads."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import pytest

from file_uploader.settings import Settings
from file_uploader.sizes import MiB

from ..helpers import open_uploads, path_of
from .test_tus import PART, TUS, content, downloaded, gateway, payload

DRAFT = {"Upload-Draft-Interop-Version": "6"}


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process, with 5 MiB parts."""
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART)))


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    informational: list[tuple[int, dict[str, str]]]  # 1xx answers before it


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def request(
    gw, method: str, path: str, headers: dict[str, str], body: bytes = b"", *, send: int | None = None
) -> Answer:
    """One HTTP/1.1 request as the draft's client sends it to the gateway `gw` (a test client, or a
    process's URL); `send`: the connection is closed after that many bytes of the body, and only
    the 104 is heard."""
    port = gw.port if hasattr(gw, "port") else int(gw.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    informational = []
    if send is not None:
        writer.write(body[:send])
        await writer.drain()
        status, got = await _read_head(reader)  # the 104, sent before the body is read
        informational.append((status, got))
        writer.close()
        return Answer(0, {}, informational)
    writer.write(body)
    await writer.drain()
    while True:
        status, got = await _read_head(reader)
        if status >= 200:
            break
        informational.append((status, got))
    writer.close()
    return Answer(status, got, informational)


def upload_path(answer: Answer) -> str:
    return path_of(answer.headers["location"])


async def test_an_upload_in_one_request_gets_104_then_201_and_is_stored(gw, auth):
    data = payload(MiB + 5)
    answer = await request(
        gw,
        "POST",
        "/api/uploads/",
        {**auth, **DRAFT, "Upload-Complete": "?1", "Content-Disposition": 'attachment; filename="one.bin"'},
        data,
    )
    assert answer.status == 201
    [(status, early)] = answer.informational
    assert status == 104
    assert early["location"] == answer.headers["location"]
    assert early["upload-draft-interop-version"] == "6"
    assert answer.headers["upload-complete"] == "?1"
    assert answer.headers["upload-offset"] == str(len(data))
    assert await content(gw, auth, "one.bin") == data


@pytest.mark.process
@pytest.mark.parametrize("version", ["6", "7", "8"])
async def test_an_upload_cut_off_asks_its_offset_resumes_and_completes_byte_exact(
    s3_url, bucket, s3, tmp_path, auth, version
):
    draft = {"Upload-Draft-Interop-Version": version}
    data = payload(3 * PART + 1234)
    with gateway(s3_url, bucket, tmp_path / "gw") as gw:
        await cut_off_and_resumed(gw, auth, draft, data)
    assert open_uploads(s3, bucket) == []


async def cut_off_and_resumed(gw, auth, draft, data):
    cut = await request(
        gw,
        "POST",
        "/api/uploads/",
        {**auth, **draft, "Upload-Complete": "?1", "Content-Disposition": 'attachment; filename="cut.bin"'},
        data,
        send=PART + PART // 2,
    )
    [(status, early)] = cut.informational
    assert status == 104  # the client knows where to resume before its request is cut off
    path = path_of(early["location"])
    for _ in range(150):  # the gateway commits what arrived once it sees the connection gone
        head = await request(gw, "HEAD", path, {**auth, **draft})
        assert head.status == 204
        if int(head.headers["upload-offset"]):
            break
        await asyncio.sleep(0.1)
    assert head.headers["upload-complete"] == "?0"
    assert head.headers["cache-control"] == "no-store"
    offset = int(head.headers["upload-offset"])
    assert 0 < offset <= PART + PART // 2
    for _ in range(50):  # 423 while the cut request still holds the upload's lock: try again
        rest = await request(
            gw,
            "PATCH",
            path,
            {
                **auth,
                **draft,
                "Upload-Offset": str(offset),
                "Upload-Complete": "?1",
                "Content-Type": "application/partial-upload",
            },
            data[offset:],
        )
        if rest.status != 423:
            break
        await asyncio.sleep(0.2)
    assert rest.status == 204, rest
    assert rest.headers["upload-complete"] == "?1"
    assert rest.headers["upload-offset"] == str(len(data))
    stored = await asyncio.to_thread(downloaded, gw, auth, "cut.bin")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()


async def test_an_upload_of_unknown_length_in_pieces(gw, auth):
    data = payload(2 * MiB)
    created = await request(
        gw,
        "POST",
        "/api/uploads/",
        {**auth, **DRAFT, "Upload-Complete": "?0", "Content-Disposition": "attachment; filename=pieces.bin"},
        data[:MiB],
    )
    assert created.status == 201
    assert created.headers["upload-complete"] == "?0"
    path = upload_path(created)
    wrong = await request(
        gw,
        "PATCH",
        path,
        {
            **auth,
            **DRAFT,
            "Upload-Offset": "7",
            "Upload-Complete": "?1",
            "Content-Type": "application/partial-upload",
        },
        data[7:],
    )
    assert wrong.status == 409
    assert wrong.headers["upload-offset"] == str(MiB)
    done = await request(
        gw,
        "PATCH",
        path,
        {
            **auth,
            **DRAFT,
            "Upload-Offset": str(MiB),
            "Upload-Complete": "?1",
            "Content-Type": "application/partial-upload",
        },
        data[MiB:],
    )
    assert done.status == 204
    assert await content(gw, auth, "pieces.bin") == data


async def test_tus_and_the_draft_share_one_upload(gw, auth):
    created = await request(
        gw,
        "POST",
        "/api/uploads/",
        {**auth, **DRAFT, "Upload-Length": "10", "Content-Disposition": 'attachment; filename="both.bin"'},
        b"01234",
    )
    path = upload_path(created)
    tus_head = await gw.head(path, headers={**auth, **TUS})
    assert (tus_head.status, tus_head.headers["Upload-Offset"], tus_head.headers["Upload-Length"]) == (
        200,
        "5",
        "10",
    )
    resumed = await gw.patch(
        path,
        data=b"56789",
        headers={**auth, **TUS, "Upload-Offset": "5", "Content-Type": "application/offset+octet-stream"},
    )
    assert resumed.status == 204
    head = await request(gw, "HEAD", path, {**auth, **DRAFT})
    assert (head.headers["upload-offset"], head.headers["upload-complete"]) == ("10", "?1")
    assert await content(gw, auth, "both.bin") == b"0123456789"


async def test_cancel_removes_the_upload(gw, auth, s3, bucket):
    created = await request(
        gw,
        "POST",
        "/api/uploads/",
        {**auth, **DRAFT, "Content-Disposition": 'attachment; filename="gone.bin"'},
        b"some",
    )
    path = upload_path(created)
    assert (await request(gw, "DELETE", path, {**auth, **DRAFT})).status == 204
    assert (await request(gw, "HEAD", path, {**auth, **DRAFT})).status == 404
    assert open_uploads(s3, bucket) == []


async def test_options_tells_the_upload_limit_and_a_name_is_required(gw, auth):
    response = await gw.options("/api/uploads/", headers=DRAFT)
    assert response.headers["Upload-Limit"].startswith("max-size=")
    nameless = await request(gw, "POST", "/api/uploads/", {**auth, **DRAFT, "Upload-Complete": "?1"}, b"x")
    assert nameless.status == 400
    assert nameless.headers["upload-draft-interop-version"] == "6"


async def test_curl_sees_the_104_and_uploads(gw, auth, tmp_path):
    data = payload(300_000)
    (tmp_path / "c.bin").write_bytes(data)
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "-X", "POST", "--data-binary", f"@{tmp_path / 'c.bin'}",
        "-H", f"X-Auth-Token: {auth['X-Auth-Token']}", "-H", "Upload-Draft-Interop-Version: 6",
        "-H", "Upload-Complete: ?1", "-H", "Content-Type:",
        "-H", 'Content-Disposition: attachment; filename="c.bin"',
        f"http://127.0.0.1:{gw.port}/api/uploads/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "< HTTP/1.1 104" in err.decode()
    assert "< HTTP/1.1 201" in err.decode()
    assert await content(gw, auth, "c.bin") == data
