"""Join, dedup, filter/map over changelogs and the sink's consolidation, against simple oracles."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow._relational import DedupState, JoinState, filter_changes, lookup, map_changes
from flowlake.flow.batch import from_rows, rows
from flowlake.flow.lake import consolidate

LEFT = pa.schema([("oid", pa.int64()), ("k", pa.int32()), ("x", pa.string())])
RIGHT = pa.schema([("k", pa.int32()), ("city", pa.string())])

INS, UB, UA, D = RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE


def side_ops(keys: int) -> st.SearchStrategy[list[tuple[str, str, int, int, str]]]:
    return st.lists(
        st.tuples(st.sampled_from(["left", "right"]), st.sampled_from(["put", "delete"]),
                  st.integers(0, 6), st.integers(0, keys), st.sampled_from(["p", "q"])),
        max_size=50,
    )  # fmt: skip


def expected_join(
    left: dict[int, tuple[Any, ...]], right: dict[int, tuple[Any, ...]], how: str
) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for lrow in left.values():
        match = right.get(lrow[1])
        if match is not None:
            out[(*lrow, match[1])] += 1
        elif how == "left":
            out[(*lrow, None)] += 1
    return out


@pytest.mark.parametrize("how", ["inner", "left"])
@settings(max_examples=40, deadline=None)
@given(history=side_ops(3))
def test_join_matches_recompute(how: str, history: list[tuple[str, str, int, int, str]]) -> None:
    state = JoinState()
    left: dict[int, tuple[Any, ...]] = {}
    right: dict[int, tuple[Any, ...]] = {}
    view: Counter[Any] = Counter()
    for side, action, ident, key, text in history:
        table, schema = (left, LEFT) if side == "left" else (right, RIGHT)
        pk = ident if side == "left" else key
        row = (ident, key, text) if side == "left" else (key, f"{text}{ident}")
        old = table.get(pk)
        if action == "put":
            changes = [(INS, row)] if old is None else [(UB, old), (UA, row)]
            table[pk] = row
        elif old is not None:
            changes = [(D, old)]
            del table[pk]
        else:
            continue
        batch = from_rows([(k, dict(zip(schema.names, r, strict=True))) for k, r in changes], schema)
        out = state.apply(side, batch, on=["k"], how=how, left_schema=LEFT, right_schema=RIGHT)  # type: ignore[arg-type]
        for change in rows(out):
            key_row = tuple(change.row.values())
            view[key_row] += -1 if change.kind in (UB, D) else 1
            assert view[key_row] >= 0, "a join retracted a row it never emitted"
    assert +view == expected_join(left, right, how)


def test_join_rejects_clashing_columns() -> None:
    right = pa.schema([("k", pa.int32()), ("x", pa.string())])
    with pytest.raises(InvalidArgumentError, match="both sides"):
        JoinState().apply(
            "left", from_rows([], LEFT), on=["k"], how="inner", left_schema=LEFT, right_schema=right
        )


def test_dedup_keeps_latest_and_drops_repeats() -> None:
    state = DedupState("last")
    a, b = {"oid": 1, "k": 1, "x": "a"}, {"oid": 1, "k": 1, "x": "b"}
    out = state.apply(from_rows([(INS, a), (INS, a), (INS, b), (D, b), (INS, a)], LEFT), ["oid"])
    assert [(c.kind, c.row["x"]) for c in rows(out)] == [
        (INS, "a"),
        (UB, "a"),
        (UA, "b"),
        (D, "b"),
        (INS, "a"),
    ]
    first = DedupState("first")
    out = first.apply(from_rows([(INS, a), (INS, b)], LEFT), ["oid"])
    assert [(c.kind, c.row["x"]) for c in rows(out)] == [(INS, "a")]


def test_filter_fixes_kinds_of_updates_crossing_the_filter() -> None:
    a, b = {"oid": 1, "k": 1, "x": "keep"}, {"oid": 1, "k": 1, "x": "drop"}
    changes = from_rows([(INS, a), (UB, a), (UA, b), (UB, b), (UA, a), (UB, a), (UA, a)], LEFT)
    mask = np.array([r == "keep" for r in changes.column("x").to_pylist()])
    out = filter_changes(changes, mask)
    assert [c.kind for c in rows(out)] == [INS, D, INS, UB, UA]


def test_map_keeps_kinds_and_rejects_row_count_changes() -> None:
    changes = from_rows([(INS, {"oid": 1, "k": 1, "x": "a"}), (D, {"oid": 2, "k": 1, "x": "b"})], LEFT)
    out = map_changes(changes, lambda t: t.set_column(2, "x", pa.array(["A", "B"])))
    assert [(c.kind, c.row["x"]) for c in rows(out)] == [(INS, "A"), (D, "B")]
    with pytest.raises(InvalidArgumentError, match="row to row"):
        map_changes(changes, lambda t: t.slice(0, 1))


def test_lookup_keeps_order_and_pads_misses() -> None:
    changes = from_rows([(INS, {"oid": i, "k": k, "x": "."}) for i, k in enumerate([3, 1, 9, 1])], LEFT)
    dim = pa.table({"k": pa.array([1, 3], pa.int32()), "city": ["Oslo", "Lima"]})
    out = lookup(changes, dim, ["k"], ["city"])
    assert out.column("oid").to_pylist() == [0, 1, 2, 3]
    assert out.column("city").to_pylist() == ["Lima", "Oslo", None, "Oslo"]
    assert out.column_names[-1] == "_kind"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=30), st.randoms())
def test_consolidate_survives_partition_interleaving(
    updates: list[tuple[int, int]], rnd: random.Random
) -> None:
    """Changes reach the sink from two key partitions (rows with even / odd ``k``), each in order,
    interleaved arbitrarily: an update that moves a row across partitions may arrive +U before -U."""
    before = {1: {"oid": 1, "k": 3, "x": "v"}, 2: {"oid": 2, "k": 2, "x": "v"}}
    table = dict(before)
    changes: list[tuple[RowKind, dict[str, Any]]] = []
    for key, value in updates:
        row = {"oid": key, "k": value, "x": "v"}
        old = table.get(key)
        if value == 0 and old is not None:
            changes.append((D, old))
            del table[key]
        elif old is None:
            changes.append((INS, row))
            table[key] = row
        elif old != row:
            changes += [(UB, old), (UA, row)]
            table[key] = row
    streams = [[c for c in changes if c[1]["k"] % 2 == p] for p in (0, 1)]
    delivered: list[tuple[RowKind, dict[str, Any]]] = []
    while any(streams):
        pick = rnd.choice([s for s in streams if s])
        delivered.append(pick.pop(0))
    net = consolidate(from_rows(delivered, LEFT), ["oid"])
    final = dict(before)
    for change in rows(net):
        if change.kind == D:
            final.pop(change.row["oid"], None)
        else:
            final[change.row["oid"]] = change.row
    assert final == table
