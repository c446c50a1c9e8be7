"""tus concatenation (Upload-Concat: partial, final): partial uploads joined into one file inside S3."""

from __future__ import annotations

import dataclasses
import time

import pytest

from file_uploader.appkeys import STORAGE
from file_uploader.settings import Settings
from file_uploader.sizes import KiB, MiB
from file_uploader.storage.keys import user_id

from ..helpers import metric, metric_samples, new_token, open_uploads, path_of
from ..node_clients import tus_js_upload
from .test_tus import OCTETS, PART, TUS, content, leftovers, metadata, names, payload, state_keys


@pytest.fixture
async def gw(aiohttp_client, app_for, settings: Settings):
    """The gateway in-process, with 5 MiB parts."""
    return await aiohttp_client(await app_for(dataclasses.replace(settings, part_size=PART)))


async def partial(gw, auth, data: bytes, *, chunk: int = 4 * MiB) -> str:
    """A partial upload of `data`, sent in PATCHes of `chunk` bytes; its absolute URL."""
    response = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Concat": "partial", "Upload-Length": str(len(data))}
    )
    assert response.status == 201, await response.text()
    url = response.headers["Location"]
    for offset in range(0, len(data), chunk):
        sent = await gw.patch(
            path_of(url),
            data=data[offset : offset + chunk],
            headers={**auth, **TUS, **OCTETS, "Upload-Offset": str(offset)},
        )
        assert sent.status == 204, await sent.text()
    return url


async def final(gw, auth, urls: list[str], name: str = "joined.bin", **headers):
    return await gw.post(
        "/api/uploads/",
        headers={
            **auth,
            **TUS,
            "Upload-Concat": "final;" + " ".join(urls),
            "Upload-Metadata": metadata(name),
            **headers,
        },
    )


async def test_options_advertises_concatenation(gw):
    response = await gw.options("/api/uploads/")
    assert "concatenation" in response.headers["Tus-Extension"].split(",")


@pytest.mark.slow
async def test_partial_uploads_of_every_size_join_into_one_byte_exact_file(gw, auth, s3, bucket):
    # Large ones copied inside S3, short ones (1 KiB, 1 byte, 3 MiB) joined with what follows.
    sizes = [KiB, 6 * MiB, 3 * MiB, 7 * MiB + 5, 1, 2 * MiB]
    pieces = [payload(size)[::-1] + bytes([n]) for n, size in enumerate(sizes)]
    urls = [await partial(gw, auth, piece) for piece in pieces]
    head = await gw.head(path_of(urls[0]), headers={**auth, **TUS})
    assert head.headers["Upload-Concat"] == "partial"
    assert head.headers["Upload-Offset"] == str(len(pieces[0]))
    assert await names(gw, auth) == []  # a partial upload is no file

    response = await final(gw, auth, urls)
    assert response.status == 201, await response.text()
    whole = b"".join(pieces)
    assert response.headers["Upload-Offset"] == str(len(whole))
    assert await names(gw, auth) == ["joined.bin"]
    assert await content(gw, auth, "joined.bin") == whole
    head = await gw.head(path_of(response.headers["Location"]), headers={**auth, **TUS})
    assert head.status == 200
    assert head.headers["Upload-Length"] == head.headers["Upload-Offset"] == str(len(whole))
    assert head.headers["Upload-Concat"] == "final;" + " ".join(urls)
    # The partial uploads are gone with their bytes; nothing is left open.
    assert open_uploads(s3, bucket) == []
    assert leftovers(s3, bucket) == []
    assert [key for key in state_keys(s3, bucket) if key.endswith(".data")] == []
    gone = await gw.head(path_of(urls[1]), headers={**auth, **TUS})
    assert gone.status == 404


async def test_a_final_upload_of_small_partials_and_of_empty_ones(gw, auth):
    small = [payload(KiB), b"", payload(10)]
    response = await final(gw, auth, [await partial(gw, auth, piece) for piece in small], "small.bin")
    assert response.status == 201, await response.text()
    assert await content(gw, auth, "small.bin") == b"".join(small)
    empty = await final(gw, auth, [await partial(gw, auth, b"")], "empty.bin")
    assert empty.status == 201, await empty.text()
    assert await content(gw, auth, "empty.bin") == b""


async def test_a_final_upload_replaces_a_file_and_counts_once_in_the_metrics(gw, auth):
    assert (await gw.put("/api/files/same.bin", data=b"old", headers=auth)).status == 204
    before = metric(await metric_samples(gw), "file_uploader_uploads_completed_total", kind="tus")
    data = payload(3 * KiB)
    urls = [await partial(gw, auth, data[:KiB]), await partial(gw, auth, data[KiB:])]
    response = await final(gw, auth, urls, "same.bin")
    assert response.status == 201, await response.text()
    assert await content(gw, auth, "same.bin") == data
    assert metric(await metric_samples(gw), "file_uploader_uploads_completed_total", kind="tus") == before + 1


async def test_a_final_upload_is_refused_while_a_partial_upload_lacks_bytes(gw, auth):
    done = await partial(gw, auth, payload(KiB))
    response = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Concat": "partial", "Upload-Length": "100"}
    )
    unfinished = response.headers["Location"]
    refused = await final(gw, auth, [done, unfinished])
    assert refused.status == 400
    assert (await refused.json())["error"]["code"] == "upload_not_finished"
    assert await names(gw, auth) == []
    # Nothing was lost: once the partial upload has its bytes, the same final upload works.
    sent = await gw.patch(
        path_of(unfinished), data=payload(100), headers={**auth, **TUS, **OCTETS, "Upload-Offset": "0"}
    )
    assert sent.status == 204
    assert (await final(gw, auth, [done, unfinished])).status == 201
    assert await content(gw, auth, "joined.bin") == payload(KiB) + payload(100)


