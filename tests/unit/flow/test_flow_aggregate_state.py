"""The mini-batched aggregate against a brute-force oracle, under random valid changelogs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
from _builders import materialize, model_change, rows_close
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import RowKind
from flowlake.flow import aggs
from flowlake.flow._aggstate import AggregateState
from flowlake.flow.batch import from_rows, rows

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("g", pa.string()),
        ("v", pa.decimal128(12, 2)),
        ("f", pa.float64()),
        ("u", pa.int64()),
        ("t", pa.timestamp("us", tz="UTC")),
        ("s", pa.string()),
    ]
)
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SPEC = {
    "n": aggs.count(),
    "nv": aggs.count("v"),
    "total": aggs.sum("v"),
    "paid": aggs.sum("v", where=("u", "<", 3), default=0),
    "fsum": aggs.sum("f"),
    "mean": aggs.avg("v"),
    "lo": aggs.min("v"),
    "hi": aggs.max("v"),
    "users": aggs.count_distinct("u"),
    "first_u": aggs.first("u", order_by="t"),
    "last_u": aggs.last("u", order_by="t"),
    "s_lo": aggs.min("s"),
    "s_hi": aggs.max("s"),
    "s_n": aggs.count_distinct("s"),
    "t_lo": aggs.min("t", where=("u", ">", 0)),
    "t_hi": aggs.max("t"),
    "f_hi": aggs.max("f"),
}


def oracle(live: dict[int, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in live.values():
        groups.setdefault(row["g"], []).append(row)
    out = {}
    for g, members in groups.items():
        vs = [r["v"] for r in members if r["v"] is not None]
        paid = [r["v"] for r in members if r["v"] is not None and r["u"] < 3]
        fs = [r["f"] for r in members if r["f"] is not None]
        by_t = sorted((r["t"], r["u"]) for r in members)
        ss = [r["s"] for r in members if r["s"] is not None]
        ts = [r["t"] for r in members]
        t_lo = [r["t"] for r in members if r["u"] > 0]
        out[g] = {
            "g": g,
            "n": len(members),
            "nv": len(vs),
            "total": sum(vs) if vs else None,
            "paid": sum(paid) if paid else Decimal(0),
            "fsum": sum(fs) if fs else None,
            "mean": float(sum(vs)) / len(vs) if vs else None,
            "lo": min(vs) if vs else None,
            "hi": max(vs) if vs else None,
            "users": len({r["u"] for r in members}),
            "first_u": by_t[0][1],
            "last_u": by_t[-1][1],
            "s_lo": min(ss) if ss else None,
            "s_hi": max(ss) if ss else None,
            "s_n": len(set(ss)),
            "t_lo": min(t_lo) if t_lo else None,
            "t_hi": max(ts),
            "f_hi": max(fs) if fs else None,
        }
    return out


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(0, 12),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.integers(-500, 500)),
        st.integers(0, 4),
        st.integers(0, 50),
        st.one_of(st.none(), st.sampled_from(["", "a", "b", "ab", "é"])),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops, st.lists(st.integers(1, 8), min_size=1, max_size=20))
def test_aggregate_matches_recompute(history: list[tuple[Any, ...]], cuts: list[int]) -> None:
    state = AggregateState(["g"], SPEC, None)
    live: dict[int, dict[str, Any]] = {}
    view: dict[Any, dict[str, Any]] = {}
    pending: list[tuple[int, dict[str, Any]]] = []
    cut_iter = iter(cuts * 20)
    size = next(cut_iter)
    for op_name, key, g, cents, u, secs, text in history:
        value = None if cents is None else Decimal(cents) / 100
        fval = None if cents is None else cents / 7
        row = {
            "id": key,
            "g": g,
            "v": value,
            "f": fval,
            "u": u,
            "t": T0 + dt.timedelta(seconds=secs),
            "s": text,
        }
        pending += model_change(live, op_name, key, row)
        if len(pending) >= size:
            out, late = state.apply(from_rows(pending, SCHEMA))
            assert late is None
            materialize(view, out, lambda row: row["g"])
            pending, size = [], next(cut_iter)
    out, _ = state.apply(from_rows(pending, SCHEMA))
    materialize(view, out, lambda row: row["g"])
    expected = oracle(live)
    assert set(view) == set(expected)
    for key, row in expected.items():
        assert rows_close(row, view[key], 1e-6), (row, view[key])
    assert state.groups == len(expected)
    assert state.dropped_retractions == 0


def test_retractions_for_unseen_groups_are_dropped_and_counted() -> None:
    state = AggregateState(["g"], {"n": aggs.count(), "hi": aggs.max("v")}, None)
    row = {"id": 1, "g": "x", "v": Decimal("1.00"), "f": 1.0, "u": 1, "t": T0}
    out, _ = state.apply(from_rows([(RowKind.DELETE, row)], SCHEMA))
    assert out.num_rows == 0
    assert state.dropped_retractions == 1
    assert state.groups == 0


def test_group_reaching_zero_rows_is_deleted() -> None:
    state = AggregateState(["g"], {"n": aggs.count(), "total": aggs.sum("v")}, None)
    row = {"id": 1, "g": "x", "v": Decimal("2.50"), "f": 1.0, "u": 1, "t": T0}
    first, _ = state.apply(from_rows([(RowKind.INSERT, row)], SCHEMA))
    assert [(c.kind, c.row["n"], c.row["total"]) for c in rows(first)] == [
        (RowKind.INSERT, 1, Decimal("2.50"))
    ]
    gone, _ = state.apply(from_rows([(RowKind.DELETE, row)], SCHEMA))
    assert [(c.kind, c.row["n"]) for c in rows(gone)] == [(RowKind.DELETE, 1)]
    assert state.groups == 0


def test_unchanged_result_emits_nothing() -> None:
    state = AggregateState(["g"], {"total": aggs.sum("v")}, None)
    a = {"id": 1, "g": "x", "v": Decimal("2.00"), "f": 1.0, "u": 1, "t": T0}
    b = {**a, "u": 2}
    state.apply(from_rows([(RowKind.INSERT, a)], SCHEMA))
    out, _ = state.apply(from_rows([(RowKind.UPDATE_BEFORE, a), (RowKind.UPDATE_AFTER, b)], SCHEMA))
    assert out.num_rows == 0


def test_state_pickles_without_its_configuration() -> None:
    import pickle

    spec = {"n": aggs.count(where=lambda t: pa.array([True] * t.num_rows))}
    state = AggregateState(["g"], spec, None)
    row = {"id": 1, "g": "x", "v": Decimal("2.00"), "f": 1.0, "u": 1, "t": T0}
    state.apply(from_rows([(RowKind.INSERT, row)], SCHEMA))
    restored = pickle.loads(pickle.dumps(state))  # noqa: S301 - our own bytes
    restored.configure(["g"], spec, None)
    out, _ = restored.apply(from_rows([(RowKind.INSERT, {**row, "id": 2})], SCHEMA))
    assert [(c.kind, c.row["n"]) for c in rows(out)] == [
        (RowKind.UPDATE_BEFORE, 1),
        (RowKind.UPDATE_AFTER, 2),
    ]


def test_output_schema_follows_the_configuration() -> None:
    """The output schema is kept between batches while the same configuration is re-attached, and
    made anew when another one is."""
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    row = {"id": 1, "g": "x", "v": Decimal("2.00"), "f": 1.0, "u": 1, "t": T0}
    state.apply(from_rows([(RowKind.INSERT, row)], SCHEMA))
    kept = state.output_schema()
    state.configure(["g"], {"n": aggs.count()}, None)
    assert state.output_schema() is kept
    state.configure(["g"], {"n": aggs.count(), "hi": aggs.max("v")}, None)
    assert state.output_schema().names == ["g", "n", "hi"]
