"""The page signs in through an OpenID Connect provider in Chromium: the authorization code flow
with PKCE, in the browser, against oidc-provider-mock; then uploads, lists and signs out."""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest

from file_uploader.identity.users import jwt_user

from ..helpers import ARTIFACTS, CHROMIUM, NO_CHROMIUM, all_keys, csp_violations, run_gateway
from ..providers import AUDIENCE, b64url, oidc_provider

pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM), pytest.mark.process]


@pytest.fixture
def provider():
    with oidc_provider() as (issuer, front):
        yield issuer, front


@pytest.fixture
def signed_in_gateway(provider, s3_url, bucket, tmp_path):
    issuer, _ = provider
    with run_gateway(s3_url, bucket, tmp_path, AUTH_ISSUER=issuer, AUTH_AUDIENCE=AUDIENCE) as url:
        yield url


def test_the_page_signs_in_uploads_lists_and_signs_out(signed_in_gateway, provider, browser_page, s3, bucket):
    issuer, front = provider
    page = browser_page
    violations = csp_violations(page)
    authorize_urls: list[str] = []
    page.on("request", lambda r: authorize_urls.append(r.url) if "/oauth2/authorize" in r.url else None)

    page.goto(signed_in_gateway + "/")
    page.click("#sign-in")
    # The provider's own sign-in page: oidc-provider-mock asks for a subject.
    page.wait_for_url(issuer + "/oauth2/authorize*")
    page.fill('input[name="sub"]', "alice")
    page.click('button:has-text("Authorize")')

    page.locator("#signed-in-as", has_text="alice").wait_for()
    assert page.locator("#token-form").is_hidden()
    assert "code=" not in page.url  # the code is taken out of the address bar

    # PKCE: the page sent an S256 challenge, then the verifier that hashes to it, and no secret.
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize_urls[0]).query)
    assert query["code_challenge_method"] == ["S256"]
    token_request = front.token_requests[-1]
    assert "client_secret" not in token_request
    verifier = token_request["code_verifier"]
    assert b64url(hashlib.sha256(verifier.encode()).digest()) == query["code_challenge"][0]

    page.set_input_files("#picker", [{"name": "signed.txt", "mimeType": "text/plain", "buffer": b"hello"}])
    page.locator('#files tr[data-name="signed.txt"]').wait_for()
    stored = [key for key in all_keys(s3, bucket) if key.startswith("files/")]
    assert stored == [f"files/{jwt_user(issuer, 'alice')}/signed.txt"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-signed-in.png"), full_page=True)

    # Signing out ends the session at the provider, and the page is back to asking.
    page.click("#sign-out")
    page.wait_for_url(issuer + "/oauth2/end_session*")
    page.click('button:has-text("End session")')
    page.wait_for_url(signed_in_gateway + "/")
    page.locator("#sign-in").wait_for()
    assert page.locator("#files-section").is_hidden()
    assert page.evaluate("() => sessionStorage.getItem('file_uploader.session')") is None
    assert violations == []


def test_without_an_issuer_the_page_offers_no_sign_in(gateway_process, browser_page):
    page = browser_page
    page.goto(gateway_process + "/")
    page.locator("#token-form").wait_for()
    page.wait_for_load_state("networkidle")
    assert page.locator("#sign-in").is_hidden()
