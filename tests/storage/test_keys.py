"""Names, tokens and part sizes: the pure rules behind the keys."""

from __future__ import annotations

import pytest

from file_uploader.sizes import (
    MAX_KEY_BYTES,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    MiB,
    PartPlan,
    format_size,
    parse_size,
    part_size_for,
    parts_per_step,
)
from file_uploader.storage.keys import (
    MAX_NAME_BYTES,
    USER_PREFIX_BYTES,
    InvalidName,
    file_key,
    is_valid_token,
    user_id,
    user_prefix,
    validate_name,
)

TOKEN = "18ce71ad-1391-46c7-91de-56948fda0d8a"


def test_user_id_is_the_same_for_any_letter_case():
    assert user_id(TOKEN) == user_id(TOKEN.upper())


def test_user_id_does_not_contain_the_token():
    uid = user_id(TOKEN)
    assert len(uid) == 64 and TOKEN.replace("-", "") not in uid


def test_prefix_length_is_what_the_name_limit_assumes():
    assert len(user_prefix(user_id(TOKEN)).encode()) == USER_PREFIX_BYTES
    assert USER_PREFIX_BYTES + MAX_NAME_BYTES == MAX_KEY_BYTES


def test_canonical_uuid_in_any_case_is_a_token():
    assert is_valid_token(TOKEN) and is_valid_token(TOKEN.upper())
    assert not is_valid_token(TOKEN.replace("-", ""))


@pytest.mark.parametrize(
    "name", ["a", "dir/inner.txt", "привет мир.txt", "a+b&c'd", "%41", "x" * MAX_NAME_BYTES]
)
def test_valid_names_are_kept_exactly(name):
    assert validate_name(name) == name
    assert file_key(user_id(TOKEN), name).endswith("/" + name)


def test_longest_name_fills_the_key_to_the_byte():
    name = "я" * (MAX_NAME_BYTES // 2) + "x" * (MAX_NAME_BYTES % 2)
    assert len(file_key(user_id(TOKEN), name).encode()) == MAX_KEY_BYTES


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        "a//b",
        "/a",
        "a/",
        "a\x00b",
        "a\nb",
        "a\x7fb",
        "\x85",
        "x" * (MAX_NAME_BYTES + 1),
        "я" * (MAX_NAME_BYTES // 2 + 1),
        "\udcff",
    ],
)
def test_hostile_names_are_refused(name):
    with pytest.raises(InvalidName):
        validate_name(name)


def test_part_size_is_the_base_when_the_file_fits_10000_parts():
    assert part_size_for(1 * GiB, 8 * MiB) == 8 * MiB


def test_part_size_grows_so_a_known_length_fits_10000_parts():
    for total in (100 * GiB, 1024 * GiB, MAX_OBJECT_SIZE):
        size = part_size_for(total, 8 * MiB)
        assert size * MAX_PARTS >= total
        assert MIN_PART_SIZE <= size <= MAX_PART_SIZE


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 8 * MiB, 64 * MiB])
def test_unknown_length_can_still_reach_the_largest_object(base):
    total = sum(part_size_for(None, base, n) for n in range(1, MAX_PARTS + 1))
    assert total >= MAX_OBJECT_SIZE


def test_unknown_length_keeps_the_base_part_size_for_the_first_900_parts():
    assert part_size_for(None, 8 * MiB, 900) == 8 * MiB
    assert part_size_for(None, 8 * MiB, 901) == 16 * MiB
    assert part_size_for(None, 8 * MiB, MAX_PARTS) <= MAX_PART_SIZE


@pytest.mark.parametrize(("max_parts", "step"), [(10_000, 900), (1_000, 90), (12, 2), (2, 1), (1, 1)])
def test_a_smaller_part_count_doubles_after_the_same_share_of_its_parts(max_parts, step):
    assert parts_per_step(max_parts) == step


@pytest.mark.parametrize("max_parts", [1, 2, 1_000, 10_000])
def test_a_plan_never_numbers_a_part_past_its_max_parts(max_parts):
    plan = PartPlan(8 * MiB, max_parts)
    capacity = plan.capacity(None)
    assert capacity == sum(plan.size(None, n) for n in range(1, max_parts + 1))
    for total in (1, 100 * MiB, 100 * GiB):
        if total <= plan.capacity(total):
            assert -(-total // plan.first(total)) <= max_parts


def test_equal_parts_keep_one_size_for_a_body_of_unknown_length():
    plan = PartPlan(8 * MiB, 1_000, equal=16 * MiB)
    assert {plan.size(None, n) for n in range(1, 1_001)} == {16 * MiB}
    assert plan.capacity(None) == 16_000 * MiB


@pytest.mark.parametrize(
    ("text", "value"), [("8388608", 8 * MiB), ("8MiB", 8 * MiB), ("8M", 8 * MiB), ("5 GiB", 5 * GiB)]
)
def test_sizes_parse_with_binary_units(text, value):
    assert parse_size(text) == value


def test_a_size_with_an_unknown_unit_is_refused():
    with pytest.raises(ValueError):
        parse_size("8 parsecs")


@pytest.mark.parametrize(
    ("size", "text"),
    [(5 * GiB, "5 GiB"), (1000, "1000 bytes"), (8 * MiB, "8 MiB"), (10_000_000, "9.5 MiB (10000000 bytes)")],
)
def test_a_size_is_written_for_a_person(size, text):
    assert format_size(size) == text
