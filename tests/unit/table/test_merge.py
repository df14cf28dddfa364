"""Merge-on-read keeps the newest image of each key and drops deleted keys."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from flowlake.table.merge import latest_rows


def part(keys: list[object], values: list[int], kinds: list[int], key_type: pa.DataType) -> pa.Table:
    return pa.table({"k": pa.array(keys, key_type), "v": values, "_kind": pa.array(kinds, pa.int8())})


@pytest.mark.parametrize(
    ("key_type", "keys"),
    [
        (pa.int64(), [1, 2, 3]),
        (pa.string(), ["a", "b", "c"]),
        (pa.date32(), [dt.date(2026, 1, d) for d in (1, 2, 3)]),
    ],
)
def test_last_image_wins_and_deletes_vanish(key_type: pa.DataType, keys: list[object]) -> None:
    k1, k2, k3 = keys
    base = part([k1, k2, k3], [1, 2, 3], [0, 0, 0], key_type)
    log1 = part([k2, k3], [20, 30], [2, 3], key_type)
    log2 = part([k3, k1], [300, 10], [0, 2], key_type)
    merged = latest_rows([base, log1, log2], ["k"])
    assert sorted(zip(merged["k"].to_pylist(), merged["v"].to_pylist(), strict=True), key=str) == sorted(
        [(k1, 10), (k2, 20), (k3, 300)], key=str
    )
    assert merged.column_names == ["k", "v"]


def test_composite_keys_and_empty_input() -> None:
    a = pa.table({"x": [1, 1], "y": ["a", "b"], "v": [1, 2], "_kind": pa.array([0, 0], pa.int8())})
    b = pa.table({"x": [1], "y": ["a"], "v": [9], "_kind": pa.array([3], pa.int8())})
    merged = latest_rows([a, b], ["x", "y"])
    assert merged.to_pylist() == [{"x": 1, "y": "b", "v": 2}]
    assert latest_rows([a.slice(0, 0)], ["x", "y"]).num_rows == 0
