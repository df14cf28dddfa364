"""Fuzz the table API with arbitrary Arrow batches: only FlowlakeError subclasses come out, and a
rejected batch changes nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlake as fl

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("ratio", pa.float64()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("flag", pa.bool_()),
    ]
)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=3), st.floats()),
    "name": st.one_of(st.none(), st.text(max_size=20), st.binary(max_size=5), st.integers()),
    "amount": st.one_of(
        st.none(),
        st.decimals(allow_nan=False, places=2, min_value=-(10**12), max_value=10**12),
        st.integers(-(10**15), 10**15),
    ),
    "ratio": st.one_of(
        st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**64), 2**64)
    ),
    "at": st.one_of(
        st.none(),
        st.datetimes(
            min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
        ),
        st.integers(),
    ),
    "flag": st.one_of(st.none(), st.booleans(), st.integers(0, 1)),
}


@st.composite
def batches(draw: st.DrawFn) -> Any:
    columns = draw(
        st.lists(st.sampled_from([*SCHEMA.names, "extra", "_kind"]), min_size=0, max_size=8, unique=True)
    )
    rows = draw(st.integers(0, 6))
    data: dict[str, list[Any]] = {}
    for column in columns:
        strategy = VALUES.get(column, st.integers(-3, 5))
        data[column] = [draw(strategy) for _ in range(rows)]
    try:
        return pa.table(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return data  # not even an Arrow table: the API must still answer with a FlowlakeError


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches(), operation=st.sampled_from(["upsert", "delete", "apply", "update_columns"]))
def test_bad_batches_raise_only_flowlake_errors(batch: Any, operation: str) -> None:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://fuzz-{uuid.uuid4().hex}")
    t = cat.create_table("ods.fuzz", SCHEMA, primary_key=["id"], buckets=2)
    good = pa.Table.from_pylist(
        [
            {
                "id": 1,
                "name": "a",
                "amount": Decimal("1.00"),
                "ratio": 0.5,
                "at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                "flag": True,
            }
        ],
        schema=SCHEMA,
    )
    t.upsert(good)
    try:
        getattr(t, operation)(batch)
    except fl.FlowlakeError as exc:
        assert str(exc)  # every error says something
        assert t.refresh().version == 1, "a rejected batch must not commit"
        assert t.read().to_pylist() == good.to_pylist()
        return
    rows = t.read()  # an accepted batch leaves a readable table with unique keys
    ids = rows["id"].to_pylist()
    assert len(ids) == len(set(ids))
