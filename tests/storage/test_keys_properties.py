"""Property tests (hypothesis) for names and the token-to-prefix mapping."""

from __future__ import annotations

import http.client
import json
import posixpath
import urllib.parse
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from file_uploader.storage.keys import InvalidName, file_key, user_id, user_prefix, validate_name

# Names built to find trouble: path syntax, encodings, controls, and any text.
_PIECES = st.sampled_from(["..", ".", "", "a", "%2e", "%2F", "\\", "..\\", "\x00", "\n", "~", "é", "．", "/"])
NAMES = st.one_of(
    st.text(max_size=60),
    st.lists(_PIECES, max_size=8).map("/".join),
    st.lists(_PIECES, max_size=8).map("".join),
)
TOKENS = st.uuids().map(str)


def accepted(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


@pytest.mark.slow
@given(TOKENS, NAMES)
@settings(max_examples=300, deadline=None)
def test_no_accepted_name_escapes_the_users_prefix(token, name):
    if not accepted(name):
        return  # refused names are the other test's business; assume() would cost retries
    uid = user_id(token)
    key = file_key(uid, name)
    # However a consumer normalises the key, it stays in the user's own directory.
    assert posixpath.normpath(key).startswith(user_prefix(uid))
    assert posixpath.normpath(key) == key  # nothing for a normaliser to resolve
    assert key.startswith(user_prefix(uid))


@given(NAMES)
@settings(max_examples=300, deadline=None)
def test_a_name_is_either_kept_exactly_or_refused(name):
    try:
        assert validate_name(name) == name
    except InvalidName:
        pass


@given(TOKENS, TOKENS)
def test_two_different_tokens_never_share_a_prefix(first, second):
    assume(first.lower() != second.lower())
    a, b = user_prefix(user_id(first)), user_prefix(user_id(second))
    assert not a.startswith(b)
    assert not b.startswith(a)


@given(TOKENS)
def test_a_token_in_any_letter_case_is_the_same_user(token):
    assert user_id(token.upper()) == user_id(token.lower()) == user_id(token)


VALID_NAMES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40
).filter(accepted)


def request(base_url: str, method: str, path: str, token: str, body: bytes | None = None):
    url = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"X-Auth-Token": token})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@given(name=VALID_NAMES, safe=st.sampled_from(["", "/"]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_valid_names_round_trip_through_url_encoding_and_the_gateway(gateway_process, name, safe):
    token = str(uuid.uuid4())
    path = "/api/files/" + urllib.parse.quote(name, safe=safe)
    status, _ = request(gateway_process, "PUT", path, token, name.encode())
    assert status == 204
    status, body = request(gateway_process, "GET", "/api/files", token)
    assert json.loads(body) == [name]
    status, body = request(gateway_process, "GET", path, token)
    assert (status, body) == (200, name.encode())
