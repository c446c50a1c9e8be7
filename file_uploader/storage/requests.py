"""Upload requests: a link that lets anyone holding it add files to one folder of its owner.

    requests/<request id>             the request: whose folder, its limits, what it took (JSON)
    requested/<user id>/<request id>  empty: lists a user's requests

A grant (grants.py: records, index, passwords, compare-and-swap changes). Who
holds the link can only add files: a file goes into the request's folder under
a name of one path segment that is not taken yet (FileExists otherwise), and
nothing of the folder is ever listed, read, replaced or deleted through it.
The bytes land as the owner's own files, through Files.put (one pipeline,
the owner's quota, landing.py's events).

**The limits are exact across replicas**: before a byte of a body is read,
the file's room is taken from the record by compare-and-swap (one more file,
and its declared length, or all the bytes left when it declares none); once
stored, the room becomes what it used; a refused or failed upload gives its
room back. So `max_files` files and `max_bytes` bytes are never passed,
whatever uploads race on which replicas; a process that dies mid-upload keeps
its room taken (the owner can make a new request).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

from .client import S3
from .errors import FileExists, FileNotFound, InvalidName, LinkExpired, RequestFull, StorageFailure, TooLarge
from .files import Files
from .grants import Grants
from .keys import REQUEST_INDEX_ROOT, REQUESTS_ROOT, file_key, validate_folder, validate_name
from .landing import Finish
from .passwords import Passwords


@dataclasses.dataclass(frozen=True)
class UploadRequest:
    id: str
    uid: str
    folder: str  # ends in /
    created: float
    expires: float | None
    max_files: int | None
    max_bytes: int | None
    files: int = 0  # taken: stored, or being uploaded
    bytes: int = 0
    password: str | None = None
    failures: int = 0
    blocked_until: float = 0.0

    @classmethod
    def from_json(cls, request_id: str, fields: dict[str, Any]) -> UploadRequest:
        known = {field.name for field in dataclasses.fields(cls)} - {"id"}
        return cls(id=request_id, **{name: value for name, value in fields.items() if name in known})

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def bytes_left(self) -> int | None:
        return None if self.max_bytes is None else max(0, self.max_bytes - self.bytes)


def _room(request: UploadRequest, length: int | None) -> None:
    """Refuse a file the request has no room for: RequestFull, TooLarge."""
    if request.max_files is not None and request.files >= request.max_files:
        raise RequestFull(f"this upload request has taken its {request.max_files} files")
    left = request.bytes_left()
    if left is not None and ((length or 0) > left or (length is None and left == 0)):
        raise TooLarge(f"the file is larger than what is left of this upload request ({left} bytes)")


class UploadRequests:
    """The upload requests of every user, in one bucket."""

    def __init__(self, s3: S3, passwords: Passwords, files: Files) -> None:
        self.s3 = s3
        self.files = files
        self.grants = Grants(
            s3, passwords, root=REQUESTS_ROOT, index_root=REQUEST_INDEX_ROOT, what="upload request"
        )

    async def create(
        self,
        uid: str,
        folder: str,
        *,
        expires: float | None,
        max_files: int | None,
        max_bytes: int | None,
        password: str | None,
    ) -> UploadRequest:
        fields = {
            "folder": validate_folder(folder),
            "created": time.time(),
            "expires": expires,
            "max_files": max_files,
            "max_bytes": max_bytes,
            "files": 0,
            "bytes": 0,
        }
        request_id, record = await self.grants.create(uid, fields, password)
        return UploadRequest.from_json(request_id, record)

    async def of_user(self, uid: str) -> list[UploadRequest]:
        return [UploadRequest.from_json(rid, record) for rid, record in await self.grants.of_user(uid)]

    async def revoke(self, uid: str, request_id: str) -> None:
        """End the request: refused from its next use on, on every replica."""
        await self.grants.revoke(uid, request_id)

    async def admit(
        self, request_id: str, password: str | None, name: str | None, length: int | None
    ) -> tuple[UploadRequest, str | None]:
        """The request and the key `name` would be stored at, if a file of `length` may come now
        (before its body); else LinkNotFound, LinkExpired, PasswordRequired, LinkBlocked,
        RequestFull, TooLarge, InvalidName or FileExists. No room is taken yet."""
        request = await self.open(request_id, password)
        _room(request, length)
        if name is None:
            return request, None
        key = self.key(request, name)
        await self.absent(key)
        return request, key

    @staticmethod
    def key(request: UploadRequest, name: str) -> str:
        """Where `name` sent to the request is stored (InvalidName unless one path segment)."""
        if "/" in validate_name(name):
            raise InvalidName("a file sent to an upload request is named by one path segment (no /)")
        return file_key(request.uid, request.folder + name)

    async def absent(self, key: str) -> None:
        """FileExists if a file is at `key`: nothing sent to a request ever replaces one."""
        try:
            await self.s3.head_object(key)
        except FileNotFound:
            return
        raise FileExists("a file of that name is already there: choose another name")

    async def receive(
        self,
        request_id: str,
        password: str | None,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        size: int | None,
        content_type: str,
        finish: Finish | None = None,
    ) -> int:
        """Store the file `name` into the request's folder, within its limits; its size. `finish`:
        awaited with the size just before the file is stored, and may refuse it (files.put)."""
        request, key = await self.admit(request_id, password, name, size)
        assert key is not None
        taken = await self.take(request_id, size)
        stored = 0

        async def metered() -> AsyncIterator[bytes]:
            nonlocal stored
            async for chunk in chunks:
                stored += len(chunk)
                if request.max_bytes is not None and stored > taken:
                    raise TooLarge("the file is larger than what is left of this upload request")
                yield chunk

        try:
            await self.files.put(
                request.uid, key, metered(), size=size, content_type=content_type, finish=finish
            )
        except BaseException:
            await asyncio.shield(self._unless_landed(request_id, key, taken))
            raise
        if stored != taken:  # what it used, not what it held (a chunked body holds all that is left)
            await self._give_back(request_id, files=0, size=taken - stored)
        return stored

    async def take(self, request_id: str, size: int | None) -> int:
        """Take one file's room from the request by compare-and-swap: one file, and `size` bytes
        (None: all the bytes left); the bytes taken. RequestFull, TooLarge, LinkExpired."""
        now = time.time()
        taken = 0

        def take(fields: dict[str, Any]) -> dict[str, Any]:
            nonlocal taken
            current = UploadRequest.from_json(request_id, fields)
            if current.expired(now):
                raise LinkExpired("this upload request has expired")
            _room(current, size)
            left = current.bytes_left()
            taken = size if size is not None else (left or 0)
            return {**fields, "files": current.files + 1, "bytes": current.bytes + taken}

        await self.grants.update(request_id, take)
        return taken

    async def released(self, request_id: str, size: int) -> None:
        """A file that took its room (`take`) will not land: one file and `size` bytes back."""
        await self._give_back(request_id, files=1, size=size)

    async def open(self, request_id: str, password: str | None) -> UploadRequest:
        """The request, if it still takes files and `password` is its own (LinkNotFound,
        LinkExpired, PasswordRequired, LinkBlocked): what continuing an upload asks."""
        now = time.time()
        record, _ = await self.grants.get(request_id)
        request = UploadRequest.from_json(request_id, record)
        if request.expired(now):
            raise LinkExpired("this upload request has expired")
        await self.grants.check_password(request_id, record, password, now)
        return request

    async def _unless_landed(self, request_id: str, key: str, taken: int) -> None:
        """A file sent to the request failed: its room comes back, unless the file is there all the
        same (a step after the store failed: the replaced file's library entry, its event...), when
        only what it did not use does. If S3 cannot say, the room stays taken: a request never
        holds more files than it allows, and its owner can make another."""
        try:
            head = await self.s3.head_object(key)
        except FileNotFound:
            await self._give_back(request_id, files=1, size=taken)
            return
        except StorageFailure:
            return
        await self._give_back(request_id, files=0, size=max(0, taken - int(head["ContentLength"])))

    async def _give_back(self, request_id: str, *, files: int, size: int) -> None:
        def give(fields: dict[str, Any]) -> dict[str, Any]:
            return {
                **fields,
                "files": max(0, fields.get("files", 0) - files),
                "bytes": max(0, fields.get("bytes", 0) - size),
            }

        try:
            await self.grants.update(request_id, give)
        except StorageFailure:  # ended meanwhile, or S3 failing: the room stays taken
            pass
