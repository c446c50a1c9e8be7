"""storage/cas.py's tests (tests/storage/test_cas.py) against Ceph RGW 16, over http, with
conditional writes and without."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.rgw import RgwEngine
from file_uploader.settings import Settings

from ..storage.test_cas import *  # noqa: F403 (the same tests, collected here against RGW)
from ..storage.test_cas import storage  # noqa: F401 (the fixture, both modes)
from .conftest import own_bucket, rgw_s3, rgw_settings


@pytest.fixture
def settings(rgw: RgwEngine) -> Iterator[Settings]:
    """A bucket of this test's own on RGW, emptied and removed afterwards."""
    with own_bucket(rgw_s3(rgw), "cas") as bucket:
        yield rgw_settings(rgw, bucket)
