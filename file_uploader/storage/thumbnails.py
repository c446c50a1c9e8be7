"""Thumbnails of images: made once with Pillow, in a thread pool, and kept in S3 beside the file.

A thumbnail is kept at ``thumbs/<user id>/<name>//<size>.<format>`` with the
ETag of the version of the file it was made from in its metadata. Serving one
asks S3 for the file's ETag and the cached thumbnail at once; a thumbnail of
another version is made again and overwritten, so a replaced file never shows
its predecessor's picture. Replacing or deleting a file also removes its
thumbnails (files.py), and `purge` takes the whole root.

Decoding images is where image libraries have had their worst bugs, so:

- only PNG, JPEG, WebP and GIF are opened (Pillow's other decoders are never
  tried on users' bytes);
- the file is read whole into memory, so it is held to THUMBNAIL_MAX_BYTES,
  reserved from MEMORY_BUDGET like an upload's part while it is held; what
  its decoding will hold (`decode_bytes`, from the header: a progressive
  JPEG keeps all its coefficients at full size) is reserved too before it
  starts, and an image whose decoding needs more than the whole budget is
  refused;
- the pixel count in the image's header is checked against
  THUMBNAIL_MAX_PIXELS before a single pixel is decoded: a 50 KB PNG that
  claims 100,000 x 100,000 pixels (a decompression bomb) is refused there.
  JPEGs are decoded at the smallest scale that still covers the thumbnail;
- a JPEG of more than _MAX_SCANS scans is refused before it is decoded: a
  progressive JPEG may repeat a scan thousands of times (libjpeg only warns),
  and each is a pass over every block of the image: 46 ms at 36 megapixels,
  so 1 MB of 59-byte scans was 30-60 s of decoding per size. Encoders write
  10 (libjpeg's progressive script) to a few dozen; 64 bound a decode to ~3 s;
- decoding runs in a pool of THUMBNAIL_WORKERS threads, off the event loop,
  and at most that many images are open at once; a request waits for one of
  those slots at most _SLOT_WAIT_SECONDS (then 503), and looks at the cache
  again once it has one (another gateway may have made the thumbnail meanwhile);
- one thumbnail (file version, size, format) is made once however many ask
  for it at the same time: they all wait for the same work, which is dropped
  if every one of them has gone before its decoding started. A public or
  shared link is no cheaper to abuse than the owner's own route: the same work,
  the same cache, the owner's memory.
"""

from __future__ import annotations

import asyncio
import io
import logging
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps, UnidentifiedImageError

from .budget import FairBudget
from .client import S3
from .errors import FileChanged, FileNotFound, ImageTooLarge, NotAnImage, StorageBusy, TooLarge
from .keys import (
    THUMBNAIL_FILE_BYTES,
    THUMBNAILS_ROOT,
    has_hashed_thumbnails,
    split_file_key,
    thumbnail_key,
    thumbnails_prefix,
)

log = logging.getLogger(__name__)

