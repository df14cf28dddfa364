"""Arrow columns of a Debezium batch: which columns it has, and how each is built from JSON values.

:func:`flowlake.cdc.debezium_batch.decode_batch` gathers the rows of a batch, then builds one
column per field here (rule 8 of :mod:`flowlake.cdc.debezium`): with the field's decoder when a
schema block or an explicit schema gives one, else by Arrow's inference (never turning true/false
into numbers, nor taking integers a float column cannot hold exactly). When a column does not
build, the rows whose values it cannot hold are found by bisection, so that only their messages fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, Final

import pyarrow as pa

from flowlake.cdc.logical_types import DecimalHandling, FieldDecoder, decoder_for_arrow, quote
from flowlake.changelog import RESERVED_COLUMNS
from flowlake.errors import CdcDecodeError, CorruptRecordError, short_repr

_BUILD_ERRORS: Final = (pa.ArrowException, CdcDecodeError, TypeError, ValueError, ArithmeticError)
"""What building an Arrow column from JSON values may raise (pa.array raises all of these)."""


def column_names(
    rows: list[dict[str, Any]], present: set[str], schema: pa.Schema | None, decoders: dict[str, FieldDecoder]
) -> list[str]:
    if schema is not None:
        return list(schema.names)
    names = dict.fromkeys(decoders)
    extra = present.difference(names)
    if extra:  # in order of first appearance
        for row in rows:
            for name in row:
                if name in extra:
                    names[name] = None
    return list(names)


def rows_with_bad_columns(
    rows: list[dict[str, Any]], present: set[str], names: list[str], schema: pa.Schema | None
) -> dict[int, str]:
    """Rows that hold a reserved column, or (with an explicit schema) a column outside it."""
    unwanted = present - set(names) if schema is not None else present & RESERVED_COLUMNS
    if not unwanted:
        return {}
    bad: dict[int, str] = {}
    for i, row in enumerate(rows):
        for name in row:
            if name in unwanted:
                bad[i] = (
                    f"column {quote(name)} is reserved for the changelog; rename it upstream"
                    if name in RESERVED_COLUMNS
                    else f"column {quote(name)} is not in the given schema; "
                    "evolve the schema or drop it upstream"
                )
                break
    return bad


Builder = Callable[[list[Any]], pa.Array]
"""Builds one Arrow column from JSON values; raises one of ``_BUILD_ERRORS`` on a bad value."""


def _infer_array(values: list[Any]) -> pa.Array:
    array = pa.array(values)
    kind = array.type
    if kind == pa.float64():
        mixed = bool in set(map(type, values))
    else:
        mixed = _holds_float(kind) and any(_bool_as_number(v, kind) for v in values)
    if mixed:  # Arrow's inference turns them into 1.0 and 0.0
        raise CorruptRecordError("true/false where the batch has numbers")
    return array


def _holds_float(kind: pa.DataType) -> bool:
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_list(kind):
        return _holds_float(kind.value_type)
    return bool(pa.types.is_struct(kind)) and any(_holds_float(f.type) for f in kind)


def _bool_as_number(value: Any, kind: pa.DataType) -> bool:
    """Whether a JSON value puts a boolean where ``kind`` (inferred from the batch) has a float."""
    if type(value) is bool:
        return bool(pa.types.is_floating(kind))
    if type(value) is list and pa.types.is_list(kind):
        return any(_bool_as_number(v, kind.value_type) for v in value)
    if type(value) is dict and pa.types.is_struct(kind):
        return any(_bool_as_number(value.get(f.name), f.type) for f in kind)
    return False


def column_builder(
    name: str, schema: pa.Schema | None, decoders: dict[str, FieldDecoder], decimal_handling: DecimalHandling
) -> Builder:
    target = schema.field(name).type if schema is not None else None
    decoder = decoders.get(name)
    if decoder is None and target is not None:
        decoder = decoder_for_arrow(name, target, decimal_handling=decimal_handling)
    if decoder is None:
        return _infer_array
    build = decoder.build_array
    if target is None or target == decoder.arrow_type:
        return build

    def build_and_cast(values: list[Any]) -> pa.Array:
        return build(values).cast(target)

    return build_and_cast


def build_column(name: str, values: list[Any], builder: Builder) -> tuple[pa.Array, dict[int, str]]:
    """Build a column; on failure find the rows whose values cannot be held (by bisection)."""
    try:
        return builder(values), {}
    except _BUILD_ERRORS as exc:
        failure = exc
    if builder is _infer_array:
        builder = _majority_builder(values)
        with contextlib.suppress(*_BUILD_ERRORS):
            return builder(values), {}  # a mix Arrow's inference refuses, such as big integers and floats
    bad: dict[int, str] = {}
    _bisect(values, builder, 0, len(values), bad)
    if not bad:
        raise CdcDecodeError(f"column {quote(name)} cannot be built from this batch: {failure}") from failure
    return pa.array([]), {row: f"field {quote(name)}: {clip(reason)}" for row, reason in bad.items()}


def clip(reason: str, limit: int = 300) -> str:
    """Arrow's own messages may quote a whole value or type: keep them short."""
    return reason if len(reason) <= limit else reason[:limit] + "..."


def _majority_builder(values: list[Any]) -> Builder:
    """For an inferred column of mixed types: build with the type of the most common kind of value."""
    counts: dict[type, int] = {}
    first: dict[type, Any] = {}
    for value in values:
        if value is not None:
            kind = float if type(value) is int else type(value)
            counts[kind] = counts.get(kind, 0) + 1
            first.setdefault(kind, value)
    majority = max(counts, key=counts.__getitem__)
    sample = first[majority]
    try:
        target = pa.float64() if majority is float else pa.array([sample]).type
    except _BUILD_ERRORS:
        target = pa.string()

    def build(chunk: list[Any]) -> pa.Array:
        for value in chunk:
            if value is not None and (float if type(value) is int else type(value)) is not majority:
                raise CorruptRecordError(
                    f"{short_repr(value)} does not match the column's type {clip(str(target), 100)} "
                    "(inferred from the batch)"
                )
        if majority is float:  # Arrow refuses some mixes of big integers and floats: convert them here
            chunk = [_exact_float(v) if type(v) is int else v for v in chunk]
        elif _holds_float(target) and any(_bool_as_number(v, target) for v in chunk):
            raise CorruptRecordError("true/false where the batch has numbers")
        return pa.array(chunk, type=target)

    return build


def _exact_float(value: int) -> float:
    number = float(value)
    if number != value:
        raise CorruptRecordError(
            f"{quote(value)} cannot be held exactly by a column of floats (inferred from the batch)"
        )
    return number


def _bisect(values: list[Any], builder: Builder, lo: int, hi: int, bad: dict[int, str]) -> None:
    if lo >= hi:
        return
    try:
        builder(values[lo:hi])
        return
    except _BUILD_ERRORS as exc:
        if hi - lo == 1:
            bad[lo] = str(exc)
            return
    mid = (lo + hi) // 2
    _bisect(values, builder, lo, mid, bad)
    _bisect(values, builder, mid, hi, bad)


def output_fields(names: Iterable[str], columns: list[pa.Array], schema: pa.Schema | None) -> list[pa.Field]:
    if schema is not None:
        return [schema.field(name).with_nullable(True) for name in names]
    return [pa.field(name, column.type) for name, column in zip(names, columns, strict=True)]
