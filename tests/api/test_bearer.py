"""Authorization: Bearer <JWT>, through the gateway: tokens of real issuers over HTTP (a JWKS of
our own, and oidc-provider-mock's discovery), each refusal the one JSON error shape."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
import uuid

import jwt
import pytest

from file_uploader.identity.users import jwt_user

from ..helpers import all_keys, new_token
from ..providers import AUDIENCE, KeyServer, b64url, oidc_provider, sign_in, unsigned

SECRET = "a shared secret of the operator's application"


@pytest.fixture
def issuer():
    with KeyServer().running() as server:
        yield server


@pytest.fixture
def gateway(aiohttp_client, app_for, settings):
    """The gateway in-process with the AUTH_ settings given (as Settings fields)."""

    async def start(**auth):
        return await aiohttp_client(await app_for(dataclasses.replace(settings, **auth)))

    return start


@pytest.fixture
async def jwks_gateway(gateway, issuer):
    """Keys from AUTH_JWKS_URL, tokens of that one issuer, for AUDIENCE; and HS256 tokens."""
    return await gateway(
        auth_jwks_url=issuer.issuer + "/jwks",
        auth_issuer=(issuer.issuer,),
        auth_audience=(AUDIENCE,),
        auth_jwt_secret=SECRET,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def names(client, token: str) -> list[str]:
    response = await client.get("/api/files", headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def assert_refused(response, words: str) -> None:
    assert response.status == 401
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == "invalid_token"
    assert words in body["error"]["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_tokens_of_two_issuers_for_the_same_subject_are_two_spaces(gateway, s3, bucket):
    with oidc_provider() as (first, _), oidc_provider() as (second, _):
        client = await gateway(auth_issuer=(first, second), auth_audience=(AUDIENCE,))
        alice_at_first = sign_in(first, "alice")
        alice_at_second = sign_in(second, "alice")
        response = await client.put("/api/files/a.txt", data=b"first", headers=bearer(alice_at_first))
        assert response.status == 204
        assert await names(client, alice_at_first) == ["a.txt"]
        assert await names(client, alice_at_second) == []
    assert all_keys(s3, bucket) == [f"files/{jwt_user(first, 'alice')}/a.txt"]


async def test_a_shared_secret_token_is_a_user(jwks_gateway, issuer):
    token = jwt_encode_hs256(issuer.claims(sub="bob"), SECRET)
    response = await jwks_gateway.put("/api/files/b.txt", data=b"b", headers=bearer(token))
    assert response.status == 204
    assert await names(jwks_gateway, token) == ["b.txt"]


async def test_an_ec_signed_token_is_a_user(jwks_gateway, issuer):
    assert await names(jwks_gateway, issuer.mint(key=1)) == []


def jwt_encode_hs256(claims: dict, secret: str | bytes) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def hs256_signed_with_the_public_key(issuer: KeyServer) -> str:
    """HS/RS confusion: an HMAC "signed" with the RSA public key anyone can read from the JWKS."""
    header = b64url(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64url(json.dumps(issuer.claims()).encode())
    signature = hmac.new(issuer.public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def tampered(token: str) -> str:
    """The signature of another payload: the same header and signature, sub changed."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload.encode() + b"=="))
    claims["sub"] = "mallory"
    return f"{header}.{b64url(json.dumps(claims).encode())}.{signature}"


