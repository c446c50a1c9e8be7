"""HOOK_URL: pre-create and pre-finish refuse uploads (PUT, forms, tus) or lower their size limit,
against a real aiohttp receiver over a socket, with curl, aiohttp's client and tuspy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError

from file_uploader.sizes import MiB
from file_uploader.storage.keys import user_id

from ..helpers import all_keys, chunked, open_uploads, path_of

SECRET = "the secret the gateway signs its hooks with"
TUS = {"Tus-Resumable": "1.0.0"}


class Receiver:
    """The operator's hook endpoint: `answers[type] = (status, body)` (else 200 {}); `delay`
    seconds before answering. Every hook is kept, decoded, with whether its signature holds."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.delay = 0.0
        self.hooks: list[dict[str, Any]] = []
        self.signed: list[bool] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        self.signed.append(hmac.compare_digest(expected, request.headers.get("X-Hook-Signature", "")))
        hook = json.loads(body)
        self.hooks.append(hook)
        await asyncio.sleep(self.delay)
        status, answer = self.answers.get(hook["type"], (200, {}))
        return web.json_response(answer, status=status)

    def types(self) -> list[str]:
        return [hook["type"] for hook in self.hooks]


@pytest.fixture
async def receiver():
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", found.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hooks"
    yield found
    await runner.cleanup()


@pytest.fixture
def gateway(aiohttp_client, app_for, settings, receiver):
    async def start(**changes):
        changed = dataclasses.replace(
            settings, hook_url=receiver.url, hook_secret=SECRET, part_size=5 * MiB, **changes
        )
        return await aiohttp_client(await app_for(changed))

    return start


@pytest.fixture
async def gw(gateway):
    return await gateway()


def base_url(client) -> str:
    return str(client.make_url("")).rstrip("/")


async def curl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


def tus_upload(url: str, auth: dict[str, str], path: str, name: str) -> None:
    TusClient(url, headers=auth).uploader(
        file_path=path, metadata={"filename": name}, chunk_size=6 * MiB
    ).upload()


def tus_metadata(name: str) -> str:
    return "filename " + base64.b64encode(name.encode()).decode()


# pre-create ----------------------------------------------------------------------------------------


async def test_a_pre_create_refusal_reaches_curl_before_the_body_is_sent_and_nothing_is_stored(
    gw, receiver, auth, token, s3, bucket, tmp_path
):
    receiver.answers["pre-create"] = (403, {"message": "no videos here"})
    path = tmp_path / "film.mp4"
    path.write_bytes(b"v" * 200_000)
    _, out, err = await curl(
        "-T", str(path), "-H", f"X-Auth-Token: {token}", "-H", "Expect: 100-continue",
        f"{base_url(gw)}/api/files/film.mp4",
    )  # fmt: skip
    assert json.loads(out) == {"error": {"code": "hook_refused", "message": "no videos here"}}
    assert "< HTTP/1.1 403" in err
    assert "100 Continue" not in err  # refused before curl sent a byte of the body
    assert all_keys(s3, bucket) == []
    hook = receiver.hooks[0]
    assert receiver.signed == [True]
    assert {k: hook[k] for k in ("type", "user", "name", "size", "upload")} == {
        "type": "pre-create",
        "user": user_id(token),
        "name": "film.mp4",
        "size": 200_000,
        "upload": "put",
    }
    assert set(hook) >= {"id", "time"}


async def test_a_pre_create_refusal_is_a_forms_files_answer_and_stores_nothing(
    gw, receiver, auth, s3, bucket
):
    receiver.answers["pre-create"] = (415, {"message": "only images"})
    form = aiohttp.FormData()
    form.add_field("file", b"text", filename="notes.txt")
    response = await gw.post("/api/files", data=form, headers=auth)
    assert response.status == 415
    body = await response.json()
    assert body["error"] == {"code": "hook_refused", "message": "only images"}
    assert body["files"][0]["name"] == "notes.txt"
    assert all_keys(s3, bucket) == []
    assert receiver.types() == ["pre-create"]
    assert receiver.hooks[0]["upload"] == "form" and receiver.hooks[0]["name"] == "notes.txt"


