"""How a final upload's parts are laid out from its partial uploads (storage/tus/concat.py), without S3."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from file_uploader.sizes import MAX_PART_SIZE, MIN_PART_SIZE, GiB, KiB, MiB
from file_uploader.storage.tus.concat import Piece, layout

SIZES = st.lists(
    st.one_of(
        st.integers(0, 3),
        st.integers(0, 2 * MIN_PART_SIZE),
        st.sampled_from([MIN_PART_SIZE - 1, MIN_PART_SIZE, MAX_PART_SIZE, MAX_PART_SIZE + 1, 11 * GiB]),
    ),
    max_size=12,
)


def check(sizes: list[int], parts: list[list[Piece]], equal: int | None = None) -> None:
    """The parts hold every byte of every partial upload once, in order, in parts S3 accepts."""
    flat = [piece for part in parts for piece in part]
    assert all(piece.size > 0 for piece in flat)
    expected = [(source, size) for source, size in enumerate(sizes) if size]
    covered: dict[int, int] = {}
    for piece in flat:
        assert piece.first == covered.get(piece.source, 0), "in order, without gap or overlap"
        covered[piece.source] = piece.end
    assert sorted(covered.items()) == expected
    assert [piece.source for piece in flat] == sorted(piece.source for piece in flat)
    sizes_of = [sum(piece.size for piece in part) for part in parts]
    assert all(size <= MAX_PART_SIZE for size in sizes_of)
    assert all(size >= MIN_PART_SIZE for size in sizes_of[:-1])
    if equal is not None:
        assert all(size == equal for size in sizes_of[:-1])


@given(SIZES)
def test_every_byte_lands_once_in_parts_s3_accepts(sizes):
    check(sizes, layout(sizes))


@given(SIZES, st.sampled_from([MIN_PART_SIZE, 8 * MiB, 64 * MiB]))
def test_equal_parts_hold_every_byte_once(sizes, equal):
    check(sizes, layout(sizes, equal=equal), equal)


def test_partial_uploads_of_5_mib_or_more_are_copied_whole_and_short_ones_joined():
    parts = layout([KiB, 6 * MiB, 3 * MiB, 7 * MiB, 1])
    rest = 6 * MiB - (MIN_PART_SIZE - KiB)  # what is left of the 6 MiB: too short to copy alone
    assert parts == [
        # 1 KiB, topped up to 5 MiB from the next partial upload...
        [Piece(0, 0, KiB), Piece(1, 0, MIN_PART_SIZE - KiB)],
        # ...whose rest joins the 3 MiB and the first bytes of the 7 MiB...
        [Piece(1, MIN_PART_SIZE - KiB, 6 * MiB), Piece(2, 0, 3 * MiB), Piece(3, 0, 2 * MiB - rest)],
        [Piece(3, 2 * MiB - rest, 7 * MiB)],  # ...whose 5 MiB and more left are copied
        [Piece(4, 0, 1)],  # the last part may be short
    ]
    # Each copied partial upload is one part (tus-js-client's parallelUploads: four of 50 MiB).
    assert layout([50 * MiB] * 4) == [[Piece(n, 0, 50 * MiB)] for n in range(4)]


def test_a_partial_upload_over_5_gib_is_copied_in_like_pieces():
    [first, second, third] = layout([11 * GiB])
    assert [part[0].size for part in (first, second, third)] == [11 * GiB // 3] + [11 * GiB // 3 + 1] * 2


def test_only_empty_partial_uploads_make_no_part():
    assert layout([0, 0]) == []