REFUSED = {
    "expired": (lambda i: i.mint(exp=int(time.time()) - 120), "expired"),
    "not yet valid": (lambda i: i.mint(nbf=int(time.time()) + 120), "not valid yet"),
    "wrong audience": (lambda i: i.mint(aud="another-application"), "audience"),
    "wrong issuer": (lambda i: i.mint(iss="https://someone.else.example"), "issuer"),
    "bad signature": (lambda i: tampered(i.mint()), "signature"),
    "alg none": (lambda i: unsigned({"alg": "none", "typ": "JWT"}, i.claims()), "does not accept"),
    "HS/RS confusion": (hs256_signed_with_the_public_key, "signature"),
    "unknown key": (lambda i: i.mint(kid="not-a-published-kid"), "does not publish"),
    "no subject": (lambda i: i.mint(sub=None), "no sub claim"),
    "no expiry": (lambda i: i.mint(exp=None), "no exp claim"),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_bad_token_gets_401_with_the_one_json_error_shape(jwks_gateway, issuer, case):
    make, words = REFUSED[case]
    response = await jwks_gateway.get("/api/files", headers=bearer(make(issuer)))
    await assert_refused(response, words)


async def test_a_token_within_the_clock_skew_is_accepted(jwks_gateway, issuer):
    now = int(time.time())
    assert await names(jwks_gateway, issuer.mint(exp=now - 5, nbf=now + 5)) == []


async def test_a_rotated_key_is_picked_up_without_a_restart(jwks_gateway, issuer):
    assert await names(jwks_gateway, issuer.mint()) == []
    issuer.rotate()
    assert await names(jwks_gateway, issuer.mint()) == []
    assert issuer.fetches == 2


async def test_random_key_ids_do_not_make_the_gateway_hammer_the_provider(jwks_gateway, issuer):
    for _ in range(20):
        response = await jwks_gateway.get("/api/files", headers=bearer(issuer.mint(kid=uuid.uuid4().hex)))
        assert response.status == 401
    assert issuer.fetches <= 2


async def test_keys_by_discovery_from_the_issuer(gateway, issuer):
    client = await gateway(auth_issuer=(issuer.issuer,), auth_audience=(AUDIENCE,))
    assert await names(client, issuer.mint()) == []


async def test_an_unreachable_provider_is_503_not_401(gateway):
    client = await gateway(auth_issuer=("http://127.0.0.1:9",), auth_audience=(AUDIENCE,))
    with KeyServer().running() as elsewhere:
        token = elsewhere.mint(iss="http://127.0.0.1:9")
    response = await client.get("/api/files", headers=bearer(token))
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "auth_unavailable"


async def test_uuid_tokens_still_work_beside_bearers(jwks_gateway):
    response = await jwks_gateway.get("/api/files", headers={"X-Auth-Token": new_token()})
    assert response.status == 200


async def test_with_uuid_tokens_off_a_uuid_gets_401(gateway, issuer):
    client = await gateway(
        auth_uuid_tokens=False, auth_jwks_url=issuer.issuer + "/jwks", auth_audience=(AUDIENCE,)
    )
    response = await client.get("/api/files", headers={"X-Auth-Token": new_token()})
    await assert_refused_uuid(response)
    assert await names(client, issuer.mint()) == []


async def assert_refused_uuid(response) -> None:
    assert response.status == 401
    body = await response.json()
    assert body["error"]["code"] == "invalid_token"
    assert "Authorization: Bearer" in body["error"]["message"]


async def test_a_uuid_and_a_bearer_together_are_refused(jwks_gateway, issuer):
    headers = {**bearer(issuer.mint()), "X-Auth-Token": new_token()}
    response = await jwks_gateway.get("/api/files", headers=headers)
    assert response.status == 401


async def test_a_quota_from_a_claim_is_enforced_for_that_user_alone(gateway, issuer):
    client = await gateway(
        auth_jwks_url=issuer.issuer + "/jwks", auth_audience=(AUDIENCE,), auth_quota_claim="storage_quota"
    )
    small = issuer.mint(sub="small", storage_quota=1000)
    assert (await client.put("/api/files/a", data=b"x" * 800, headers=bearer(small))).status == 204
    response = await client.put("/api/files/b", data=b"x" * 300, headers=bearer(small))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "quota_exceeded"
    usage = await (await client.get("/api/usage", headers=bearer(small))).json()
    assert usage["used"] == 800 and usage["quota"] == 1000
    # A user without the claim has USER_QUOTA (here: none).
    other = issuer.mint(sub="other")
    assert (await client.put("/api/files/b", data=b"x" * 3000, headers=bearer(other))).status == 204


async def test_a_quota_claim_that_is_not_a_size_is_refused(gateway, issuer):
    client = await gateway(
        auth_jwks_url=issuer.issuer + "/jwks", auth_audience=(AUDIENCE,), auth_quota_claim="storage_quota"
    )
    response = await client.get("/api/files", headers=bearer(issuer.mint(storage_quota="lots")))
    await assert_refused(response, "whole number of bytes")


async def test_a_bearer_never_reaches_a_log_line(jwks_gateway, issuer, caplog):
    caplog.set_level(logging.DEBUG)
    token = issuer.mint()
    await jwks_gateway.put("/api/files/a.txt", data=b"hello", headers=bearer(token))
    await jwks_gateway.get("/api/files", headers=bearer(tampered(token)))
    assert token.split(".")[2] not in caplog.text
    assert token.split(".")[1] not in caplog.text


async def test_a_quota_from_a_claim_holds_tus_uploads_and_replaces_user_quota(gateway, issuer):
    client = await gateway(
        auth_jwks_url=issuer.issuer + "/jwks",
        auth_audience=(AUDIENCE,),
        auth_quota_claim="storage_quota",
        user_quota=100,
    )
    big = bearer(issuer.mint(sub="big", storage_quota=10_000))
    tus = {"Tus-Resumable": "1.0.0", "Upload-Metadata": "filename " + base64.b64encode(b"t").decode()}
    created = await client.post("/api/uploads", headers={**big, **tus, "Upload-Length": "5000"})
    assert created.status == 201, await created.text()
    refused = await client.post("/api/uploads", headers={**big, **tus, "Upload-Length": "6000"})
    assert refused.status == 413
    assert (await refused.json())["error"]["code"] == "quota_exceeded"
    usage = await (await client.get("/api/usage", headers=big)).json()
    assert usage["quota"] == 10_000 and usage["reserved"] == 5000
    # Without the claim, USER_QUOTA.
    plain = bearer(issuer.mint(sub="plain"))
    assert (await client.put("/api/files/x", data=b"x" * 200, headers=plain)).status == 413
    assert (await (await client.get("/api/usage", headers=plain)).json())["quota"] == 100
