"""Routing rows to key partitions: stable, and total over every key type, NULLs included."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from flowlake.flow.batch import partition_ids

VALUES = [
    (pa.decimal128(10, 2), [Decimal("1.50"), Decimal("2.00")]),
    (pa.decimal128(38, 4), [Decimal("1.5000"), Decimal("-7.0001")]),
    (pa.int32(), [1, 2]),
    (pa.string(), ["a", "b"]),
    (
        pa.timestamp("us", tz="UTC"),
        [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)],
    ),
    (pa.date32(), [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]),
    (pa.bool_(), [True, False]),
]


@pytest.mark.parametrize(
    ("dtype", "values"), VALUES, ids=lambda v: str(v) if isinstance(v, pa.DataType) else ""
)
def test_keys_with_nulls_route_to_the_same_partition_every_time(
    dtype: pa.DataType, values: list[object]
) -> None:
    # a decimal of fewer than 19 + scale digits could not hold the int64 zero that stood in for NULL
    table = pa.table({"k": pa.array([*values, None], dtype)})
    first = partition_ids(table, ["k"], 4)
    assert first.tolist() == partition_ids(table, ["k"], 4).tolist()
    assert all(0 <= p < 4 for p in first.tolist())
