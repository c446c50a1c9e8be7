"""AUTH_HOOK_URL: the operator's application says whose a bearer token is; the gateway fails
closed when it cannot ask."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from file_uploader.identity import callback
from file_uploader.identity.users import callback_user

from ..helpers import all_keys
from ..providers import AUDIENCE, CallbackServer, KeyServer

HOOK_SECRET = "the secret the gateway signs its questions with"


@pytest.fixture
def hook():
    with CallbackServer(HOOK_SECRET.encode()).running() as server:
        yield server


@pytest.fixture
async def gw(aiohttp_client, app_for, settings, hook):
    return await aiohttp_client(
        await app_for(dataclasses.replace(settings, auth_hook_url=hook.url, hook_secret=HOOK_SECRET))
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_known_token_is_the_user_the_callback_names(gw, hook, s3, bucket):
    hook.answers["session-abc"] = (200, {"user": "user-42"})
    response = await gw.put("/api/files/a.txt", data=b"hello", headers=bearer("session-abc"))
    assert response.status == 204
    assert all_keys(s3, bucket) == [f"files/{callback_user('user-42')}/a.txt"]


async def test_the_question_is_signed_json_carrying_the_token(gw, hook):
    hook.answers["session-abc"] = (200, {"user": "user-42"})
    await gw.get("/api/files", headers=bearer("session-abc"))
    body, signature = hook.requests[0]
    assert json.loads(body) == {"type": "auth", "token": "session-abc"}
    assert hook.valid_signature(body, signature)


@pytest.mark.parametrize("status", [401, 403])
async def test_an_unknown_token_gets_401(gw, hook, status):
    hook.answers["session-old"] = (status, {})
    response = await gw.get("/api/files", headers=bearer("session-old"))
    assert response.status == 401
    assert (await response.json())["error"]["code"] == "invalid_token"


@pytest.mark.parametrize("answer", [(500, {}), (302, {}), (404, {}), (200, {"name": "no user"}), (200, [])])
async def test_any_other_answer_fails_closed_with_503(gw, hook, answer):
    hook.answers["session-abc"] = answer
    response = await gw.get("/api/files", headers=bearer("session-abc"))
    assert response.status == 503
    body = await response.json()
    assert body["error"]["code"] == "auth_unavailable"
    assert "did not answer" in body["error"]["message"]


@pytest.mark.slow  # waits out CALLBACK_SECONDS (5 s)
async def test_a_callback_that_does_not_answer_in_time_fails_closed_with_503(gw, hook):
    hook.answers["session-abc"] = (200, {"user": "user-42"})
    hook.delay = callback.CALLBACK_SECONDS + 10
    started = asyncio.get_running_loop().time()
    response = await gw.get("/api/files", headers=bearer("session-abc"))
    assert response.status == 503
    # Refused at its own timeout, not when the callback would have answered: with room for a
    # loaded machine between the two.
    assert asyncio.get_running_loop().time() - started < callback.CALLBACK_SECONDS + 5


async def test_a_callback_nobody_listens_on_fails_closed_with_503(aiohttp_client, app_for, settings):
    gw = await aiohttp_client(
        await app_for(
            dataclasses.replace(settings, auth_hook_url="http://127.0.0.1:9/auth", hook_secret=HOOK_SECRET)
        )
    )
    response = await gw.get("/api/files", headers=bearer("session-abc"))
    assert response.status == 503


async def test_answers_are_kept_so_a_burst_of_requests_asks_once(gw, hook):
    hook.answers["session-abc"] = (200, {"user": "user-42"})
    requests = (gw.get("/api/files", headers=bearer("session-abc")) for _ in range(10))
    responses = await asyncio.gather(*requests)
    assert [response.status for response in responses] == [200] * 10
    await gw.get("/api/files", headers=bearer("session-abc"))
    assert len(hook.requests) == 1


async def test_failures_are_not_kept(gw, hook):
    hook.answers["session-abc"] = (500, {})
    assert (await gw.get("/api/files", headers=bearer("session-abc"))).status == 503
    hook.answers["session-abc"] = (200, {"user": "user-42"})
    assert (await gw.get("/api/files", headers=bearer("session-abc"))).status == 200


async def test_a_quota_from_the_callback_is_enforced(gw, hook):
    hook.answers["session-abc"] = (200, {"user": "user-42", "quota": 1000})
    assert (await gw.put("/api/files/a", data=b"x" * 800, headers=bearer("session-abc"))).status == 204
    response = await gw.put("/api/files/b", data=b"x" * 300, headers=bearer("session-abc"))
    assert response.status == 413


async def test_a_jwt_the_gateway_verifies_is_never_sent_to_the_callback(
    aiohttp_client, app_for, settings, hook
):
    with KeyServer().running() as issuer:
        gw = await aiohttp_client(
            await app_for(
                dataclasses.replace(
                    settings,
                    auth_hook_url=hook.url,
                    hook_secret=HOOK_SECRET,
                    auth_jwks_url=issuer.issuer + "/jwks",
                    auth_audience=(AUDIENCE,),
                )
            )
        )
        assert (await gw.get("/api/files", headers=bearer(issuer.mint()))).status == 200
        expired = issuer.mint(exp=1)
        assert (await gw.get("/api/files", headers=bearer(expired))).status == 401
    assert hook.requests == []


def test_hook_secret_is_required_with_the_auth_callback(settings):
    from file_uploader.settings import SettingsError

    with pytest.raises(SettingsError, match="HOOK_SECRET"):
        dataclasses.replace(settings, auth_hook_url="http://127.0.0.1:9/auth")
