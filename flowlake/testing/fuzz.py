"""Seeded mutation fuzzers for the Debezium decoder, the table API and CDC ingestion.

Hypothesis shrinks failures well but costs milliseconds per example. These fuzzers start from valid
inputs and mutate them with one ``random.Random(seed)``, so a run of 100k inputs takes seconds to a
minute and its seed reproduces it exactly. The suite (``tests/fuzz``) and ``benchmarks/fuzz.py`` share
them. Every input is checked:

* :func:`fuzz_decoder`: valid Debezium messages (the caller's corpus, such as the peer vectors, plus
  generated envelopes with every logical type the decoder reads) with structural damage: dropped,
  duplicated and retyped fields, wrong ops and schema blocks, truncated JSON, random bytes, invalid
  UTF-8, deep nesting, huge numbers and strings, NaN/Infinity tokens, out-of-range values, null keys.
  ``decode`` raises nothing but a ``FlowlakeError`` with a short message, and an undamaged message
  decodes; ``convert=False`` fails only where ``convert=True`` does; ``decode_batch`` rejects every
  message that ``decode`` rejects alone, and every message it accepts yields exactly the rows it
  yields alone (with typed messages, it accepts every message ``decode`` accepts, barring the
  documented batch-only reasons).
* :func:`fuzz_table_api`: Arrow batches for ``upsert``, ``delete``, ``apply``, ``update_columns`` and
  ``append`` on tables of every column type, valid or with one defect (missing, extra, duplicate or
  wrongly typed columns, null and NaN keys, values out of range, invalid UTF-8, bad ``_kind``, not a
  table at all). A defect raises the ``FlowlakeError`` subclass it calls for and commits nothing;
  anything else commits exactly the changes a dict oracle predicts, and reads (also after
  compaction) equal the oracle.
* :func:`fuzz_ingest`: JSONL files mixing good Debezium records with records that are bad by
  construction, through :class:`~flowlake.cdc.ingest.OdsIngester`. Ingestion never stops; every bad
  record is in ``<ns>._dead_letter`` with a reason naming what is wrong and its file offset; the ODS
  table equals both a run with only the good records and a dict oracle of them.

A violation does not stop a run: the report counts it in :attr:`FuzzReport.crashes` and keeps the
first ones, with the input, in :attr:`FuzzReport.failures`.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson
import pyarrow as pa

from flowlake.cdc import logical_types as lt
from flowlake.cdc.change import Change
from flowlake.cdc.debezium import DecodedBatch, debezium_schema_to_arrow, decode, decode_batch
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import (
    FlowlakeError,
    InvalidArgumentError,
    InvalidChangelogError,
    NullKeyError,
    SchemaMismatchError,
)

if TYPE_CHECKING:
    from flowlake.table.table import LakeTable

MAX_MESSAGE_CHARS: Final = 2000
"""Longest error message allowed: a message quotes the bad input, it does not copy it."""

_KEEP_FAILURES: Final = 50
_DAY_MIN, _DAY_MAX = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31
_US_MIN, _US_MAX = -62_135_596_800_000_000, 253_402_300_799_999_999  # the same years, in µs
_INT64: Final = (-(2**63), 2**63 - 1)
_EPOCH: Final = dt.datetime(1970, 1, 1)
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_ALPHABET: Final = (
    "aZ09 _-.,'\"\\/\t\n"
    + "\u00e9\u00fc\u00df\u4e2d\u6587\u0627\u05d0\u200f\u0301\ufeff\u0000\U0001f600\U0001d11e"
)


# --- report ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FuzzFailure:
    """One violation: an exception other than ``FlowlakeError``, or a broken invariant.

    Attributes:
        index: Number of the input (in generation order) that broke it.
        check: What was violated.
        detail: The exception or the difference found.
        input: The input, shortened.
    """

    index: int
    check: str
    detail: str
    input: str


@dataclass(slots=True)
class FuzzReport:
    """What a fuzz run did and found.

    Attributes:
        target: ``decoder``, ``table_api`` or ``ingest``.
        seed: The seed that reproduces the run.
        inputs: Inputs tried (messages, API calls or JSONL records).
        accepted: Inputs that were decoded, committed or ingested.
        rejected: Rejected inputs by error class (ingestion: by kind of defect).
        dead_letters: Records found in the dead-letter table (ingestion only).
        commits: Commits made (table API and ingestion).
        crashes: Exceptions other than ``FlowlakeError`` plus broken invariants; 0 in a good run.
        failures: The first violations, for the report.
        seconds: Wall time of the run.
    """

    target: str
    seed: int
    inputs: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    commits: int = 0
    crashes: int = 0
    failures: list[FuzzFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def inputs_per_second(self) -> float:
        """Throughput of the run."""
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def reject(self, error: BaseException | str) -> None:
        """Count one rejected input under its error class (or the given label)."""
        name = error if isinstance(error, str) else type(error).__name__
        self.rejected[name] = self.rejected.get(name, 0) + 1

    def fail(self, index: int, check: str, detail: str, value: object) -> None:
        """Record a violation."""
        self.crashes += 1
        if len(self.failures) < _KEEP_FAILURES:
            self.failures.append(FuzzFailure(index, check, detail[:3000], _clip(value)))

    def figures(self) -> dict[str, object]:
        """The run's figures, flat, for printing and JSON."""
        return {
            "seed": self.seed,
            "inputs": self.inputs,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            **{f"rejected {k}": v for k, v in sorted(self.rejected.items())},
            "dead letters": self.dead_letters,
            "commits": self.commits,
            "crashes": self.crashes,
            "seconds": round(self.seconds, 2),
            "inputs/s": round(self.inputs_per_second),
        }

    def describe(self) -> str:
        """A summary naming the seed, then the kept violations."""
        head = (
            f"{self.target} fuzz, seed {self.seed} (rerun with FLOWLAKE_FUZZ_SEED={self.seed}): "
            f"{self.crashes} violation(s) in {self.inputs} inputs"
        )
        lines = [f"  #{f.index} {f.check}: {f.detail}\n      input: {f.input}" for f in self.failures]
        return "\n".join([head, *lines])

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` with :meth:`describe` if the run found any violation."""
        if self.crashes:
            raise AssertionError(self.describe())


def _clip(value: object, limit: int = 400) -> str:
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value[:limit]))
        return text + (f"... ({len(value)} bytes)" if len(value) > limit else "")
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _check_message(report: FuzzReport, index: int, exc: BaseException, value: object) -> None:
    text = str(exc)
    if not text.strip() or len(text) > MAX_MESSAGE_CHARS:
        detail = f"{type(exc).__name__} with a {len(text)}-character message: {text[:300]!r}"
        report.fail(index, "unclear error message", detail, value)


def _edge(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi], often a bound or a small number."""
    roll = rng.random()
    if roll < 0.05:
        return lo
    if roll < 0.1:
        return hi
    if roll < 0.35:
        return rng.randint(max(lo, -1000), min(hi, 1000))
    return rng.randint(lo, hi)


def _text(rng: random.Random, longest: int = 12) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, longest)))


def _b64_int(number: int) -> str:
    return base64.b64encode(number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True)).decode()


# --- Debezium messages ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _DbzColumn:
    """A column of the generated Debezium tables: its Connect schema, valid values and bad ones."""

    name: str
    schema: dict[str, Any]
    valid: Callable[[random.Random], Any]
    invalid: tuple[Any, ...]
    flat: bool = True
    """Whether an explicit Arrow schema reads it too (nested and variable-scale values it does not)."""


def _zoned(rng: random.Random) -> str:
    moment = _EPOCH + dt.timedelta(
        microseconds=rng.randint(_US_MIN + 86_400_000_000, _US_MAX - 86_400_000_000)
    )
    minutes = rng.choice((0, 0, 330, -480, 840, -720))
    zone = dt.timezone(dt.timedelta(minutes=minutes))
    text = moment.replace(tzinfo=zone).isoformat()
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def _column(
    name: str,
    ctype: str,
    logical: str | None,
    valid: Callable[[random.Random], Any],
    invalid: tuple[Any, ...],
    **schema: Any,
) -> _DbzColumn:
    block = {"type": ctype, "optional": name != "id", **({"name": logical} if logical else {}), **schema}
    flat = ctype not in ("struct", "array", "map")
    return _DbzColumn(name, block, valid, invalid, flat)


def _within(lo: int, hi: int) -> Callable[[random.Random], int]:
    return lambda r: _edge(r, lo, hi)


def _bits(bits: int) -> Callable[[random.Random], int]:
    return _within(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def _decimal(digits: int) -> Callable[[random.Random], str]:
    return lambda r: _b64_int(_edge(r, 1 - 10**digits, 10**digits - 1))


def _b64(size: int) -> Callable[[random.Random], str]:
    return lambda r: base64.b64encode(r.randbytes(r.randint(0, size))).decode()


_DAYS, _MILLIS = _within(_DAY_MIN, _DAY_MAX), _within(_US_MIN // 1000, _US_MAX // 1000)
_BAD_DAYS: Final = (_DAY_MAX + 1, _DAY_MIN - 1, 2**31 - 1, -(2**31), "2020-01-01", 1.5)
_BAD_MILLIS: Final = (_US_MAX // 1000 + 1, 2**62, -(2**63), "2020")
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
    return {"scale": r.randint(0, 20), "value": _b64_int(r.randint(-(10**30), 10**30))}


def _nested(r: random.Random) -> dict[str, Any]:
    return {"a": r.randint(-5, 5), "at": _edge(r, _US_MIN, _US_MAX), "on": _DAYS(r)}


def _tags(r: random.Random) -> list[Any]:
    return [_text(r, 4) for _ in range(r.randint(0, 3))]


def _stamps(r: random.Random) -> list[Any]:
    return [_edge(r, _US_MIN, _US_MAX) for _ in range(r.randint(0, 2))]


def _attrs(r: random.Random) -> dict[str, Any]:
    return {_text(r, 3): r.randint(-5, 5) for _ in range(r.randint(0, 3))}


# fmt: off
DEBEZIUM_COLUMNS: Final = (
    _column("id", "int32", None, _within(0, 30), ("7", 2**31, 1.5, True)),
    _column("tiny", "int8", None, _bits(8), (128, -129, "1")),
    _column("small", "int16", None, _bits(16), (2**15, [1])),
    _column("big", "int64", None, _bits(64), ("9", 1.0, 2**63, {"a": 1})),
    _column("f32", "float", None, _f32, ("1.0", True, [1.0])),
    _column("f64", "double", None, _f64, ("x", False)),
    _column("flag", "boolean", None, lambda r: r.random() < 0.5, (0, 1, "true")),
    _column("name", "string", None, _text, (5, {"a": 1}, [1], True)),
    _column("blob", "bytes", None, _b64(12), ("not base64!", "QQ", 5)),
    _column("day", "int32", lt.DATE, _DAYS, _BAD_DAYS),
    _column("cday", "int32", lt.CONNECT_DATE, _DAYS, _BAD_DAYS),
    _column("t_ms", "int32", lt.TIME, _within(0, 86_399_999), (-1, 86_400_000, 2**31 - 1, "12:00")),
    _column("ct_ms", "int32", lt.CONNECT_TIME, _within(0, 86_399_999), (-1, 86_400_000)),
    _column("t_us", "int64", lt.MICRO_TIME, _within(0, 86_399_999_999), (-1, 86_400_000_000, 2**62)),
    _column("t_ns", "int64", lt.NANO_TIME, _within(0, 86_399_999_999_999), (-1, 86_400_000_000_000)),
    _column("ts_ms", "int64", lt.TIMESTAMP, _MILLIS, _BAD_MILLIS),
    _column("cts", "int64", lt.CONNECT_TIMESTAMP, _MILLIS, _BAD_MILLIS),
    _column("ts_us", "int64", lt.MICRO_TIMESTAMP, _within(_US_MIN, _US_MAX), (_US_MAX + 1, _US_MIN - 1)),
    _column("ts_ns", "int64", lt.NANO_TIMESTAMP, _bits(64), ("1", 1.5, 2**64 - 1)),
    _column("zts", "string", lt.ZONED_TIMESTAMP, _zoned,
            ("10000-01-01T00:00:00Z", "2020-01-01T00:00:00", "junk", "9999-12-31T23:59:59-01:00", 5)),
    _column("price", "bytes", lt.DECIMAL, _decimal(10), (_b64_int(10**10), _b64_int(-(10**12)), "", "!", 1.5),
            parameters={"scale": "2", "connect.decimal.precision": "10"}),
    _column("wide", "bytes", lt.DECIMAL, _decimal(50), (_b64_int(10**50), _b64_int(-(10**80))),
            parameters={"scale": "5", "connect.decimal.precision": "50"}),
    _column("vsd", "struct", lt.VARIABLE_SCALE_DECIMAL, _vsd,
            ({"scale": 10**6, "value": "AQ=="}, {"scale": "2", "value": "AQ=="}, {"scale": 1}, "1"), **_PAIR),
    _column("js", "string", "io.debezium.data.Json", lambda r: orjson.dumps(_text(r)).decode(), (1, {})),
    _column("uid", "string", "io.debezium.data.Uuid", lambda r: str(uuid.UUID(int=r.getrandbits(128))), (1,)),
    _column("bits", "bytes", "io.debezium.data.Bits", _b64(1), ("%%",)),
    _column("nested", "struct", None, _nested, (5, {"a": "x"}, {"at": _US_MAX + 1}, {"on": 10**7}), **_NEST),
    _column("tags", "array", None, _tags, ("x", [1], {"a": "b"}), items={"type": "string", "optional": True}),
    _column("stamps", "array", None, _stamps, ([_US_MAX + 1], ["x"]),
            items={"type": "int64", "optional": True, "name": lt.MICRO_TIMESTAMP}),
    _column("attrs", "map", None, _attrs, ([1, 2], [["k"]], {"k": "v"}, 7),
            keys={"type": "string"}, values={"type": "int64", "optional": True}),
)
# fmt: on
"""The generated tables' columns: every Connect and Debezium logical type the decoder reads."""

_SOURCE: Final = {"version": "2.5", "connector": "mysql", "name": "fuzz", "db": "shop", "table": "items"}


_Pools = dict[tuple[str, ...], list[dict[str, Any]]]
"""Valid rows drawn so far in a run, by table columns."""


@dataclass(frozen=True, slots=True)
class _DbzTable:
    """A generated source table: some of :data:`DEBEZIUM_COLUMNS` (always ``id``) and how messages look."""

    columns: tuple[_DbzColumn, ...]
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

    def row(self, rng: random.Random, key: int, pools: _Pools) -> dict[str, Any]:
        """A valid row: mostly one of a pool drawn for the table (drawing costs more than decoding)."""
        pool = pools.setdefault(tuple(c.name for c in self.columns), [])
        if len(pool) < 24 or rng.random() < 0.1:
            pool.append({c.name: None if rng.random() < 0.08 else c.valid(rng) for c in self.columns})
            del pool[:-24]
        return {**rng.choice(pool), "id": key}


def _new_dbz_table(rng: random.Random) -> _DbzTable:
    with_block = rng.random() < 0.6
    pool = [c for c in DEBEZIUM_COLUMNS[1:] if with_block or c.flat]
    chosen = pool if rng.random() < 0.15 else rng.sample(pool, rng.randint(1, min(8, len(pool))))
    return _DbzTable((DEBEZIUM_COLUMNS[0], *chosen), with_block)


def _payload(rng: random.Random, table: _DbzTable, seq: int, pools: _Pools) -> dict[str, Any]:
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


def _message_object(rng: random.Random, table: _DbzTable, seq: int, pools: _Pools) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.02:
        return {"status": rng.choice(("BEGIN", "END")), "id": f"tx{seq}", "event_count": 1}
    payload = _payload(rng, table, seq, pools)
    if table.with_block:
        return {"schema": table.envelope_block(), "payload": payload}
    return payload


# structural mutations of a parsed message ---------------------------------------------------------

_BAD_OPS: Final = ("x", "", "C", "t", "m", None, 1, ["c"], "cc", "d ")


def _random_node(rng: random.Random, obj: Any) -> tuple[Any, Any] | None:
    """A (container, key) pair found by a random walk down a JSON tree; ``None`` for a scalar."""
    node: tuple[Any, Any] | None = None
    while type(obj) in (dict, list) and obj and (node is None or rng.random() < 0.7):
        key = rng.choice(list(obj)) if type(obj) is dict else rng.randrange(len(obj))
        node, obj = (obj, key), obj[key]
    return node


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.12:
        return None
    if roll < 0.22:
        return rng.random() < 0.5
    if roll < 0.4:
        return rng.choice((0, -1, 2**31, -(2**63), 2**64 - 1, rng.randint(-(10**6), 10**6)))
    if roll < 0.5:
        return rng.choice((0.5, -0.0, 1e308, -1e-308, rng.uniform(-1e6, 1e6)))
    if roll < 0.75 or depth > 2:
        return _text(rng)
    if roll < 0.87:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {_text(rng, 4): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _payload_of(obj: Any) -> dict[str, Any] | None:
    if type(obj) is not dict:
        return None
    inner = obj.get("payload") if "op" not in obj and "payload" in obj else obj
    return inner if type(inner) is dict else None


def _images(obj: Any) -> list[dict[str, Any]]:
    payload = _payload_of(obj)
    if payload is None:
        return []
    return [image for name in ("after", "before") if type(image := payload.get(name)) is dict]


def _mutate_tree(rng: random.Random, obj: Any, table: _DbzTable) -> Any:
    """Apply one structural mutation to a parsed message (in place where possible)."""
    kind = rng.randrange(11)
    payload, images = _payload_of(obj), _images(obj)
    if kind < 4 and images:
        _mutate_image(rng, rng.choice(images), table, kind)
    elif kind == 4 and type(obj) is dict and type(obj.get("schema")) is dict:
        _mutate_schema_block(rng, obj["schema"])
    elif kind == 5 and payload is not None:
        payload["op"] = rng.choice((*_BAD_OPS, "c", "u", "d", "r"))
    elif kind == 6 and payload is not None:
        field_name = rng.choice(("before", "after", "source", "transaction", "ts_ms", "payload"))
        payload[field_name] = _random_json(rng)
    elif kind == 7 and type(obj) is dict:  # envelope damage
        return rng.choice(
            ({"schema": obj.get("schema"), "payload": None}, {"payload": [obj]}, [obj], payload)
        )
    elif (node := _random_node(rng, obj)) is not None:
        container, key = node
        if kind == 8 and type(container) is dict:
            del container[key]
        else:
            container[key] = _random_json(rng)
    return obj


def _mutate_image(rng: random.Random, image: dict[str, Any], table: _DbzTable, kind: int) -> None:
    if kind < 2:  # an out-of-range or wrongly typed value of a known column (a private copy of it)
        column = rng.choice(table.columns)
        image[column.name] = orjson.loads(orjson.dumps(rng.choice(column.invalid)))
    elif kind == 2:  # a null or missing key
        if rng.random() < 0.5:
            image["id"] = None
        else:
            image.pop("id", None)
    else:  # a column the schema does not know, maybe a reserved name
        image[rng.choice(("zz_extra", "_kind", "_seq", "Id"))] = _random_json(rng)


def _mutate_schema_block(rng: random.Random, block: dict[str, Any]) -> None:
    fields = block.get("fields")
    if type(fields) is not list or not fields or rng.random() < 0.1:
        block["fields"] = rng.choice(([], "fields", None, [1]))
        return
    row = rng.choice(fields)
    inner = row.get("fields") if type(row) is dict else None
    if type(inner) is not list or not inner:
        return
    target = rng.choice(inner)
    if type(target) is not dict:
        return
    roll = rng.randrange(6)
    if roll == 0:
        target["type"] = rng.choice(("int64", "string", "bytes", "struct", "array", "unknown", 5, None))
    elif roll == 1:
        target["name"] = rng.choice((lt.DATE, lt.ZONED_TIMESTAMP, lt.DECIMAL, lt.TIME, "no.such.Type", 7))
    elif roll == 2:
        target["parameters"] = rng.choice(
            ({"scale": "x"}, {"scale": "-1"}, {"scale": 10**6}, {"connect.decimal.precision": "99"}, [1])
        )
    elif roll == 3:
        target["field"] = rng.choice((None, 5, "", "id"))
    elif roll == 4:
        target.pop("type", None)
    else:
        inner.append(dict(target))  # the same field twice


# byte-level mutations of an encoded message --------------------------------------------------------

_NUMBER: Final = re.compile(rb"(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING: Final = re.compile(rb':"[^"\\]*"')
_BAD_NUMBERS: Final = (
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"18446744073709551616", b"-9223372036854775809",
    b"123456789012345678901234567890", b"1" + b"0" * 400, b"0.1e-400", b"01", b"1.", b"-", b"+1",
)  # fmt: skip


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Apply one byte-level mutation."""
    kind = rng.randrange(10)
    if kind == 0 and data:  # truncated
        return data[: rng.randrange(len(data))]
    if kind == 1 and data:  # flipped bytes
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:  # duplicate keys (the last one wins in JSON parsers)
        key = rng.choice((b'"op":"d",', b'"after":null,', b'"payload":1,', b'"op":"c",', b'"schema":{},'))
        return data.replace(b"{", b"{" + key, 1)
    if kind == 3:
        return rng.choice((b"\xef\xbb\xbf" + data, b" \t" + data + b"\r\n", data + b"x", data + data))
    if kind == 4:
        return rng.choice(
            (rng.randbytes(rng.randint(0, 40)), b"", b"   ", b"null", b"[]", b"1", b'"x"', b"{}")
        )
    return _mutate_token(rng, data, kind) or data


def _mutate_token(rng: random.Random, data: bytes, kind: int) -> bytes | None:
    """Replace a number or extend a string of the message; ``None`` if it has none."""
    matches = list((_NUMBER if kind in (5, 6, 7) else _STRING).finditer(data))
    if not matches:
        return None
    m = rng.choice(matches)
    if kind in (5, 6):  # a number token JSON does not have, or that no column type holds
        return data[: m.start()] + rng.choice(_BAD_NUMBERS) + data[m.end() :]
    if kind == 7:  # deep nesting in place of a value
        depth = rng.choice((40, 300, 1100))
        return data[: m.start()] + b"[" * depth + b"1" + b"]" * depth + data[m.end() :]
    if kind == 8:  # invalid UTF-8, an unpaired surrogate or a NUL inside a string
        bad = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\\udfff", b"\\ud83d x", b"\x00"))
        return data[: m.end() - 1] + bad + data[m.end() - 1 :]
    huge = rng.choice((b"x", "\U0001f600".encode(), b"\\u00e9")) * rng.choice((5_000, 60_000))
    return data[: m.end() - 1] + huge + data[m.end() - 1 :]


def _strip_metadata(obj: Any) -> Any:
    """The message without ``source``/``ts_ms``/``transaction``, which only ``decode`` reads."""
    payload = _payload_of(obj)
    if payload is not None:
        for name in ("source", "ts_ms", "transaction"):
            payload.pop(name, None)
    return obj


@dataclass(slots=True)
class _Message:
    """One fuzz input of the decoder."""

    raw: bytes
    damaged: bool
    stripped: bytes | None
    """``raw`` without metadata (``raw`` itself if it is not JSON; ``None`` if too deep to rewrite)."""
    obj: Any = None
    """What ``raw`` parses to, without metadata; ``None`` if it does not parse."""


def _finish(raw: bytes, damaged: bool) -> _Message:
    try:
        obj = _strip_metadata(orjson.loads(raw))  # what the checks read of it is not metadata
    except orjson.JSONDecodeError:
        return _Message(raw, damaged, raw)
    try:
        stripped: bytes | None = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        try:
            stripped = json.dumps(obj, ensure_ascii=False).encode()
        except RecursionError:
            stripped = None
    return _Message(raw, damaged, stripped, obj)


def _generated_batch(
    rng: random.Random, table: _DbzTable, size: int, seq: int, pools: _Pools
) -> list[_Message]:
    messages = []
    for i in range(size):
        obj: Any = _message_object(rng, table, seq + i, pools)
        damage = 0 if rng.random() < 0.45 else rng.choice((1, 1, 1, 2, 3))
        if damage:
            obj = orjson.loads(orjson.dumps(obj))  # mutations work in place: never on shared blocks
        for _ in range(damage):
            obj = _mutate_tree(rng, obj, table)
        raw = orjson.dumps(obj)
        if damage and rng.random() < 0.35:
            raw = _mutate_bytes(rng, raw)
        messages.append(_finish(raw, damage > 0))
    return messages


def _corpus_batch(rng: random.Random, group: Sequence[bytes], size: int) -> list[_Message]:
    table = _DbzTable((DEBEZIUM_COLUMNS[0],), with_block=False)
    messages = []
    for _ in range(size):
        raw = rng.choice(group)
        if rng.random() < 0.45:
            messages.append(_finish(raw, False))
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            messages.append(_finish(_mutate_bytes(rng, raw), True))
            continue
        for _ in range(rng.choice((1, 1, 2))):
            obj = _mutate_tree(rng, obj, table)
        data = orjson.dumps(obj)
        messages.append(_finish(_mutate_bytes(rng, data) if rng.random() < 0.3 else data, True))
    return messages


# comparing what decode and decode_batch produce ----------------------------------------------------


def _canon_arrow(array: pa.Array) -> list[Any]:
    """Python values of an Arrow array, with temporal values as integers (µs, or days for dates)."""
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_time(kind):
        per = _PER_SECOND[kind.unit]
        ints = array.cast(pa.int32() if kind.bit_width == 32 else pa.int64()).to_pylist()
        return [None if v is None else v * 1_000_000 // per for v in ints]
    if pa.types.is_date32(kind):
        return list(array.cast(pa.int32()).to_pylist())
    if pa.types.is_struct(kind):
        children = {kind.field(i).name: _canon_arrow(child) for i, child in enumerate(array.flatten())}
        valid = array.is_valid().to_pylist()
        return [{k: v[i] for k, v in children.items()} if valid[i] else None for i in range(len(array))]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = _canon_arrow(array.flatten())
        out: list[Any] = []
        start = 0
        for length in array.value_lengths().to_pylist():
            if length is None:
                out.append(None)
            else:
                out.append(values[start : start + length])
                start += length
        return out
    if pa.types.is_map(kind):
        return [None if v is None else [(k, x) for k, x in v] for v in array.to_pylist()]
    return list(array.to_pylist())


def _canon_python(value: Any, kind: pa.DataType) -> Any:
    """A value from ``decode`` in the form :func:`_canon_arrow` gives for a column of ``kind``."""
    if value is None:
        return None
    if pa.types.is_timestamp(kind) and isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return (aware - _EPOCH_UTC) // dt.timedelta(microseconds=1)
    if pa.types.is_time(kind) and isinstance(value, dt.time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    if pa.types.is_date32(kind) and isinstance(value, dt.date):
        return (value - _EPOCH_DATE).days
    if pa.types.is_floating(kind) and type(value) in (int, float):
        if kind == pa.float32():
            with np.errstate(over="ignore"):
                return float(np.float32(value))
        return float(value)
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and isinstance(value, Decimal):
        return format(value, "f")
    if pa.types.is_struct(kind) and type(value) is dict:
        return {f.name: _canon_python(value.get(f.name), f.type) for f in kind}
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and type(value) is list:
        return [_canon_python(v, kind.value_type) for v in value]
    if pa.types.is_map(kind) and type(value) is dict:
        return [(_canon_python(k, kind.key_type), _canon_python(v, kind.item_type)) for k, v in value.items()]
    return value


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN, -0.0 equals 0.0 (as in Arrow) and a bool never equals a number."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if type(a) in (list, tuple) and type(b) in (list, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is bool or type(b) is bool:
        return a is b
    return bool(a == b)


def _outcome(
    report: FuzzReport, index: int, message: bytes, check: str, **options: Any
) -> list[Change] | FlowlakeError | None:
    """``decode`` the message: its changes, the FlowlakeError it raised, or ``None`` after a crash."""
    try:
        return decode(message, **options)
    except FlowlakeError as exc:
        _check_message(report, index, exc, message)
        return exc
    except Exception as exc:  # anything else is what the fuzzer hunts
        report.fail(index, f"{check} raised {type(exc).__name__}", str(exc), message)
        return None


@dataclass(frozen=True, slots=True)
class _BatchCase:
    """How a batch is decoded: with an explicit schema or not, with a primary key or not."""

    schema: pa.Schema | None
    key: tuple[str, ...] | None


_BATCH_ONLY_REASONS: Final = ("changes type within the batch", "not in the given schema", "reserved")
"""Why decode_batch may reject a message that decode accepts alone (see the debezium module docs)."""


_BLOCK_NAMES: dict[bytes, frozenset[str] | None] = {}


def _block_names(block: Any) -> frozenset[str] | None:
    """The row fields a schema block declares (``None`` if the block is malformed), cached."""
    try:
        key = orjson.dumps(block)
    except orjson.JSONEncodeError:  # nested too deeply to write (the row struct may still be fine)
        key = b""
    if key not in _BLOCK_NAMES:
        if len(_BLOCK_NAMES) > 256:
            _BLOCK_NAMES.clear()
        names = _row_struct_names(block)
        if not key:
            return names
        _BLOCK_NAMES[key] = names
    return _BLOCK_NAMES[key]


def _row_struct_names(block: Any) -> frozenset[str] | None:
    """The fields of the row struct (``after``, else ``before``) of an envelope block, as decode finds it."""
    fields = block.get("fields") if type(block) is dict else None
    for name in ("after", "before"):
        for item in fields if type(fields) is list else ():
            if type(item) is dict and item.get("field") == name:
                try:
                    return frozenset(d.name for d in lt.struct_decoders(item))
                except FlowlakeError:
                    return None
    return None


def _typed(message: _Message, case: _BatchCase) -> bool:
    """Whether every row field of the message is read by a known type (its schema block, or the schema)."""
    obj = message.obj
    images = _images(obj)
    if not images:
        return True
    block = obj.get("schema") if type(obj) is dict and "op" not in obj else None
    if block is not None:
        if case.schema is not None:
            return False
        names = _block_names(block)
        if names is None:
            return True  # the message fails on its block anyway
    elif case.schema is not None:
        names = frozenset(case.schema.names)
    else:
        return False
    return all(set(image) <= names for image in images)


@dataclass(frozen=True, slots=True)
class _Batch:
    """What decode_batch made of a batch: its reasons by message, its rows by message."""

    failed: dict[int, str]
    rows: dict[int, list[tuple[int, dict[str, Any], bool]]]
    schema: pa.Schema


def _check_batch(
    report: FuzzReport,
    first: int,
    messages: list[_Message],
    case: _BatchCase,
    blocks: bool,
    decoded: Sequence[list[Change] | FlowlakeError | None],
) -> None:
    """Check decode_batch against decode of each message alone (``decoded``: what it gave by default)."""
    raws = [m.raw for m in messages]
    try:
        result = decode_batch(raws, case.schema, primary_key=case.key)
    except Exception as exc:  # decode_batch reports bad messages; it raises only for bad arguments
        report.fail(first, f"decode_batch raised {type(exc).__name__}", str(exc), raws)
        return
    batch = _Batch({e.index: e.reason for e in result.errors}, _rows_by_message(result), result.table.schema)
    for i, reason in batch.failed.items():
        if not reason.strip() or len(reason) > MAX_MESSAGE_CHARS:
            detail = f"{len(reason)} chars: {reason[:300]!r}"
            report.fail(first + i, "unclear decode_batch reason", detail, raws[i])
    for i, message in enumerate(messages):
        known = decoded[i] if case.schema is None and case.key is None else None
        if isinstance(known, list):
            _check_in_batch(report, (first, i), message, known, case, blocks, batch)
        elif message.stripped is not None:
            options: dict[str, Any] = {"schema": case.schema, "primary_key": case.key}
            alone = _outcome(report, first + i, message.stripped, "decode", **options)
            _check_in_batch(report, (first, i), message, alone, case, blocks, batch)


def _check_in_batch(
    report: FuzzReport,
    where: tuple[int, int],
    message: _Message,
    alone: list[Change] | FlowlakeError | None,
    case: _BatchCase,
    blocks: bool,
    batch: _Batch,
) -> None:
    """One message of a batch against what decode made of it alone (``where``: first input, position)."""
    index, reason = sum(where), batch.failed.get(where[1])
    if alone is None:
        return
    if isinstance(alone, FlowlakeError):
        if reason is None:
            report.fail(index, "decode_batch accepts what decode rejects", str(alone), message.raw)
        return
    typed = (blocks or case.schema is not None) and _typed(message, case)
    if reason is not None:
        if typed and not any(r in reason for r in _BATCH_ONLY_REASONS):
            report.fail(index, "decode_batch rejects what decode accepts", reason, message.raw)
    elif typed or (not blocks and case.schema is None):
        _compare_rows(report, index, message, alone, batch.rows.get(where[1], []), batch.schema)


def _rows_by_message(batch: DecodedBatch) -> dict[int, list[tuple[int, dict[str, Any], bool]]]:
    table = batch.table
    columns = {name: _canon_arrow(table.column(name).combine_chunks()) for name in table.column_names}
    kinds = columns.pop(KIND_COLUMN)
    incomplete = set(batch.incomplete_rows)
    out: dict[int, list[tuple[int, dict[str, Any], bool]]] = {}
    for row, owner in enumerate(batch.message_index.to_pylist()):
        values = {name: column[row] for name, column in columns.items()}
        out.setdefault(owner, []).append((kinds[row], values, row not in incomplete))
    return out


def _compare_rows(
    report: FuzzReport,
    index: int,
    message: _Message,
    changes: list[Change],
    rows: list[tuple[int, dict[str, Any], bool]],
    schema: pa.Schema,
) -> None:
    names = [f for f in schema if f.name != KIND_COLUMN]
    expected = [
        (int(c.kind), {f.name: _canon_python(c.row.get(f.name), f.type) for f in names}, c.before_complete)
        for c in changes
    ]
    if len(expected) != len(rows) or not all(
        e[0] == r[0] and e[2] == r[2] and _same(e[1], r[1]) for e, r in zip(expected, rows, strict=False)
    ):
        detail = f"alone: {_clip(expected, 600)}; in the batch: {_clip(rows, 600)}"
        report.fail(index, "decode_batch rows differ from decode", detail, message.raw)


def _check_message_alone(
    report: FuzzReport, index: int, message: _Message
) -> list[Change] | FlowlakeError | None:
    """decode with and without conversion: only FlowlakeError, and consistent with each other."""
    converted = _outcome(report, index, message.raw, "decode")
    raw = _outcome(report, index, message.raw, "decode(convert=False)", convert=False)
    if converted is None or raw is None:
        return converted
    if isinstance(converted, FlowlakeError):
        report.reject(converted)
        if not message.damaged:
            report.fail(index, "decode rejects an undamaged message", str(converted), message.raw)
        return converted
    report.accepted += 1
    if isinstance(raw, FlowlakeError):
        report.fail(index, "convert=False rejects what convert=True accepts", str(raw), message.raw)
    elif [(c.kind, c.before_complete) for c in raw] != [(c.kind, c.before_complete) for c in converted]:
        report.fail(index, "convert=False changes the kinds", f"{raw!r} vs {converted!r}", message.raw)
    return converted


def fuzz_decoder(n: int, seed: int, *, corpus: Sequence[Sequence[bytes]] = ()) -> FuzzReport:
    """Fuzz :func:`~flowlake.cdc.decode` and :func:`~flowlake.cdc.decode_batch` with ``n`` messages.

    Args:
        n: Messages to try (each is decoded alone, in two ways, and within a batch).
        seed: Seed of the run.
        corpus: Valid messages to start from, one sequence per source table (e.g. each peer-vector
            file); generated envelopes are used besides.

    Returns:
        The report; ``crashes`` is 0 when every check held.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("decoder", seed)
    groups = [list(g) for g in corpus if g]
    pools: _Pools = {}
    started = time.perf_counter()
    while report.inputs < n:
        size = min(n - report.inputs, rng.choice((1, 3, 8, 16, 32, 48)))
        case = _BatchCase(None, None)
        if groups and rng.random() < 0.3:
            messages = _corpus_batch(rng, rng.choice(groups), size)
            blocks = any(type(m.obj) is dict and "schema" in m.obj for m in messages)
        else:
            table = _new_dbz_table(rng)
            messages = _generated_batch(rng, table, size, report.inputs, pools)
            blocks = table.with_block
            schema = table.arrow_schema() if not blocks and rng.random() < 0.6 else None
            case = _BatchCase(schema, ("id",) if rng.random() < 0.5 else None)
        decoded = [_check_message_alone(report, report.inputs + i, m) for i, m in enumerate(messages)]
        _check_batch(report, report.inputs, messages, case, blocks, decoded)
        report.inputs += len(messages)
    report.seconds = time.perf_counter() - started
    return report


# --- table API ------------------------------------------------------------------------------------

_PARTITIONS: Final = ("", "a\x00b", "\U0001f600", "a/b", "..", None)
_STRING_KEYS: Final = ("a", "b", "\u00fc", "\u6771\u4eac", "\U0001f600", "", "a\x00b", "e\u0301", "\u05d0")


@dataclass(frozen=True, slots=True)
class _TableSpec:
    """A fuzzed table: its schema and key (none for the append table)."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]


_MAIN_SCHEMA: Final = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(12, 2)), ("ratio", pa.float64()),
    ("at", pa.timestamp("us", tz="UTC")), ("flag", pa.bool_()), ("qty", pa.int32()), ("day", pa.date32()),
    ("blob", pa.binary()),
])  # fmt: skip
_PAIR_SCHEMA: Final = pa.schema([
    ("region", pa.string()), ("seq", pa.int32()), ("v", pa.float32()), ("ts", pa.timestamp("ms")),
    ("d", pa.decimal128(38, 10)),
])  # fmt: skip
_LOG_SCHEMA: Final = pa.schema([("k", pa.string()), ("v", pa.int64()), ("at", pa.timestamp("us"))])
_TABLES: Final = (
    _TableSpec("fuzz.main", _MAIN_SCHEMA, ("id",)),
    _TableSpec("fuzz.pair", _PAIR_SCHEMA, ("region", "seq")),
    _TableSpec("fuzz.log", _LOG_SCHEMA, ()),
)
"""A table of every column type, one with a two-column key, and an append table (partitioned)."""


def _table_value(rng: random.Random, kind: pa.DataType, *, key: bool) -> Any:
    """A valid value of a table column (keys from a small set, so writes hit existing rows)."""
    if pa.types.is_integer(kind):
        if key:
            return rng.randint(0, 24)
        bits = kind.bit_width
        return _edge(rng, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if pa.types.is_string(kind):
        if key:
            return rng.choice(_STRING_KEYS)
        return _text(rng) if rng.random() > 0.003 else "\U0001f600" * rng.randint(10_000, 60_000)
    if pa.types.is_decimal(kind):
        return Decimal(f"{_edge(rng, 1 - 10**kind.precision, 10**kind.precision - 1)}E-{kind.scale}")
    if kind == pa.float64():
        return rng.choice((rng.uniform(-1e9, 1e9), math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.5))
    if kind == pa.float32():
        return rng.choice((float(np.float32(rng.uniform(-1e6, 1e6))), math.nan, -math.inf, 0.0))
    if pa.types.is_timestamp(kind):
        micros = _edge(rng, _US_MIN, _US_MAX)
        moment = _EPOCH + dt.timedelta(microseconds=micros - micros % _PER_SECOND_MICROS[kind.unit])
        return moment.replace(tzinfo=dt.UTC) if kind.tz else moment
    if kind == pa.date32():
        return _EPOCH_DATE + dt.timedelta(days=_edge(rng, _DAY_MIN, _DAY_MAX))
    if kind == pa.bool_():
        return rng.random() < 0.5
    return rng.randbytes(rng.randint(0, 16))


_PER_SECOND_MICROS: Final = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}


def _table_rows(rng: random.Random, spec: _TableSpec, count: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(count):
        row = {}
        for f in spec.schema:
            key = f.name in spec.key
            row[f.name] = None if not key and rng.random() < 0.1 else _table_value(rng, f.type, key=key)
        if not spec.key:  # the append table's partition column: few values, odd ones
            row["k"] = rng.choice(_PARTITIONS)
        rows.append(row)
    if rows and rng.random() < 0.2:  # the same key twice in one batch: the last one wins
        rows.append({**rng.choice(rows), **{c: rows[-1][c] for c in spec.key}})
    return rows


def _same_row(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(_same(a[k], b[k]) for k in a)


@dataclass(slots=True)
class _Oracle:
    """What a table should hold: rows by key (keyed tables) or a list of rows (the append table)."""

    spec: _TableSpec
    rows: dict[Any, dict[str, Any]] = field(default_factory=dict)
    appended: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    """The table's version as the oracle knows it (rejected calls must leave it)."""
    checked: int = 0
    """The input after which the version was last confirmed."""

    def key(self, row: dict[str, Any]) -> Any:
        return row[self.spec.key[0]] if len(self.spec.key) == 1 else tuple(row[k] for k in self.spec.key)

    def write(self, changes: list[tuple[bool, dict[str, Any]]]) -> dict[str, int]:
        """Apply (is_delete, row) changes in order; return the changelog counts the commit must have."""
        before: dict[Any, dict[str, Any] | None] = {}
        for _, row in changes:
            key = self.key(row)
            before.setdefault(key, self.rows.get(key))
        for delete, row in changes:
            if delete:
                self.rows.pop(self.key(row), None)
            else:
                self.rows[self.key(row)] = dict(row)
        counts = {"+I": 0, "-U": 0, "+U": 0, "-D": 0}
        for key, old in before.items():
            new = self.rows.get(key)
            if old is None and new is not None:
                counts["+I"] += 1
            elif old is not None and new is None:
                counts["-D"] += 1
            elif not _same_row(old, new):
                counts["-U"] += 1
                counts["+U"] += 1
        return counts

    def patch(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, int]:
        """update_columns: each row's columns over the key's current row (nulls for a new key)."""
        empty = dict.fromkeys(self.spec.schema.names)
        names = (*self.spec.key, *columns)
        merged = [{**(self.rows.get(self.key(r)) or empty), **{c: r[c] for c in names}} for r in rows]
        last = {self.key(row): row for row in merged}  # every row of a batch reads the same old rows
        return self.write([(False, row) for row in last.values()])


@dataclass(slots=True)
class _Call:
    """One table API call: what to call with what, and what must happen."""

    op: str
    spec: _TableSpec
    batch: Any
    expect: type[FlowlakeError] | None
    """The error the call must raise, or ``None`` if it must succeed."""
    label: str
    effect: Callable[[_Oracle], dict[str, int]] | None = None
    """Applies an accepted call to the oracle and returns the changelog counts it must produce."""


# building batches ------------------------------------------------------------------------------------


def _fits(values: list[Any], bits: int) -> bool:
    return all(v is None or -(1 << (bits - 1)) <= v < (1 << (bits - 1)) for v in values)


def _variant(rng: random.Random, kind: pa.DataType, values: list[Any]) -> pa.DataType:
    """A type the table must accept for these values in place of ``kind`` (or ``kind`` itself)."""
    if rng.random() < 0.6:
        return kind
    if kind == pa.int64() and _fits(values, 32):
        return pa.int32()
    if kind == pa.int32():
        return pa.int64() if not _fits(values, 16) else rng.choice((pa.int16(), pa.int64()))
    if kind == pa.string():
        return pa.large_string()
    if kind == pa.binary():
        return pa.large_binary()
    if pa.types.is_decimal(kind):
        return pa.decimal256(kind.precision + 2, kind.scale + 1)
    if kind == pa.float32():
        return pa.float64()
    if pa.types.is_timestamp(kind) and kind.unit != "ns":
        inside = all(v is None or 1678 <= v.year <= 2261 for v in values)
        return pa.timestamp("ns", tz=kind.tz) if inside else kind
    return kind


def _arrow_batch(
    rng: random.Random, rows: list[dict[str, Any]], schema: pa.Schema, columns: Sequence[str]
) -> Any:
    """Rows as a Table or RecordBatch, with compatible types, shuffled columns, chunks or offsets."""
    arrays, names = [], list(columns)
    if rng.random() < 0.2:
        rng.shuffle(names)
    for name in names:
        values = [r[name] for r in rows]
        arrays.append(pa.array(values, type=_variant(rng, schema.field(name).type, values)))
    table = pa.Table.from_arrays(arrays, names=names)
    roll = rng.random()
    if roll < 0.1 and table.num_rows > 1:  # two chunks
        cut = rng.randrange(1, table.num_rows)
        return pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    if roll < 0.2:  # a slice of a longer batch (non-zero offsets)
        padded = pa.concat_tables([table, table]).combine_chunks()
        return padded.slice(table.num_rows, table.num_rows)
    if roll < 0.3:
        return table.combine_chunks().to_batches()[0] if table.num_rows else table
    return table


def _with_column(batch: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return batch.set_column(batch.column_names.index(name), name, array)


def _invalid_utf8(values: list[Any], row: int) -> pa.Array:
    """A string array whose ``row`` holds bytes that are not UTF-8 (Arrow does not check on build)."""
    encoded = [b"" if v is None else str(v).encode() for v in values]
    encoded[row] += b"\xff\xfe"
    offsets = pa.array(list(itertools.accumulate(map(len, encoded), initial=0)), pa.int32())
    valid = pa.array([v is not None or i == row for i, v in enumerate(values)], pa.bool_())
    return pa.Array.from_buffers(
        pa.string(), len(values), [valid.buffers()[1], offsets.buffers()[1], pa.py_buffer(b"".join(encoded))]
    )


# one defect per broken call ---------------------------------------------------------------------------

_Defect = tuple[Any, type[FlowlakeError] | None, str]
"""A broken batch, the error it must raise (``None``: it must still be accepted) and what is wrong."""

_NOT_TABLES: Final = ({"id": [1]}, [{"id": 1}], None, "id", 42, pa.array([1]))


def _wrong_type(length: int, kind: pa.DataType) -> pa.Array:
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return pa.array(range(length), pa.int64())
    return pa.array([str(i) for i in range(length)], pa.string())


def _columns_of(spec: _TableSpec, columns: Sequence[str], test: Callable[[pa.DataType], bool]) -> list[str]:
    return [c for c in columns if test(spec.schema.field(c).type)]


_VALUE_KINDS: Final[dict[str, Callable[[pa.DataType], bool]]] = {
    "integer": pa.types.is_integer,
    "decimal": pa.types.is_decimal,
    "timestamp": pa.types.is_timestamp,
    "date": pa.types.is_date32,
    "utf8": pa.types.is_string,
    "nan key": pa.types.is_integer,
}
"""Kinds of out-of-range values, and the column types they apply to."""


def _break_values(
    rng: random.Random, spec: _TableSpec, batch: pa.Table, columns: list[str]
) -> _Defect | None:
    """A value the column's type cannot hold (the batch has rows)."""
    n, row = batch.num_rows, rng.randrange(batch.num_rows)
    kind = rng.choice(tuple(_VALUE_KINDS))
    names = _columns_of(spec, columns, _VALUE_KINDS[kind])
    if kind == "nan key":
        names = [c for c in names if c in spec.key]
    if not names:
        return None
    name = rng.choice(names)
    target = spec.schema.field(name).type
    values: list[Any] = [Decimal(0) if kind == "decimal" else 0] * n
    if kind == "integer":
        big = 2**63 + row if target.bit_width == 64 else rng.choice((2**31 + row, -(2**31) - 1 - row))
        values[row] = big
        array = pa.array(values, pa.uint64() if big >= 2**63 else pa.int64())
    elif kind == "decimal":
        if rng.random() < 0.5:  # one digit too many before the point, or after it
            values[row] = Decimal(10 ** (target.precision - target.scale))
            array = pa.array(values, pa.decimal256(target.precision + 2, target.scale))
        else:
            values[row] = Decimal(1).scaleb(-target.scale - 1)
            array = pa.array(values, pa.decimal256(target.precision + 2, target.scale + 1))
    elif kind == "timestamp":
        return _break_timestamp(rng, batch, name, target, row)
    elif kind == "date":
        values[row] = rng.choice((2**31 - 1, -(2**31), _DAY_MAX + 1, _DAY_MIN - 1))
        array = pa.array(values, pa.int32()).cast(pa.date32())
    elif kind == "utf8":
        array = _invalid_utf8(batch.column(name).to_pylist(), row)
    else:
        floats = [float(v) if v is not None else None for v in batch.column(name).to_pylist()]
        floats[row] = math.nan
        array = pa.array(floats, pa.float64())
    return _with_column(batch, name, array), SchemaMismatchError, f"{kind} value out of range in {name!r}"


def _break_timestamp(
    rng: random.Random, batch: pa.Table, name: str, target: pa.DataType, row: int
) -> _Defect:
    n, tz = batch.num_rows, target.tz
    per = _PER_SECOND[target.unit]
    roll = rng.randrange(4)
    values = [0] * n
    if roll == 0:  # overflows the column's unit
        values[row] = 2**62
        array = pa.array(values, pa.int64()).cast(pa.timestamp("s", tz=tz))
    elif roll == 1:  # finer than the column's unit
        finer = {"s": "ms", "ms": "us", "us": "ns"}[target.unit]
        values[row] = 1001
        array = pa.array(values, pa.int64()).cast(pa.timestamp(finer, tz=tz))
    elif roll == 2:  # outside years 1-9999, which Python (and so most readers) cannot show
        values[row] = (
            (_US_MAX + 1) * per // 1_000_000
            if rng.random() < 0.5
            else (_US_MIN - 1_000_000) * per // 1_000_000
        )
        array = pa.array(values, pa.int64()).cast(target)
    else:  # with a time zone where the column has none, or the other way round
        array = pa.array(values, pa.int64()).cast(pa.timestamp(target.unit, tz=None if tz else "UTC"))
    return _with_column(batch, name, array), SchemaMismatchError, f"bad timestamp #{roll} in {name!r}"


def _break_shape(
    rng: random.Random, op: str, spec: _TableSpec, batch: pa.Table, columns: list[str]
) -> _Defect:
    """A missing, extra, doubled or wrongly typed column (``delete`` reads only the key columns)."""
    keys = [k for k in spec.key if k in columns]
    pool = keys if op == "delete" and keys else columns
    name = rng.choice(pool)
    kind = rng.randrange(4)
    if kind == 0:
        victim = rng.choice(keys) if op in ("delete", "update_columns") and keys else name
        return batch.drop_columns([victim]), SchemaMismatchError, f"missing column {victim!r}"
    others = [c for c in columns if c not in spec.key]
    if kind == 1 or (kind == 2 and op == "delete" and not others):
        extra = batch.append_column("zz_extra", pa.array(range(batch.num_rows), pa.int64()))
        return extra, None if op == "delete" else SchemaMismatchError, "an extra column"
    if kind == 2 and op == "delete":  # not a key column: LakeTable.delete raises KeyError for that
        name = rng.choice(others)  # (tests/fuzz/test_mutation_fuzz.py keeps that bug as a strict xfail)
        return batch.append_column(name, batch.column(name)), None, f"non-key column {name!r} twice"
    if kind == 2:
        return batch.append_column(name, batch.column(name)), SchemaMismatchError, f"column {name!r} twice"
    wrong = _wrong_type(batch.num_rows, spec.schema.field(name).type)
    return _with_column(batch, name, wrong), SchemaMismatchError, f"column {name!r} of a wrong type"


def _break_call(
    rng: random.Random, op: str, spec: _TableSpec, batch: pa.Table, columns: list[str]
) -> _Defect | None:
    roll = rng.random()
    keys = [k for k in spec.key if k in columns]
    if roll < 0.35:
        return _break_shape(rng, op, spec, batch, columns)
    if roll < 0.5 and keys and batch.num_rows:
        name = rng.choice(keys)
        values = batch.column(name).to_pylist()
        values[rng.randrange(len(values))] = None
        array = pa.array(values, batch.schema.field(name).type)
        return _with_column(batch, name, array), NullKeyError, f"a null in key column {name!r}"
    if roll < 0.8 and batch.num_rows:
        return _break_values(rng, spec, batch, keys if op == "delete" else columns)
    if roll < 0.87:
        expect: type[FlowlakeError] = {
            "apply": InvalidChangelogError,
            "update_columns": InvalidArgumentError,
        }.get(op, SchemaMismatchError)
        return rng.choice((*_NOT_TABLES, batch.column(0))), expect, "not a table"
    if op == "apply":
        return _break_kinds(rng, batch)
    if op == "update_columns":
        return batch.select(keys), InvalidArgumentError, "no column to update"
    return None


def _break_kinds(rng: random.Random, batch: pa.Table) -> _Defect:
    index = batch.column_names.index(KIND_COLUMN)
    n = batch.num_rows
    roll = rng.randrange(4) if n else rng.choice((0, 3))
    if roll == 0:
        return batch.remove_column(index), InvalidChangelogError, "no _kind column"
    kinds: list[Any] = [0] * n
    if roll == 1:
        kinds[rng.randrange(n)] = rng.choice((4, 7, -1, 127))
        array = pa.array(kinds, pa.int8())
    elif roll == 2:
        kinds[rng.randrange(n)] = None
        array = pa.array(kinds, pa.int8())
    else:
        array = (
            pa.array([str(k) for k in kinds], pa.string())
            if rng.random() < 0.5
            else pa.array(kinds, pa.float64())
        )
    return batch.set_column(index, KIND_COLUMN, array), InvalidChangelogError, f"bad _kind #{roll}"


# running calls -----------------------------------------------------------------------------------------

_OPS: Final = ("upsert", "delete", "apply", "update_columns", "append")


def _table_call(rng: random.Random) -> _Call:
    """A call: valid (often with compatible types, chunks, offsets), or with one defect."""
    op = rng.choices(_OPS, weights=(30, 15, 22, 15, 15))[0]
    spec = _TABLES[2] if op == "append" else rng.choice(_TABLES[:2])
    if rng.random() < 0.02:  # append on a keyed table, or a keyed write on the append table
        spec = rng.choice(_TABLES[:2]) if op == "append" else _TABLES[2]
        rows = _table_rows(rng, spec, 2)
        batch = _arrow_batch(rng, rows, spec.schema, spec.schema.names)
        return _Call(op, spec, batch, InvalidArgumentError, "the wrong kind of table")
    rows = _table_rows(rng, spec, rng.choice((0, 1, 1, 2, 3, 5, 8, 16)))
    columns = list(spec.schema.names)
    kinds = [rng.choice((0, 0, 1, 2, 2, 3)) for _ in rows]
    if op == "delete" and rng.random() < 0.7:
        columns = list(spec.key)
    elif op == "update_columns":
        values = [c for c in columns if c not in spec.key]
        columns = [*spec.key, *rng.sample(values, rng.randint(1, len(values)))]
    effect = _effect(op, rows, columns, kinds)
    if rng.random() < 0.25:
        batch = _with_kinds(rng, op, _arrow_batch(rng, rows, spec.schema, columns), kinds)
        return _Call(op, spec, batch, None, "a valid batch", effect)
    plain = _with_kinds(
        rng, op, pa.Table.from_pylist(rows, pa.schema([spec.schema.field(c) for c in columns])), kinds
    )
    for _ in range(3):
        defect = _break_call(rng, op, spec, plain, columns)
        if defect is not None:
            batch, expect, label = defect
            return _Call(op, spec, batch, expect, label, effect if expect is None else None)
    return _Call(op, spec, plain, None, "a valid batch", effect)


def _with_kinds(rng: random.Random, op: str, batch: Any, kinds: list[int]) -> Any:
    if op != "apply":
        return batch
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    kind_type = rng.choice((pa.int8(), pa.int8(), pa.int64(), pa.uint8()))
    return table.append_column(KIND_COLUMN, pa.array(kinds, kind_type))


def _effect(
    op: str, rows: list[dict[str, Any]], columns: list[str], kinds: list[int]
) -> Callable[[_Oracle], dict[str, int]]:
    def apply(oracle: _Oracle) -> dict[str, int]:
        if op == "append":
            oracle.appended.extend(rows)
            return {"+I": len(rows), "-U": 0, "+U": 0, "-D": 0}
        if op == "update_columns":
            return oracle.patch(rows, columns[len(oracle.spec.key) :])
        deletes = [op == "delete" or (op == "apply" and kind in (1, 3)) for kind in kinds]
        return oracle.write(list(zip(deletes, rows, strict=True)))

    return apply


def _resync(oracle: _Oracle, table: LakeTable) -> None:
    """After a violation, start the oracle again from what the table holds, so one bug is reported once."""
    oracle.version = table.version
    try:
        rows = table.read().to_pylist()
    except Exception:
        rows = []
    if oracle.spec.key:
        oracle.rows = {oracle.key(r): r for r in rows}
    else:
        oracle.appended = rows


def _check_contents(report: FuzzReport, index: int, table: LakeTable, oracle: _Oracle, when: str) -> None:
    _check_version(report, index, table, oracle)
    try:
        rows = table.read().to_pylist()
    except Exception as exc:
        report.fail(index, f"reading {table.name} {when} raised {type(exc).__name__}", str(exc), table.name)
        return
    if oracle.spec.key:
        got = {oracle.key(r): r for r in rows}
        wrong = [k for k in got.keys() | oracle.rows.keys() if not _same_row(got.get(k), oracle.rows.get(k))]
        if len(got) != len(rows) or wrong:
            first = wrong[0] if wrong else None
            detail = (
                f"{len(rows)} rows, keys differing: {_clip(wrong[:5])}; "
                f"e.g. table {_clip(got.get(first))} vs oracle {_clip(oracle.rows.get(first))}"
            )
            report.fail(index, f"{table.name} {when} differs from the oracle", detail, table.name)
            _resync(oracle, table)
    elif Counter(map(_row_tuple, rows)) != Counter(map(_row_tuple, oracle.appended)):
        report.fail(
            index,
            f"{table.name} {when} differs from the oracle",
            f"{len(rows)} vs {len(oracle.appended)} rows",
            table.name,
        )
        _resync(oracle, table)


def _row_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row.values())


def _run_call(report: FuzzReport, index: int, table: LakeTable, oracle: _Oracle, call: _Call) -> bool:
    """Make one call and check it; return whether it committed.

    A rejected call must not commit: the next commit must then be the oracle's version + 1, and the
    periodic and final checks refresh the table's version (cheaper than a refresh per rejection).
    """
    try:
        commit = getattr(table, call.op)(call.batch)
    except FlowlakeError as exc:
        report.reject(exc)
        _check_message(report, index, exc, call.batch)
        if call.expect is None:
            report.fail(index, f"{call.op} rejects {call.label}", f"{type(exc).__name__}: {exc}", call.batch)
        elif not isinstance(exc, call.expect):
            detail = f"expected {call.expect.__name__}, got {type(exc).__name__}: {exc}"
            report.fail(index, f"{call.op} with {call.label}: wrong error", detail, call.batch)
        return False
    except Exception as exc:
        report.fail(index, f"{call.op} with {call.label} raised {type(exc).__name__}", str(exc), call.batch)
        _check_version(report, index, table, oracle)
        return False
    report.accepted += 1
    if call.expect is not None or call.effect is None:
        expected = call.expect.__name__ if call.expect else "an error"
        report.fail(index, f"{call.op} accepts {call.label}", f"expected {expected}", call.batch)
        _resync(oracle, table.refresh())
        return False
    counts = call.effect(oracle)
    changed = any(counts.values())
    version = commit.version if changed else table.version
    if version != oracle.version + changed:
        detail = (
            f"version {version}, not {oracle.version + changed}: a call since #{oracle.checked} committed"
        )
        report.fail(index, f"{table.name} has unexpected commits", detail, call.batch)
        _resync(oracle, table.refresh())
    elif changed and dict(commit.summary.get("rows", {})) != counts:
        detail = f"commit {commit.version} with {commit.summary.get('rows')}, oracle {counts}"
        report.fail(index, f"{call.op} with {call.label} committed the wrong changes", detail, call.batch)
        _resync(oracle, table.refresh())
    oracle.version, oracle.checked = table.version, index
    return changed


def _check_version(report: FuzzReport, index: int, table: LakeTable, oracle: _Oracle) -> None:
    if table.refresh().version != oracle.version:
        detail = (
            f"version {table.version}, expected {oracle.version}: a call since #{oracle.checked} committed"
        )
        report.fail(index, f"{table.name} has unexpected commits", detail, table.name)
        _resync(oracle, table)
    oracle.checked = index


def fuzz_table_api(n: int, seed: int, *, check_every: int = 300) -> FuzzReport:
    """Fuzz ``upsert``/``delete``/``apply``/``update_columns``/``append`` with ``n`` calls.

    Args:
        n: API calls to make.
        seed: Seed of the run.
        check_every: Check, compact, clean and check again a table after this many of its commits.

    Returns:
        The report; ``crashes`` is 0 when every check held.
    """
    from flowlake.catalog.catalog import connect

    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("table_api", seed)
    warehouse = f"memory://flowlake-fuzz-{seed}-{uuid.uuid4().hex[:8]}"
    catalog = connect(catalog="sqlite://", warehouse=warehouse)
    tables = {
        spec.name: catalog.create_table(
            spec.name, spec.schema, primary_key=list(spec.key) or None, buckets=1,
            partition_by=None if spec.key else ["k"],
        )
        for spec in _TABLES
    }  # fmt: skip
    oracles = {spec.name: _Oracle(spec) for spec in _TABLES}
    commits = Counter[str]()
    started = time.perf_counter()
    try:
        for index in range(n):
            call = _table_call(rng)
            table, oracle = tables[call.spec.name], oracles[call.spec.name]
            report.inputs += 1
            if _run_call(report, index, table, oracle, call):
                report.commits += 1
                commits[call.spec.name] += 1
                if commits[call.spec.name] % check_every == 0:
                    _maintain(report, index, table, oracle)
        for name, table in tables.items():
            _check_contents(report, n, table, oracles[name], "at the end")
    finally:
        report.seconds = time.perf_counter() - started
        _drop_warehouse(warehouse)
    return report


def _maintain(report: FuzzReport, index: int, table: LakeTable, oracle: _Oracle) -> None:
    """Check a table, compact and clean it (keeps reads and the memory warehouse small), check again."""
    _check_contents(report, index, table, oracle, "before compaction")
    try:
        table.compact()
        table.clean(retain_last=1)
    except Exception as exc:
        report.fail(index, f"compacting {table.name} raised {type(exc).__name__}", str(exc), table.name)
    oracle.version = table.refresh().version  # compaction commits too
    _check_contents(report, index, table, oracle, "after compaction")


def _drop_warehouse(url: str) -> None:
    """Forget a memory:// warehouse (``rm`` of the memory filesystem is quadratic in its file count)."""
    from fsspec.implementations.memory import MemoryFileSystem

    prefix = "/" + url.removeprefix("memory://").strip("/")
    for key in [k for k in MemoryFileSystem.store if k == prefix or k.startswith(prefix + "/")]:
        del MemoryFileSystem.store[key]
    MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs if not d.startswith(prefix)]


# --- ingestion ------------------------------------------------------------------------------------

_ODS_FIELDS: Final = (
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {"type": "bytes", "optional": True, "name": lt.DECIMAL, "field": "price",
     "parameters": {"scale": "2", "connect.decimal.precision": "10"}},
    {"type": "double", "optional": True, "field": "ratio"},
    {"type": "boolean", "optional": True, "field": "flag"},
    {"type": "int32", "optional": True, "name": lt.DATE, "field": "born"},
    {"type": "int64", "optional": True, "name": lt.MICRO_TIMESTAMP, "field": "seen"},
    {"type": "int64", "optional": True, "name": lt.TIMESTAMP, "field": "at_ms"},
    {"type": "string", "optional": True, "name": lt.ZONED_TIMESTAMP, "field": "zoned"},
    {"type": "bytes", "optional": True, "field": "blob"},
    {"type": "int64", "optional": True, "field": "qty"},
    {"type": "struct", "optional": True, "name": lt.VARIABLE_SCALE_DECIMAL, "field": "vsd",
     "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]},
)  # fmt: skip
"""An ODS source table with every column type an ODS table can hold."""

_ODS_ROW: Final = {
    "type": "struct",
    "optional": True,
    "name": "shop.items.Value",
    "fields": list(_ODS_FIELDS),
}
_ODS_ENVELOPE: Final = {
    "type": "struct",
    "name": "shop.items.Envelope",
    "fields": [
        {**_ODS_ROW, "field": "before"},
        {**_ODS_ROW, "field": "after"},
        {"type": "string", "field": "op"},
    ],
}


def _ods_row(rng: random.Random, key: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid row as JSON values and as the Python values the ODS table must then hold."""
    price = rng.randint(1 - 10**10, 10**10 - 1)
    days = _edge(rng, _DAY_MIN, _DAY_MAX)
    micros = _edge(rng, _US_MIN, _US_MAX)
    millis = _edge(rng, _US_MIN // 1000, _US_MAX // 1000)
    zoned = _zoned(rng)
    blob = rng.randbytes(rng.randint(0, 8))
    scale, unscaled = rng.randint(0, 12), rng.randint(-(10**20), 10**20)
    ratio = rng.choice((rng.uniform(-1e12, 1e12), -0.0, 5e-324, 1.7976931348623157e308))
    name, qty, flag = _text(rng), _edge(rng, *_INT64), rng.random() < 0.5
    as_json = {
        "id": key, "name": name, "price": _b64_int(price), "ratio": ratio, "flag": flag, "born": days,
        "seen": micros, "at_ms": millis, "zoned": zoned, "blob": base64.b64encode(blob).decode(), "qty": qty,
        "vsd": {"scale": scale, "value": _b64_int(unscaled)},
    }  # fmt: skip
    as_python = {
        "id": key, "name": name, "price": Decimal(price).scaleb(-2), "ratio": ratio, "flag": flag,
        "born": _EPOCH_DATE + dt.timedelta(days=days), "seen": _EPOCH + dt.timedelta(microseconds=micros),
        "at_ms": _EPOCH + dt.timedelta(milliseconds=millis),
        "zoned": dt.datetime.fromisoformat(zoned).astimezone(dt.UTC), "blob": blob, "qty": qty,
        "vsd": format(Decimal(unscaled).scaleb(-scale, Context(prec=100)), "f"),
    }  # fmt: skip
    for name in rng.sample(list(as_json)[1:], rng.choice((0, 0, 1, 3))):
        as_json[name] = as_python[name] = None
    return as_json, as_python


@dataclass(frozen=True, slots=True)
class _BadRecord:
    """A record that must become a dead letter, and a word its reason must contain."""

    line: bytes
    kind: str
    token: str


def _bad_record(rng: random.Random, good: bytes, payload: dict[str, Any], block: bool) -> _BadRecord:
    """Spoil a good record so that it cannot be ingested, in one of many ways."""
    roll = rng.randrange(12)
    if roll < 5:
        return _unreadable(rng, good, roll)
    spoiled, kind, token = _spoiled(rng, orjson.loads(orjson.dumps(payload)), roll)
    if not block:
        return _BadRecord(orjson.dumps(spoiled), kind, token)
    envelope = orjson.loads(orjson.dumps(_ODS_ENVELOPE))
    if rng.random() < 0.15:  # a broken schema block instead
        envelope["fields"][1]["fields"][rng.randrange(len(_ODS_FIELDS))]["type"] = "no-such-type"
        return _BadRecord(
            orjson.dumps({"schema": envelope, "payload": payload}), "bad schema block", "schema"
        )
    return _BadRecord(orjson.dumps({"schema": envelope, "payload": spoiled}), kind, token)


def _unreadable(rng: random.Random, good: bytes, roll: int) -> _BadRecord:
    """A line that is not a Debezium message at all."""
    if roll == 0:
        return _BadRecord(good[: rng.randrange(1, len(good) - 1)], "truncated JSON", "Debezium message")
    if roll == 1:
        junk = bytes(b for b in rng.randbytes(rng.randint(1, 40)) if b not in b"\r\n")
        return _BadRecord(b"\x01" + junk, "random bytes", "Debezium message")
    if roll == 2:
        cut = good.index(b'"name"')
        return _BadRecord(good[:cut] + b'"\xff\xfe":1,' + good[cut:], "invalid UTF-8", "Debezium message")
    if roll == 3:
        nan = re.sub(rb'"ratio":[^,}]+', b'"ratio":NaN', good, count=1)
        return _BadRecord(nan, "NaN token", "Debezium message")
    return _BadRecord(rng.choice((b"[1,2]", b'"text"', b"42", b"true")), "not an object", "JSON object")


def _spoiled(rng: random.Random, payload: dict[str, Any], roll: int) -> tuple[dict[str, Any], str, str]:
    """A Debezium payload that cannot be applied: (payload, kind of defect, a word its reason names)."""
    image = payload.get("after") or payload.get("before") or {}
    if roll == 5:
        del payload["source"]
        return payload, "no source", "table is unknown"
    if roll == 6:
        payload["op"] = rng.choice(("x", "t", "", 5))
        return payload, "bad op", "'op'" if payload["op"] != "t" else "truncate"
    if roll == 7:
        payload["op"], payload["after"], payload["before"] = rng.choice(("c", "u")), None, image
        return payload, "no after", "'after'"
    if roll == 8:
        image["id"] = None
        return payload, "null key", "'id'"
    if roll == 9:
        name, value = rng.choice(_ODS_BAD_VALUES)
        image[name] = value
        return payload, "bad value", repr(name)
    if roll == 10:
        image["_kind"] = 1
        return payload, "reserved column", "'_kind'"
    payload["op"], payload["before"], payload["after"] = "d", None, None
    return payload, "delete without before", "'before'"


_ODS_BAD_VALUES: Final = (
    ("id", 2**40), ("id", "7"), ("name", 5), ("name", {"a": 1}), ("price", _b64_int(10**12)), ("price", "%%"),
    ("ratio", "x"), ("flag", 1), ("born", 10**7), ("born", -(10**7)), ("seen", 2**62), ("at_ms", -(2**62)),
    ("zoned", "10000-01-01T00:00:00Z"), ("zoned", "2020-01-01T00:00:00"), ("blob", "not base64"),
    ("qty", "x" * 100_000), ("qty", 1.5), ("vsd", {"scale": 10**6, "value": "AQ=="}), ("vsd", "1.5"),
)  # fmt: skip
"""Values no column of :data:`_ODS_FIELDS` may hold."""


@dataclass(slots=True)
class _IngestInput:
    """One JSONL file: all lines, the good lines, the bad records and the ODS rows they must give."""

    lines: list[bytes] = field(default_factory=list)
    good_lines: list[bytes] = field(default_factory=list)
    bad: list[_BadRecord] = field(default_factory=list)
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    images: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, line: bytes, *, bad: _BadRecord | None = None) -> None:
        self.lines.append(line)
        if bad is None:
            self.good_lines.append(line)
        else:
            self.bad.append(bad)


def _ingest_input(rng: random.Random, size: int, bad_share: float) -> _IngestInput:
    """Records of one source table, some in BEGIN/END transactions, a share of them spoiled."""
    out = _IngestInput()
    seq = 0
    while len(out.lines) < size:
        txid = f"tx{seq}" if rng.random() < 0.4 else None
        count = rng.randint(1, 12) if txid else 1
        if txid:
            out.add(orjson.dumps({"status": "BEGIN", "id": txid, "event_count": count}))
        for order in range(count):
            seq += 1
            key = rng.randint(0, 40)
            op = rng.choice("uud") if key in out.rows else rng.choice("cr")
            after, after_py = _ods_row(rng, key) if op != "d" else (None, None)
            source = {
                "connector": "mysql",
                "db": "shop",
                "table": "items",
                "file": "mysql-bin.000001",
                "pos": seq,
            }
            payload: dict[str, Any] = {
                "before": out.images.get(key) if op in "ud" else None, "after": after, "source": source,
                "op": op, "ts_ms": seq,
            }  # fmt: skip
            if txid:
                payload["transaction"] = {
                    "id": txid,
                    "total_order": order + 1,
                    "data_collection_order": order + 1,
                }
            line = orjson.dumps({"schema": _ODS_ENVELOPE, "payload": payload})
            if rng.random() < bad_share:
                bad = _bad_record(rng, line, payload, rng.random() < 0.9)
                out.add(bad.line, bad=bad)
                continue
            out.add(line)
            if after is None:
                out.rows.pop(key, None)
                out.images.pop(key, None)
            else:
                out.rows[key], out.images[key] = after_py or {}, after
        if txid:
            out.add(orjson.dumps({"status": "END", "id": txid, "event_count": count}))
    return out


@dataclass(frozen=True, slots=True)
class _IngestResult:
    rows: list[dict[str, Any]]
    schema: pa.Schema | None
    dead: list[dict[str, Any]]
    commits: int


def _ingest(lines: list[bytes], where: str) -> _IngestResult:
    """Run an ingester over ``lines`` (a JSONL file in memory) into a fresh memory:// warehouse."""
    import fsspec

    from flowlake.catalog.catalog import connect
    from flowlake.cdc.ingest import OdsIngester
    from flowlake.cdc.jsonl import JsonlSource

    fs = fsspec.filesystem("memory")
    fs.pipe_file(f"/{where}/in/cdc.jsonl", b"".join(line + b"\n" for line in lines))
    catalog = connect(catalog="sqlite://", warehouse=f"memory://{where}/wh")
    source = JsonlSource(f"memory://{where}/in", follow=False)
    stats = OdsIngester(catalog, source, primary_keys={"shop.items": ["id"]}).run(until_idle=True)
    table = catalog.load_table("ods.items") if catalog.table_exists("ods.items") else None
    dead = catalog.load_table("ods._dead_letter").read().to_pylist() if stats.dead_letters else []
    rows = sorted(table.read().to_pylist(), key=lambda r: r["id"]) if table is not None else []
    return _IngestResult(rows, table.schema if table is not None else None, dead, stats.commits)


def _check_dead_letters(
    report: FuzzReport, index: int, data: _IngestInput, dead: list[dict[str, Any]]
) -> None:
    expected = Counter(b.line for b in data.bad)
    found = Counter(d["raw"] for d in dead)
    if found != expected:
        missing = list((expected - found).elements())[:3]
        extra = list((found - expected).elements())[:3]
        detail = (
            f"{len(dead)} dead letters for {len(data.bad)} bad records; "
            f"missing {_clip(missing)}, extra {_clip(extra)}"
        )
        report.fail(index, "dead letters differ from the bad records", detail, missing or extra)
    by_line = {b.line: b for b in data.bad}
    for letter in dead:
        bad = by_line.get(letter["raw"])
        error, position = letter["error"] or "", orjson.loads(letter["position"] or "{}")
        if bad is not None and (
            bad.token not in error or "offset" not in position or len(error) > MAX_MESSAGE_CHARS
        ):
            detail = f"{bad.kind}: reason {error[:300]!r} (wanted {bad.token!r}), position {position}"
            report.fail(index, "dead letter without a clear reason and offset", detail, letter["raw"])


def fuzz_ingest(n: int, seed: int, *, records_per_run: int = 400, bad_share: float = 0.3) -> FuzzReport:
    """Ingest ``n`` JSONL records, ``bad_share`` of them spoiled, and check every one of them.

    Each run of ``records_per_run`` records is ingested twice: as it is, and with only its good
    records; the two ODS tables must be equal and equal to the oracle built from the good records.

    Returns:
        The report (``rejected`` counts bad records by kind); ``crashes`` is 0 when every check held.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("ingest", seed)
    started = time.perf_counter()
    run = 0
    while report.inputs < n:
        run += 1
        data = _ingest_input(rng, min(records_per_run, n - report.inputs), bad_share)
        where = f"flowlake-fuzz-ingest-{seed}-{run}-{uuid.uuid4().hex[:6]}"
        index = report.inputs
        report.inputs += len(data.lines)
        try:
            mixed = _ingest(data.lines, where + "-mixed")
            clean = _ingest(data.good_lines, where + "-good")
        except Exception as exc:
            report.fail(index, f"ingestion raised {type(exc).__name__}", str(exc), data.lines)
            continue
        finally:
            _drop_warehouse(f"memory://{where}-mixed")
            _drop_warehouse(f"memory://{where}-good")
        report.accepted += len(data.good_lines)
        for bad in data.bad:
            report.reject(bad.kind)
        report.dead_letters += len(mixed.dead)
        report.commits += mixed.commits
        _check_dead_letters(report, index, data, mixed.dead)
        if clean.dead:
            report.fail(index, "good records were dead-lettered", _clip(clean.dead[:2]), data.good_lines)
        expected = sorted(data.rows.values(), key=lambda r: r["id"])
        if mixed.schema != clean.schema or not _same(mixed.rows, clean.rows):
            report.fail(
                index,
                "bad records changed what the good ones ingest",
                _first_difference(mixed.rows, clean.rows),
                data.lines,
            )
        elif not _same(clean.rows, expected):
            report.fail(
                index, "ODS differs from the oracle", _first_difference(clean.rows, expected), data.good_lines
            )
    report.seconds = time.perf_counter() - started
    return report


def _first_difference(got: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> str:
    for a, b in zip(got, wanted, strict=False):
        if not _same(a, b):
            return f"{_clip(a, 600)} vs {_clip(b, 600)}"
    return f"{len(got)} rows vs {len(wanted)}"