async def test_a_pre_create_refusal_reaches_tuspy_and_creates_nothing(
    gw, receiver, auth, s3, bucket, tmp_path
):
    receiver.answers["pre-create"] = (403, {"message": "closed for uploads"})
    path = tmp_path / "big.bin"
    path.write_bytes(b"t" * 1000)
    with pytest.raises(TusCommunicationError) as refused:
        await asyncio.to_thread(tus_upload, f"{base_url(gw)}/api/uploads/", auth, str(path), "big.bin")
    assert refused.value.status_code == 403
    assert all_keys(s3, bucket) == [] and open_uploads(s3, bucket) == []
    hook = receiver.hooks[0]
    assert (hook["upload"], hook["name"], hook["size"]) == ("tus", "big.bin", 1000)
    assert hook["metadata"] == {"filename": "big.bin"}


async def test_a_refusal_without_a_message_gets_a_plain_one(gw, receiver, auth):
    receiver.answers["pre-create"] = (429, "not json at all")
    response = await gw.put("/api/files/a", data=b"a", headers=auth)
    assert response.status == 429
    assert (await response.json())["error"] == {"code": "hook_refused", "message": "the upload was refused"}


async def test_a_pre_create_hook_lowers_the_size_limit_of_each_kind_of_upload(gw, receiver, auth, s3, bucket):
    receiver.answers["pre-create"] = (200, {"max_size": 1000})
    declared = await gw.put("/api/files/a", data=b"x" * 1001, headers=auth)
    assert declared.status == 413 and (await declared.json())["error"]["code"] == "file_too_large"
    streamed = await gw.put("/api/files/b", data=chunked(b"x" * 5000, 500), headers=auth)
    assert streamed.status == 413
    form = aiohttp.FormData()
    form.add_field("file", b"x" * 1500, filename="c")
    assert (await gw.post("/api/files", data=form, headers=auth)).status == 413
    tus = {**auth, **TUS, "Upload-Metadata": tus_metadata("d")}
    assert (await gw.post("/api/uploads", headers={**tus, "Upload-Length": "1001"})).status == 413
    deferred = await gw.post("/api/uploads", headers={**tus, "Upload-Defer-Length": "1"})
    assert deferred.status == 201
    patch = await gw.patch(
        path_of(deferred.headers["Location"]),
        data=b"x" * 1200,
        headers={**auth, **TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert patch.status == 413
    assert all_keys(s3, bucket) == [k for k in all_keys(s3, bucket) if k.startswith("uploads/")]
    assert (await gw.put("/api/files/e", data=b"x" * 1000, headers=auth)).status == 204


# pre-finish ----------------------------------------------------------------------------------------


async def test_a_pre_finish_refusal_keeps_the_old_version_of_a_put_and_no_multipart_upload(
    gw, receiver, auth, s3, bucket
):
    assert (await gw.put("/api/files/scan.bin", data=b"old", headers=auth)).status == 204
    receiver.answers["pre-finish"] = (422, {"message": "infected: Eicar-Test-Signature"})
    for body in (b"small", chunked(b"v" * (11 * MiB), 1 * MiB)):  # one PutObject; a multipart upload
        response = await gw.put("/api/files/scan.bin", data=body, headers=auth)
        assert response.status == 422
        assert (await response.json())["error"]["message"] == "infected: Eicar-Test-Signature"
        assert await (await gw.get("/api/files/scan.bin", headers=auth)).read() == b"old"
        assert open_uploads(s3, bucket) == []
    finishes = [hook for hook in receiver.hooks if hook["type"] == "pre-finish"]
    assert [hook["size"] for hook in finishes] == [3, 5, 11 * MiB]


async def test_a_pre_finish_refusal_of_a_form_file_stores_nothing_of_it(gw, receiver, auth, s3, bucket):
    receiver.answers["pre-finish"] = (403, {"message": "no"})
    form = aiohttp.FormData()
    form.add_field("file", b"data", filename="f.txt")
    response = await gw.post("/api/files", data=form, headers=auth)
    assert response.status == 403
    assert all_keys(s3, bucket) == []


async def test_a_pre_finish_refusal_of_a_tus_upload_keeps_the_old_version_and_forgets_the_upload(
    gw, receiver, auth, s3, bucket, tmp_path
):
    assert (await gw.put("/api/files/t.bin", data=b"old", headers=auth)).status == 204
    receiver.answers["pre-finish"] = (403, {"message": "rejected by the scanner"})
    path = tmp_path / "t.bin"
    path.write_bytes(b"n" * (7 * MiB))  # a full part, then a tail in the last PATCH
    with pytest.raises(TusCommunicationError) as refused:
        await asyncio.to_thread(tus_upload, f"{base_url(gw)}/api/uploads/", auth, str(path), "t.bin")
    assert refused.value.status_code == 403
    assert await (await gw.get("/api/files/t.bin", headers=auth)).read() == b"old"
    assert open_uploads(s3, bucket) == []
    assert [key for key in all_keys(s3, bucket) if key.startswith("uploads/")] == []
    assert receiver.types()[2:] == ["pre-create", "pre-finish"]  # after the PUT's two
    assert receiver.hooks[-1]["size"] == 7 * MiB


async def test_an_allowed_upload_is_asked_once_before_and_once_after(gw, receiver, auth, tmp_path):
    response = await gw.put("/api/files/ok", data=b"fine", headers={**auth, "Expect": "100-continue"})
    assert response.status == 204
    assert receiver.types() == ["pre-create", "pre-finish"]
    path = tmp_path / "ok.bin"
    path.write_bytes(b"k" * 100)
    await asyncio.to_thread(tus_upload, f"{base_url(gw)}/api/uploads/", auth, str(path), "ok.bin")
    assert receiver.types()[2:] == ["pre-create", "pre-finish"]
    assert all(receiver.signed)


async def test_a_final_upload_is_asked_with_its_size_and_its_partial_uploads_are_not(
    gw, receiver, auth, s3, bucket
):
    """tus concatenation: the hooks judge the file (the final upload), not its pieces."""
    partial = {**auth, **TUS, "Upload-Concat": "partial", "Content-Type": "application/offset+octet-stream"}
    urls = []
    for piece in (b"a" * 700, b"b" * 600):
        created = await gw.post(
            "/api/uploads/", data=piece, headers={**partial, "Upload-Length": str(len(piece))}
        )
        assert created.status == 201
        urls.append(created.headers["Location"])
    assert receiver.hooks == []
    final = {
        **auth,
        **TUS,
        "Upload-Concat": "final;" + " ".join(urls),
        "Upload-Metadata": tus_metadata("j.bin"),
    }
    receiver.answers["pre-create"] = (200, {"max_size": 1000})
    too_large = await gw.post("/api/uploads/", headers=final)
    assert too_large.status == 413
    receiver.answers["pre-create"] = (200, {})
    receiver.answers["pre-finish"] = (403, {"message": "rejected by the scanner"})
    refused = await gw.post("/api/uploads/", headers=final)
    assert refused.status == 403
    assert open_uploads(s3, bucket) == []
    assert [key for key in all_keys(s3, bucket) if key.startswith("files/")] == []
    del receiver.answers["pre-finish"]
    stored = await gw.post("/api/uploads/", headers=final)  # the partial uploads were kept
    assert stored.status == 201
    assert await (await gw.get("/api/files/j.bin", headers=auth)).read() == b"a" * 700 + b"b" * 600
    assert [(hook["type"], hook["size"]) for hook in receiver.hooks] == [
        ("pre-create", 1300),
        ("pre-create", 1300),
        ("pre-finish", 1300),
        ("pre-create", 1300),
        ("pre-finish", 1300),
    ]


# A hook that does not answer -----------------------------------------------------------------------


async def test_a_hook_that_hangs_is_cut_off_after_its_timeout_and_refuses_with_503(
    gateway, receiver, auth, s3, bucket
):
    gw = await gateway(hook_timeout=0.5)
    receiver.delay = 5
    started = asyncio.get_running_loop().time()
    response = await gw.put("/api/files/a", data=b"a", headers=auth)
    assert asyncio.get_running_loop().time() - started < 3
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert (await response.json())["error"]["code"] == "hook_unavailable"
    assert all_keys(s3, bucket) == []


@pytest.mark.parametrize("status", [500, 302])
async def test_an_answer_that_is_neither_2xx_nor_4xx_refuses_with_503(gw, receiver, auth, status):
    receiver.answers["pre-create"] = (status, {})
    assert (await gw.put("/api/files/a", data=b"a", headers=auth)).status == 503


async def test_with_hook_fail_open_a_hook_that_is_down_lets_uploads_through(
    aiohttp_client, app_for, settings, auth
):
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}/hooks"  # bound, never listening
        closed = await aiohttp_client(
            await app_for(dataclasses.replace(settings, hook_url=nobody, hook_secret=SECRET))
        )
        assert (await closed.put("/api/files/a", data=b"a", headers=auth)).status == 503
        fail_open = dataclasses.replace(settings, hook_url=nobody, hook_secret=SECRET, hook_fail_open=True)
        opened = await aiohttp_client(await app_for(fail_open))
        assert (await opened.put("/api/files/a", data=b"a", headers=auth)).status == 204


def test_hook_secret_is_required_with_hook_url(settings):
    from file_uploader.settings import SettingsError

    with pytest.raises(SettingsError, match="HOOK_SECRET"):
        dataclasses.replace(settings, hook_url="http://127.0.0.1:9/hooks")


# The IETF draft's resumable uploads and upload requests ---------------------------------------------


async def test_the_hooks_judge_an_ietf_draft_upload_before_its_body_and_before_its_file(
    gw, receiver, auth, s3, bucket
):
    from ..api.test_resumable_draft import DRAFT, request

    headers = {
        **auth,
        **DRAFT,
        "Upload-Complete": "?1",
        "Content-Disposition": 'attachment; filename="d.bin"',
    }
    receiver.answers["pre-create"] = (403, {"message": "not now"})
    refused = await request(gw, "POST", "/api/uploads/", headers, b"d" * 1000)
    assert refused.status == 403 and refused.informational == []  # refused before the 104
    receiver.answers = {"pre-finish": (422, {"message": "infected"})}
    refused = await request(gw, "POST", "/api/uploads/", headers, b"d" * 1000)
    assert refused.status == 422
    assert all_keys(s3, bucket) == [] and open_uploads(s3, bucket) == []
    assert [(hook["type"], hook["upload"]) for hook in receiver.hooks] == [
        ("pre-create", "draft"),
        ("pre-create", "draft"),
        ("pre-finish", "draft"),
    ]


async def test_the_hooks_judge_a_file_sent_to_an_upload_request_in_its_owners_space(
    gw, receiver, auth, token, s3, bucket
):
    made = await (await gw.post("/api/requests", json={"folder": "inbox"}, headers=auth)).json()
    path = made["url"].split("://", 1)[1].split("/", 1)[1]
    receiver.answers["pre-create"] = (403, {"message": "the inbox is closed"})
    refused = await gw.put(f"/{path}/a.txt", data=b"a")
    assert refused.status == 403
    assert (await refused.json())["error"]["message"] == "the inbox is closed"
    receiver.answers = {"pre-finish": (403, {"message": "scanned: no"})}
    assert (await gw.put(f"/{path}/a.txt", data=b"a")).status == 403
    receiver.answers = {"pre-create": (200, {"max_size": 10})}
    assert (await gw.put(f"/{path}/b.txt", data=b"b" * 11)).status == 413
    assert [key for key in all_keys(s3, bucket) if key.startswith("files/")] == []
    hook = receiver.hooks[0]
    assert (hook["user"], hook["name"], hook["upload"]) == (user_id(token), "inbox/a.txt", "request")


async def test_the_hooks_judge_a_tus_upload_sent_to_an_upload_request_in_its_owners_space(
    gw, receiver, auth, token, s3, bucket
):
    made = await (
        await gw.post("/api/requests", json={"folder": "inbox", "max_files": 5}, headers=auth)
    ).json()
    base = "/" + made["url"].split("://", 1)[1].split("/", 1)[1] + "/uploads"

    async def create(name: str, length: int):
        return await gw.post(
            base, headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": tus_metadata(name)}
        )

    receiver.answers["pre-create"] = (403, {"message": "the inbox is closed"})
    refused = await create("a.txt", 1)
    assert refused.status == 403 and (await refused.json())["error"]["message"] == "the inbox is closed"
    receiver.answers = {"pre-finish": (403, {"message": "scanned: no"})}
    created = await create("a.txt", 1)
    assert created.status == 201
    sent = await gw.patch(
        path_of(created.headers["Location"]),
        data=b"a",
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    assert sent.status == 403
    assert [key for key in all_keys(s3, bucket) if key.startswith("files/")] == []
    assert open_uploads(s3, bucket) == []
    listed = await (await gw.get("/api/requests", headers=auth)).json()
    assert (listed[0]["files"], listed[0]["bytes"]) == (0, 0)  # each refusal gave its room back
    assert [(hook["type"], hook["user"], hook["name"], hook["upload"]) for hook in receiver.hooks] == [
        ("pre-create", user_id(token), "inbox/a.txt", "request"),
        ("pre-create", user_id(token), "inbox/a.txt", "request"),
        ("pre-finish", user_id(token), "inbox/a.txt", "request"),
    ]
