"""Valid Debezium messages for the decoder fuzzer: source tables over every logical type the decoder
reads, their rows, payloads and envelopes (with or without a schema block)."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa

from flowlake.cdc import logical_types as lt
from flowlake.cdc.debezium import debezium_schema_to_arrow
from harness.fuzz._common import (
    DAY_MAX,
    DAY_MIN,
    US_MAX,
    US_MIN,
    b64_int,
    boundary_biased_int,
    random_text,
    random_zoned_timestamp,
)


@dataclass(frozen=True, slots=True)
class DebeziumColumn:
    """A column of the generated Debezium tables: its Connect schema, valid values and bad ones."""

    name: str
    schema: dict[str, Any]
    valid: Callable[[random.Random], Any]
    invalid: tuple[Any, ...]
    flat: bool = True
    """Whether an explicit Arrow schema reads it too (nested and variable-scale values it does not)."""


def _column(
    name: str,
    ctype: str,
    logical: str | None,
    valid: Callable[[random.Random], Any],
    invalid: tuple[Any, ...],
    **schema: Any,
) -> DebeziumColumn:
    block = {"type": ctype, "optional": name != "id", **({"name": logical} if logical else {}), **schema}
    flat = ctype not in ("struct", "array", "map")
    return DebeziumColumn(name, block, valid, invalid, flat)


def _within(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda r: boundary_biased_int(r, lo, hi)


def _bits(bits: int) -> Callable[[random.Random], int]:
    return _within(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _decimal(digits: int) -> Callable[[random.Random], str]:
    return lambda r: b64_int(boundary_biased_int(r, 1 - 10**digits, 10**digits - 1))


def _b64(size: int) -> Callable[[random.Random], str]:
    return lambda r: base64.b64encode(r.randbytes(r.randint(0, size))).decode()


_DAYS, _MILLIS = _within(DAY_MIN, DAY_MAX), _within(US_MIN // 1000, US_MAX // 1000)
_BAD_DAYS: Final = (DAY_MAX + 1, DAY_MIN - 1, 2**31 - 1, -(2**31), "2020-01-01", 1.5)
_BAD_MILLIS: Final = (US_MAX // 1000 + 1, 2**62, -(2**63), "2020")
_PAIR: Final = {"fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]}
_NEST: Final = {"fields": [
    {"type": "int32", "optional": True, "field": "a"},
    {"type": "int64", "optional": True, "name": lt.MICRO_TIMESTAMP, "field": "at"},
    {"type": "int32", "optional": True, "name": lt.DATE, "field": "on"},
]}  # fmt: skip


def _f32(r: random.Random) -> float:
    return float(np.float32(r.uniform(-1e6, 1e6)))


def _f64(r: random.Random) -> float:
    return r.choice((r.uniform(-1e300, 1e300), -0.0, 5e-324, 1e308))


def _vsd(r: random.Random) -> dict[str, Any]:
    return {"scale": r.randint(0, 20), "value": b64_int(r.randint(-(10**30), 10**30))}


def _nested(r: random.Random) -> dict[str, Any]:
    return {"a": r.randint(-5, 5), "at": boundary_biased_int(r, US_MIN, US_MAX), "on": _DAYS(r)}


def _tags(r: random.Random) -> list[Any]:
    return [random_text(r, 4) for _ in range(r.randint(0, 3))]


def _stamps(r: random.Random) -> list[Any]:
    return [boundary_biased_int(r, US_MIN, US_MAX) for _ in range(r.randint(0, 2))]


def _attrs(r: random.Random) -> dict[str, Any]:
    return {random_text(r, 3): r.randint(-5, 5) for _ in range(r.randint(0, 3))}


# fmt: off
DEBEZIUM_COLUMNS: Final = (
    _column("id", "int32", None, _within(0, 30), ("7", 2**31, 1.5, True)),
    _column("tiny", "int8", None, _bits(8), (128, -129, "1")),
    _column("small", "int16", None, _bits(16), (2**15, [1])),
    _column("big", "int64", None, _bits(64), ("9", 1.0, 2**63, {"a": 1})),
    _column("f32", "float", None, _f32, ("1.0", True, [1.0])),
    _column("f64", "double", None, _f64, ("x", False)),
    _column("flag", "boolean", None, lambda r: r.random() < 0.5, (0, 1, "true")),
    _column("name", "string", None, random_text, (5, {"a": 1}, [1], True)),
    _column("blob", "bytes", None, _b64(12), ("not base64!", "QQ", 5)),
    _column("day", "int32", lt.DATE, _DAYS, _BAD_DAYS),
    _column("cday", "int32", lt.CONNECT_DATE, _DAYS, _BAD_DAYS),
    _column("t_ms", "int32", lt.TIME, _within(0, 86_399_999), (-1, 86_400_000, 2**31 - 1, "12:00")),
    _column("ct_ms", "int32", lt.CONNECT_TIME, _within(0, 86_399_999), (-1, 86_400_000)),
    _column("t_us", "int64", lt.MICRO_TIME, _within(0, 86_399_999_999), (-1, 86_400_000_000, 2**62)),
    _column("t_ns", "int64", lt.NANO_TIME, _within(0, 86_399_999_999_999), (-1, 86_400_000_000_000)),
    _column("ts_ms", "int64", lt.TIMESTAMP, _MILLIS, _BAD_MILLIS),
    _column("cts", "int64", lt.CONNECT_TIMESTAMP, _MILLIS, _BAD_MILLIS),
    _column("ts_us", "int64", lt.MICRO_TIMESTAMP, _within(US_MIN, US_MAX), (US_MAX + 1, US_MIN - 1)),
    _column("ts_ns", "int64", lt.NANO_TIMESTAMP, _bits(64), ("1", 1.5, 2**64 - 1)),
    _column("zts", "string", lt.ZONED_TIMESTAMP, random_zoned_timestamp,
            ("10000-01-01T00:00:00Z", "2020-01-01T00:00:00", "junk", "9999-12-31T23:59:59-01:00", 5)),
    _column("price", "bytes", lt.DECIMAL, _decimal(10), (b64_int(10**10), b64_int(-(10**12)), "", "!", 1.5),
            parameters={"scale": "2", "connect.decimal.precision": "10"}),
    _column("wide", "bytes", lt.DECIMAL, _decimal(50), (b64_int(10**50), b64_int(-(10**80))),
            parameters={"scale": "5", "connect.decimal.precision": "50"}),
    _column("vsd", "struct", lt.VARIABLE_SCALE_DECIMAL, _vsd,
            ({"scale": 10**6, "value": "AQ=="}, {"scale": "2", "value": "AQ=="}, {"scale": 1}, "1"), **_PAIR),
    _column("js", "string", "io.debezium.data.Json", lambda r: orjson.dumps(random_text(r)).decode(),
            (1, {})),
    _column("uid", "string", "io.debezium.data.Uuid", lambda r: str(uuid.UUID(int=r.getrandbits(128))), (1,)),
    _column("bits", "bytes", "io.debezium.data.Bits", _b64(1), ("%%",)),
    _column("nested", "struct", None, _nested, (5, {"a": "x"}, {"at": US_MAX + 1}, {"on": 10**7}), **_NEST),
    _column("tags", "array", None, _tags, ("x", [1], {"a": "b"}), items={"type": "string", "optional": True}),
    _column("stamps", "array", None, _stamps, ([US_MAX + 1], ["x"]),
            items={"type": "int64", "optional": True, "name": lt.MICRO_TIMESTAMP}),
    _column("attrs", "map", None, _attrs, ([1, 2], [["k"]], {"k": "v"}, 7),
            keys={"type": "string"}, values={"type": "int64", "optional": True}),
)
# fmt: on
"""The generated tables' columns: every Connect and Debezium logical type the decoder reads."""