@pytest.mark.parametrize(
    ("concat", "code"),
    [
        ("final;", "invalid_concat"),
        ("final;http://elsewhere.example/files/abc", "invalid_concat"),
        ("whole", "invalid_concat"),
    ],
)
async def test_a_malformed_upload_concat_is_refused(gw, auth, concat, code):
    response = await gw.post(
        "/api/uploads/",
        headers={**auth, **TUS, "Upload-Concat": concat, "Upload-Metadata": metadata("x.bin")},
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == code


async def test_a_final_upload_names_only_the_users_own_partial_uploads(gw, auth):
    url = await partial(gw, auth, payload(KiB))
    other = {"X-Auth-Token": new_token()}
    assert (await final(gw, other, [url])).status == 404
    plain = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Length": "3", "Upload-Metadata": metadata("p.bin")}
    )
    refused = await final(gw, auth, [url, plain.headers["Location"]])
    assert refused.status == 400
    assert (await refused.json())["error"]["code"] == "invalid_concat"
    twice = await final(gw, auth, [url, url])
    assert (await twice.json())["error"]["code"] == "invalid_concat"
    with_length = await final(gw, auth, [url], **{"Upload-Length": "1024"})
    assert (await with_length.json())["error"]["code"] == "invalid_concat"


async def test_a_final_upload_takes_no_patch(gw, auth):
    response = await final(gw, auth, [await partial(gw, auth, payload(KiB))])
    url = path_of(response.headers["Location"])
    refused = await gw.patch(url, data=b"more", headers={**auth, **TUS, **OCTETS, "Upload-Offset": str(KiB)})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "modify_final"
    assert await content(gw, auth, "joined.bin") == payload(KiB)


async def test_partial_uploads_hold_quota_and_the_final_file_counts_once(
    aiohttp_client, app_for, settings, auth
):
    gw = await aiohttp_client(
        await app_for(dataclasses.replace(settings, part_size=PART, user_quota=100 * KiB))
    )
    first = await partial(gw, auth, payload(60 * KiB))
    # The partial uploads hold their room before their bytes: a second of 60 KiB does not fit.
    refused = await gw.post(
        "/api/uploads/", headers={**auth, **TUS, "Upload-Concat": "partial", "Upload-Length": str(60 * KiB)}
    )
    assert refused.status == 413
    assert (await refused.json())["error"]["code"] == "quota_exceeded"
    second = await partial(gw, auth, payload(30 * KiB))
    response = await final(gw, auth, [first, second])
    assert response.status == 201, await response.text()
    usage = await (await gw.get("/api/usage", headers=auth)).json()
    assert (usage["used"], usage["reserved"], usage["files"]) == (90 * KiB, 0, 1)


async def test_a_terminated_partial_upload_gives_back_its_room_and_bytes(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await aiohttp_client(
        await app_for(dataclasses.replace(settings, part_size=PART, user_quota=100 * KiB))
    )
    url = await partial(gw, auth, payload(60 * KiB))
    assert (await gw.delete(path_of(url), headers={**auth, **TUS})).status == 204
    usage = await (await gw.get("/api/usage", headers=auth)).json()
    assert (usage["used"], usage["reserved"]) == (0, 0)
    prefix = f"uploads/{user_id(auth['X-Auth-Token'])}/"
    assert [key for key in state_keys(s3, bucket) if key.startswith(prefix)] == []


# tus-js-client (Node) ------------------------------------------------------------------------------


@pytest.mark.slow  # Node and tus-js-client as a process, a part at a time
async def test_tus_js_client_parallel_uploads_are_byte_exact_with_1_kib_partials(gw, auth, tmp_path):
    endpoint = f"http://127.0.0.1:{gw.port}/api/uploads/"
    for name, size, parallel in [("tiny.bin", 4 * KiB, 4), ("mixed.bin", 13 * MiB + 3, 3)]:
        data = payload(size)[::-1]
        (tmp_path / name).write_bytes(data)
        result = await tus_js_upload(endpoint, auth["X-Auth-Token"], tmp_path / name, name, parallel=parallel)
        assert "/api/uploads/" in result["url"]
        assert await content(gw, auth, name) == data
        head = await gw.head(path_of(result["url"]), headers={**auth, **TUS})
        assert head.headers["Upload-Concat"].startswith("final;")
        assert len(head.headers["Upload-Concat"].split()) == parallel  # "final;<url>" and the others


async def test_an_expired_partial_upload_gives_back_its_room_and_its_bytes(
    aiohttp_client, app_for, settings, auth, s3, bucket
):
    gw = await aiohttp_client(
        await app_for(dataclasses.replace(settings, part_size=PART, user_quota=100 * KiB, upload_expiry=60))
    )
    await partial(gw, auth, payload(60 * KiB))  # finished, never joined
    resumable = gw.app[STORAGE].resumable
    assert await resumable.expire(time.time() + 120) == 1
    usage = await (await gw.get("/api/usage", headers=auth)).json()
    assert (usage["used"], usage["reserved"]) == (0, 0)
    assert state_keys(s3, bucket) == []
