"""Thumbnails (?thumbnail=) of PNG, JPEG, WebP and GIF; bombs refused; and the ?inline=1 rules."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
import time
import zlib

import aiohttp
import pytest
from PIL import Image

from file_uploader.appkeys import STORAGE
from file_uploader.sizes import MiB
from file_uploader.storage.keys import MAX_NAME_BYTES, REMOVED_ROOT, thumbnail_key, user_id

from ..helpers import all_keys, metric, metric_samples, new_token, reset_peak, rss_bytes, run_gateway

S3_CALLS = "file_uploader_s3_request_duration_seconds_count"


def image(kind: str, size: tuple[int, int] = (300, 150), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else (200, 30, 30, 128)).save(out, format=kind)
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def jpeg_segments(data: bytes) -> list[bytes]:
    """The marker segments of a JPEG after its SOI, each scan with its entropy-coded data."""
    segments, at = [], 2
    while data[at + 1] != 0xD9:
        end = at + 2 + struct.unpack(">H", data[at + 2 : at + 4])[0]
        if data[at + 1] == 0xDA:  # a scan: its data runs to the next marker that is not FF00 or RSTn
            while data[end] != 0xFF or data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                end += 1
        segments.append(data[at:end])
        at = end
    return segments


def scan_bomb(side: int, scans: int) -> bytes:
    """A progressive JPEG of `side` x `side` grey pixels whose last scan (a refinement of the
    luma's AC coefficients: 59 bytes, and a pass over every block) comes `scans` times more:
    libjpeg only warns of the repeats, and decodes each."""
    out = io.BytesIO()
    Image.new("RGB", (side, side), "grey").save(out, format="JPEG", progressive=True, quality=50)
    segments = jpeg_segments(out.getvalue())
    return b"\xff\xd8" + b"".join(segments) + segments[-1] * scans + b"\xff\xd9"


def png_claiming(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims `width` x `height` pixels: a decompression bomb's shape."""
    data = bytearray(image("PNG", (8, 8)))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


async def put(client, auth, name: str, data: bytes, **headers: str) -> None:
    response = await client.put(f"/api/files/{name}", data=data, headers={**auth, **headers})
    assert response.status == 204, await response.text()


@pytest.mark.parametrize(
    ("kind", "name"), [("PNG", "p.png"), ("JPEG", "j.jpg"), ("WEBP", "w.webp"), ("GIF", "g.gif")]
)
async def test_a_thumbnail_keeps_the_aspect_within_the_size(client, auth, kind, name):
    await put(client, auth, name, image(kind))
    response = await client.get(f"/api/files/{name}", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 200, await response.text()
    assert response.content_type == "image/jpeg"
    thumb = decoded(await response.read())
    assert thumb.format == "JPEG" and thumb.size == (64, 32)


async def test_a_client_that_takes_webp_gets_webp_with_transparency(client, auth):
    await put(client, auth, "alpha.png", image("PNG", (100, 100), "RGBA"))
    response = await client.get(
        "/api/files/alpha.png", params={"thumbnail": "128"}, headers={**auth, "Accept": "image/webp,*/*"}
    )
    assert response.content_type == "image/webp"
    thumb = decoded(await response.read())
    assert thumb.format == "WEBP" and thumb.mode == "RGBA" and thumb.size == (100, 100)  # never enlarged


async def test_a_thumbnail_is_made_once_kept_in_s3_and_follows_its_file(client, auth, s3, bucket):
    uid = user_id(auth["X-Auth-Token"])
    await put(client, auth, "pics/a.png", image("PNG", (400, 200)))
    first = await client.get("/api/files/pics/a.png", params={"thumbnail": "256"}, headers=auth)
    key = thumbnail_key(uid, "pics/a.png", 256, "jpeg")
    assert key in all_keys(s3, bucket)
    made = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    again = await client.get("/api/files/pics/a.png", params={"thumbnail": "256"}, headers=auth)
    assert await again.read() == await first.read()
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] == made  # not made again

    # Replaced: the cached thumbnail shows the old version, so it is never served again; the
    # next request makes one of the new image in its place.
    await put(client, auth, "pics/a.png", image("PNG", (200, 400)))
    response = await client.get("/api/files/pics/a.png", params={"thumbnail": "256"}, headers=auth)
    assert decoded(await response.read()).size == (128, 256)
    assert s3.head_object(Bucket=bucket, Key=key)["LastModified"] >= made
    assert decoded(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).size == (128, 256)
    # Deleted: its thumbnails too. What stays is the delete's claim (landing.py), which gc clears.
    assert (await client.delete("/api/files/pics/a.png", headers=auth)).status == 204
    assert [key for key in all_keys(s3, bucket) if not key.startswith(REMOVED_ROOT)] == []


def thumbnail_keys(s3, bucket: str, uid: str) -> list[str]:
    return [key for key in all_keys(s3, bucket) if key.startswith(f"thumbs/{uid}/")]


# A name whose thumbnails' keys at thumbs/<uid>/<name>//<size>.<format> would pass S3's 1,024 bytes.
LONG_NAME = "long/" + "n" * (MAX_NAME_BYTES - len("long/") - len(".png")) + ".png"


async def test_a_thumbnail_of_a_name_too_long_for_its_key_is_made_once_and_then_served_from_s3(
    client, auth, s3, bucket
):
    uid = user_id(auth["X-Auth-Token"])
    await put(client, auth, LONG_NAME, image("PNG", (400, 200)))
    before = metric(await metric_samples(client), S3_CALLS, operation="PutObject")
    first = await client.get(f"/api/files/{LONG_NAME}", params={"thumbnail": "512"}, headers=auth)
    assert first.status == 200, await first.text()
    [key] = thumbnail_keys(s3, bucket, uid)
    again = await client.get(f"/api/files/{LONG_NAME}", params={"thumbnail": "512"}, headers=auth)
    assert await again.read() == await first.read()
    assert metric(await metric_samples(client), S3_CALLS, operation="PutObject") - before == 1
    assert thumbnail_keys(s3, bucket, uid) == [key]


async def test_the_thumbnails_of_a_name_too_long_for_its_key_go_with_their_file_and_folder(
    client, auth, s3, bucket
):
    uid = user_id(auth["X-Auth-Token"])
    other = LONG_NAME.replace("long/", "else/")
    for name in (LONG_NAME, other):
        await put(client, auth, name, image("PNG"))
        for size in ("64", "512"):
            response = await client.get(f"/api/files/{name}", params={"thumbnail": size}, headers=auth)
            assert response.status == 200
    assert len(thumbnail_keys(s3, bucket, uid)) == 4
    assert (await client.delete(f"/api/files/{other}", headers=auth)).status == 204
    assert len(thumbnail_keys(s3, bucket, uid)) == 2
    response = await client.delete("/api/files/long/", params={"recursive": "1"}, headers=auth)
    assert response.status == 200, await response.text()
    assert thumbnail_keys(s3, bucket, uid) == []


async def test_what_is_not_an_image_is_415_and_a_bad_size_400(client, auth):
    await put(client, auth, "notes.png", b"not really a png")
    response = await client.get("/api/files/notes.png", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "not_an_image"
    await put(client, auth, "drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>')
    response = await client.get("/api/files/drawing.svg", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 415
    response = await client.get("/api/files/notes.png", params={"thumbnail": "100"}, headers=auth)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_thumbnail"


async def test_a_decompression_bomb_is_refused_before_it_is_decoded(client, auth):
    bomb = png_claiming(100_000, 100_000)  # 10 gigapixels in a file of under 100 bytes
    assert len(bomb) < 200
    await put(client, auth, "bomb.png", bomb)
    response = await client.get("/api/files/bomb.png", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "image_too_large"


async def test_a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded(client, auth):
    await put(client, auth, "scans.jpg", scan_bomb(1000, 3000))
    response = await client.get("/api/files/scans.jpg", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "image_too_large"
    await put(client, auth, "fine.jpg", scan_bomb(1000, 0))  # the usual 10 scans
    assert (await client.get("/api/files/fine.jpg", params={"thumbnail": "64"}, headers=auth)).status == 200


@pytest.mark.slow
async def test_a_scan_bomb_asked_for_anonymously_leaves_other_users_fast_and_costs_little_cpu(client, auth):
    """36 megapixels (under THUMBNAIL_MAX_PIXELS) and 300 repeated scans of 46 ms each: about
    14 s of decoding per size when decoded."""
    await put(client, auth, "bomb.jpg", scan_bomb(6000, 300), **{"X-Public": "true"})
    url = (await (await client.get("/api/public")).json())["files"][0]["url"]
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    cpu = time.process_time()
    bombs = [
        asyncio.ensure_future(client.get(path, params={"thumbnail": str(size)}))
        for size in (64, 128, 256, 512, 64, 128)
    ]
    await asyncio.sleep(0.5)
    other = {"X-Auth-Token": new_token()}
    started = time.monotonic()
    await put(client, other, "mine.png", image("PNG"))
    put_seconds = time.monotonic() - started
    started = time.monotonic()
    response = await client.get("/api/files/mine.png", params={"thumbnail": "64"}, headers=other)
    thumbnail_seconds = time.monotonic() - started
    assert response.status == 200
    assert put_seconds < 3 and thumbnail_seconds < 3, (put_seconds, thumbnail_seconds)
    for answer in await asyncio.gather(*bombs):
        assert answer.status == 422
    assert time.process_time() - cpu < 5


@pytest.mark.slow
async def test_many_requests_for_one_thumbnail_make_it_once(client, auth):
    """Six clients at once ask for the same size of an image that takes a second to decode:
    one decode, one thumbnail written to S3."""
    await put(client, auth, "slow.jpg", scan_bomb(4000, 40))
    before = metric(await metric_samples(client), S3_CALLS, operation="PutObject")
    answers = await asyncio.gather(
        *(client.get("/api/files/slow.jpg", params={"thumbnail": "64"}, headers=auth) for _ in range(6))
    )
    assert [answer.status for answer in answers] == [200] * 6
    bodies = {await answer.read() for answer in answers}
    assert len(bodies) == 1
    assert metric(await metric_samples(client), S3_CALLS, operation="PutObject") - before == 1


async def test_a_real_image_over_the_pixel_limit_is_refused(aiohttp_client, app_for, settings):
    client = await aiohttp_client(await app_for(settings))
    client.app[STORAGE].thumbnails.max_pixels = 1_000_000  # the store's own limit (40 million by default)
    auth = {"X-Auth-Token": new_token()}
    await put(client, auth, "big.png", image("PNG", (2000, 1000)))  # 2 megapixels, a few kB compressed
    response = await client.get("/api/files/big.png", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 422
    await put(client, auth, "fine.png", image("PNG", (1000, 1000)))
    assert (await client.get("/api/files/fine.png", params={"thumbnail": "64"}, headers=auth)).status == 200


async def test_share_and_public_links_serve_thumbnails_too(client, auth):
    await put(client, auth, "shown.jpg", image("JPEG"), **{"X-Public": "true"})
    link = await (await client.post("/api/files/shown.jpg/share", headers=auth)).json()
    public = (await (await client.get("/api/public")).json())["files"][0]["url"]
    for url in (link["url"], public):
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        response = await client.get(path, params={"thumbnail": "128"})
        assert response.status == 200, await response.text()
        assert decoded(await response.read()).size == (128, 64)


@pytest.mark.parametrize(
    ("name", "inline"),
    [
        ("photo.png", True),
        ("photo.jpg", True),
        ("song.mp3", True),
        ("clip.mp4", True),
        ("paper.pdf", True),
        ("notes.txt", True),
        ("page.html", False),
        ("page.htm", False),
        ("drawing.svg", False),
        ("data.xml", False),
        ("page.xhtml", False),
        ("script.js", False),
        ("archive.zip", False),
        ("noextension", False),
    ],
)
async def test_inline_is_for_media_pdf_and_plain_text_only(client, auth, name, inline):
    await put(client, auth, name, b"bytes")
    asked = await client.get(f"/api/files/{name}", params={"inline": "1"}, headers=auth)
    disposition = asked.headers["Content-Disposition"]
    assert disposition.startswith("inline;" if inline else "attachment;")
    assert asked.headers["X-Content-Type-Options"] == "nosniff"
    plain = await client.get(f"/api/files/{name}", headers=auth)
    assert plain.headers["Content-Disposition"].startswith("attachment;")


async def test_a_16_bit_greyscale_png_gets_a_thumbnail(client, auth):
    out = io.BytesIO()
    Image.new("I;16", (300, 150), 40_000).save(out, format="PNG")
    await put(client, auth, "grey16.png", out.getvalue())
    response = await client.get("/api/files/grey16.png", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 200, await response.text()
    thumb = decoded(await response.read())
    assert thumb.size == (64, 32) and abs(thumb.convert("L").getpixel((3, 3)) - 40_000 // 256) <= 2


async def test_inline_takes_the_same_yes_as_x_public_and_refuses_other_words(client, auth):
    stored = await client.put("/api/files/a.png", data=b"\x89PNG", headers={**auth, "X-Public": "on"})
    assert stored.status == 204
    shown = await client.get("/api/files/a.png", params={"inline": "on"}, headers=auth)
    assert shown.headers["Content-Disposition"].startswith("inline;")
    refused = await client.get("/api/files/a.png", params={"inline": "maybe"}, headers=auth)
    assert refused.status == 400
    assert (await refused.json())["error"]["code"] == "invalid_flag"


def progressive_cmyk(width: int, height: int) -> bytes:
    """A progressive CMYK JPEG: small on disk, but libjpeg holds all its coefficients at full
    size (2 bytes x 4 components a pixel) whatever the scale it is decoded at."""
    out = io.BytesIO()
    Image.new("CMYK", (width, height), (10, 200, 30, 5)).save(out, format="JPEG", progressive=True)
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.process
async def test_two_thumbnails_of_a_progressive_cmyk_jpeg_at_once_are_decoded_one_after_the_other(
    s3_url, bucket, tmp_path
):
    """Issue 20 row 10: each decode holds 153 MiB here; the budget has room for one, so the
    second waits for the first instead of doubling the gateway's memory."""
    bomb = progressive_cmyk(5000, 4000)
    one_decode = 5000 * 4000 * 4 * 2
    with run_gateway(s3_url, bucket, tmp_path, MEMORY_BUDGET=str(200 * MiB)) as base:
        auth = {"X-Auth-Token": new_token()}
        async with aiohttp.ClientSession(base) as session:
            async with session.put("/api/files/big.jpg", data=bomb, headers=auth) as response:
                assert response.status == 204
            before = reset_peak(base.pid)

            async def thumbnail(size: str) -> int:
                url = "/api/files/big.jpg"
                async with session.get(url, params={"thumbnail": size}, headers=auth) as response:
                    await response.read()
                    return response.status

            assert await asyncio.gather(thumbnail("64"), thumbnail("512")) == [200, 200]
            growth = rss_bytes(base.pid, "VmHWM") - before
    print(f"two thumbnails at once: peak RSS +{growth / MiB:.0f} MiB (one decode {one_decode / MiB:.0f} MiB)")
    assert growth < 1.5 * one_decode, f"the gateway grew by {growth / MiB:.0f} MiB"


async def test_an_image_whose_decoding_needs_more_than_the_whole_budget_is_refused(
    aiohttp_client, app_for, settings
):
    client = await aiohttp_client(await app_for(dataclasses.replace(settings, memory_budget=64 * MiB)))
    auth = {"X-Auth-Token": new_token()}
    await put(client, auth, "big.jpg", progressive_cmyk(4000, 3000))  # 92 MiB to decode
    response = await client.get("/api/files/big.jpg", params={"thumbnail": "64"}, headers=auth)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "image_too_large"