_SOURCE: Final = {"version": "2.5", "connector": "mysql", "name": "fuzz", "db": "shop", "table": "items"}


RowPools = dict[tuple[str, ...], list[dict[str, Any]]]
"""Valid rows drawn so far in a run, by table columns."""


@dataclass(frozen=True, slots=True)
class DebeziumTable:
    """A generated source table: some of :data:`DEBEZIUM_COLUMNS` (always ``id``) and how messages look."""

    columns: tuple[DebeziumColumn, ...]
    with_block: bool

    @property
    def row_block(self) -> dict[str, Any]:
        fields = [{**c.schema, "field": c.name} for c in self.columns]
        return {"type": "struct", "optional": True, "name": "fuzz.Value", "fields": fields}

    def envelope_block(self) -> dict[str, Any]:
        row = self.row_block
        return {
            "type": "struct",
            "name": "fuzz.Envelope",
            "fields": [
                {**row, "field": "before"},
                {**row, "field": "after"},
                {"type": "struct", "field": "source", "fields": []},
                {"type": "string", "field": "op"},
                {"type": "int64", "optional": True, "field": "ts_ms"},
            ],
        }

    def arrow_schema(self) -> pa.Schema:
        return debezium_schema_to_arrow(self.row_block)

    def row(self, rng: random.Random, key: int, pools: RowPools) -> dict[str, Any]:
        """A valid row: mostly one of a pool drawn for the table (drawing costs more than decoding)."""
        pool = pools.setdefault(tuple(c.name for c in self.columns), [])
        if len(pool) < 24 or rng.random() < 0.1:
            pool.append({c.name: None if rng.random() < 0.08 else c.valid(rng) for c in self.columns})
            del pool[:-24]
        return {**rng.choice(pool), "id": key}


