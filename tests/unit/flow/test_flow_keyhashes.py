"""Python hashes of integer keys computed in numpy, rows grouped by them, and the exact per-group sums
of the aggregate fold, each against the plain Python (or ``np.add.at``) answer."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow import _keyindex
from flowlake.flow._keyindex import (
    RowKeys,
    dense_row_codes,
    int_hashes,
    int_row_codes,
    merge_sorted,
    take_keys,
    tuple_hashes,
)
from flowlake.flow._valuecounts import sum_by

EDGES = [0, 1, -1, -2, 2**61 - 2, 2**61 - 1, 2**61, -(2**61 - 1), -(2**61), 2**63 - 1, -(2**63)]
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(EDGES), st.integers(-3, 3))


@settings(max_examples=200, deadline=None)
@given(st.lists(int64s, max_size=40))
def test_int_hashes_are_pythons(values: list[int]) -> None:
    assert int_hashes(np.asarray(values, np.int64)).tolist() == [hash(v) for v in values]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3).flatmap(lambda w: st.lists(st.lists(int64s, min_size=w, max_size=w), max_size=30)))
def test_tuple_hashes_are_pythons(rows: list[list[int]]) -> None:
    if not rows:
        return
    array = np.asarray(rows, np.int64)
    assert tuple_hashes(array).tolist() == [hash(tuple(r)) for r in rows]
    assert list(RowKeys(array)) == [tuple(r) for r in rows]
    at = np.arange(len(rows))[::-1]
    assert take_keys(RowKeys(array), at) == [tuple(rows[i]) for i in at.tolist()]
    assert take_keys(RowKeys(array[:, :1], single=True), at) == [rows[i][0] for i in at.tolist()]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 2)), min_size=1, max_size=40),
    st.booleans(),
)
def test_int_row_codes_group_equal_rows(rows: list[tuple[int, int]], weak: bool) -> None:
    """Equal codes only for equal rows, the first row of each code, codes by first appearance; with
    hashes that tie no two rows equal rows share one code (``hash(-1) == hash(-2)``, or a hash that
    ties everything, may split a row's code)."""
    array = np.asarray(rows, np.int64)
    hashes = np.zeros(len(rows), np.int64) if weak else tuple_hashes(array)
    codes, first = int_row_codes(array, hashes)
    seen: dict[int, tuple[int, int]] = {}
    for i, code in enumerate(codes.tolist()):
        assert seen.setdefault(code, rows[i]) == rows[i]
    assert [int(codes[i]) for i in first.tolist()] == list(range(len(first)))
    assert first.tolist() == sorted(first.tolist())
    assert all(int(first[c]) == codes.tolist().index(c) for c in range(len(first)))
    if not weak and len({hash(r) for r in set(rows)}) == len(set(rows)):  # no two rows' hashes tie
        assert len(first) == len(set(rows))


column_values = st.one_of(
    st.integers(-3, 3),  # a small span
    st.integers(0, 5).map(lambda k: 1_800_000_000_000 + k * 60_000_000),  # window starts: a common step
    st.integers(0, 5).map(lambda k: k * 7 - 10**12),
    int64s,  # anything: a key space too large (None)
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 3).flatmap(lambda w: st.lists(st.tuples(*[column_values] * w), min_size=1, max_size=40)),
    st.sampled_from([1, 8, 64, 10_000]),
)
def test_dense_row_codes_group_like_a_dict(rows: list[tuple[int, ...]], limit: int) -> None:
    """Codes by first appearance, equal exactly for equal rows, the first row of each; None only where
    the key space (spans over common steps) exceeds the limit."""
    array = np.asarray(rows, np.int64)
    got = dense_row_codes(array, limit)
    too_wide, size = False, 1
    for column in zip(*rows, strict=True):
        width = max(column) - min(column)
        if width >= 2**62:  # (offsets that could overflow: not tried)
            too_wide = True
            break
        step = int(np.gcd.reduce(np.asarray([v - min(column) for v in column], object))) or 1
        span = width // (step if width >= limit else 1) + 1  # (a span that fits keeps its step 1)
        too_wide |= span > limit
        size *= len(set(column)) if len(rows[0]) > 1 else span
    assert (got is None) == (too_wide or size > limit)
    if got is None:
        return
    codes, first = got
    expected: dict[tuple[int, ...], int] = {}
    for row in rows:
        expected.setdefault(row, len(expected))
    assert codes.tolist() == [expected[row] for row in rows]
    assert first.tolist() == [rows.index(row) for row in expected]


def test_dense_row_codes_divide_out_a_window_step() -> None:
    """Minute window starts (microseconds) of 10 shops over 6 minutes: 60 keys, not a 3e8-wide span."""
    shops, minutes = np.meshgrid(np.arange(10), np.arange(6))
    rows = np.stack([shops.ravel(), 1_800_000_000_000 + minutes.ravel() * 60_000_000], axis=1)
    got = dense_row_codes(np.concatenate([rows, rows[::-1]]), 60)
    assert got is not None
    codes, first = got
    assert codes.tolist() == list(range(60)) + list(range(59, -1, -1))
    assert first.tolist() == list(range(60))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["int64", "float64", "bool", "int8"]),
    st.lists(st.tuples(st.integers(0, 4), int64s, st.floats(allow_nan=False, width=64)), max_size=40),
)
def test_sum_by_equals_add_at(dtype: str, rows: list[tuple[int, int, float]]) -> None:
    index = np.asarray([r[0] for r in rows], np.int64)
    if dtype == "float64":
        values = np.asarray([r[2] for r in rows], np.float64)
    elif dtype == "bool":
        values = np.asarray([r[1] % 2 == 0 for r in rows], bool)
    else:
        values = np.asarray([r[1] for r in rows], np.int64).astype(dtype)
    want = np.zeros(5, np.int64 if dtype == "bool" else values.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        np.add.at(want, index, values)
        got = sum_by(index, values, 5)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-5, 5), max_size=30),
    st.lists(st.integers(-5, 5), max_size=30),
    st.sampled_from([0, 10, 10_000]),
    st.booleans(),
)
def test_merge_sorted_equals_insert(level: list[int], new: list[int], sort_below: int, after: bool) -> None:
    """The merged level and its moved values are what ``np.insert`` at ``searchsorted`` (``"right"``
    with ``after``) gives, by placement and (small merges, ``_SORT_MERGE_BELOW``) by a stable sort alike."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_keyindex, "_SORT_MERGE_BELOW", sort_below)
        check_merge(level, new, after=after)


def check_merge(level: list[int], new: list[int], *, after: bool = False) -> None:
    old, added = np.sort(np.asarray(level, np.int64)), np.sort(np.asarray(new, np.int64))
    values, new_values = np.arange(len(old)) * 10, -np.arange(1, len(added) + 1)
    at = np.searchsorted(old, added, "right" if after else "left")
    merged, moved = merge_sorted(old, values, added, new_values, after=after)
    assert merged.tolist() == np.insert(old, at, added).tolist()
    assert moved.tolist() == np.insert(values, at, new_values).tolist()
