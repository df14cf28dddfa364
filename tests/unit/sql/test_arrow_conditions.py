"""Join pair conditions that Arrow compute evaluates give DuckDB's verdicts (NULL as false)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowlake.sql.build import arrow_condition

CONDITIONS = [
    '"a.x" >= "m.y"', '"a.x" < "m.y"', '"a.x" = "m.y"', '"a.x" <> "m.y"', '"a.x" > "m.y"', '"a.x" <= "m.y"',
    '"b.t" BETWEEN "a.t" AND "a.u"', '"b.t" BETWEEN "a.t" AND "a.u" AND "a.x" >= "m.y"',
    'NOT ("a.x" = "m.y") OR "a.s" < "b.s"', '("a.d" > "b.d" OR "a.x" = "m.y") AND NOT "a.t" = "b.t"',
]  # fmt: skip
T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
SMALL = st.integers(-3, 4).map(lambda v: None if v == 4 else v)  # (few NULLs: ties come often)
ROWS = st.lists(st.tuples(SMALL, SMALL, SMALL, SMALL, SMALL, SMALL, SMALL, SMALL), min_size=1, max_size=25)


def _table(rows: list[tuple[Any, ...]]) -> pa.Table:
    def col(i: int) -> list[Any]:
        return [r[i] for r in rows]

    def times(i: int) -> pa.Array:
        return pa.array(
            [None if v is None else T0 + dt.timedelta(seconds=v) for v in col(i)], pa.timestamp("us", "UTC")
        )

    return pa.table(
        {
            "a.x": pa.array(col(0), pa.int64()),
            "m.y": pa.array(col(1), pa.int32()),
            "a.t": times(2),
            "a.u": times(3),
            "b.t": times(4),
            "a.s": pa.array([None if v is None else "ab"[v % 2] * (v % 3) for v in col(5)], pa.string()),
            "b.s": pa.array([None if v is None else "ba"[v % 2] * (v % 3) for v in col(6)], pa.string()),
            "a.d": pa.array([None if v is None else Decimal(v) / 4 for v in col(7)], pa.decimal128(6, 2)),
            "b.d": pa.array([None if v is None else Decimal(v) / 2 for v in col(0)], pa.decimal128(6, 2)),
        }
    )


@settings(max_examples=200, deadline=None)
@given(ROWS, st.sampled_from(CONDITIONS))
@example([(0, 0, 0, 1, 1, 0, 0, 0), (0, 0, 1, 1, 1, None, 0, 0)], CONDITIONS[6])  # at both bounds
def test_arrow_condition_equals_duckdb(rows: list[tuple[Any, ...]], condition: str) -> None:
    test = arrow_condition(condition)
    assert test is not None
    table = _table(rows)
    con = duckdb.connect()
    con.register("pairs", table)
    want = con.sql(f"SELECT coalesce({condition}, false) AS k FROM pairs").to_arrow_table().column("k")
    got = test(table)
    assert got.tolist() == np.asarray(want.to_numpy(zero_copy_only=False), dtype=bool).tolist()


@pytest.mark.parametrize(
    "condition",
    [
        '"a.x" > 1',
        '"b.t" BETWEEN "a.t" - INTERVAL \'1\' SECOND AND "a.u"',
        'abs("a.x") < "m.y"',
        '"a.x" = "m.y" + 1',
    ],
)
def test_other_conditions_stay_in_duckdb(condition: str) -> None:
    assert arrow_condition(condition) is None