def new_debezium_table(rng: random.Random) -> DebeziumTable:
    """A table of ``id`` and some other columns (only flat ones unless its messages carry a schema block)."""
    with_block = rng.random() < 0.6
    pool = [c for c in DEBEZIUM_COLUMNS[1:] if with_block or c.flat]
    chosen = pool if rng.random() < 0.15 else rng.sample(pool, rng.randint(1, min(8, len(pool))))
    return DebeziumTable((DEBEZIUM_COLUMNS[0], *chosen), with_block)


def _payload(rng: random.Random, table: DebeziumTable, seq: int, pools: RowPools) -> dict[str, Any]:
    op = rng.choice("ccrruuuud")
    key = rng.randint(0, 30)
    before = table.row(rng, key, pools) if op in "ud" else None
    after = table.row(rng, key, pools) if op != "d" else None
    if before is not None and op == "u" and rng.random() < 0.15:
        before = {"id": key}  # key-only before-image (replica identity default)
    source = {**_SOURCE, "file": "mysql-bin.000003", "pos": 4 + seq * 97, "ts_ms": 1_700_000_000_000 + seq}
    payload: dict[str, Any] = {"before": before, "after": after, "source": source, "op": op, "ts_ms": seq}
    if rng.random() < 0.3:
        payload["transaction"] = {
            "id": f"tx{seq // 5}",
            "total_order": seq % 5 + 1,
            "data_collection_order": 1,
        }
    return payload


def message_object(rng: random.Random, table: DebeziumTable, seq: int, pools: RowPools) -> dict[str, Any]:
    """A valid message of ``table``, parsed: a change (in an envelope if the table has a schema block)
    or, now and then, a transaction marker."""
    roll = rng.random()
    if roll < 0.02:
        return {"status": rng.choice(("BEGIN", "END")), "id": f"tx{seq}", "event_count": 1}
    payload = _payload(rng, table, seq, pools)
    if table.with_block:
        return {"schema": table.envelope_block(), "payload": payload}
    return payload


def payload_of(obj: Any) -> dict[str, Any] | None:
    """The payload of a parsed message, enveloped or not; ``None`` if it has no payload object."""
    if type(obj) is not dict:
        return None
    inner = obj.get("payload") if "op" not in obj and "payload" in obj else obj
    return inner if type(inner) is dict else None


def row_images(obj: Any) -> list[dict[str, Any]]:
    """The ``after`` and ``before`` images of a parsed message that are objects."""
    payload = payload_of(obj)
    if payload is None:
        return []
    return [image for name in ("after", "before") if type(image := payload.get(name)) is dict]
