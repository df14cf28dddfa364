"""Table schemas: which Arrow types a table may hold, how batches are fitted, how schemas evolve.

Supported column types: int8-64 (and unsigned), float32/64, bool, string, binary, decimal128, date32,
timestamp (any unit, with or without a time zone), duration (any unit: a signed span such as MySQL's
``TIME``, negative and over 24 h included), and the null type for all-null input columns. Parquet has
no duration type: pyarrow stores a duration column as int64 in its unit and records the Arrow type in
the file's ``ARROW:schema`` metadata, so pyarrow (and so every flowlake read) gets the duration back;
other readers see the int64. Primary-key columns may not be floats, bools or nulls (a duration may:
MySQL allows a TIME key) and may never hold a null.

Values: strings must be valid UTF-8, and dates and timestamps must fall in years 1-9999 (what Python's
``datetime``, and so ``to_pylist()`` and most readers, can hold). NaN and infinities are legal float
values (a NaN rewritten with NaN is no change). A key can never be NaN: key columns cannot be floats,
and a float batch column cast to an integer key column is refused if it holds NaN or a fraction, like
any value that does not fit its column. Each refusal names the table, the column and the batch row
(with the row's key where the bad value is not itself the key).

Evolution allows only lossless changes: add a nullable column, widen an integer to a wider integer of
the same signedness, widen float32 to float64, and widen a decimal128 to more digits (the same scale;
outside the primary key also a larger scale that keeps at least as many integer digits). Anything else
raises :class:`SchemaMismatchError` naming the column.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import NullKeyError, SchemaMismatchError, short_repr
from flowlake.names import validate_column

_INT_WIDTH = {
    pa.int8(): 8, pa.int16(): 16, pa.int32(): 32, pa.int64(): 64,
    pa.uint8(): 8, pa.uint16(): 16, pa.uint32(): 32, pa.uint64(): 64,
}  # fmt: skip


def is_supported(dtype: pa.DataType) -> bool:
    """Whether a table column may have this Arrow type."""
    return bool(
        pa.types.is_integer(dtype)
        or dtype in (pa.float32(), pa.float64(), pa.bool_(), pa.string(), pa.binary(), pa.date32())
        or pa.types.is_decimal128(dtype)
        or pa.types.is_timestamp(dtype)
        or pa.types.is_duration(dtype)
    )


def is_key_type(dtype: pa.DataType) -> bool:
    """Whether a primary-key column may have this Arrow type."""
    return bool(
        pa.types.is_integer(dtype)
        or dtype in (pa.string(), pa.binary(), pa.date32())
        or pa.types.is_decimal128(dtype)
        or pa.types.is_timestamp(dtype)
        or pa.types.is_duration(dtype)
    )


def normalize_type(dtype: pa.DataType) -> pa.DataType:
    """Map equivalent input types onto the stored ones (large_string → string and so on)."""
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    return dtype


def validate_schema(table: str, schema: pa.Schema, primary_key: Sequence[str]) -> pa.Schema:
    """Check a schema for a new table and return it in stored form (key columns non-nullable)."""
    if len(schema) == 0:
        raise SchemaMismatchError(table, "*", "a table needs at least one column")
    if len(set(schema.names)) != len(schema.names):
        dup = next(n for n in schema.names if schema.names.count(n) > 1)
        raise SchemaMismatchError(table, dup, "the column appears twice in the schema")
    fields = []
    for f in schema:
        validate_column(f.name, table=table)
        dtype = normalize_type(f.type)
        if not is_supported(dtype):
            raise SchemaMismatchError(table, f.name, f"type {f.type} is not supported by flowlake tables")
        fields.append(pa.field(f.name, dtype, nullable=f.nullable and f.name not in primary_key))
    for key in primary_key:
        if key not in schema.names:
            raise SchemaMismatchError(table, key, "the primary-key column is not in the schema")
        if not is_key_type(normalize_type(schema.field(key).type)):
            raise SchemaMismatchError(
                table, key, f"type {schema.field(key).type} cannot be a primary key (no floats, bools)"
            )
    if len(set(primary_key)) != len(primary_key):
        raise SchemaMismatchError(table, ",".join(primary_key), "a key column is listed twice")
    return pa.schema(fields)


def _is_widening(source: pa.DataType, target: pa.DataType, *, key: bool) -> bool:
    """Whether every ``source`` value is held exactly by ``target`` (and, in a key, hashes the same)."""
    if source == target:
        return True
    if source in _INT_WIDTH and target in _INT_WIDTH:
        same_sign = pa.types.is_signed_integer(source) == pa.types.is_signed_integer(target)
        return same_sign and _INT_WIDTH[source] <= _INT_WIDTH[target]
    if pa.types.is_decimal128(source) and pa.types.is_decimal128(target):
        # a key's hash is taken over the unscaled integer, which a new scale would change
        same_scale = target.scale == source.scale
        if not same_scale and (key or target.scale < source.scale):
            return False
        return bool(target.precision - target.scale >= source.precision - source.scale)
    return bool(source == pa.float32() and target == pa.float64())


def evolve_schema(
    table: str, current: pa.Schema, proposed: pa.Schema, primary_key: Sequence[str]
) -> pa.Schema:
    """Return the evolved schema, or raise if ``proposed`` is not an allowed evolution of ``current``."""
    proposed = validate_schema(table, proposed, primary_key)
    for f in current:
        if f.name not in proposed.names:
            raise SchemaMismatchError(table, f.name, "columns cannot be dropped")
        new = proposed.field(f.name)
        if not _is_widening(f.type, new.type, key=f.name in primary_key):
            raise SchemaMismatchError(
                table,
                f.name,
                f"type {f.type} cannot change to {new.type} (only lossless widenings: int to a wider "
                "int of the same sign, float32→float64, decimal to more digits; a narrower source "
                "column keeps the wider table column)",
            )
        if f.nullable and not new.nullable and f.name not in primary_key:
            raise SchemaMismatchError(table, f.name, "a nullable column cannot become non-nullable")
    fields = [pa.field(f.name, proposed.field(f.name).type, nullable=f.nullable) for f in current]
    for f in proposed:
        if f.name not in current.names:
            if not f.nullable:
                raise SchemaMismatchError(table, f.name, "an added column must be nullable")
            fields.append(f)
    return pa.schema(fields)


_MIN_MICROS, _MAX_MICROS = -62_135_596_800_000_000, 253_402_300_799_999_999
"""0001-01-01 and 9999-12-31 23:59:59.999999 in µs since the epoch: the years Python's ``datetime`` holds."""
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _value_range(dtype: pa.DataType) -> tuple[int, int] | None:
    """The stored integers of a date or timestamp type that fall in years 1-9999."""
    if dtype == pa.date32():
        return -719_162, 2_932_896
    if not pa.types.is_timestamp(dtype):
        return None
    per = _PER_SECOND[dtype.unit]
    return max(-(2**63), -((-_MIN_MICROS * per) // 1_000_000)), min(2**63 - 1, _MAX_MICROS * per // 1_000_000)


def _show(array: pa.Array, row: int) -> str:
    """A batch value for a message, even one Python cannot represent."""
    dtype = array.type
    try:
        return short_repr(array[row].as_py())
    except (ValueError, OverflowError, ArithmeticError, pa.ArrowException):
        if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
            unit = "days since 1970-01-01" if pa.types.is_date(dtype) else f"{dtype.unit} since the epoch"
            storage = pa.int32() if dtype.bit_width == 32 else pa.int64()
            return f"{array.slice(row, 1).cast(storage)[0].as_py()} {unit}"
        return "a value Python cannot show"


def _first_uncastable(array: pa.Array, target: pa.DataType) -> int:
    """The first row whose value does not cast safely to ``target`` (by bisection)."""
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(array.slice(lo, mid - lo), target, safe=True)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _first_bad_utf8(array: pa.Array) -> int:
    for row, value in enumerate(array.cast(pa.binary()).to_pylist()):
        try:
            if value is not None:
                value.decode("utf-8")
        except UnicodeDecodeError:
            return row
    return 0


def _check_values(table: str, name: str, column: pa.ChunkedArray, where: Callable[[int], str]) -> None:
    """Refuse strings that are not UTF-8 and dates/timestamps outside years 1-9999 (see the module doc)."""
    dtype = column.type
    if pa.types.is_string(dtype):
        offset = 0
        for chunk in column.chunks:
            try:
                chunk.validate(full=True)
            except pa.ArrowInvalid:
                row = offset + _first_bad_utf8(chunk)
                raise SchemaMismatchError(
                    table, name, f"{where(row)} is not valid UTF-8; store raw bytes in a binary column"
                ) from None
            offset += len(chunk)
    bounds = _value_range(dtype)
    if bounds is None or len(column) == column.null_count:
        return
    ints = column.cast(pa.int32() if dtype == pa.date32() else pa.int64())
    low, high = pc.min_max(ints).values()
    if low.as_py() < bounds[0] or high.as_py() > bounds[1]:
        row = int(pc.index(pc.or_(pc.less(ints, bounds[0]), pc.greater(ints, bounds[1])), True).as_py())
        value = _show(column.combine_chunks(), row)
        raise SchemaMismatchError(
            table, name, f"{where(row)} holds {value}, outside the years 1-9999 tables hold"
        )


def _row_locator(batch: pa.Table, primary_key: Sequence[str], name: str) -> Callable[[int], str]:
    """Describe a batch row for a message: its number and, unless the bad value is the key, its key."""
    keys = [k for k in primary_key if k != name and k in batch.column_names]

    def where(row: int) -> str:
        if not keys:
            return f"row {row} of the batch"
        try:
            key = ", ".join(f"{k}={_show(batch.column(k).combine_chunks(), row)}" for k in keys)
        except (pa.ArrowException, IndexError):
            return f"row {row} of the batch"
        return f"row {row} of the batch (key {key})"

    return where


def _fit_column(
    table: str,
    name: str,
    column: pa.ChunkedArray | pa.Array,
    target: pa.DataType,
    where: Callable[[int], str] = lambda row: f"row {row} of the batch",
) -> pa.ChunkedArray:
    source = column.type
    if source == target:
        return column
    numeric = pa.types.is_integer(source) or pa.types.is_floating(source)
    allowed = (
        pa.types.is_null(source)
        or normalize_type(source) == target
        or (numeric and (pa.types.is_integer(target) or pa.types.is_floating(target)))
        or (pa.types.is_timestamp(source) and pa.types.is_timestamp(target) and source.tz == target.tz)
        or (pa.types.is_duration(source) and pa.types.is_duration(target))
        or (pa.types.is_decimal(source) and pa.types.is_decimal128(target))
        or (pa.types.is_integer(source) and pa.types.is_decimal128(target))
    )
    if not allowed:
        raise SchemaMismatchError(table, name, f"batch has type {source}, the table stores {target}")
    try:
        return pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        row = _first_uncastable(array, target)
        reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "..."
        raise SchemaMismatchError(
            table, name, f"{where(row)} holds {_show(array, row)}, which does not fit {target} ({reason})"
        ) from exc


def fit_batch(
    table: str,
    batch: pa.Table | pa.RecordBatch,
    schema: pa.Schema,
    *,
    columns: Sequence[str] | None = None,
    primary_key: Sequence[str] = (),
) -> pa.Table:
    """Cast ``batch`` to the table's schema (or to the listed ``columns`` of it), in schema order.

    Numeric and timestamp values are cast when they fit exactly. Extra or missing columns, and values
    that cannot be cast without loss, raise :class:`SchemaMismatchError`; a null in a ``primary_key``
    column raises :class:`NullKeyError`.
    """
    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    if not isinstance(batch, pa.Table):
        raise SchemaMismatchError(
            table, "*", f"expected a pyarrow Table or RecordBatch, got {type(batch).__name__}"
        )
    wanted = list(columns) if columns is not None else schema.names
    for name in batch.column_names:
        if name not in schema.names:
            raise SchemaMismatchError(
                table,
                name,
                "the batch has a column the table does not; evolve the schema first "
                "(t.evolve_schema) or drop the column",
            )
    if len(set(batch.column_names)) != len(batch.column_names):
        dup = next(n for n in batch.column_names if batch.column_names.count(n) > 1)
        raise SchemaMismatchError(table, dup, "the column appears twice in the batch")
    arrays = []
    for name in wanted:
        if name not in batch.column_names:
            raise SchemaMismatchError(
                table,
                name,
                "the batch lacks this column; upserts carry whole rows "
                "(send null explicitly, or use update_columns for partial updates)",
            )
        field = schema.field(name)
        where = _row_locator(batch, primary_key, name)
        column = _fit_column(table, name, batch.column(name), field.type, where)
        if isinstance(column, pa.Array):
            column = pa.chunked_array([column])
        _check_values(table, name, column, where)
        if name in primary_key and column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise NullKeyError(table, name, int(first))
        if not field.nullable and column.null_count:
            raise SchemaMismatchError(table, name, "the column is not nullable but the batch holds nulls")
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=pa.schema([schema.field(n) for n in wanted]))


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Bring a table read from an older file to ``schema``: add missing columns as nulls, widen types."""
    if data.schema.equals(schema):
        return data
    arrays = []
    for f in schema:
        if f.name in data.column_names:
            column = data.column(f.name)
            arrays.append(column if column.type == f.type else pc.cast(column, f.type))
        else:
            arrays.append(pa.nulls(data.num_rows, f.type))
    extra = [n for n in data.column_names if n not in schema.names]
    out = pa.Table.from_arrays(arrays, schema=schema)
    for name in extra:  # reserved columns such as _kind travel along
        out = out.append_column(data.schema.field(name), data.column(name))
    return out
