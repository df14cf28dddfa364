"""The Arrow snapshot path's pure parts: which columns ConnectorX may read, fitting its columns to the
ODS types exactly, and removing the keys the stream changed from an Arrow chunk (vectorized)."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pyarrow as pa
import pytest

from flowlake.cdc.mysql_schema import MySqlUrl
from flowlake.cdc.mysql_snapshot_arrow import (
    ArrowChunkReader,
    ArrowChunkRows,
    ArrowSnapshots,
    ColumnInfo,
    _fit_column,
    unsafe_reason,
)
from flowlake.cdc.source import TableSpec
from flowlake.changelog import KIND_COLUMN


def col(data_type: str, column_type: str = "", charset: str = "", generated: bool = False) -> ColumnInfo:
    return ColumnInfo("c", data_type, column_type or data_type, charset, generated)


@pytest.mark.parametrize(
    "column",
    [
        col("tinyint"), col("int", "int(10) unsigned"), col("bigint", "bigint(20) unsigned"),
        col("decimal", "decimal(65,30)"), col("double"), col("varchar", charset="utf8mb4"),
        col("char", charset="utf8mb3"), col("longtext", charset="utf8mb4"), col("text", charset="latin1"),
        col("date"), col("datetime", "datetime(6)"), col("timestamp", "timestamp(3)"),
    ],
)  # fmt: skip
def test_the_safe_set(column: ColumnInfo) -> None:
    assert unsafe_reason(column) is None


@pytest.mark.parametrize(
    ("column", "reason"),
    [
        (col("float"), "type float"), (col("bit", "bit(3)"), "type bit(3)"),
        (col("set", "set('a')", "utf8mb4"), "type set('a')"),
        (col("enum", "enum('a')", "utf8mb4"), "type enum('a')"),
        (col("time"), "type time"), (col("year", "year(4)"), "type year(4)"), (col("blob"), "type blob"),
        (col("binary", "binary(4)"), "type binary(4)"), (col("json", "json", "utf8mb4"), "type json"),
        (col("varchar", charset="utf16"), "charset utf16"), (col("text", charset="gbk"), "charset gbk"),
        (col("int", generated=True), "a generated column"),
    ],
)  # fmt: skip
def test_everything_else_takes_the_pymysql_path(column: ColumnInfo, reason: str) -> None:
    assert unsafe_reason(column) == reason


def test_columns_are_fitted_to_the_ods_types_exactly_or_refused() -> None:
    decimals = pa.chunked_array([pa.array(["123456789012345678.12345678901234567891", None])])
    fitted = _fit_column(decimals, pa.field("d", pa.decimal128(38, 20)))
    assert fitted.to_pylist() == [decimal.Decimal("123456789012345678.12345678901234567891"), None]
    with pytest.raises(pa.ArrowInvalid):  # a cast never rounds
        _fit_column(pa.chunked_array([pa.array(["1.234"])]), pa.field("d", pa.decimal128(5, 2)))
    with pytest.raises(pa.ArrowInvalid):  # nor overflows
        _fit_column(pa.chunked_array([pa.array([300], pa.int32())]), pa.field("i", pa.int8()))
    naive = pa.chunked_array([pa.array([dt.datetime(2026, 1, 1, 0, 0, 0, 500_000)], pa.timestamp("us"))])
    zoned = _fit_column(naive, pa.field("t", pa.timestamp("us", tz="UTC")))
    assert zoned.to_pylist() == [dt.datetime(2026, 1, 1, 0, 0, 0, 500_000, tzinfo=dt.UTC)]
    text = _fit_column(
        pa.chunked_array([pa.array([b"\xf0\x9f\x98\x80"], pa.large_binary())]), pa.field("s", pa.string())
    )
    assert text.to_pylist() == ["\U0001f600"]
    with pytest.raises(pa.ArrowInvalid):  # not UTF-8
        _fit_column(pa.chunked_array([pa.array([b"\xff"], pa.large_binary())]), pa.field("s", pa.string()))
    with pytest.raises(TypeError):
        _fit_column(pa.chunked_array([pa.array([1])]), pa.field("s", pa.string()))
    with pytest.raises(TypeError):  # a double may have rounded the integer already
        _fit_column(pa.chunked_array([pa.array([2.0**63])]), pa.field("u", pa.uint64()))
    with pytest.raises(TypeError):
        _fit_column(pa.chunked_array([pa.array([1.5], pa.float32())]), pa.field("f", pa.float64()))


def chunk(keys: dict[str, pa.Array], **more: pa.Array) -> ArrowChunkRows:
    return ArrowChunkRows(pa.table({**keys, **more}), list(keys))


def test_stream_keys_are_removed_from_a_chunk_when_it_is_emitted() -> None:
    rows = chunk({"id": pa.array([1, 2, 3, 4], pa.uint64())}, v=pa.array(["a", "b", "c", "d"]))
    rows.pop((2,), None)
    rows.pop((4,))
    rows.pop((99,))  # a key the chunk does not hold
    assert len(rows) == 4  # rows read, before removal
    batch = rows.batch()
    assert batch.form == "changelog"
    assert batch.changelog().to_pylist() == [
        {"id": 1, "v": "a", KIND_COLUMN: 0},
        {"id": 3, "v": "c", KIND_COLUMN: 0},
    ]
    assert batch.raws() == [b'{"id":1,"v":"a"}', b'{"id":3,"v":"c"}']
    assert rows.last_key() == [4]  # the key the next chunk starts after, removed or not


def test_composite_keys_and_zoned_timestamps_match_the_stream_values() -> None:
    ts = [dt.datetime(2026, 1, 1, 0, 0, s) for s in range(3)]
    rows = chunk(
        {
            "a": pa.array([1, 1, 2]),
            "t": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "d": pa.array([decimal.Decimal("1.50")] * 3, pa.decimal128(5, 2)),
        }
    )
    rows.pop((1, ts[1], decimal.Decimal("1.5")))  # the stream gives naive UTC datetimes
    rows.pop((1, ts[2], decimal.Decimal("1.5")))  # no such row (a is 2 there)
    rows.pop((1, ts[1], decimal.Decimal("1.5")))  # the same key twice
    kept = rows.kept()
    assert kept.column("t").to_pylist() == [ts[0].replace(tzinfo=dt.UTC), ts[2].replace(tzinfo=dt.UTC)]
    assert kept.column("a").to_pylist() == [1, 2]
    # the next chunk starts after the last key; a date or time as text (as the PyMySQL path bounds it)
    assert rows.last_key() == [2, "2026-01-01 00:00:02", decimal.Decimal("1.50")]
    dates = chunk({"d": pa.array([dt.date(2026, 1, 2)]), "t": pa.array([ts[0].replace(microsecond=5)])})
    assert dates.last_key() == ["2026-01-02", "2026-01-01 00:00:00.000005"]


def test_a_stream_key_the_column_type_cannot_hold_is_compared_by_value() -> None:
    rows = chunk({"id": pa.array([1, 2], pa.int8())})
    rows.pop((1000,))  # not an int8: the vectorized mask cannot be built
    rows.pop((2,))
    assert rows.kept().column("id").to_pylist() == [1]
    assert ArrowChunkRows(pa.table({"id": pa.array([], pa.int8())}), ["id"]).last_key() is None


def test_a_reader_needs_the_ods_shape_and_is_planned_once_per_shape() -> None:
    spec = TableSpec(
        "db.t", pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())]), ("id",)
    )
    calls: list[int] = []

    class Cursor:
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def execute(self, sql: str, params: Any) -> None:
            calls.append(1)
            self.rows = [
                ("id", "bigint", "bigint(20)", None, "", "NEVER"),
                ("v", "varchar", "varchar(5)", "utf8mb4", "", "NEVER"),
            ]

        def fetchall(self) -> list[Any]:
            return self.rows

    snapshots = ArrowSnapshots(MySqlUrl.parse("mysql://us%40er:p%3Ass@db:3307/x"), enabled=True)
    assert snapshots.reader(Cursor, "db.t", spec, None) is None  # the ODS table is not known yet
    wider = TableSpec("db.t", pa.schema([("id", pa.int64()), ("v", pa.string()), ("w", pa.int8())]), ("id",))
    reader = snapshots.reader(Cursor, "db.t", spec, wider)
    assert isinstance(reader, ArrowChunkReader)
    assert reader.url == "mysql://us%40er:p%3Ass@db:3307/db"
    assert reader.select_list == "`id`, `v`"
    assert reader.schema == pa.schema([("id", pa.int64()), ("v", pa.string())])
    assert snapshots.reader(Cursor, "db.t", spec, wider) is reader and len(calls) == 1
    narrower = TableSpec("db.t", pa.schema([("id", pa.int64())]), ("id",))
    assert snapshots.reader(Cursor, "db.t", spec, narrower) is None  # the ODS table lacks v: rows evolve it
    assert ArrowSnapshots(snapshots.url, enabled=False).reader(Cursor, "db.t", spec, wider) is None
