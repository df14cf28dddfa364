"""Logical types: each conversion against hand-computed values, in decode() and decode_batch()."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pytest

from flowlake.cdc import debezium_schema_to_arrow, decode, decode_batch
from flowlake.cdc.logical_types import (
    base64_to_bytes,
    base64_to_decimal,
    days_to_date,
    decoder_for_arrow,
    decoder_from_connect,
    millis_to_time,
    nanos_to_timestamp,
    variable_scale_to_decimal,
    zoned_to_datetime,
)
from flowlake.errors import CorruptRecordError

UTC = dt.UTC

# name, connect schema, JSON value, Python value, Arrow type, Arrow value (to_pylist form)
CASES: list[tuple[str, dict[str, Any], Any, Any, pa.DataType, Any]] = [
    # 2020-01-01 is 50*365 + 12 leap days = 18262 days after 1970-01-01
    (
        "date",
        {"type": "int32", "name": "io.debezium.time.Date"},
        18262,
        dt.date(2020, 1, 1),
        pa.date32(),
        None,
    ),
    (
        "connect_date",
        {"type": "int32", "name": "org.apache.kafka.connect.data.Date"},
        -1,
        dt.date(1969, 12, 31),
        pa.date32(),
        None,
    ),
    # 1h 2m 3.004s = 3_723_004 ms
    (
        "time",
        {"type": "int32", "name": "io.debezium.time.Time"},
        3_723_004,
        dt.time(1, 2, 3, 4000),
        pa.time32("ms"),
        None,
    ),
    (
        "micro_time",
        {"type": "int64", "name": "io.debezium.time.MicroTime"},
        3_723_004_005,
        dt.time(1, 2, 3, 4005),
        pa.time64("us"),
        None,
    ),
    # ns truncate to µs in Python; Arrow keeps them
    (
        "nano_time",
        {"type": "int64", "name": "io.debezium.time.NanoTime"},
        3_723_004_005_006,
        dt.time(1, 2, 3, 4005),
        pa.time64("ns"),
        "raw",
    ),
    # 2020-01-01T00:00:00 = 18262 * 86400 s = 1_577_836_800 s
    (
        "timestamp",
        {"type": "int64", "name": "io.debezium.time.Timestamp"},
        1_577_836_800_123,
        dt.datetime(2020, 1, 1, 0, 0, 0, 123000),
        pa.timestamp("ms"),
        None,
    ),
    (
        "micro_timestamp",
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp"},
        1_577_836_800_123_456,
        dt.datetime(2020, 1, 1, 0, 0, 0, 123456),
        pa.timestamp("us"),
        None,
    ),
    (
        "nano_timestamp",
        {"type": "int64", "name": "io.debezium.time.NanoTimestamp"},
        1_577_836_800_123_456_789,
        dt.datetime(2020, 1, 1, 0, 0, 0, 123456),
        pa.timestamp("ns"),
        "raw",
    ),
    (
        "zoned",
        {"type": "string", "name": "io.debezium.time.ZonedTimestamp"},
        "2020-01-01T02:00:00.5+02:00",
        dt.datetime(2020, 1, 1, 0, 0, 0, 500000, tzinfo=UTC),
        pa.timestamp("us", tz="UTC"),
        None,
    ),
    # "AOjU" = bytes 00 e8 d4 = 0x00e8d4 = 59604 unscaled; scale 2 -> 596.04
    (
        "decimal",
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        },
        "AOjU",
        Decimal("596.04"),
        pa.decimal128(10, 2),
        None,
    ),
    # "/zg=" = ff 38 = -200 (two's complement); scale 2 -> -2.00; no precision -> 38
    (
        "decimal_negative",
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
        "/zg=",
        Decimal("-2.00"),
        pa.decimal128(38, 2),
        None,
    ),
    # scale 3 with the same unscaled 59604 -> 59.604; Arrow keeps exact text
    (
        "variable_scale",
        {
            "type": "struct",
            "name": "io.debezium.data.VariableScaleDecimal",
            "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}],
        },
        {"scale": 3, "value": "AOjU"},
        Decimal("59.604"),
        pa.string(),
        "59.604",
    ),
    (
        "json",
        {"type": "string", "name": "io.debezium.data.Json"},
        '{"a": [1]}',
        '{"a": [1]}',
        pa.string(),
        None,
    ),
    (
        "enum",
        {"type": "string", "name": "io.debezium.data.Enum", "parameters": {"allowed": "S,M,L"}},
        "M",
        "M",
        pa.string(),
        None,
    ),
    ("boolean", {"type": "boolean"}, True, True, pa.bool_(), None),
    # "AQID" = 01 02 03
    ("bytes", {"type": "bytes"}, "AQID", b"\x01\x02\x03", pa.binary(), None),
    ("int8", {"type": "int8"}, -128, -128, pa.int8(), None),
    ("int16", {"type": "int16"}, 32767, 32767, pa.int16(), None),
    ("int32", {"type": "int32"}, -(2**31), -(2**31), pa.int32(), None),
    ("int64", {"type": "int64"}, 2**63 - 1, 2**63 - 1, pa.int64(), None),
    ("float", {"type": "float"}, 0.5, 0.5, pa.float32(), None),
    ("double", {"type": "double"}, 3, 3.0, pa.float64(), None),
    ("string", {"type": "string"}, "héllo", "héllo", pa.string(), None),
]
IDS = [c[0] for c in CASES]


def message_with(fields: dict[str, dict[str, Any]], after: dict[str, Any]) -> bytes:
    row = {"type": "struct", "optional": True, "fields": [{**s, "field": n} for n, s in fields.items()]}
    schema = {
        "type": "struct",
        "fields": [{**row, "field": "before"}, {**row, "field": "after"}, {"type": "string", "field": "op"}],
    }
    return orjson.dumps({"schema": schema, "payload": {"before": None, "after": after, "op": "c"}})


@pytest.mark.parametrize(("name", "schema", "raw", "python", "arrow_type", "arrow"), CASES, ids=IDS)
def test_decode_converts_by_schema_block(
    name: str, schema: dict[str, Any], raw: Any, python: Any, arrow_type: pa.DataType, arrow: Any
) -> None:
    (change,) = decode(message_with({name: schema}, {name: raw}))
    assert change.row == {name: python}
    assert type(change.row[name]) is type(python)


@pytest.mark.parametrize(("name", "schema", "raw", "python", "arrow_type", "arrow"), CASES, ids=IDS)
def test_decode_batch_builds_arrow_type(
    name: str, schema: dict[str, Any], raw: Any, python: Any, arrow_type: pa.DataType, arrow: Any
) -> None:
    batch = decode_batch(
        [message_with({name: schema}, {name: raw}), message_with({name: schema}, {name: None})]
    )
    assert batch.errors == ()
    column = batch.table.column(name)
    assert column.type == arrow_type
    expected = raw if arrow == "raw" else (python if arrow is None else arrow)
    if arrow == "raw":
        assert column.cast(pa.int64()).to_pylist() == [expected, None]
    else:
        assert column.to_pylist() == [expected, None]


@pytest.mark.parametrize(("name", "schema", "raw", "python", "arrow_type", "arrow"), CASES, ids=IDS)
def test_schema_to_arrow_matches_batch(
    name: str, schema: dict[str, Any], raw: Any, python: Any, arrow_type: pa.DataType, arrow: Any
) -> None:
    block = {"type": "struct", "fields": [{**schema, "field": name, "optional": True}]}
    assert debezium_schema_to_arrow(block) == pa.schema([(name, arrow_type)])


def test_without_schema_values_stay_as_json() -> None:
    (change,) = decode(
        orjson.dumps({"after": {"d": 18262, "n": "AOjU", "z": "2020-01-01T00:00:00Z"}, "op": "c"})
    )
    assert change.row == {"d": 18262, "n": "AOjU", "z": "2020-01-01T00:00:00Z"}


def test_convert_false_keeps_json_values_even_with_schema_block() -> None:
    fields = {"d": {"type": "int32", "name": "io.debezium.time.Date"}}
    (change,) = decode(message_with(fields, {"d": 18262}), convert=False)
    assert change.row == {"d": 18262}


# --- explicit Arrow schema (schema-exclude messages) --------------------------------------------------


EXPLICIT = pa.schema(
    [
        ("d", pa.date32()),
        ("ts", pa.timestamp("ms")),
        ("tz", pa.timestamp("us", tz="UTC")),
        ("amount", pa.decimal128(5, 2)),
        ("blob", pa.binary()),
    ]
)


def plain(after: dict[str, Any]) -> bytes:
    return orjson.dumps({"before": None, "after": after, "op": "c"})


def test_explicit_schema_reads_plain_json() -> None:
    after = {
        "d": 18262,
        "ts": 1_577_836_800_000,
        "tz": "2020-01-01T01:00:00+01:00",
        "amount": "AOjU",
        "blob": "AQID",
    }
    expected = {
        "d": dt.date(2020, 1, 1),
        "ts": dt.datetime(2020, 1, 1),
        "amount": Decimal("596.04"),
        "tz": dt.datetime(2020, 1, 1, tzinfo=UTC),
        "blob": b"\x01\x02\x03",
    }
    assert decode(plain(after), schema=EXPLICIT)[0].row == expected
    batch = decode_batch([plain(after)], EXPLICIT)
    assert batch.errors == ()
    assert batch.table.drop_columns(["_kind"]).to_pylist() == [expected]


@pytest.mark.parametrize(
    ("handling", "raw", "expected"),
    [
        ("string", "12.30", Decimal("12.30")),
        ("double", "-0.5", Decimal("-0.50")),
        ("precise", 12.345, Decimal("12.34")),  # a float is rounded half-even to the scale
        ("precise", 12.355, Decimal("12.36")),
        ("precise", 7, Decimal("7.00")),
        ("precise", {"scale": 1, "value": "AOjU"}, None),  # 5960.4 needs 6 digits: does not fit (5, 2)
    ],
)
def test_decimal_handling_modes(handling: Any, raw: Any, expected: Decimal | None) -> None:
    schema = pa.schema([("amount", pa.decimal128(5, 2))])
    batch = decode_batch([plain({"amount": raw})], schema, decimal_handling=handling)
    if expected is None:
        assert [e.index for e in batch.errors] == [0]
    else:
        assert batch.table.column("amount").to_pylist() == [expected]
        assert decode(plain({"amount": raw}), schema=schema, decimal_handling=handling)[0].row == {
            "amount": expected
        }


def test_schema_block_type_is_cast_to_explicit_schema() -> None:
    fields = {"ts": {"type": "int64", "name": "io.debezium.time.Timestamp"}}
    schema = pa.schema([("ts", pa.timestamp("us"))])
    batch = decode_batch([message_with(fields, {"ts": 1_000})], schema)
    assert batch.table.column("ts").to_pylist() == [dt.datetime(1970, 1, 1, 0, 0, 1)]


# --- conversion functions and their errors -------------------------------------------------------------


def test_conversion_helpers() -> None:
    assert days_to_date(0) == dt.date(1970, 1, 1)
    assert millis_to_time(0) == dt.time(0)
    assert nanos_to_timestamp(-1_000) == dt.datetime(1969, 12, 31, 23, 59, 59, 999999)
    assert zoned_to_datetime("2020-06-01T12:00:00Z") == dt.datetime(2020, 6, 1, 12, tzinfo=UTC)
    assert base64_to_decimal("/w==", 0) == Decimal(-1)  # ff = -1
    assert base64_to_decimal("AQ==", 5) == Decimal("0.00001")
    assert variable_scale_to_decimal({"scale": 0, "value": "AOjU"}) == Decimal(59604)
    assert base64_to_bytes("") == b""


@pytest.mark.parametrize(
    ("schema", "raw", "pattern"),
    [
        ({"type": "int32", "name": "io.debezium.time.Date"}, "2020-01-01", "JSON integer"),
        ({"type": "int32", "name": "io.debezium.time.Date"}, 10**12, "outside the supported dates"),
        ({"type": "int32", "name": "io.debezium.time.Time"}, 86_400_000, "not a time of day"),
        ({"type": "int64", "name": "io.debezium.time.Timestamp"}, 1.5, "JSON integer"),
        (
            {"type": "string", "name": "io.debezium.time.ZonedTimestamp"},
            "2020-01-01T00:00:00",
            "no zone offset",
        ),
        ({"type": "string", "name": "io.debezium.time.ZonedTimestamp"}, "yesterday", "not an ISO-8601"),
        (
            {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
            "!!",
            "not valid base64",
        ),
        (
            {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
            5,
            "JSON string",
        ),
        (
            {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}},
            "",
            "at least one byte",
        ),
        (
            {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal", "fields": []},
            {"value": "AA=="},
            "'scale'",
        ),
        ({"type": "int8"}, 128, "does not fit in 8 bits"),
        ({"type": "int32"}, True, "JSON integer"),
        ({"type": "boolean"}, 1, "true or false"),
        ({"type": "string"}, 1, "JSON string"),
        ({"type": "double"}, "1.0", "JSON number"),
        ({"type": "bytes"}, "a", "not valid base64"),
    ],
)
def test_wrong_values_raise_corrupt_record_error_naming_field(
    schema: dict[str, Any], raw: Any, pattern: str
) -> None:
    message = message_with({"col": schema}, {"col": raw})
    with pytest.raises(CorruptRecordError, match=pattern) as info:
        decode(message)
    assert "field 'col'" in str(info.value)
    batch = decode_batch([message])
    assert [e.index for e in batch.errors] == [0]
    assert "'col'" in batch.errors[0].reason


@pytest.mark.parametrize(
    ("block", "pattern"),
    [
        ({"type": "string", "name": "io.debezium.time.Date"}, "cannot sit on Connect type 'string'"),
        (
            {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "x"}},
            "parameter 'scale' must be an integer",
        ),
        ({"type": 5}, "needs a string 'type'"),
        ({"type": "array"}, "expected an object"),
        ("int32", "expected an object"),
    ],
)
def test_malformed_schema_blocks(block: Any, pattern: str) -> None:
    with pytest.raises(CorruptRecordError, match=pattern):
        decoder_from_connect("col", block)


def test_nested_struct_array_and_map() -> None:
    fields: dict[str, dict[str, Any]] = {
        "addr": {
            "type": "struct",
            "fields": [{"type": "int32", "name": "io.debezium.time.Date", "field": "since"}],
        },
        "tags": {"type": "array", "items": {"type": "bytes"}},
        "attrs": {"type": "map", "keys": {"type": "string"}, "values": {"type": "int64"}},
    }
    after = {"addr": {"since": 1}, "tags": ["AQ==", None], "attrs": {"a": 1}}
    (change,) = decode(message_with(fields, after))
    assert change.row == {"addr": {"since": dt.date(1970, 1, 2)}, "tags": [b"\x01", None], "attrs": {"a": 1}}
    batch = decode_batch([message_with(fields, after)])
    assert batch.errors == ()
    assert batch.table.column("addr").to_pylist() == [{"since": dt.date(1970, 1, 2)}]
    assert batch.table.column("tags").to_pylist() == [[b"\x01", None]]
    assert batch.table.column("attrs").to_pylist() == [[("a", 1)]]


def test_decoder_for_arrow_passes_unknown_types_through() -> None:
    decoder = decoder_for_arrow("x", pa.list_(pa.int64()))
    assert decoder.python_value([1, 2]) == [1, 2]
    assert decoder.build_array([[1], None]).to_pylist() == [[1], None]
