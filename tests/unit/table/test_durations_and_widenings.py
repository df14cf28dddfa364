"""Duration columns (MySQL TIME) in tables, and the lossless decimal widenings of schema evolution."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flowlake as fl

TIMES = pa.schema([("id", pa.int32()), ("t", pa.duration("us"))])
EDGES = [
    -dt.timedelta(hours=838, minutes=59, seconds=59),
    dt.timedelta(hours=838, minutes=59, seconds=59),
    -dt.timedelta(microseconds=1),
    dt.timedelta(0),
    None,
]


def test_duration_columns_keep_negative_and_long_spans_through_writes_reads_and_compaction(
    catalog: fl.Catalog,
) -> None:
    table = catalog.create_table("ods.times", TIMES, primary_key=["id"], buckets=2)
    table.upsert(pa.table({"id": list(range(5)), "t": pa.array(EDGES, pa.duration("us"))}))
    table.upsert(pa.table({"id": [0], "t": pa.array([dt.timedelta(hours=-1)], pa.duration("us"))}))
    expected = [dt.timedelta(hours=-1), *EDGES[1:]]
    assert table.read().sort_by("id").column("t").to_pylist() == expected
    kinds = table.changes(1).column("_kind").to_pylist()
    assert kinds == [1, 2]  # a real update of a duration is seen; the unchanged rows are not
    table.compact()
    assert table.read().sort_by("id").column("t").to_pylist() == expected
    assert pq.read_schema(table.dataset().files[0]).field("t").type == pa.duration("us")


def test_duration_cannot_be_a_key(catalog: fl.Catalog) -> None:
    with pytest.raises(fl.SchemaMismatchError, match=r"'t'.*cannot be a primary key"):
        catalog.create_table("ods.t", TIMES, primary_key=["t"])


def test_a_duration_column_can_be_added(catalog: fl.Catalog) -> None:
    table = catalog.create_table("ods.a", TIMES.remove(1), primary_key=["id"])
    table.upsert(pa.table({"id": pa.array([1], pa.int32())}))
    table.evolve_schema(TIMES)
    assert table.read().to_pylist() == [{"id": 1, "t": None}]


def test_decimal_precision_widens_losslessly_and_narrowing_is_refused(catalog: fl.Catalog) -> None:
    schema = pa.schema([("k", pa.decimal128(6, 2)), ("amount", pa.decimal128(12, 2))])
    table = catalog.create_table("ods.d", schema, primary_key=["k"])
    table.upsert(pa.table({"k": [Decimal("1.50")], "amount": [Decimal("9999999999.99")]}, schema=schema))
    wider = pa.schema([("k", pa.decimal128(9, 2)), ("amount", pa.decimal128(14, 2))])
    table.evolve_schema(wider)
    big = {"k": Decimal("1234567.50"), "amount": Decimal("123456789012.34")}
    table.upsert(pa.table({n: [v] for n, v in big.items()}, schema=wider))
    table.upsert(pa.table({"k": [Decimal("1.50")], "amount": [Decimal("1.00")]}, schema=wider))
    rows = sorted(table.read().to_pylist(), key=lambda r: r["k"])
    assert rows == [{"k": Decimal("1.50"), "amount": Decimal("1.00")}, big]  # old key found again
    more_scale = pa.schema([("k", pa.decimal128(9, 2)), ("amount", pa.decimal128(16, 4))])
    table.evolve_schema(more_scale)  # outside the key: same integer digits, more fraction
    assert table.read().sort_by("k").column("amount").to_pylist()[1] == Decimal("123456789012.3400")
    for bad, column in (
        (pa.schema([("k", pa.decimal128(9, 2)), ("amount", pa.decimal128(15, 4))]), "amount"),
        (pa.schema([("k", pa.decimal128(9, 2)), ("amount", pa.decimal128(16, 3))]), "amount"),
        (pa.schema([("k", pa.decimal128(10, 3)), ("amount", pa.decimal128(16, 4))]), "k"),
    ):
        with pytest.raises(fl.SchemaMismatchError, match=rf"'{column}'.*cannot change.*lossless"):
            table.evolve_schema(bad)
