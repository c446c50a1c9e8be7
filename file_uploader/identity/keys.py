"""The keys that sign JWTs: a JWKS fetched over HTTP, kept, and refreshed when it must be.

Where they come from: AUTH_JWKS_URL, or the `jwks_uri` of an issuer's OpenID
Connect discovery document (`<issuer>/.well-known/openid-configuration`, whose
own `issuer` must be the one configured, as OpenID Connect Discovery 1.0 §4.3
requires).

When they are fetched again:

- when they are older than KEYS_MAX_AGE_SECONDS (a provider rotates on its own
  schedule; an old set is still used if the refresh fails, and that is logged);
- when a token names a key id (`kid`) the set does not hold: that is how a
  rotated key is picked up without a restart. But a `kid` is whatever a client
  writes, so such a refresh happens at most once per UNKNOWN_KID_REFRESH_SECONDS
  per key set: random kids cannot make the gateway hammer the provider.
- Concurrent requests share one fetch; after a failed fetch with nothing kept,
  requests fail at once (503) for FAILED_FETCH_RETRY_SECONDS instead of each
  trying again.

Only asymmetric signing keys are taken from a key set (RSA, EC, OKP): a JWKS
that also lists a symmetric (`oct`) key must not turn its bytes into an HMAC
secret anyone who reads the JWKS could sign with.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt

from .errors import AuthUnavailable, InvalidToken

log = logging.getLogger(__name__)

KEYS_MAX_AGE_SECONDS = 3600.0
UNKNOWN_KID_REFRESH_SECONDS = 30.0
FAILED_FETCH_RETRY_SECONDS = 2.0
FETCH_SECONDS = 5.0  # one fetch of a discovery document or a key set, connecting included
MAX_DOCUMENT_BYTES = 256 * 1024  # a key set of a few dozen keys is a few kB
DISCOVERY_PATH = "/.well-known/openid-configuration"

# The algorithms a key of each type may verify (RFC 7518 §3.1, RFC 8037 for EdDSA).
ALGORITHMS_BY_KEY_TYPE = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset({"ES256", "ES384", "ES512"}),
    "OKP": frozenset({"EdDSA"}),
}
ASYMMETRIC_ALGORITHMS = frozenset().union(*ALGORITHMS_BY_KEY_TYPE.values())
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


async def fetch_json(session: aiohttp.ClientSession, url: str, what: str) -> dict[str, Any]:
    """GET `url` as a JSON object, or AuthUnavailable saying which document could not be had."""
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=FETCH_SECONDS), allow_redirects=False
        ) as response:
            if response.status != 200:
                raise AuthUnavailable(f"the {what} answered {response.status}")
            body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise AuthUnavailable(f"the {what} could not be fetched ({type(exc).__name__})") from exc
    if len(body) > MAX_DOCUMENT_BYTES:
        raise AuthUnavailable(f"the {what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise AuthUnavailable(f"the {what} is not JSON") from exc
    if not isinstance(document, dict):
        raise AuthUnavailable(f"the {what} is not a JSON object")
    return document


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    """Whether `jwk` may verify a token signed with `alg`: same key type, same curve, same `alg`
    where the key names one, and a signing key (`use`, when present, is `sig`)."""
    if jwk.get("use", "sig") != "sig" or alg not in ALGORITHMS_BY_KEY_TYPE.get(jwk.get("kty", ""), ()):
        return False
    if "alg" in jwk and jwk["alg"] != alg:
        return False
    return not (alg in _EC_CURVES and jwk.get("crv") != _EC_CURVES[alg])


class _Kept:
    """A document fetched over HTTP and kept. A failed fetch keeps the old one (and says so in
    the log); with nothing kept, requests fail at once for FAILED_FETCH_RETRY_SECONDS."""

    def __init__(self, what: str, label: str, unavailable: str) -> None:
        self.what = what  # "signing keys", "discovery document"
        self.label = label  # whose: the issuer, or "AUTH_JWKS_URL"
        self.unavailable = unavailable  # what a request is told while nothing is kept
        self.document: dict[str, Any] | None = None
        self.fetched_at = 0.0
        self._failed_until = 0.0

    async def fetch(self, get: Callable[[], Awaitable[dict[str, Any]]]) -> bool:
        """Fetch the document again with `get`; whether a new one was kept."""
        now = time.monotonic()
        if self.document is None and now < self._failed_until:
            raise AuthUnavailable(self.unavailable)
        try:
            document = await get()
        except AuthUnavailable as exc:
            self._failed_until = now + FAILED_FETCH_RETRY_SECONDS
            if self.document is None:
                log.warning("could not fetch the %s of %s: %s", self.what, self.label, exc)
                raise AuthUnavailable(self.unavailable) from exc
            log.warning("could not refresh the %s of %s (keeping the old): %s", self.what, self.label, exc)
            self.fetched_at = now  # tried: keep the old one for another period
            return False
        self.document = document
        self.fetched_at = now
        return True


class KeySet:
    """One JWKS URL's signing keys, fetched on first use."""

    def __init__(self, session: aiohttp.ClientSession, url: str, label: str) -> None:
        self._session = session
        self.url = url
        self.label = label  # what log lines call it (the issuer, or "AUTH_JWKS_URL")
        self._keys: list[dict[str, Any]] | None = None
        self._built: dict[tuple[str | None, str], jwt.PyJWK] = {}
        self._kept = _Kept(
            "signing keys", label, "the identity provider's keys could not be fetched; try again shortly"
        )
        self._unknown_kid_refresh_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many times the key set was fetched (for /metrics and tests)

    async def key_for(self, kid: str | None, alg: str) -> jwt.PyJWK:
        """The key that verifies a token with header `kid` and `alg`, or InvalidToken."""
        now = time.monotonic()
        if self._keys is None or now - self._kept.fetched_at >= KEYS_MAX_AGE_SECONDS:
            await self._refresh(now)
        key = self._find(kid, alg)
        if key is None and self._lock.locked():
            async with self._lock:  # a refresh under way (another request's unknown kid): wait for it
                pass
            key = self._find(kid, alg)
        if key is None and now - self._unknown_kid_refresh_at >= UNKNOWN_KID_REFRESH_SECONDS:
            self._unknown_kid_refresh_at = now
            await self._refresh(now)
            key = self._find(kid, alg)
        if key is None:
            raise InvalidToken("the token is signed with a key its issuer does not publish")
        return key

    def _find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        candidates = [
            jwk for jwk in self._keys or () if _fits(jwk, alg) and (kid is None or jwk.get("kid") == kid)
        ]
        # Without a kid, only a set with one fitting key says which key is meant.
        if len(candidates) != 1:
            return None
        jwk = candidates[0]
        built = self._built.get((jwk.get("kid"), alg))
        if built is None:
            try:
                built = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError:
                return None  # a key this library cannot use is no key
            self._built[(jwk.get("kid"), alg)] = built
        return built

    async def _refresh(self, started: float) -> None:
        async with self._lock:
            if self._kept.fetched_at > started:
                return  # another request fetched since this one looked
            if not await self._kept.fetch(self._fetch):
                return
            self.fetches += 1
            assert self._kept.document is not None
            self._keys = [key for key in self._kept.document["keys"] if isinstance(key, dict)]
            self._built.clear()
            log.info("fetched %d signing keys of %s", len(self._keys), self.label)

    async def _fetch(self) -> dict[str, Any]:
        document = await fetch_json(self._session, self.url, "key set")
        if not isinstance(document.get("keys"), list):
            raise AuthUnavailable("the key set has no list of keys")
        return document


