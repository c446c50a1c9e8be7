"""Settings: every variable read once, bad values and removed names refused with a clear message."""

from __future__ import annotations

import base64
import collections
import os
import re
import subprocess
import sys

import pytest

from devtools import settings_doc
from file_uploader.settings import AUTH, ENV_NAMES, FIELDS, GROUPS, REMOVED, Settings, SettingsError
from file_uploader.sizes import MAX_UPLOADS_PER_USER, PARTS_PER_SIZE_STEP, UPLOAD_EXPIRY_SECONDS

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
    missing = [name for name in ENV_NAMES if f"`{name}`" not in guide]
    assert missing == []


def test_env_example_is_generated_from_the_current_settings():
    assert (ROOT / ".env.example").read_text() == settings_doc.env_example(), (
        "stale: run python -m devtools.settings_doc"
    )


def test_the_operations_guide_table_is_generated_from_the_current_settings():
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert settings_doc.settings_table() in guide, "stale: run python -m devtools.settings_doc"


# Issue 25's settings, for the engines' own rules (docs/s3-engines.md): each name a contract.
ENGINE_RULES = {"s3_max_parts", "s3_equal_parts", "s3_sse", "s3_sse_kms_key_id", "s3_sse_c_key"}


def test_settings_a_user_sets_are_44_of_ours_in_five_groups_beside_the_three_aws_credentials():
    """Issue 19 asks for at most 32; the names later issues fixed as a contract (20 to 25) and those
    every deployment needs come to 44: docs/operations.md says which and why."""
    ours = [field for field in FIELDS if not field.name.startswith("aws_")]
    counts = collections.Counter(field.metadata["group"] for field in ours)
    assert len(ours) == 44
    assert counts[AUTH] == 11  # issue 24's names, each a contract, and HOOK_TIMEOUT, HOOK_FAIL_OPEN
    assert set(counts) == set(GROUPS)
    assert all(field.metadata["doc"] for field in FIELDS)


def test_fixed_fields_are_not_read_from_the_environment_and_keep_their_constants():
    env = {"S3_BUCKET": "b", "UPLOAD_EXPIRY": "", "MAX_UPLOADS_PER_USER": ""}
    settings = Settings.from_env(env)
    assert settings.upload_expiry == UPLOAD_EXPIRY_SECONDS
    assert settings.max_uploads_per_user == MAX_UPLOADS_PER_USER
    assert settings.s3_conditional_writes is True  # the probe decides whether S3 honours them
    assert not {"UPLOAD_EXPIRY", "S3_CONDITIONAL_WRITES", "WEBHOOK_BACKLOG"} & ENV_NAMES


def test_issue_25s_engine_settings_are_there_by_their_names():
    assert ENGINE_RULES <= {field.name for field in FIELDS}


@pytest.mark.parametrize("value", ["0", "10001", "many"])
def test_s3_max_parts_runs_from_1_to_10000(value):
    with pytest.raises(SettingsError, match="S3_MAX_PARTS"):
        Settings.from_env({"S3_BUCKET": "b", "S3_MAX_PARTS": value})
    assert Settings.from_env({"S3_BUCKET": "b", "S3_MAX_PARTS": "1"}).s3_max_parts == 1


def test_equal_parts_take_their_size_from_max_file_size():
    env = {"S3_BUCKET": "b", "S3_EQUAL_PARTS": "1", "S3_MAX_PARTS": "1000", "MAX_FILE_SIZE": "8000MiB"}
    assert Settings.from_env(env).part_plan().equal == 8 * 1024**2  # 1,000 x 8 MiB holds 8,000 MiB
    plan = Settings.from_env({**env, "MAX_FILE_SIZE": "100GiB"}).part_plan()
    assert plan.equal == 103 * 1024**2  # 100 GiB / 1,000, in whole MiB
    assert plan.capacity(None) >= 100 * 1024**3
    with pytest.raises(SettingsError, match="S3_EQUAL_PARTS needs a MAX_FILE_SIZE that S3_MAX_PARTS parts"):
        Settings.from_env({**env, "MAX_FILE_SIZE": "5001GiB"})


