"""One Ceph RGW cluster for the whole session, shared by every module of tests/engines.

The cluster starts only when a test asks for it (devtools/rgw.py: about two
seconds) and is thrown away whole at the end; each test makes its own bucket.
Where Ceph is not installed the RGW cases skip, saying why; under CI (the CI
variable set) they fail instead, so that CI cannot pass without running them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.rgw import RgwEngine, running_rgw, unavailable_reason

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
