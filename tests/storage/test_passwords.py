"""Passwords of links and upload requests: slow to guess, quick for the person who has one."""

from __future__ import annotations

import time

from file_uploader.storage.passwords import Passwords, hash_password_now


async def test_a_right_password_is_taken_again_without_a_second_hash():
    passwords = Passwords()
    stored = hash_password_now("open sesame")
    started = time.perf_counter()
    assert await passwords.matches("open sesame", stored)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(100):
        assert await passwords.matches("open sesame", stored)
    # A hash costs tens of ms; a hundred checks from memory cost less than the one.
    assert time.perf_counter() - started < first


async def test_a_wrong_password_is_never_taken_however_often_the_right_one_was():
    passwords = Passwords()
    stored = hash_password_now("open sesame")
    assert await passwords.matches("open sesame", stored)
    assert not await passwords.matches("open sesame ", stored)
    assert not await passwords.matches("", stored)
    # The same password against another stored hash (a new password set) is checked afresh.
    assert not await passwords.matches("open sesame", hash_password_now("something else"))
    assert await passwords.matches("open sesame", stored)
