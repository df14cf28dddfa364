"""The vectorized key paths of the writer against plain dict references.

``IntIndex`` (sorted runs) must answer exactly like a dict of key → position under any sequence of
updates and deletions, ``last_occurrences`` must pick the last row of every key like a dict
comprehension, and a write history planned against an integer-key ``KeyState`` must leave the rows
a dict oracle holds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.table.keystate import IntIndex, KeyState
from flowlake.table.writer import last_occurrences, plan_write

KEYS = st.integers(-5, 25)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(KEYS, st.booleans()), max_size=12), max_size=12))
def test_int_index_matches_a_dict(batches: list[list[tuple[int, bool]]]) -> None:
    index = IntIndex(np.dtype(np.int64))
    reference: dict[int, int] = {}
    position = 0
    for batch in batches:
        keys, positions = [], []
        for key, delete in batch:
            keys.append(key)
            positions.append(-1 if delete else position)
            position += 1
            if delete:
                reference.pop(key, None)
            else:
                reference[key] = positions[-1]
        index.put(np.array(keys, dtype=np.int64), np.array(positions, dtype=np.int64))
        probe = np.arange(-6, 27, dtype=np.int64)
        assert index.get(probe).tolist() == [reference.get(k, -1) for k in probe.tolist()]
        assert len(index) == len(reference)
        assert sorted(index.positions().tolist()) == sorted(reference.values())


def _reference_last(keys: list[Any]) -> list[int] | None:
    last = {k: i for i, k in enumerate(keys)}
    return None if len(last) == len(keys) else sorted(last.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(KEYS, max_size=30), st.sampled_from([pa.int64(), pa.int32(), pa.uint64(), pa.string()]))
def test_last_occurrences_matches_a_dict(keys: list[int], type_: pa.DataType) -> None:
    if pa.types.is_unsigned_integer(type_):
        keys = [k + 5 for k in keys]
    values: list[Any] = [str(k) for k in keys] if pa.types.is_string(type_) else keys
    rows = pa.table({"id": pa.array(values, type_), "row": pa.array(range(len(keys)), pa.int64())})
    got = last_occurrences(rows, ["id"])
    assert (None if got is None else got.tolist()) == _reference_last(values)


def test_last_occurrences_of_timestamps_and_composite_keys() -> None:
    stamps = pa.array([3, 1, 3, 2, 1], pa.timestamp("us", tz="UTC"))
    got = last_occurrences(pa.table({"t": stamps}), ["t"])
    assert got is not None and got.tolist() == [2, 3, 4]
    rows = pa.table({"a": [1, 1, 2, 1], "b": ["x", "y", "x", "x"]})
    got = last_occurrences(rows, ["a", "b"])
    assert got is not None and got.tolist() == [1, 2, 3]


CHANGE = st.tuples(st.integers(0, 15), st.booleans(), st.integers(0, 3))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(CHANGE, min_size=1, max_size=10), min_size=1, max_size=10))
def test_writes_through_an_integer_key_state_match_a_dict(history: list[list[tuple[int, bool, int]]]) -> None:
    schema = pa.schema([pa.field("k", pa.int64(), nullable=False), ("v", pa.int64())])
    state = KeyState(schema.empty_table(), ["k"], version=0)
    oracle: dict[int, int] = {}
    for version, batch in enumerate(history, start=1):
        rows = pa.table({"k": [k for k, _, _ in batch], "v": [v for _, _, v in batch]}, schema=schema)
        is_delete = np.array([d for _, d, _ in batch], dtype=bool)
        plan = plan_write(state, rows, is_delete)
        before = dict(oracle)
        for key, delete, value in batch:
            if delete:
                oracle.pop(key, None)
            else:
                oracle[key] = value
        changed = {k for k in set(before) | set(oracle) if before.get(k) != oracle.get(k)}
        changelog_keys = plan.changelog.column("k").to_pylist()
        assert set(changelog_keys) == changed
        state.apply(plan.upserted, plan.upserted_keys, plan.deleted_keys, version)
        live = state.rows()
        assert dict(zip(live["k"].to_pylist(), live["v"].to_pylist(), strict=True)) == oracle
        assert len(state) == len(oracle)
        probe = np.arange(0, 16)
        assert ((state.lookup(probe) >= 0) == np.isin(probe, list(oracle))).all()
