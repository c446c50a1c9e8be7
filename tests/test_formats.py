"""The two rules every layer shares: a yes or no, and a moment in ISO 8601 (file_uploader/formats.py)."""

from __future__ import annotations

import datetime

import pytest

from file_uploader.formats import FALSE_WORDS, TRUE_WORDS, iso8601, parse_flag
from file_uploader.settings import Settings, SettingsError


@pytest.mark.parametrize("word", [*TRUE_WORDS, "ON", " Yes ", "TRUE"])
def test_a_yes_word_is_true_in_any_case(word):
    assert parse_flag(word) is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "OFF", " No ", "False"])
def test_a_no_word_is_false_in_any_case(word):
    assert parse_flag(word) is False


@pytest.mark.parametrize("word", ["", "2", "y", "enabled", "truee"])
def test_anything_else_is_neither(word):
    with pytest.raises(ValueError):
        parse_flag(word)


def test_a_setting_reads_the_same_words():
    assert Settings.from_env({"S3_BUCKET": "b", "S3_CREATE_BUCKET": "on"}).s3_create_bucket is True
    with pytest.raises(SettingsError, match="S3_CREATE_BUCKET"):
        Settings.from_env({"S3_BUCKET": "b", "S3_CREATE_BUCKET": "maybe"})


def test_a_moment_is_utc_to_the_millisecond_with_a_z():
    moment = datetime.datetime(
        2026, 12, 2, 18, 50, 7, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    assert iso8601(moment) == "2026-12-02T17:50:07.123Z"


def test_seconds_since_the_epoch_are_written_the_same_way():
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1.5) == "1970-01-01T00:00:01.500Z"