THUMBNAIL_SIZES = (64, 128, 256, 512)  # the longest side, in pixels
# Format -> media type. JPEG for every client; WebP (smaller, keeps transparency) when asked for.
THUMBNAIL_FORMATS = {"jpeg": "image/jpeg", "webp": "image/webp"}
# keys.py keeps room for the longest "<size>.<format>" under a name's prefix.
assert (
    max(len(f"{size}.{kind}") for size in THUMBNAIL_SIZES for kind in THUMBNAIL_FORMATS)
    <= THUMBNAIL_FILE_BYTES
)
_DECODERS = ("PNG", "JPEG", "WEBP", "GIF")
_QUALITY = 80
# How long a thumbnail waits for memory to read its image into before a 503.
_MEMORY_WAIT_SECONDS = 30.0
_SOURCE_ETAG = "source-etag"  # metadata of a cached thumbnail: the file version it shows
_MAX_SCANS = 64  # scans in one JPEG: see the module docstring
_SLOT_WAIT_SECONDS = 30.0  # how long a thumbnail waits for a decoding slot before a 503
_SCAN_MARKER = b"\xff\xda"  # SOS: in entropy-coded data an FF is always followed by 00 or RSTn


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """The image in `data`, its header read and checked, not one pixel decoded yet."""
    try:
        image = Image.open(io.BytesIO(data), formats=_DECODERS)
    except Image.DecompressionBombError:  # Pillow's own, far higher, limit
        raise ImageTooLarge("the image has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise NotAnImage("the file is not a PNG, JPEG, WebP or GIF image") from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(f"the image has {width} x {height} pixels; the limit is {max_pixels}")
    if image.format == "JPEG" and data.count(_SCAN_MARKER) > _MAX_SCANS:
        image.close()
        raise ImageTooLarge(f"the image has more than {_MAX_SCANS} scans")
    return image


def decode_bytes(data: bytes, size: int, max_pixels: int) -> int:
    """The memory that decoding the image in `data` into a thumbnail of `size` will take, from
    its header alone (what `_make` reserves from the budget before it decodes).

    A baseline JPEG is decoded at the draft scale (1/2, 1/4, 1/8) that still
    covers `size`, so only that smaller picture is held. A progressive JPEG
    is not: libjpeg keeps every DCT coefficient of the whole image, two bytes
    each, per component, at full resolution, whatever the output scale (a
    20-megapixel CMYK one holds 153 MiB; two at once were twice the bound,
    issue 20 row 10). Other formats are decoded whole. Each picture is counted
    twice: resizing and converting make a copy beside it.
    """
    with _open(data, max_pixels) as image:
        width, height = image.size
        bands = max(len(image.getbands()), 1)
        if image.format != "JPEG":
            return width * height * max(bands, 4) * 2
        scale = 1
        while scale < 8 and width // (scale * 2) >= size and height // (scale * 2) >= size:
            scale *= 2
        picture = -(-width // scale) * -(-height // scale) * bands * 2
        progressive = image.info.get("progressive") or image.info.get("progression")
        return picture + (width * height * bands * 2 if progressive else 0)


def render(data: bytes, size: int, image_format: str, max_pixels: int) -> bytes:
    """A thumbnail of the image in `data`, at most `size` pixels on its longest side.

    Raises NotAnImage for bytes that are not a PNG, JPEG, WebP or GIF that
    decodes, ImageTooLarge for one of more than `max_pixels` pixels.
    """
    with _open(data, max_pixels) as image:
        try:
            image.draft("RGB", (size, size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            picture: Image.Image = image
            if picture.mode.startswith("I;16"):  # 16-bit grey PNG: Pillow resizes it only as 32-bit "I"
                picture = picture.convert("I")
            picture.thumbnail((size, size), Image.Resampling.LANCZOS)
            thumb = ImageOps.exif_transpose(picture)  # phones store photos sideways plus an EXIF note
            if thumb.mode == "I":  # 16-bit grey, resized as 32-bit (below): to 8 bits for JPEG or WebP
                thumb = thumb.point(lambda value: value / 256).convert("L")
            has_alpha = thumb.mode in ("RGBA", "LA", "PA") or "transparency" in thumb.info
            if image_format == "jpeg":
                thumb = thumb.convert("RGBA") if has_alpha else thumb.convert("RGB")
                if has_alpha:
                    flat = Image.new("RGB", thumb.size, "white")
                    flat.paste(thumb, mask=thumb.getchannel("A"))
                    thumb = flat
            else:
                thumb = thumb.convert("RGBA" if has_alpha else "RGB")
            out = io.BytesIO()
            thumb.save(out, format=image_format.upper(), quality=_QUALITY)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise NotAnImage("the image cannot be decoded") from None
    return out.getvalue()


class _Flight:
    """One thumbnail being made, and how many requests wait for it: when the last of them
    goes (its client hung up), the work is cancelled. A decode already running in a
    thread runs to its end (bounded by the scan and pixel limits); one still waiting
    for a slot, for memory or for S3 is dropped."""

    def __init__(self, task: asyncio.Future[tuple[bytes, str]]) -> None:
        self.task = task
        self.waiting = 0

    async def wait(self) -> tuple[bytes, str]:
        self.waiting += 1
        try:
            return await asyncio.shield(self.task)
        finally:
            self.waiting -= 1
            if not self.waiting and not self.task.done():
                self.task.cancel()


class Thumbnails:
    def __init__(self, s3: S3, budget: FairBudget, *, max_pixels: int, max_bytes: int, workers: int) -> None:
        self.s3 = s3
        self.budget = budget
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="thumbnail")
        self._slots = asyncio.Semaphore(workers)
        self._flights: dict[tuple[str, str, int, str], _Flight] = {}

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def get(
        self, file_key: str, size: int, image_format: str, *, version: str | None = None
    ) -> tuple[bytes, str]:
        """The thumbnail of the file at `file_key`, and the ETag of the file's version it shows.

        With `version` (a share link or a library entry is bound to one version of
        the file), FileChanged when the file is another version now: nothing of
        the new one is read or rendered for a link that was not made for it.
        """
        uid, name = split_file_key(file_key)
        key = thumbnail_key(uid, name, size, image_format)
        head, cached = await asyncio.gather(self.s3.head_object(file_key), self._cached(key))
        etag = head["ETag"]
        if version is not None and etag != version:
            raise FileChanged("the file was replaced after this link was made")
        if cached is not None and cached[1] == etag:
            return cached[0], etag
        if head["ContentLength"] > self.max_bytes:
            raise ImageTooLarge(f"thumbnails are made of files up to {self.max_bytes} bytes")
        flight = (file_key, etag, size, image_format)
        made = self._flights.get(flight)
        if made is None:
            made = self._flights[flight] = _Flight(
                asyncio.ensure_future(
                    self._make(file_key, key, etag, head["ContentLength"], size, image_format)
                )
            )
            made.task.add_done_callback(lambda _: self._flights.pop(flight, None))
        return await made.wait()

    async def _make(
        self, file_key: str, key: str, etag: str, length: int, size: int, image_format: str
    ) -> tuple[bytes, str]:
        uid = split_file_key(file_key)[0]
        waited = self._slots.locked()
        try:
            async with asyncio.timeout(_SLOT_WAIT_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise StorageBusy("every thumbnail slot is busy; try again later") from None
        try:
            if waited:  # made meanwhile, by this gateway or another?
                cached = await self._cached(key)
                if cached is not None and cached[1] == etag:
                    return cached[0], etag
            # Counted as memory of the file's owner, waiting in their turn like their uploads.
            try:
                await self.budget.acquire(uid, length, _MEMORY_WAIT_SECONDS)
            except TimeoutError:
                raise StorageBusy("no memory came free to make the thumbnail; try again later") from None
            try:
                try:
                    data, response = await self.s3.read_object_and_head(file_key, limit=length)
                except TooLarge:  # replaced by a larger file since the HEAD
                    raise ImageTooLarge("the file changed while its thumbnail was made") from None
                if response["ETag"] != etag:  # replaced since the HEAD: not the version asked for
                    raise FileChanged("the file changed while its thumbnail was made")
                thumb = await self._render(uid, data, size, image_format)  # holding `length` too
                del data
            finally:
                self.budget.release(uid, length)
        finally:
            self._slots.release()
        await self.s3.put_object(
            key, thumb, ContentType=THUMBNAIL_FORMATS[image_format], Metadata={_SOURCE_ETAG: etag}
        )
        return thumb, etag

    async def _render(self, uid: str, data: bytes, size: int, image_format: str) -> bytes:
        """Decode in a worker thread, once what the decode will hold is reserved from the
        budget too (its header says how much): two bombs at once wait for each other."""
        loop = asyncio.get_running_loop()
        cost = await loop.run_in_executor(self._executor, decode_bytes, data, size, self.max_pixels)
        if cost + len(data) > self.budget.limit:  # with the file's bytes, which it holds meanwhile
            raise ImageTooLarge(
                f"decoding the image needs {cost} bytes of memory; the budget is {self.budget.limit}"
            )
        try:
            await self.budget.acquire(uid, cost, _MEMORY_WAIT_SECONDS)
        except TimeoutError:
            raise StorageBusy("no memory came free to make the thumbnail; try again later") from None
        try:
            return await loop.run_in_executor(
                self._executor, render, data, size, image_format, self.max_pixels
            )
        finally:
            self.budget.release(uid, cost)

    async def _cached(self, key: str) -> tuple[bytes, str] | None:
        try:
            data, response = await self.s3.read_object_and_head(key, limit=self.max_bytes)
        except (FileNotFound, TooLarge):
            return None
        return data, response.get("Metadata", {}).get(_SOURCE_ETAG, "")

    async def forget(self, uid: str, name: str) -> int:
        """Remove every thumbnail of the file `name`."""
        return await self.s3.delete_prefix(thumbnails_prefix(uid, name))

    async def forget_folder(self, uid: str, folder: str, names: list[str]) -> int:
        """Remove the thumbnails of every file under `folder` (a name ending in /): by prefix,
        and those of its `names` too long to be kept beside them (keys.py) one by one."""
        prefix = f"{THUMBNAILS_ROOT}{uid}/{folder}"
        # thumbs/<uid>/a// holds the thumbnails of the file `a`, not of anything in folder a/.
        own = thumbnails_prefix(uid, folder[:-1])
        removed = await self.s3.delete_prefix(prefix, keep=lambda key: key.startswith(own))
        for name in names:
            if has_hashed_thumbnails(uid, name):
                removed += await self.forget(uid, name)
        return removed
