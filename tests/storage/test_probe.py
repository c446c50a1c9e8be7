"""How the probe's findings and the settings become the integrity mode (storage/probe.py's `choose`)."""

from __future__ import annotations

import pytest

from file_uploader.storage.probe import ENFORCED, IGNORED, REFUSED, Capabilities, choose


def found(etags: bool = True, **checksums: str) -> Capabilities:
    return Capabilities(probed=True, checksums=checksums, etag_is_md5=etags)


AWS = found(crc32=ENFORCED, crc32c=ENFORCED, sha256=ENFORCED, md5=ENFORCED)
RGW = found(crc32=IGNORED, crc32c=IGNORED, sha256=IGNORED, md5=ENFORCED)
MOTO = found(crc32=IGNORED, crc32c=IGNORED, sha256=IGNORED, md5=IGNORED)
NOTHING = found(etags=False, crc32=IGNORED, md5=IGNORED)  # e.g. an encrypting store that checks nothing


@pytest.mark.parametrize(
    ("name", "fallback", "engine", "checksum", "verified_by", "etags", "loud"),
    [
        ("crc32", "md5", AWS, "crc32", "s3", False, False),
        ("crc32c", "warn", AWS, "crc32c", "s3", False, False),
        ("md5", "md5", AWS, "md5", "s3", True, False),
        ("crc32", "md5", RGW, "md5", "s3", True, False),
        ("crc32", "warn", RGW, "crc32", "nobody", False, True),
        ("crc32", "md5", MOTO, "md5", "gateway", True, False),
        ("md5", "warn", MOTO, "md5", "gateway", True, False),  # the MD5 is there: use it
        ("crc32", "warn", MOTO, "crc32", "nobody", False, True),
        ("crc32", "md5", NOTHING, "crc32", "nobody", False, True),
        ("off", "md5", MOTO, "off", "nobody", False, False),  # asked for: no warning
        # A header S3 refuses even when right cannot be kept, whatever the fallback.
        ("crc32c", "warn", found(crc32c=REFUSED, md5=ENFORCED), "md5", "s3", True, False),
        ("crc32c", "warn", found(etags=False, crc32c=REFUSED, md5=IGNORED), "off", "nobody", False, True),
    ],
)
def test_the_integrity_mode_for_each_engine_and_setting(
    name, fallback, engine, checksum, verified_by, etags, loud
):
    decision = choose(name, fallback, engine)
    assert decision.integrity.name == checksum
    assert decision.integrity.verified_by == verified_by
    assert decision.integrity.compare_etags is etags
    assert decision.loud is loud
    assert (decision.note is not None) == (loud or checksum != name or verified_by == "gateway")


def test_before_a_probe_nothing_is_assumed():
    assert Capabilities().probed is False
    assert not Capabilities().if_none_match and not Capabilities().if_match