class Discovery:
    """An OpenID Connect issuer's discovery document, fetched on first use, refetched after
    KEYS_MAX_AGE_SECONDS; its `jwks_uri` becomes the issuer's key set."""

    def __init__(self, session: aiohttp.ClientSession, issuer: str) -> None:
        self._session = session
        self.issuer = issuer
        self._kept = _Kept(
            "discovery document", issuer, "the identity provider could not be reached; try again shortly"
        )
        self._keys: KeySet | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> dict[str, Any]:
        """The discovery document (fetched now if it is not kept), or AuthUnavailable."""
        async with self._lock:
            if (
                self._kept.document is None
                or time.monotonic() - self._kept.fetched_at >= KEYS_MAX_AGE_SECONDS
            ):
                await self._kept.fetch(self._fetch)
            document = self._kept.document
            assert document is not None
            if self._keys is None or self._keys.url != document["jwks_uri"]:
                self._keys = KeySet(self._session, document["jwks_uri"], self.issuer)
            return document

    async def _fetch(self) -> dict[str, Any]:
        document = await fetch_json(
            self._session, self.issuer.rstrip("/") + DISCOVERY_PATH, "discovery document"
        )
        if document.get("issuer") != self.issuer:
            raise AuthUnavailable("the discovery document names another issuer")
        if not isinstance(document.get("jwks_uri"), str):
            raise AuthUnavailable("the discovery document has no jwks_uri")
        return document

    async def keys(self) -> KeySet:
        await self.load()
        assert self._keys is not None
        return self._keys
