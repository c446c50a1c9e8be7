"""Blocking hooks (HOOK_URL): the operator's application decides about an upload, as tusd's
`pre-create` and `pre-finish` hooks do.

Two questions, each a POST of JSON signed with HOOK_SECRET (signed.py):

- ``pre-create``, before a byte of the upload's body is read (a PUT, a tus
  creation; for a form, each file when its part's headers arrive, since the
  form's body carries the names): ``{"type": "pre-create", "id", "user",
  "name", "size" (null: not known yet), "upload": "put" | "form" | "tus" | "draft"
  | "request",
  "metadata" (tus: the decoded Upload-Metadata)}``. It may refuse the upload,
  or allow it with a lower size limit: ``{"max_size": <bytes>}`` in a 2xx
  answer holds this upload to that many bytes (never more than MAX_FILE_SIZE);
- ``pre-finish``, after the last byte and before the file is stored (before
  PutObject or CompleteMultipartUpload, so a refused file never replaces the
  old one and its multipart upload is aborted): the same fields, with the
  final ``size``.

The answer: a ``2xx`` allows; a ``4xx`` refuses with that status, the
``message`` of its JSON body (if any) being the message of the client's JSON
error (code ``hook_refused``); anything else (a 3xx, a 5xx, no connection, no
answer within HOOK_TIMEOUT) is a failed hook, which refuses the upload with
503 ``hook_unavailable`` (fail closed, the default), or with
HOOK_FAIL_OPEN=1 lets it through as if allowed, logged once per outage.

The storage layer knows nothing of hooks: the HTTP layer asks pre-create
itself, and hands the storage layer a `pre-finish` check (a coroutine of the
final size) that it awaits just before the file is made.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from .. import __version__
from .signed import NoAnswer, post_signed

log = logging.getLogger(__name__)

PRE_CREATE = "pre-create"
PRE_FINISH = "pre-finish"
MAX_MESSAGE_CHARS = 1000  # of a refusal's message passed on to the client
DEFAULT_REFUSAL = "the upload was refused"


class HookError(Exception):
    """A blocking hook said no, or could not be asked."""


class HookRefused(HookError):
    """The hook answered 4xx: the client gets that status and the hook's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class HookUnavailable(HookError):
    """The hook did not answer usably in time, and HOOK_FAIL_OPEN is off: 503."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a pre-create hook allowed: the upload's own size limit, when it lowered it."""

    max_size: int | None = None


ALLOWED = Verdict()


class BlockingHooks:
    """This process's sender of blocking hooks to HOOK_URL."""

    def __init__(self, url: str, secret: bytes, *, seconds: float, fail_open: bool) -> None:
        self.url = url  # never logged: it may carry credentials
        self._secret = secret
        self.seconds = seconds
        self.fail_open = fail_open
        self._session: aiohttp.ClientSession | None = None
        self._failing = False
        self.asked = 0  # hooks sent (for tests)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def pre_create(
        self,
        *,
        user: str,
        name: str,
        size: int | None,
        upload: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Verdict:
        """Ask whether the upload may begin: its Verdict, or HookRefused / HookUnavailable."""
        answer = await self._ask(PRE_CREATE, user, name, size, upload, metadata)
        if answer is None:
            return ALLOWED
        limit = answer.get("max_size")
        if limit is None:
            return ALLOWED
        if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0 or limit != int(limit):
            self._failed("the pre-create hook's max_size is not a whole number of bytes")
            return ALLOWED
        return Verdict(max_size=int(limit))

    async def pre_finish(
        self,
        *,
        user: str,
        name: str,
        size: int,
        upload: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Ask whether the complete file may be stored: returns, or HookRefused / HookUnavailable."""
        await self._ask(PRE_FINISH, user, name, size, upload, metadata)

    async def _ask(
        self,
        kind: str,
        user: str,
        name: str,
        size: int | None,
        upload: str,
        metadata: Mapping[str, str] | None,
    ) -> dict[str, Any] | None:
        """The 2xx answer's JSON object ({} without one); None when a failed hook lets it through."""
        payload: dict[str, Any] = {
            "type": kind,
            "id": secrets.token_hex(16),
            "time": time.time(),
            "user": user,
            "name": name,
            "size": size,
            "upload": upload,
        }
        if metadata is not None:
            payload["metadata"] = dict(metadata)
        self.asked += 1
        try:
            answer = await post_signed(self._client(), self.url, self._secret, payload, self.seconds)
        except NoAnswer as exc:
            self._failed(f"the {kind} hook {exc}")
            return None
        if 200 <= answer.status < 300:
            if self._failing:
                self._failing = False
                log.info("the blocking hook answers again")
            return answer.json_object() or {}
        if 400 <= answer.status < 500:
            body = answer.json_object() or {}
            message = body.get("message")
            if not isinstance(message, str) or not message.strip():
                message = DEFAULT_REFUSAL
            raise HookRefused(answer.status, message.strip()[:MAX_MESSAGE_CHARS])
        self._failed(f"the {kind} hook answered {answer.status}")
        return None

    def _failed(self, reason: str) -> None:
        """A hook that gave no usable answer: returns (let through: HOOK_FAIL_OPEN), or raises
        HookUnavailable (503)."""
        if not self._failing:
            self._failing = True
            what = "uploads go through unchecked" if self.fail_open else "uploads get 503"
            log.warning("%s: %s until it answers (HOOK_FAIL_OPEN=%d)", reason, what, self.fail_open)
        if not self.fail_open:
            raise HookUnavailable("the service that approves uploads did not answer; try again shortly")

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (a session belongs to its loop).
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": f"file_uploader/{__version__}"})
        return self._session
