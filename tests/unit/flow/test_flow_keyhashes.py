"""Python hashes of integer keys computed in numpy, rows grouped by them, and the exact per-group sums
of the aggregate fold, each against the plain Python (or ``np.add.at``) answer."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow._keyindex import RowKeys, int_hashes, int_row_codes, merge_sorted, take_keys, tuple_hashes
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
@given(st.lists(st.integers(-5, 5), max_size=30), st.lists(st.integers(-5, 5), max_size=30))
def test_merge_sorted_equals_insert(level: list[int], new: list[int]) -> None:
    """The merged level and its moved values are what ``np.insert`` at ``searchsorted`` gives."""
    old, added = np.sort(np.asarray(level, np.int64)), np.sort(np.asarray(new, np.int64))
    values, new_values = np.arange(len(old)) * 10, -np.arange(1, len(added) + 1)
    at = np.searchsorted(old, added)
    merged, moved = merge_sorted(old, values, added, new_values)
    assert merged.tolist() == np.insert(old, at, added).tolist()
    assert moved.tolist() == np.insert(values, at, new_values).tolist()