def test_equal_parts_with_s3s_largest_file_would_need_parts_past_the_memory_budget():
    with pytest.raises(SettingsError, match="525 MiB here, more than MEMORY_BUDGET; set MAX_FILE_SIZE"):
        Settings.from_env({"S3_BUCKET": "b", "S3_EQUAL_PARTS": "1"})


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"S3_SSE": "sse-c"}, "S3_SSE=sse-c and S3_SSE_C_KEY go together"),
        ({"S3_SSE_C_KEY": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}, "go together"),
        ({"S3_SSE": "sse-c", "S3_SSE_C_KEY": "c2hvcnQ="}, "32 bytes once base64-decoded, got 5"),
        ({"S3_SSE": "sse-c", "S3_SSE_C_KEY": "not base64!"}, "S3_SSE_C_KEY is not base64"),
        ({"S3_SSE_KMS_KEY_ID": "alias/files"}, "S3_SSE_KMS_KEY_ID is for S3_SSE=sse-kms only"),
        ({"S3_SSE": "aes"}, "S3_SSE must be one of none, sse-s3, sse-kms, sse-c"),
    ],
)
def test_encryption_settings_that_cannot_work_stop_startup_without_echoing_the_key(env, said):
    with pytest.raises(SettingsError, match=re.escape(said)) as refused:
        Settings.from_env({"S3_BUCKET": "b", **env})
    assert "c2hvcnQ" not in str(refused.value) and "not base64!" not in str(refused.value)


def test_the_customer_key_is_kept_as_its_32_bytes_and_out_of_the_repr():
    key = bytes(range(32))
    env = {"S3_BUCKET": "b", "S3_SSE": "sse-c", "S3_SSE_C_KEY": base64.b64encode(key).decode()}
    settings = Settings.from_env(env)
    assert settings.s3_sse_c_key == key
    assert "s3_sse_c_key" not in repr(settings)


def test_bucket_is_still_accepted_for_s3_bucket():
    assert Settings.from_env({"BUCKET": "old-name"}).s3_bucket == "old-name"
    assert Settings.from_env({"S3_BUCKET": "new", "BUCKET": "old"}).s3_bucket == "new"


@pytest.mark.parametrize("name", sorted(REMOVED))
def test_a_removed_setting_stops_startup_naming_what_replaced_it(name):
    with pytest.raises(SettingsError, match=f"^{name} is no longer a setting: ") as refused:
        Settings.from_env({"S3_BUCKET": "b", name: "5"})
    assert "\n" not in str(refused.value)


def test_removed_names_say_what_replaced_them():
    for name, replacement in [
        ("SEND_TIMEOUT", "CLIENT_TIMEOUT"),
        ("S3_MAX_ATTEMPTS", "AWS_MAX_ATTEMPTS"),
        ("S3_CA_BUNDLE", "AWS_CA_BUNDLE"),
        ("S3_UPLOAD_CONNECTIONS", "S3_MAX_CONNECTIONS"),
        ("S3_EQUAL_PARTS_MAX_FILE_SIZE", "use MAX_FILE_SIZE"),
        ("S3_CHECKSUM_FALLBACK", "set S3_CHECKSUM=off"),
        ("S3_CONDITIONAL_WRITES", "the write probe finds"),
    ]:
        with pytest.raises(SettingsError, match=replacement):
            Settings.from_env({"S3_BUCKET": "b", name: "1"})


def test_a_removed_setting_left_empty_is_ignored():
    assert Settings.from_env({"S3_BUCKET": "b", "WEBHOOK_QUEUE": ""}).s3_bucket == "b"


