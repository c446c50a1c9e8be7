"""Grant ids: what links and upload requests are named by."""

from __future__ import annotations

from file_uploader.storage.grants import is_grant_id, new_id


def test_new_ids_never_begin_with_a_dash_that_a_command_line_reads_as_an_option():
    # One draw in 64 began with '-' before: a thousand draws without one would then be chance
    # about once in ten million.
    ids = [new_id() for _ in range(1000)]
    assert all(is_grant_id(grant_id) and not grant_id.startswith("-") for grant_id in ids)
    assert len(set(ids)) == len(ids)
