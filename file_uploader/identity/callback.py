"""The auth callback (AUTH_HOOK_URL): the operator's application says whose a bearer token is.

For applications with sessions of their own, whose tokens the gateway cannot
verify itself. The gateway POSTs ``{"type": "auth", "token": "<the bearer>"}``,
signed with HOOK_SECRET (signed.py), and reads the answer:

- ``200 {"user": "<stable id>", "quota": <bytes, optional>}``: a known user;
- ``401`` or ``403``: an unknown token (the client gets 401);
- anything else, a 200 without a usable user, or no answer within
  CALLBACK_SECONDS: the request fails with 503 (fail closed: a gateway that
  cannot ask never lets a request through).

Answers are kept for a short time (KNOWN_SECONDS, UNKNOWN_SECONDS), so that a
page that fires a dozen requests at once costs the application one question;
concurrent requests with the same token share one. Failures are never kept:
the next request asks again. Tokens are kept only as their SHA-256, and never
logged.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import time

import aiohttp

from ..hooks.signed import NoAnswer, post_signed
from .errors import AuthUnavailable, InvalidToken
from .users import Identity, callback_user, quota_of

log = logging.getLogger(__name__)

CALLBACK_SECONDS = 5.0  # the callback's answer, connecting included: a request waits this long at most
KNOWN_SECONDS = 30.0  # how long "this token is user U" is believed without asking again
UNKNOWN_SECONDS = 5.0  # and "this token is unknown" (shorter: a token may be minted just after)
CACHE_ENTRIES = 10_000  # answers kept, oldest dropped first: bounded whatever tokens clients send
MAX_USER_CHARS = 1024


class AuthCallback:
    def __init__(self, session: aiohttp.ClientSession, url: str, secret: bytes) -> None:
        self._session = session
        self.url = url  # never logged: it may carry credentials
        self._secret = secret
        self._answers: collections.OrderedDict[bytes, tuple[float, Identity | None]] = (
            collections.OrderedDict()
        )
        self._asking: dict[bytes, asyncio.Task[Identity | None]] = {}
        self._failing = False
        self.questions = 0  # callbacks sent (for tests and /metrics)

    async def identify(self, token: str) -> Identity:
        """The user the callback says `token` is: InvalidToken if unknown, AuthUnavailable if it
        cannot tell."""
        digest = hashlib.sha256(token.encode()).digest()
        kept = self._answers.get(digest)
        if kept is not None and kept[0] > time.monotonic():
            identity = kept[1]
        else:
            task = self._asking.get(digest)
            if task is None:
                task = self._asking[digest] = asyncio.create_task(self._ask(digest, token))
                task.add_done_callback(lambda _: self._asking.pop(digest, None))
            # Shielded: one request going away does not cancel the question the others wait for.
            identity = await asyncio.shield(task)
        if identity is None:
            raise InvalidToken("the token is not known")
        return identity

    async def _ask(self, digest: bytes, token: str) -> Identity | None:
        self.questions += 1
        try:
            answer = await post_signed(
                self._session, self.url, self._secret, {"type": "auth", "token": token}, CALLBACK_SECONDS
            )
        except NoAnswer as exc:
            raise self._unavailable(f"the auth callback {exc}") from exc
        identity: Identity | None
        if answer.status == 200:
            body = answer.json_object() or {}
            user = body.get("user")
            if not isinstance(user, str) or not user or len(user) > MAX_USER_CHARS:
                raise self._unavailable("the auth callback answered 200 without a user")
            try:
                quota = (
                    quota_of(body["quota"], "the auth callback's quota")
                    if body.get("quota") is not None
                    else None
                )
            except ValueError as exc:
                raise self._unavailable(str(exc)) from exc
            identity, keep = Identity(callback_user(user), quota), KNOWN_SECONDS
        elif answer.status in (401, 403):
            identity, keep = None, UNKNOWN_SECONDS
        else:
            raise self._unavailable(f"the auth callback answered {answer.status}")
        if self._failing:
            self._failing = False
            log.info("the auth callback answers again")
        self._answers[digest] = (time.monotonic() + keep, identity)
        self._answers.move_to_end(digest)
        while len(self._answers) > CACHE_ENTRIES:
            self._answers.popitem(last=False)
        return identity

    def _unavailable(self, reason: str) -> AuthUnavailable:
        """What the client is told: the gateway could not ask. Logged once per outage."""
        if not self._failing:
            self._failing = True
            log.warning("%s: requests with tokens it must vouch for get 503 until it answers", reason)
        return AuthUnavailable("the service that checks tokens did not answer; try again shortly")
