"""The quota ledger's arithmetic (storage/quotas/ledger.py), pure: no S3, no server."""

from __future__ import annotations

import pytest

from file_uploader.storage.errors import QuotaExceeded
from file_uploader.storage.quotas.ledger import FilesRemoved, Hold, Ledger, Release, Renew, Stored

NOW = 1_000_000.0
QUOTA = 1000


def test_a_hold_that_fits_is_granted_and_counts_as_reserved():
    ledger = Ledger(used=600)
    lease = Hold("a", 300, 300, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    assert lease.bytes == 300 and ledger.reserved(NOW) == 300


def test_a_hold_past_the_quota_is_refused_and_changes_nothing():
    ledger = Ledger(used=800)
    with pytest.raises(QuotaExceeded):
        Hold("a", 300, 300, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    assert ledger.leases == {}


def test_a_body_of_unknown_length_is_granted_what_it_asks_as_far_as_the_room_goes():
    ledger = Ledger(used=900)
    lease = Hold("a", 1, 500, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    assert lease.bytes == 100


def test_only_one_upload_aimed_at_a_file_is_credited_with_its_size():
    ledger = Ledger(used=900, files=1)
    first = Hold("a", 900, 900, NOW + 30, "k", credit=900).apply(ledger, QUOTA, NOW)
    assert first.counted() == 0
    with pytest.raises(QuotaExceeded):
        Hold("b", 900, 900, NOW + 30, "k", credit=900).apply(ledger, QUOTA, NOW)


def test_a_renewal_is_refused_once_what_the_lease_counts_no_longer_fits():
    ledger = Ledger(used=900, files=1)
    Hold("a", 900, 900, NOW + 30, "k", credit=900).apply(ledger, QUOTA, NOW)
    FilesRemoved([("k", 900)]).apply(ledger, QUOTA, NOW)  # its credit is voided...
    ledger.used = 900  # ...and a count finds 900 bytes stored elsewhere
    with pytest.raises(QuotaExceeded):
        Hold("a", 900, 900, NOW + 60, "k").apply(ledger, QUOTA, NOW)


def test_a_stored_file_turns_its_lease_into_used_bytes_less_what_it_replaced():
    ledger = Ledger(used=300, files=1, checked=NOW - 10)
    Hold("a", 500, 500, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    Stored("a", "k", 500, 300, exact=True, landed=NOW).apply(ledger, QUOTA, NOW)
    assert (ledger.used, ledger.files, ledger.leases, ledger.stale) == (500, 1, {}, False)


def test_a_lease_that_ran_out_is_pruned_and_frees_its_room():
    ledger = Ledger(used=0)
    Hold("a", 1000, 1000, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    assert ledger.prune(NOW + 31) and ledger.reserved(NOW + 31) == 0


def test_renew_reports_the_leases_that_are_gone():
    ledger = Ledger()
    Hold("a", 10, 10, NOW + 30, "k").apply(ledger, QUOTA, NOW)
    assert Renew(["a", "b"], NOW + 60).apply(ledger, QUOTA, NOW) == {"b"}
    assert ledger.leases["a"].until == NOW + 60


def test_a_ledger_survives_its_json_form():
    ledger = Ledger(used=5, files=1, checked=NOW)
    Hold("a", 10, 10, NOW + 30, "k", credit=3).apply(ledger, QUOTA, NOW)
    assert Ledger.from_fields(ledger.copy().fields()) == ledger


def test_of_bodies_of_unknown_length_that_all_need_more_only_the_oldest_may_wait_for_room():
    """24 chunked uploads at once each took a first grant and filled the quota; refused together,
    none was stored (seen under load). The oldest may wait while the others give theirs back."""
    ledger = Ledger(used=0)
    for number in range(4):
        Hold(f"u{number}", 1, 250, NOW + 30, f"k{number}").apply(ledger, QUOTA, NOW + number)
    refusals = []
    for number in range(4):
        with pytest.raises(QuotaExceeded) as refused:
            Hold(f"u{number}", 300, 500, NOW + 30, f"k{number}").apply(ledger, QUOTA, NOW + 5)
        refusals.append(refused.value.may_wait)
    assert refusals == [True, False, False, False]
    for number in (1, 2, 3):  # refused: their uploads end and give their room back
        Release(f"u{number}").apply(ledger, QUOTA, NOW + 6)
    assert Hold("u0", 300, 500, NOW + 30, "k0").apply(ledger, QUOTA, NOW + 6).bytes == 500
