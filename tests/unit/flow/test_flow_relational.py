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


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", None])), min_size=1, max_size=25),
    st.lists(st.integers(0, 1), min_size=40, max_size=40),
    st.randoms(),
)
def test_consolidate_settles_identical_images_from_two_partitions(
    updates: list[tuple[int, str | None]], routes: list[int], rnd: random.Random
) -> None:
    """The same row image can come from two key partitions when the column that routed it is not in
    the output (a left join's null-padded row after its order moved shops): its ``-U`` may then
    arrive after its ``+U``. Keys whose changes cancel out keep their start state: left alone when the
    table holds it, or restored from a start-state lookup when a replay left the table elsewhere."""
    before: dict[int, dict[str, Any]] = {0: {"oid": 0, "k": 1, "x": "a"}, 1: {"oid": 1, "k": 1, "x": None}}
    table: dict[int, dict[str, Any]] = dict(before)
    route_of = {0: 0, 1: 1}
    changes: list[tuple[int, tuple[RowKind, dict[str, Any]]]] = []  # (partition, change)
    for step, (key, value) in enumerate(updates):
        old = table.get(key)
        new_route = routes[step % len(routes)]
        if value is None and old is not None and step % 3 == 0:
            changes.append((route_of[key], (D, old)))
            del table[key]
            continue
        row = {"oid": key, "k": 1, "x": value}
        if old is None:
            changes.append((new_route, (INS, row)))
        else:  # an update, possibly to the identical image, moved to another partition
            changes += [(route_of[key], (UB, old)), (new_route, (UA, row))]
        table[key], route_of[key] = row, new_route
    streams = [[c for p, c in changes if p == part] for part in (0, 1)]
    delivered: list[tuple[RowKind, dict[str, Any]]] = []
    while any(streams):
        delivered.append(rnd.choice([s for s in streams if s]).pop(0))
    changelog = from_rows(delivered, LEFT)

    def applied(start: dict[int, dict[str, Any]], net: pa.Table) -> dict[int, dict[str, Any]]:
        final = dict(start)
        for change in rows(net):
            if change.kind == D:
                final.pop(change.row["oid"], None)
            else:
                final[change.row["oid"]] = change.row
        return final

    assert applied(before, consolidate(changelog, ["oid"])) == table
    # a replay: the table holds some later, intermediate state; the start rows are looked up
    elsewhere = {k: {"oid": k, "k": 9, "x": "stale"} for k in range(4)}
    start_rows = pa.Table.from_pylist(list(before.values()), schema=LEFT)

    def lookup_start(keys: pa.Table) -> pa.Table:
        wanted = set(keys.column("oid").to_pylist())
        return start_rows.filter(pa.array([k in wanted for k in start_rows.column("oid").to_pylist()]))

    touched = {key for key, _ in updates}
    replayed = applied(elsewhere, consolidate(changelog, ["oid"], unchanged=lookup_start))
    assert {k: v for k, v in replayed.items() if k in touched} == {
        k: v for k, v in table.items() if k in touched
    }


STATE_TYPES = [
    pa.timestamp("us", tz="UTC"), pa.timestamp("ms"), pa.date32(), pa.date64(), pa.time32("ms"),
    pa.time64("us"), pa.duration("us"), pa.decimal128(12, 2), pa.decimal128(18, 4), pa.decimal128(30, 3),
    pa.string(), pa.float64(),
]  # fmt: skip


@pytest.mark.parametrize("type_", STATE_TYPES, ids=str)
@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(-(10**12), 10**12)), max_size=20), cut=st.integers(0, 5)
)
def test_state_form_round_trips_every_value_exactly(type_: pa.DataType, values: list[Any], cut: int) -> None:
    from decimal import Decimal

    from flowlake.flow._stateform import from_state as _from_state
    from flowlake.flow._stateform import to_state as _to_state

    if pa.types.is_decimal(type_):
        bound = 10 ** (type_.precision - 1)
        logical: list[Any] = [
            None if v is None else Decimal(v % bound - bound // 2).scaleb(-type_.scale) for v in values
        ]
    elif pa.types.is_string(type_) or pa.types.is_floating(type_):
        logical = [None if v is None else (str(v) if pa.types.is_string(type_) else v / 7) for v in values]
    else:
        width = pa.int32() if type_.bit_width == 32 else pa.int64()
        span = 2_000_000 if pa.types.is_date(type_) else 80_000_000  # days stay within year 1..9999
        logical = pa.array([None if v is None else v % span for v in values], width).cast(type_).to_pylist()
    array = pa.array(logical, type_)
    column = pa.chunked_array([array.slice(0, cut), array.slice(cut)], type_)  # chunks and offsets
    back = _from_state(_to_state(column), type_)
    assert back.equals(array)
    assert _to_state(column) == _to_state(pa.chunked_array([back]))


def test_join_state_snapshots_as_its_pickle_and_resumes_identically() -> None:
    import copy
    import pickle
    from decimal import Decimal

    from flowlake.flow._snapshot import Frozen, thaw

    left = pa.schema([("oid", pa.int64()), ("k", pa.int32()), ("amount", pa.decimal128(12, 2)),
                      ("at", pa.timestamp("us", tz="UTC"))])  # fmt: skip
    rows_in: list[dict[str, Any]] = [
        {"oid": i, "k": i % 3, "amount": f"{i}.25", "at": 1_700_000_000_000_000 + i} for i in range(50)
    ]
    data = pa.Table.from_pylist([{**r, "amount": Decimal(r["amount"])} for r in rows_in], left)
    data = data.append_column("_kind", pa.array([INS] * 50, pa.int8()))
    right = pa.table({"k": pa.array([0, 1], pa.int32()), "city": ["a", "b"]}).append_column(
        "_kind", pa.array([INS, INS], pa.int8())
    )
    kw: dict[str, Any] = {"on": ["k"], "how": "left", "left_schema": left, "right_schema": RIGHT}
    live = JoinState()
    live.apply("left", data, **kw)
    snapshot: object = copy.deepcopy(live)  # bytewax's snapshot: the state's pickle
    assert isinstance(snapshot, Frozen)
    resumed = thaw(pickle.loads(pickle.dumps(snapshot)))  # noqa: S301 - our own bytes
    assert isinstance(resumed, JoinState)
    resumed_left, live_left = resumed.side("left"), live.side("left")
    assert resumed_left is not None and live_left is not None
    assert resumed_left.table().equals(live_left.table())
    assert resumed_left.count.tolist() == live_left.count.tolist()
    out_live, out_resumed = live.apply("right", right, **kw), resumed.apply("right", right, **kw)
    assert out_live.equals(out_resumed)
    assert out_live.num_rows == 2 * 34  # 34 orders on keys 0 and 1 lose their null padding, gain a city
    assert out_live.column("amount").type == pa.decimal128(12, 2)
    assert sorted(out_live.column("oid").to_pylist()) == sorted(2 * [i for i in range(50) if i % 3 < 2])