def test_client_timeout_is_one_number_of_seconds_sixty_by_default():
    assert Settings(s3_bucket="b").client_timeout == 60.0
    assert Settings.from_env({"S3_BUCKET": "b", "CLIENT_TIMEOUT": "2.5"}).client_timeout == 2.5
    with pytest.raises(SettingsError, match="CLIENT_TIMEOUT must be a number of seconds"):
        Settings.from_env({"S3_BUCKET": "b", "CLIENT_TIMEOUT": "soon"})


def test_secrets_stay_out_of_the_settings_repr():
    settings = Settings.from_env(
        {
            "S3_BUCKET": "b",
            "AWS_SECRET_ACCESS_KEY": "hunter2",
            "SHARE_SECRET": "sharekey",
            "WEBHOOK_URL": "https://u:pw@hooks.example/x",
            "WEBHOOK_SECRET": "hookkey",
        }
    )
    shown = repr(settings)
    assert [secret for secret in ("hunter2", "sharekey", "hooks.example", "hookkey") if secret in shown] == []


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


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUTH_HOOK_URL": "http://127.0.0.1:9/auth"}, "HOOK_SECRET"),
        ({"AUTH_ISSUER": "https://id.example.com"}, "AUTH_AUDIENCE"),
        ({"AUTH_JWKS_URL": "https://id.example.com/jwks"}, "AUTH_AUDIENCE"),
        ({"AUTH_UUID_TOKENS": "0"}, "AUTH_UUID_TOKENS=0 leaves no way in"),
        ({"AUTH_QUOTA_CLAIM": "quota"}, "AUTH_QUOTA_CLAIM needs JWTs"),
        ({"AUTH_JWT_SECRET": "short"}, "at least 32 bytes"),
        ({"AUTH_ISSUER": "not-a-url", "AUTH_AUDIENCE": "x"}, "AUTH_ISSUER"),
    ],
)
def test_an_identity_setup_that_cannot_work_stops_startup_naming_the_setting(env, named):
    with pytest.raises(SettingsError, match=re.escape(named)):
        Settings.from_env({"S3_BUCKET": "b", **env})


def test_issuers_and_audiences_are_comma_separated_lists():
    settings = Settings.from_env(
        {"S3_BUCKET": "b", "AUTH_ISSUER": "https://a.example, https://b.example", "AUTH_AUDIENCE": "x,y"}
    )
    assert settings.auth_issuer == ("https://a.example", "https://b.example")
    assert settings.auth_audience == ("x", "y")


@pytest.mark.process
@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("S3_ENDPOINT_URL", "not-a-url", "S3_ENDPOINT_URL must be an http:// or https:// URL"),
        ("HOST", "999.1.1.1", "HOST must be an IP address"),
        ("PORT", "70000", "PORT must be a TCP port from 1 to 65535, got 70000"),
        ("PORT", "0", "PORT must be a TCP port from 1 to 65535, got 0"),
        ("HOST", "no-such-host.invalid", "cannot listen on no-such-host.invalid port"),
        ("SEND_TIMEOUT", "30", "SEND_TIMEOUT is no longer a setting: use CLIENT_TIMEOUT"),
    ],
)
def test_a_bad_value_stops_the_gateway_with_one_line_naming_the_setting(tmp_path, name, value, said):
    env = {**os.environ, "S3_BUCKET": "b", "PYTHONPATH": str(ROOT), name: value}
    env.setdefault("S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing there: the gateway starts anyway
    env["AWS_MAX_ATTEMPTS"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "file_uploader"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    # What is not a log record (those start with their time) is what the user is told.
    errors = [line for line in done.stderr.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(errors) == 1 and errors[0].startswith(f"file_uploader: {said}"), done.stderr


def test_the_log_names_the_s3_endpoint_by_host_and_port_only():
    settings = Settings(s3_bucket="b", s3_endpoint_url="https://key:secret@s3.example.net/base")
    assert settings.s3_where() == "s3.example.net:443"
    assert Settings(s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9000").s3_where() == "127.0.0.1:9000"
    assert Settings(s3_bucket="b", aws_region="eu-west-1").s3_where() == "AWS S3 (eu-west-1)"
