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


def test_a_duration_can_be_the_key_as_a_mysql_time_primary_key_is(catalog: fl.Catalog) -> None:
    keyed = pa.schema([pa.field("t", pa.duration("us"), nullable=False), ("v", pa.int64())])
    table = catalog.create_table("ods.t", keyed, primary_key=["t"], buckets=4)
    spans = [e for e in EDGES if e is not None] + [dt.timedelta(days=30)]

    def batch(keys: list[dt.timedelta], values: list[int]) -> pa.Table:
        return pa.table({"t": pa.array(keys, pa.duration("us")), "v": values}, schema=keyed)

    table.upsert(batch(spans, list(range(len(spans)))))
    table.upsert(batch([spans[0], dt.timedelta(seconds=7)], [100, 7]))  # an update and an insert
    table.delete(pa.table({"t": pa.array([spans[2]], pa.duration("us"))}))
    live = {spans[0]: 100, spans[1]: 1, spans[3]: 3, spans[4]: 4, dt.timedelta(seconds=7): 7}
    assert {r["t"]: r["v"] for r in table.read().to_pylist()} == live
    assert [r["_kind"] for r in table.changes(1).to_pylist()] == [1, 2, 0, 3]  # exact before-images
    table.compact()
    reopened = catalog.load_table("ods.t")  # a new writer rebuilds its key state from the files
    reopened.upsert(batch([spans[1]], [11]))
    assert {r["t"]: r["v"] for r in reopened.read().to_pylist()} == {**live, spans[1]: 11}
    wanted = pa.table({"t": pa.array([spans[0], dt.timedelta(seconds=99)], pa.duration("us"))})
    assert reopened.get(wanted).to_pylist() == [{"t": spans[0], "v": 100}]


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
