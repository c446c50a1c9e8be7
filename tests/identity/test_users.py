"""The one-way ids of identities: pure, no server."""

from __future__ import annotations

import pytest

from file_uploader.identity.users import callback_user, jwt_user, quota_of
from file_uploader.storage.keys import USER_ID_LENGTH, user_id


def test_two_issuers_naming_the_same_subject_are_two_users():
    assert jwt_user("https://a.example", "alice") != jwt_user("https://b.example", "alice")


def test_the_same_issuer_and_subject_are_always_the_same_user():
    assert jwt_user("https://a.example", "alice") == jwt_user("https://a.example", "alice")


def test_issuer_and_subject_cannot_be_respelled_as_another_pair():
    assert jwt_user("https://a.example/x", "y") != jwt_user("https://a.example/", "xy")


def test_a_callback_user_is_never_a_jwt_user_or_a_uuid_token_of_the_same_text():
    text = "18ce71ad-1391-46c7-91de-56948fda0d8a"
    ids = {callback_user(text), jwt_user("", text), user_id(text)}
    assert len(ids) == 3


def test_ids_have_the_storage_layouts_length():
    assert len(jwt_user("i", "s")) == len(callback_user("u")) == USER_ID_LENGTH


@pytest.mark.parametrize("value", [0, 1000, 1000.0, 5 * 2**40])
def test_a_quota_is_a_whole_number_of_bytes(value):
    assert quota_of(value, "quota") == int(value)


@pytest.mark.parametrize("value", [-1, 1.5, "1000", True, None, [1000]])
def test_anything_else_is_not_a_quota(value):
    with pytest.raises(ValueError, match="whole number of bytes"):
        quota_of(value, "quota")
