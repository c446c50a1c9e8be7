"""One Ceph RGW cluster for the whole session, shared by every module of tests/engines.

The cluster starts only when a test asks for it (devtools/rgw.py: about two
seconds) and is thrown away whole at the end; each test makes its own bucket.
Where Ceph is not installed the RGW cases skip, saying why; under CI (the CI
variable set) they fail instead, so that CI cannot pass without running them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devtools.rgw import RgwEngine, running_rgw, unavailable_reason
from file_uploader.settings import Settings

# SSE-KMS on RGW needs a key manager; Ceph's "testing" backend holds the keys in its own
# configuration, so the tests can ask for one by id (tests/engines/test_encryption.py).
RGW_KMS_KEY_ID = "testkey-1"
RGW_TEST_KMS = {
    "rgw_crypt_s3_kms_backend": "testing",
    "rgw_crypt_s3_kms_encryption_keys": f"{RGW_KMS_KEY_ID}=YmluCmJvb3N0CmJvb3N0LWJ1aWxkCmNlcGguY29uZgo=",
}


def require_ceph() -> None:
    """Skip, saying why, where Ceph is not installed; under CI fail instead."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the RGW tests: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwEngine]:
    """One throwaway Ceph cluster with RGW for the whole session (its files and logs under a temp dir)."""
    require_ceph()
    with running_rgw(tmp_path_factory.mktemp("rgw"), config=RGW_TEST_KMS) as engine:
        yield engine


def rgw_s3(rgw: RgwEngine, *, https: bool = False) -> Any:
    """A plain boto3 client of the cluster, over http or https (trusting its own CA)."""
    return boto3.client(
        "s3",
        endpoint_url=rgw.https_url if https else rgw.http_url,
        region_name="us-east-1",
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        **({"verify": rgw.ca_file} if https else {}),
    )


def rgw_settings(rgw: RgwEngine, bucket: str, *, https: bool = False, **more: Any) -> Settings:
    """The gateway's settings for `bucket` on the cluster; `more`: any other settings."""
    return Settings(
        s3_bucket=bucket,
        s3_endpoint_url=rgw.https_url if https else rgw.http_url,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
        **more,
    )


@contextlib.contextmanager
def own_bucket(s3: Any, prefix: str) -> Iterator[str]:
    """A bucket of the test's own (`prefix`-<random>), emptied and removed afterwards: its
    unfinished multipart uploads aborted, every object deleted."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    yield bucket
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        if page.get("Contents"):
            keys = [{"Key": item["Key"]} for item in page["Contents"]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
