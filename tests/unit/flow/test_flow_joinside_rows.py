"""A join side finds stored rows by their row hash the same way with or without its row-hash index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow._joinside import JoinSide, key_columns, no_nulls, table_hash


def side_of(values: list[int]) -> JoinSide:
    rows = pa.table({"k": pa.array([v % 3 for v in values], pa.int64()), "v": pa.array(values, pa.int64())})
    side = JoinSide(rows.schema, ["k"])
    keys = key_columns(rows, ["k"], [pa.int64()])
    side.add(rows, np.ones(rows.num_rows, np.int64), table_hash(keys.columns, rows.num_rows), no_nulls(keys))
    return side


@settings(max_examples=100, deadline=None)
@given(
    stored=st.lists(st.integers(0, 20), max_size=60),
    asked=st.lists(st.integers(0, 25), max_size=12),
)
def test_a_scan_finds_what_the_index_finds(stored: list[int], asked: list[int]) -> None:
    scanned, indexed = side_of(stored), side_of(stored)
    rows = pa.table({"k": pa.array([a % 3 for a in asked], pa.int64()), "v": pa.array(asked, pa.int64())})
    hashes = table_hash(rows.columns, rows.num_rows)
    indexed._row_hash_index()  # built: the indexed path
    got = scanned._row_candidates(hashes) if len(asked) <= 8 else None
    want = indexed._row_candidates(hashes)
    if got is not None:
        assert scanned._row_index is None, "a few hashes are found without building the index"
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    assert [q.tolist() for q in scanned.find_rows(rows, hashes)] == [
        q.tolist() for q in indexed.find_rows(rows, hashes)
    ]


def test_counts_are_32_bit_until_one_outgrows_them() -> None:
    side = side_of([1, 2])
    assert side.count.dtype == np.int32
    side.grow(np.array([0]), np.array([2**31 - 1]))  # 1 + (2**31 - 1) does not fit int32
    assert side.count.dtype == np.int64 and side.count.tolist() == [2**31, 1]
    rows = pa.table({"k": pa.array([0], pa.int64()), "v": pa.array([3], pa.int64())})
    keys = key_columns(rows, ["k"], [pa.int64()])
    side.add(rows, np.array([2**40]), table_hash(keys.columns, 1), no_nulls(keys))
    assert side.count.tolist() == [2**31, 1, 2**40] and len(side) == 3
