"""JWT bearers, verified here with PyJWT: HS256 with AUTH_JWT_SECRET, RS/PS/ES/EdDSA with keys
from AUTH_JWKS_URL or from each AUTH_ISSUER's discovery document.

The token's header says which algorithm signed it, and a client writes the
header: so the header only chooses *where the key comes from*, and the key
decides what it may verify. HS256 is checked with the shared secret alone, an
asymmetric algorithm with a published key of the same type alone; `alg: none`
and every other algorithm are refused. That closes the two classic holes:
`none`, and HS/RS confusion (an HS256 token "signed" with an RSA public key,
which anyone can read from the JWKS).

Claims: `exp`, `iss` and `sub` are required; `exp` and `nbf` are checked with a
clock skew of CLOCK_SKEW_SECONDS; `iss` must be one of AUTH_ISSUER when that is
set; `aud` must contain AUTH_AUDIENCE when that is set (it must be, for keys
that are not ours alone: see the settings). The user is (iss, sub) (users.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from .errors import InvalidToken
from .keys import ASYMMETRIC_ALGORITHMS, Discovery, KeySet
from .users import Identity, jwt_user, quota_of

CLOCK_SKEW_SECONDS = 30  # what a token's exp and nbf may be off by, between its issuer's clock and ours
SHARED_SECRET_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("exp", "iss", "sub")

_REFUSALS: list[tuple[type[jwt.PyJWTError], str]] = [
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
    (jwt.InvalidAudienceError, "the token is meant for another audience (aud)"),
    (jwt.InvalidIssuerError, "the token's issuer (iss) is not trusted here"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
]


def unverified_header(token: str) -> dict[str, Any] | None:
    """The header of a token shaped like a JWT (three base64url parts), else None."""
    if token.count(".") != 2:
        return None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    return header if isinstance(header.get("alg"), str) else None


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, before anything is verified: only to choose whose keys to fetch."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


class JwtVerifier:
    def __init__(
        self,
        *,
        secret: bytes | None,
        jwks: KeySet | None,
        issuers: Mapping[str, Discovery],
        audience: tuple[str, ...],
        quota_claim: str | None,
    ) -> None:
        self._secret = secret
        self._jwks = jwks
        self._issuers = issuers
        self._audience = list(audience) or None
        self._quota_claim = quota_claim

    def verifies(self, header: Mapping[str, Any], token: str) -> bool:
        """Whether this token is one the gateway checks itself (rather than ask the auth callback)."""
        alg = header["alg"]
        if alg == SHARED_SECRET_ALGORITHM:
            return self._secret is not None
        if alg in ASYMMETRIC_ALGORITHMS:
            return self._jwks is not None or unverified_issuer(token) in self._issuers
        return False

    async def verify(self, header: Mapping[str, Any], token: str) -> Identity:
        """The identity of a token `verifies` said yes to, or InvalidToken saying what is wrong."""
        alg = header["alg"]
        key: Any
        if alg == SHARED_SECRET_ALGORITHM:
            key = self._secret
        else:
            kid = header.get("kid")
            if kid is not None and not isinstance(kid, str):
                raise InvalidToken("the token's key id (kid) is not a string")
            keys = self._jwks or await self._issuers[unverified_issuer(token) or ""].keys()
            key = await keys.key_for(kid, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=list(self._issuers) or None,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": list(REQUIRED_CLAIMS), "verify_aud": self._audience is not None},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim} claim") from exc
        except jwt.PyJWTError as exc:
            for kind, message in _REFUSALS:
                if isinstance(exc, kind):
                    raise InvalidToken(message) from exc
            raise InvalidToken("the token is not a valid JWT") from exc
        issuer, subject = claims["iss"], claims["sub"]
        if not isinstance(issuer, str) or not isinstance(subject, str) or not subject:
            raise InvalidToken("the token's iss and sub must be non-empty strings")
        quota = None
        if self._quota_claim and self._quota_claim in claims:
            try:
                quota = quota_of(claims[self._quota_claim], f"the token's {self._quota_claim} claim")
            except ValueError as exc:
                raise InvalidToken(str(exc)) from exc
        return Identity(jwt_user(issuer, subject), quota)
