"""The binlog value fixes and the dead-letter record format, without a server (the real server's
view is checked in tests/integration/test_cdc_mariadb_fidelity.py)."""

from __future__ import annotations

import datetime as dt
import decimal
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from flowlake.cdc.batch import UndecodedRow
from flowlake.cdc.mysql_values import (
    UNDECODED_CHARSET,
    decode_text,
    fix_image,
    row_changes,
    select_list,
    snapshot_converters,
    table_decoders,
)
from flowlake.cdc.record_json import dump_record, load_record


def column(name: str, kind: int, **attrs: Any) -> Any:
    return SimpleNamespace(name=name, type=kind, **attrs)


COLUMNS = [
    column("l1", 15, character_set_name="cp1252", max_length=20),
    column("bn", 254, character_set_name="binary", max_length=4),
    column("vb", 15, character_set_name="binary", max_length=8),
    column("u16", 15, character_set_name="utf16", max_length=20),
    column("bt", 16, bits=10, bytes=2),
    column("st", 248, set_values=["x", "b", "c"]),
    column("y", 13),
    column("tm", 19, fsp=6),
    column("ts", 17, fsp=3),
    column("n", 3),
]


def test_text_columns_are_handed_over_undecoded_and_decoded_as_mysql_does() -> None:
    columns = [column(c.name, c.type, **{k: v for k, v in vars(c).items() if k not in ("name", "type")})
               for c in COLUMNS]  # fmt: skip
    decoders = table_decoders(columns)
    assert columns[0].character_set_name == UNDECODED_CHARSET
    assert "n" not in decoders
    image = {
        "l1": b"\x81A\x8d\x80", "bn": b"a", "vb": b"a\x00", "u16": "\u00e9".encode("utf-16-be"),
        "bt": "0000000101", "st": {"b", "x"}, "y": 1900, "tm": dt.timedelta(seconds=-1, microseconds=1),
        "ts": dt.datetime(1970, 1, 1), "n": 7,
    }  # fmt: skip
    assert fix_image(image, {}, decoders) == {
        "l1": "\x81A\x8d\u20ac", "bn": b"a\x00\x00\x00", "vb": b"a\x00", "u16": "\u00e9",
        "bt": b"\x00\x05", "st": "x,b", "y": 0, "tm": dt.timedelta(microseconds=-1), "ts": None, "n": 7,
    }  # fmt: skip
    empty = {"st": None, "bn": "", "l1": ""}
    assert fix_image(empty, {"st": "empty set"}, decoders) == {"st": "", "bn": b"\x00" * 4, "l1": ""}
    assert fix_image({"st": None}, {"st": "null"}, decoders) == {"st": None}


@pytest.mark.parametrize(
    ("library", "server"),
    [  # mysql-replication's value of a negative TIME with a fraction → the stored value
        (-dt.timedelta(hours=1, seconds=0.9), -dt.timedelta(hours=1, seconds=0.1)),
        (-dt.timedelta(seconds=0.999999), -dt.timedelta(microseconds=1)),
        (-dt.timedelta(seconds=1.5), -dt.timedelta(seconds=1.5)),
        (-dt.timedelta(hours=838, minutes=59, seconds=59), -dt.timedelta(hours=838, minutes=59, seconds=59)),
        (dt.timedelta(hours=838, seconds=0.25), dt.timedelta(hours=838, seconds=0.25)),
    ],
)
def test_negative_fractional_time(library: dt.timedelta, server: dt.timedelta) -> None:
    decoders = table_decoders([column("tm", 19, fsp=6)])
    assert fix_image({"tm": library}, {}, decoders) == {"tm": server}


def test_latin1_is_mysqls_cp1252_with_undefined_bytes_passed_through() -> None:
    every = decode_text(bytes(range(256)), "mysql-latin1")
    assert len(every) == 256 and len(set(every)) == 256  # every byte decodes, to a different character
    assert decode_text(b"\x81\x8d\x8f\x90\x9d\x80", "mysql-latin1") == "\x81\x8d\x8f\x90\x9d\u20ac"


def test_an_undecodable_image_makes_the_whole_change_a_dead_letter() -> None:
    decoders = table_decoders([column("v", 15, character_set_name="swe7", max_length=10)])
    event = SimpleNamespace(
        rows=[
            {"before_values": {"id": 1, "v": b"old"}, "after_values": {"id": 1, "v": b"new"}},
        ]
    )
    (before, after) = row_changes("db.t", event, "update", decoders)
    assert isinstance(before[1], UndecodedRow) and isinstance(after[1], UndecodedRow)
    assert before[1].raw is after[1].raw and "'v'" in before[1].error and "swe7" in before[1].error
    assert load_record(before[1].raw) == {
        "table": "db.t", "kind": "update", "before": {"id": 1, "v": b"old"}, "after": {"id": 1, "v": b"new"}
    }  # fmt: skip


def test_a_rows_event_the_library_cannot_parse_is_one_dead_letter() -> None:
    class Broken:
        @property
        def rows(self) -> list[Any]:
            raise NotImplementedError("Unknown MySQL column type: 99")

    ((kind, image),) = row_changes("db.t", Broken(), "insert", {})
    assert kind == 0 and isinstance(image, UndecodedRow) and "column type: 99" in image.error


def test_dead_letter_records_round_trip_exactly() -> None:
    record = {
        "b": b"\xaa\x00", "t": dt.timedelta(days=-35, seconds=3601), "d": decimal.Decimal("1.50"),
        "s": "1.50", "ts": dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2),
        "nan": float("inf"), "big": 2**64 - 1, "huge": 2**70, "$bytes": "a column named like a tag",
        "n": None, "list": [1, b"x"],
    }  # fmt: skip
    again = load_record(dump_record(record))
    assert again == record and type(again["d"]) is decimal.Decimal and type(again["s"]) is str


def test_snapshot_reads_float_exactly_and_zero_dates_as_null() -> None:
    schema = pa.schema([("id", pa.int32()), ("f", pa.float32()), ("d`x", pa.float64())])
    assert select_list(schema) == "`id`, CAST(`f` AS DOUBLE) AS `f`, `d``x`"
    conv = snapshot_converters({10: dt.date.fromisoformat, 12: lambda s: s, 3: int})
    assert conv[10]("2026-01-02") == dt.date(2026, 1, 2)
    assert conv[12]("0000-00-00 00:00:00") is None and conv[3]("5") == 5
