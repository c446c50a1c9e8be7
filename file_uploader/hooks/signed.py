"""A signed JSON POST to an operator's endpoint: what the gateway sends to the auth callback
(AUTH_HOOK_URL) and to the blocking hooks (HOOK_URL), both signed with HOOK_SECRET.

Signed as the webhooks are (`signature`): ``X-Hook-Signature: sha256=<hex>``,
the HMAC-SHA256 of the exact body bytes, so a receiver checks both kinds of
request with the same few lines (docs/operators.md shows them). Redirects are
not followed: an answer is the endpoint's own, or none.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from .webhooks import signature

SIGNATURE_HEADER = "X-Hook-Signature"
MAX_ANSWER_BYTES = 64 * 1024  # an answer is a small JSON object


class NoAnswer(Exception):
    """The endpoint did not answer in time, or could not be reached; the message says which."""


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json_object(self) -> dict[str, Any] | None:
        """The body as a JSON object, or None when it is not one."""
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None


async def post_signed(
    session: aiohttp.ClientSession, url: str, secret: bytes, payload: Mapping[str, Any], seconds: float
) -> Answer:
    """POST `payload` as JSON signed with `secret`; the answer within `seconds`, or NoAnswer."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(secret, body)}
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=seconds),
        ) as response:
            return Answer(response.status, await response.content.read(MAX_ANSWER_BYTES))
    except TimeoutError as exc:
        raise NoAnswer(f"no answer within {seconds:g} s") from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise NoAnswer(f"could not be reached ({type(exc).__name__})") from exc
