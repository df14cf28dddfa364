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
        (pa.duration("us"), [dt.timedelta(hours=h) for h in (-838, 0, 838)]),
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


def _reference(parts: list[pa.Table], key: list[str]) -> dict[tuple[object, ...], dict[str, object]]:
    live: dict[tuple[object, ...], dict[str, object]] = {}
    for p in parts:
        for row in p.to_pylist():
            k = tuple(row[c] for c in key)
            if row["_kind"] == 1:  # a before-image is no image
                continue
            if row["_kind"] == 3:
                live.pop(k, None)
            else:
                live[k] = {c: v for c, v in row.items() if c != "_kind"}
    return live


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_base", [False, True])
def test_random_changelogs_match_a_row_by_row_replay(seed: int, with_base: bool) -> None:
    """Before-images are skipped, the newest image wins, composite and uint64 keys never collide."""
    import numpy as np

    rng = np.random.default_rng(seed)
    big = np.uint64(2**64 - 5)
    keys_a = [int(big) - int(i) for i in rng.integers(0, 30, 400)]
    keys_b = rng.choice(["x", "y", ""], 400).tolist()
    kinds = rng.choice([0, 1, 2, 3], 400).tolist()
    rows = pa.table({
        "a": pa.array(keys_a, pa.uint64()), "b": keys_b, "v": list(range(400)),
        "_kind": pa.array(kinds, pa.int8()),
    })  # fmt: skip
    parts = [rows.slice(i, 50) for i in range(0, 400, 50)]
    if with_base:  # base rows: unique keys, no kinds but 0
        seen = {(a, b): i for i, (a, b) in enumerate(zip(keys_a[:200], keys_b[:200], strict=True))}
        first = sorted(seen.values())
        base = rows.take(first).set_column(3, "_kind", pa.array([0] * len(first), pa.int8()))
        parts = [base, *parts[4:]]
    for key in (["a", "b"], ["a"]):
        if key == ["a"]:  # a one-column key must be unique in the base too
            parts = [p.drop_columns(["b"]).append_column("b", pa.array([""] * p.num_rows)) for p in parts]
            if with_base:
                uniq = dict(zip(parts[0]["a"].to_pylist(), range(parts[0].num_rows), strict=False))
                parts[0] = parts[0].take(sorted(uniq.values()))
        merged = latest_rows(parts, key, base_count=1 if with_base else 0)
        expected = _reference(parts, key)
        got = {tuple(r[c] for c in key): r for r in merged.to_pylist()}
        assert len(got) == merged.num_rows
        assert got == expected
