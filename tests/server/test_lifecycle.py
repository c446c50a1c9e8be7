"""Starting and stopping `python -m file_uploader`: what its log says."""

from __future__ import annotations

import pytest

from ..helpers import run_gateway

pytestmark = pytest.mark.process


def test_stopping_the_gateway_is_logged(s3_url, bucket, tmp_path):
    with run_gateway(s3_url, bucket, tmp_path):
        pass  # SIGTERM on the way out
    lines = (tmp_path / "gateway.log").read_text().splitlines()
    assert any("serving on" in line for line in lines)
    assert any("stopping" in line and "SIGTERM" in line for line in lines), lines
    assert "stopped" in lines[-1], lines
