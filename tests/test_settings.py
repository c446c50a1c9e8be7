"""Settings: every variable read once, bad values refused with a clear message."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from file_uploader.settings import ENV_VARIABLES, Settings, SettingsError
from file_uploader.sizes import PARTS_PER_SIZE_STEP

from .helpers import ROOT


def test_a_bad_log_level_is_a_clear_error():
    with pytest.raises(SettingsError, match="LOG_LEVEL must be one of DEBUG, INFO"):
        Settings.from_env({"S3_BUCKET": "b", "LOG_LEVEL": "verbose"})


def test_log_level_is_read_in_any_letter_case():
    assert Settings.from_env({"S3_BUCKET": "b", "LOG_LEVEL": "warning"}).log_level == "WARNING"


@pytest.mark.process
def test_the_gateway_refuses_to_start_on_a_bad_log_level_with_one_line(tmp_path):
    env = {**os.environ, "S3_BUCKET": "b", "LOG_LEVEL": "loud", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "file_uploader"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("file_uploader: LOG_LEVEL must be one of")
    assert "Traceback" not in done.stderr


def test_an_unknown_s3_checksum_is_refused():
    with pytest.raises(SettingsError, match="S3_CHECKSUM"):
        Settings.from_env({"S3_BUCKET": "b", "S3_CHECKSUM": "crc64"})


def test_env_example_states_how_often_a_chunked_uploads_part_size_doubles():
    text = (ROOT / ".env.example").read_text()
    stated = re.search(r"doubles it every ([\d,]+) parts", text)
    assert stated, "the .env.example explains part growth"
    assert int(stated.group(1).replace(",", "")) == PARTS_PER_SIZE_STEP


def test_the_operations_guide_describes_every_setting():
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in ENV_VARIABLES if f"`{name}`" not in guide]
    assert missing == []


def test_user_quota_takes_a_size_and_unset_means_no_quota():
    assert Settings.from_env({"S3_BUCKET": "b", "USER_QUOTA": "10GiB"}).user_quota == 10 * 2**30
    assert Settings.from_env({"S3_BUCKET": "b", "USER_QUOTA": ""}).user_quota is None
    with pytest.raises(SettingsError, match="USER_QUOTA must be at least 1 byte"):
        Settings.from_env({"S3_BUCKET": "b", "USER_QUOTA": "0"})


def test_a_webhook_url_needs_a_secret_and_a_bad_one_is_not_echoed():
    with pytest.raises(SettingsError, match="WEBHOOK_URL needs WEBHOOK_SECRET"):
        Settings.from_env({"S3_BUCKET": "b", "WEBHOOK_URL": "http://hooks.example/in"})
    with pytest.raises(SettingsError, match="WEBHOOK_URL must be an http") as refused:
        Settings.from_env({"S3_BUCKET": "b", "WEBHOOK_URL": "ftp://user:pw@x/", "WEBHOOK_SECRET": "s"})
    assert "pw" not in str(refused.value)
