"""``unnest(generate_series(...))``/``unnest(range(...))`` with a constant step (hopping windows):
the elements numpy makes equal DuckDB's unnest of the same select list, row for row and kind for kind."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowlake as fl
from flowlake.flow.batch import ChangeBatch
from flowlake.sql import plan_views
from flowlake.sql.build import calc_function
from flowlake.sql.plan import Calc, walk

SCHEMA = pa.schema(
    [("id", pa.int64()), ("k", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")), ("n", pa.int64())]
)
T0 = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
HOP = "time_bucket(INTERVAL '2 seconds', ts)"
SELECTS = [  # (primary_key: only to plan the views)
    f"SELECT k, unnest(generate_series({HOP} - INTERVAL '8 seconds', {HOP}, INTERVAL '2 seconds')) AS ws "
    "FROM ods.ev",
    f"SELECT unnest(range({HOP} - INTERVAL '4 seconds', {HOP} + INTERVAL '2 seconds', INTERVAL '2 seconds')) "
    "AS ws, n * 2 AS twice FROM ods.ev WHERE n > 0",
    "SELECT id, unnest(generate_series(k, n, 3)) AS i FROM ods.ev",
    "SELECT unnest(range(n, k + 5, 2)) AS i, k FROM ods.ev WHERE k IS NOT NULL OR n < 3",
    "SELECT k, unnest(generate_series(ts, ts + INTERVAL '1 minute', INTERVAL '25 seconds')) AS t FROM ods.ev",
]
ROWS = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 3]),
        st.one_of(st.none(), st.integers(-8, 8)),
        st.one_of(st.none(), st.integers(0, 20_000_000)),
        st.one_of(st.none(), st.integers(-8, 8)),
    ),
    max_size=30,
)


@pytest.fixture(scope="module")
def calcs() -> list[Calc]:
    cat = fl.connect(catalog="sqlite://", warehouse="memory://series-explode")
    cat.create_table("ods.ev", SCHEMA, primary_key=["id"])
    found = []
    for i, (select, key) in enumerate(zip(SELECTS, ["k, ws", "ws", "id, i", "i, k", "k, t"], strict=True)):
        (view,) = plan_views(
            f"CREATE MATERIALIZED VIEW dws.v{i} WITH (primary_key = '{key}') AS {select}", cat
        )
        (calc,) = [n for n in walk([view.output]) if isinstance(n, Calc) and n.explodes]
        found.append(calc)
    return found


def test_hop_and_series_lists_are_made_in_numpy(calcs: list[Calc]) -> None:
    assert all(c.series is not None for c in calcs)
    assert calcs[0].series is not None and calcs[0].series.step == 2_000_000
    assert calcs[1].series is not None and calcs[1].series.exclusive


def _batch(rows: list[tuple[Any, ...]]) -> pa.Table:
    """A changelog batch of ``rows`` (kind, k, ts in 7 us steps, n); ids are the positions."""
    return pa.table(
        {
            "id": pa.array(range(len(rows)), pa.int64()),
            "k": pa.array([r[1] for r in rows], pa.int64()),
            "ts": pa.array(
                [None if r[2] is None else T0 + dt.timedelta(microseconds=r[2] * 7) for r in rows],
                SCHEMA.field("ts").type,
            ),
            "n": pa.array([r[3] for r in rows], pa.int64()),
            "_kind": pa.array([r[0] for r in rows], pa.int8()),
        }
    )


def _sorted(table: pa.Table) -> list[tuple[Any, ...]]:
    return sorted((tuple(r.values()) for r in table.to_pylist()), key=repr)


@settings(max_examples=120, deadline=None)
@given(ROWS, st.data())
def test_series_equals_duckdb_unnest(
    calcs: list[Calc], rows: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    calc = data.draw(st.sampled_from(calcs))
    batch = _batch(rows)
    got = calc_function(calc)(ChangeBatch(batch)).data
    want = calc_function(dataclasses.replace(calc, series=None))(ChangeBatch(batch)).data
    assert got.schema.equals(want.schema)
    assert _sorted(got) == _sorted(want)


def _net(table: pa.Table) -> dict[tuple[Any, ...], int]:
    """Each row's net count: +/-1 a change (times its ``_weight``), rows netting to zero left out."""
    counts: dict[tuple[Any, ...], int] = {}
    for row in table.to_pylist():
        sign = -1 if row.pop("_kind") in (1, 3) else 1
        weight = row.pop("_weight", 1)
        key = tuple(row.items())
        counts[key] = counts.get(key, 0) + sign * weight
    return {k: v for k, v in counts.items() if v}


@settings(max_examples=80, deadline=None)
@given(ROWS, st.data())
def test_weighted_series_nets_like_duckdb_unnest(
    calcs: list[Calc], rows: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """Combined before it explodes (what an aggregate reads), a batch nets to the same changes."""
    calc = data.draw(st.sampled_from(calcs))
    doubled = rows + rows[: len(rows) // 2]  # repeats: rows that combine
    batch = _batch(doubled)
    got = calc_function(calc, weighted=True)(ChangeBatch(batch)).data
    want = calc_function(dataclasses.replace(calc, series=None))(ChangeBatch(batch)).data
    assert got.column_names[-1] == "_weight" and (got.column("_weight").to_numpy() >= 1).all()
    assert _net(got) == _net(want)
