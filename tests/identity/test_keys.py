"""Key sets over HTTP: fetched once, refreshed on an unknown kid at a bounded rate, never a
symmetric key; discovery that must name the issuer configured."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from file_uploader.identity import keys
from file_uploader.identity.errors import AuthUnavailable, InvalidToken
from file_uploader.identity.keys import Discovery, KeySet

from ..providers import KeyServer


@pytest.fixture
def issuer():
    with KeyServer().running() as server:
        yield server


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_keys_are_fetched_once_for_many_tokens(issuer, session):
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    kid = issuer.keys[0][0]
    for _ in range(5):
        await keyset.key_for(kid, "RS256")
    assert issuer.fetches == 1


async def test_a_new_kid_is_fetched_at_once(issuer, session):
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    await keyset.key_for(issuer.keys[0][0], "RS256")
    new_kid = issuer.rotate()
    assert (await keyset.key_for(new_kid, "RS256")).key_id == new_kid
    assert issuer.fetches == 2


async def test_random_kids_cause_one_refresh_per_period_not_one_per_token(issuer, session):
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    await keyset.key_for(issuer.keys[0][0], "RS256")
    for _ in range(20):
        with pytest.raises(InvalidToken):
            await keyset.key_for(uuid.uuid4().hex, "RS256")
    assert issuer.fetches == 2
    assert keys.UNKNOWN_KID_REFRESH_SECONDS >= 10


async def test_a_key_of_another_type_does_not_verify_an_algorithm(issuer, session):
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    rsa_kid = issuer.keys[0][0]
    with pytest.raises(InvalidToken):
        await keyset.key_for(rsa_kid, "ES256")
    with pytest.raises(InvalidToken):
        await keyset.key_for(rsa_kid, "HS256")


async def test_a_symmetric_key_in_a_key_set_is_never_used(session, aiohttp_server):
    from aiohttp import web

    async def jwks(request):
        return web.json_response({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "shared"}]})

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    keyset = KeySet(session, str(server.make_url("/jwks")), "test")
    with pytest.raises(InvalidToken):
        await keyset.key_for("shared", "HS256")


async def test_without_a_kid_only_a_set_with_one_fitting_key_says_which(issuer, session):
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    assert (await keyset.key_for(None, "ES256")).key_id == issuer.keys[1][0]
    issuer.add_key()
    keyset = KeySet(session, issuer.issuer + "/jwks", "test")
    with pytest.raises(InvalidToken):
        await keyset.key_for(None, "RS256")


async def test_keys_that_cannot_be_fetched_make_the_request_unavailable_not_unauthorized(session):
    keyset = KeySet(session, "http://127.0.0.1:9/jwks", "test")
    with pytest.raises(AuthUnavailable):
        await keyset.key_for("any", "RS256")


async def test_discovery_finds_the_issuers_keys(issuer, session):
    discovery = Discovery(session, issuer.issuer)
    keyset = await discovery.keys()
    assert (await keyset.key_for(issuer.keys[0][0], "RS256")).key_id == issuer.keys[0][0]


async def test_a_discovery_document_naming_another_issuer_is_refused(issuer, session):
    discovery = Discovery(session, issuer.issuer + "/other")
    with pytest.raises(AuthUnavailable):
        await discovery.keys()
