"""Who a request is, besides a UUID: JWT bearers and the auth callback (issue 24).

`Authorization: Bearer <token>` is answered here, in this order:

1. a JWT the gateway can verify itself (jwts.py): HS256 when AUTH_JWT_SECRET is
   set; an asymmetric algorithm when AUTH_JWKS_URL is set, or when the token's
   `iss` is one of AUTH_ISSUER (keys by OpenID Connect discovery, keys.py).
   A token that fails any check is refused (401), never passed on;
2. anything else goes to the auth callback (callback.py) when AUTH_HOOK_URL is
   set, which says whose it is, or that it is unknown (401), or cannot be
   asked (503);
3. otherwise it is refused (401).

The result is an `Identity`: the one-way user id the storage layout is keyed
by (users.py: the same layout as UUID tokens, and no kind or issuer can reach
another's space), and the user's own quota when a claim or the callback
carries one. UUID tokens (`X-Auth-Token`) stay with the HTTP layer, which
decides, by AUTH_UUID_TOKENS, whether they are accepted at all.

One HTTP client session per process serves the key fetches and the callback,
opened and closed with the app.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from .. import __version__
from ..settings import Settings
from .callback import AuthCallback
from .errors import AuthUnavailable, InvalidToken
from .jwts import JwtVerifier, unverified_header
from .keys import Discovery, KeySet
from .users import Identity

__all__ = ["AuthUnavailable", "Identities", "Identity", "InvalidToken"]


class Identities:
    """This process's answer to "whose is this bearer token?"."""

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        jwks_url: str | None = None,
        issuers: tuple[str, ...] = (),
        audience: tuple[str, ...] = (),
        quota_claim: str | None = None,
        hook_url: str | None = None,
        hook_secret: str | None = None,
    ) -> None:
        self._session = aiohttp.ClientSession(headers={"User-Agent": f"file_uploader/{__version__}"})
        self.issuers = {issuer: Discovery(self._session, issuer) for issuer in issuers}
        self.jwks = KeySet(self._session, jwks_url, "AUTH_JWKS_URL") if jwks_url else None
        self._jwts = JwtVerifier(
            secret=jwt_secret.encode() if jwt_secret else None,
            jwks=self.jwks,
            issuers=self.issuers,
            audience=audience,
            quota_claim=quota_claim,
        )
        self.callback = (
            AuthCallback(self._session, hook_url, (hook_secret or "").encode()) if hook_url else None
        )
        self.accepts_bearer = bool(jwt_secret or jwks_url or issuers or hook_url)

    async def close(self) -> None:
        await self._session.close()

    async def bearer(self, token: str) -> Identity:
        """The identity of a bearer token, or InvalidToken (401) / AuthUnavailable (503)."""
        header = unverified_header(token)
        if header is not None and self._jwts.verifies(header, token):
            return await self._jwts.verify(header, token)
        if self.callback is not None:
            return await self.callback.identify(token)
        if header is not None:
            raise InvalidToken("this gateway does not accept tokens signed that way, or by that issuer")
        raise InvalidToken("the bearer token is not a JWT this gateway can verify")

    async def sign_in(self) -> dict[str, Any] | None:
        """What the web page needs to sign in through the first AUTH_ISSUER (authorization code with
        PKCE), or None when no issuer is configured and the page stays as it is."""
        if not self.issuers:
            return None
        discovery = next(iter(self.issuers.values()))
        document = await discovery.load()
        return {
            "issuer": discovery.issuer,
            "authorization_endpoint": document.get("authorization_endpoint"),
            "token_endpoint": document.get("token_endpoint"),
            "end_session_endpoint": document.get("end_session_endpoint"),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Identities:
        return cls(
            jwt_secret=settings.auth_jwt_secret,
            jwks_url=settings.auth_jwks_url,
            issuers=settings.auth_issuer,
            audience=settings.auth_audience,
            quota_claim=settings.auth_quota_claim,
            hook_url=settings.auth_hook_url,
            hook_secret=settings.hook_secret,
        )
