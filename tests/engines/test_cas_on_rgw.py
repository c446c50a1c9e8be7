"""storage/cas.py's tests (tests/storage/test_cas.py) against Ceph RGW 16, over http, with
conditional writes and without."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from devtools.rgw import RgwEngine
from file_uploader.settings import Settings

from ..storage.test_cas import *  # noqa: F403 (the same tests, collected here against RGW)
from ..storage.test_cas import storage  # noqa: F401 (the fixture, both modes)


@pytest.fixture
def settings(rgw: RgwEngine) -> Iterator[Settings]:
    """A bucket of this test's own on RGW, emptied and removed afterwards."""
    bucket = f"cas-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client(
        "s3",
        endpoint_url=rgw.http_url,
        region_name="us-east-1",
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
    )
    s3.create_bucket(Bucket=bucket)
    yield Settings(
        s3_bucket=bucket,
        s3_endpoint_url=rgw.http_url,
        aws_access_key_id=rgw.access_key,
        aws_secret_access_key=rgw.secret_key,
    )
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        if page.get("Contents"):
            keys = [{"Key": item["Key"]} for item in page["Contents"]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)
