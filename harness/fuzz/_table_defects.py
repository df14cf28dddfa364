"""Broken table-API calls: one defect per batch (a bad shape, a null key, a value out of range, not a
table, a bad ``_kind``) and the ``FlowlakeError`` subclass the defect calls for."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN
from flowlake.errors import (
    FlowlakeError,
    InvalidArgumentError,
    InvalidChangelogError,
    NullKeyError,
    SchemaMismatchError,
)
from harness.fuzz._common import DAY_MAX, DAY_MIN, PER_SECOND, US_MAX, US_MIN
from harness.fuzz._table_oracle import TableSpec


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


Defect = tuple[Any, type[FlowlakeError] | None, str]
"""A broken batch, the error it must raise (``None``: it must still be accepted) and what is wrong."""

_NOT_TABLES: Final = ({"id": [1]}, [{"id": 1}], None, "id", 42, pa.array([1]))


def _wrong_type(length: int, kind: pa.DataType) -> pa.Array:
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        return pa.array(range(length), pa.int64())
    return pa.array([str(i) for i in range(length)], pa.string())


def _columns_of(spec: TableSpec, columns: Sequence[str], test: Callable[[pa.DataType], bool]) -> list[str]:
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


def _break_values(rng: random.Random, spec: TableSpec, batch: pa.Table, columns: list[str]) -> Defect | None:
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
        values[row] = rng.choice((2**31 - 1, -(2**31), DAY_MAX + 1, DAY_MIN - 1))
        array = pa.array(values, pa.int32()).cast(pa.date32())
    elif kind == "utf8":
        array = _invalid_utf8(batch.column(name).to_pylist(), row)
    else:
        floats = [float(v) if v is not None else None for v in batch.column(name).to_pylist()]
        floats[row] = math.nan
        array = pa.array(floats, pa.float64())
    return _with_column(batch, name, array), SchemaMismatchError, f"{kind} value out of range in {name!r}"


def _break_timestamp(rng: random.Random, batch: pa.Table, name: str, target: pa.DataType, row: int) -> Defect:
    n, tz = batch.num_rows, target.tz
    per = PER_SECOND[target.unit]
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
            (US_MAX + 1) * per // 1_000_000 if rng.random() < 0.5 else (US_MIN - 1_000_000) * per // 1_000_000
        )
        array = pa.array(values, pa.int64()).cast(target)
    else:  # with a time zone where the column has none, or the other way round
        array = pa.array(values, pa.int64()).cast(pa.timestamp(target.unit, tz=None if tz else "UTC"))
    return _with_column(batch, name, array), SchemaMismatchError, f"bad timestamp #{roll} in {name!r}"


def _break_shape(rng: random.Random, op: str, spec: TableSpec, batch: pa.Table, columns: list[str]) -> Defect:
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


def break_call(
    rng: random.Random, op: str, spec: TableSpec, batch: pa.Table, columns: list[str]
) -> Defect | None:
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


def _break_kinds(rng: random.Random, batch: pa.Table) -> Defect:
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
