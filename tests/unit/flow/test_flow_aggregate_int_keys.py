"""The aggregate's integer-key paths (keys grouped, looked up and emitted from int64 rows: an int
shop and a minute window, the ``dws.shop_gmv_minute`` shape) against a brute-force oracle, with
retractions of maxima, minima and distinct values, NULL values and NULL window starts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
from _builders import materialize, model_change, rows_close
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow import aggs
from flowlake.flow._aggstate import AggregateState
from flowlake.flow.batch import from_rows

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("shop", pa.int32()),
        ("user", pa.int64()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)
T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
SPEC = {
    "orders": aggs.count(),
    "paid_gmv": aggs.sum("amount", where=("status", "==", "paid"), default=0),
    "avg_amount": aggs.avg("amount"),
    "max_amount": aggs.max("amount"),
    "min_amount": aggs.min("amount"),
    "distinct_users": aggs.count_distinct("user"),
    "paid_users": aggs.count_distinct("user", where=("status", "==", "paid")),
    "last_at": aggs.max("at"),
}


def oracle(live: dict[int, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in live.values():
        at = row["at"]
        minute = None if at is None else at.replace(second=0, microsecond=0)
        groups.setdefault((row["shop"], minute), []).append(row)
    out = {}
    for (shop, minute), members in groups.items():
        amounts = [r["amount"] for r in members if r["amount"] is not None]
        paid = [r for r in members if r["status"] == "paid"]
        paid_amounts = [r["amount"] for r in paid if r["amount"] is not None]
        ats = [r["at"] for r in members if r["at"] is not None]
        out[(shop, minute)] = {
            "shop": shop,
            "minute": minute,
            "orders": len(members),
            "paid_gmv": sum(paid_amounts) if paid_amounts else Decimal(0),
            "avg_amount": float(sum(amounts)) / len(amounts) if amounts else None,
            "max_amount": max(amounts) if amounts else None,
            "min_amount": min(amounts) if amounts else None,
            "distinct_users": len({r["user"] for r in members}),
            "paid_users": len({r["user"] for r in paid}),
            "last_at": max(ats) if ats else None,
        }
    return out


ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert", "update", "delete"]),
        st.integers(0, 15),  # order id
        st.integers(-2, 3),  # shop
        st.integers(0, 4),  # user
        st.sampled_from(["paid", "created"]),
        st.one_of(st.none(), st.integers(1, 6)),  # amount in cents: few values, so maxima repeat and move
        st.one_of(st.none(), st.integers(0, 179)),  # seconds after T0: three minutes, or NULL
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops, st.lists(st.integers(1, 9), min_size=1, max_size=20))
def test_int_keys_and_windows_match_recompute(history: list[tuple[Any, ...]], cuts: list[int]) -> None:
    state = AggregateState(["shop"], SPEC, aggs.minutes(1, on="at"))
    live: dict[int, dict[str, Any]] = {}
    view: dict[Any, dict[str, Any]] = {}
    pending: list[tuple[int, dict[str, Any]]] = []
    cut_iter = iter(cuts * 40)
    size = next(cut_iter)
    for op_name, key, shop, user, status, cents, secs in history:
        row = {
            "id": key,
            "shop": shop,
            "user": user,
            "status": status,
            "amount": None if cents is None else Decimal(cents) / 100,
            "at": None if secs is None else T0 + dt.timedelta(seconds=secs),
        }
        pending += model_change(live, op_name, key, row)
        if len(pending) >= size:
            out, late = state.apply(from_rows(pending, SCHEMA))
            assert late is None
            materialize(view, out, lambda row: (row["shop"], row["minute"]))
            pending, size = [], next(cut_iter)
    out, _ = state.apply(from_rows(pending, SCHEMA))
    materialize(view, out, lambda row: (row["shop"], row["minute"]))
    expected = oracle(live)
    assert set(view) == set(expected)
    for key, row in expected.items():
        assert rows_close(row, view[key], 1e-9), (row, view[key])
    assert state.groups == len(expected)
    assert state.dropped_retractions == 0
