"""Table-API calls for the fuzzer: rows of every column type as Arrow batches (compatible types,
chunks, offsets), valid or with one defect, and the effect an accepted call has on the oracle."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import numpy as np
import pyarrow as pa

from flowlake.changelog import KIND_COLUMN
from flowlake.errors import FlowlakeError, InvalidArgumentError
from harness.fuzz._common import (
    DAY_MAX,
    DAY_MIN,
    EPOCH,
    EPOCH_DATE,
    US_MAX,
    US_MIN,
    boundary_biased_int,
    random_text,
)
from harness.fuzz._table_defects import break_call
from harness.fuzz._table_oracle import FUZZ_TABLES, TableOracle, TableSpec

_PARTITIONS: Final = ("", "a\x00b", "\U0001f600", "a/b", "..", None)
_STRING_KEYS: Final = ("a", "b", "\u00fc", "\u6771\u4eac", "\U0001f600", "", "a\x00b", "e\u0301", "\u05d0")
_PER_SECOND_MICROS: Final = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": 1}


def _table_value(rng: random.Random, kind: pa.DataType, *, key: bool) -> Any:
    """A valid value of a table column (keys from a small set, so writes hit existing rows)."""
    if pa.types.is_integer(kind):
        if key:
            return rng.randint(0, 24)
        bits = kind.bit_width
        return boundary_biased_int(rng, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if pa.types.is_string(kind):
        if key:
            return rng.choice(_STRING_KEYS)
        return random_text(rng) if rng.random() > 0.003 else "\U0001f600" * rng.randint(10_000, 60_000)
    if pa.types.is_decimal(kind):
        return Decimal(
            f"{boundary_biased_int(rng, 1 - 10**kind.precision, 10**kind.precision - 1)}E-{kind.scale}"
        )
    if kind == pa.float64():
        return rng.choice((rng.uniform(-1e9, 1e9), math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.5))
    if kind == pa.float32():
        return rng.choice((float(np.float32(rng.uniform(-1e6, 1e6))), math.nan, -math.inf, 0.0))
    if pa.types.is_timestamp(kind):
        micros = boundary_biased_int(rng, US_MIN, US_MAX)
        moment = EPOCH + dt.timedelta(microseconds=micros - micros % _PER_SECOND_MICROS[kind.unit])
        return moment.replace(tzinfo=dt.UTC) if kind.tz else moment
    if kind == pa.date32():
        return EPOCH_DATE + dt.timedelta(days=boundary_biased_int(rng, DAY_MIN, DAY_MAX))
    if kind == pa.bool_():
        return rng.random() < 0.5
    return rng.randbytes(rng.randint(0, 16))


def _table_rows(rng: random.Random, spec: TableSpec, count: int) -> list[dict[str, Any]]:
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


@dataclass(slots=True)
class TableCall:
    """One table API call: what to call with what, and what must happen."""

    op: str
    spec: TableSpec
    batch: Any
    expect: type[FlowlakeError] | None
    """The error the call must raise, or ``None`` if it must succeed."""
    label: str
    effect: Callable[[TableOracle], dict[str, int]] | None = None
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


# making calls ----------------------------------------------------------------------------------------

_OPS: Final = ("upsert", "delete", "apply", "update_columns", "append")


def new_table_call(rng: random.Random) -> TableCall:
    """A call: valid (often with compatible types, chunks, offsets), or with one defect."""
    op = rng.choices(_OPS, weights=(30, 15, 22, 15, 15))[0]
    spec = FUZZ_TABLES[2] if op == "append" else rng.choice(FUZZ_TABLES[:2])
    if rng.random() < 0.02:  # append on a keyed table, or a keyed write on the append table
        spec = rng.choice(FUZZ_TABLES[:2]) if op == "append" else FUZZ_TABLES[2]
        rows = _table_rows(rng, spec, 2)
        batch = _arrow_batch(rng, rows, spec.schema, spec.schema.names)
        return TableCall(op, spec, batch, InvalidArgumentError, "the wrong kind of table")
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
        return TableCall(op, spec, batch, None, "a valid batch", effect)
    plain = _with_kinds(
        rng, op, pa.Table.from_pylist(rows, pa.schema([spec.schema.field(c) for c in columns])), kinds
    )
    for _ in range(3):
        defect = break_call(rng, op, spec, plain, columns)
        if defect is not None:
            batch, expect, label = defect
            return TableCall(op, spec, batch, expect, label, effect if expect is None else None)
    return TableCall(op, spec, plain, None, "a valid batch", effect)


def _with_kinds(rng: random.Random, op: str, batch: Any, kinds: list[int]) -> Any:
    if op != "apply":
        return batch
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    kind_type = rng.choice((pa.int8(), pa.int8(), pa.int64(), pa.uint8()))
    return table.append_column(KIND_COLUMN, pa.array(kinds, kind_type))


def _effect(
    op: str, rows: list[dict[str, Any]], columns: list[str], kinds: list[int]
) -> Callable[[TableOracle], dict[str, int]]:
    def apply(oracle: TableOracle) -> dict[str, int]:
        if op == "append":
            oracle.appended.extend(rows)
            return {"+I": len(rows), "-U": 0, "+U": 0, "-D": 0}
        if op == "update_columns":
            return oracle.patch(rows, columns[len(oracle.spec.key) :])
        deletes = [op == "delete" or (op == "apply" and kind in (1, 3)) for kind in kinds]
        return oracle.write(list(zip(deletes, rows, strict=True)))

    return apply
