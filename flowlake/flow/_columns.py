"""Column values as int64 numpy arrays and back: the forms the aggregate state computes in.

Decimals of precision <= 18 as their unscaled int64, timestamps and dates as counts of their units
(their state form, see :mod:`flowlake.flow._stateform`), event times as epoch microseconds; and the
inverse conversions the aggregate's output is built with (key columns, decimal sums and extremes).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError
from flowlake.flow._stateform import _storage_type

_US = {"s": 1_000_000, "ms": 1000, "us": 1, "ns": 0}


def temporal_us(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Epoch microseconds of a timestamp/date column as int64 (nulls → min int64)."""
    dtype = column.type
    if pa.types.is_timestamp(dtype):
        unit = dtype.unit
        if not column.null_count and unit == "us":  # (the common case: the values as they are)
            values: np.ndarray = column.to_numpy(zero_copy_only=False).view(np.int64)  # (datetime64[us])
            return values
        filled = pc.fill_null(column.cast(pa.int64()), np.iinfo(np.int64).min)
        raw: np.ndarray = np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)
        if unit == "ns":
            return np.asarray(np.where(raw == np.iinfo(np.int64).min, raw, raw // 1000), dtype=np.int64)
        return np.asarray(np.where(raw == np.iinfo(np.int64).min, raw, raw * _US[unit]), dtype=np.int64)
    if pa.types.is_date32(dtype):
        days = pc.fill_null(column.cast(pa.int32()), np.iinfo(np.int32).min).to_numpy(zero_copy_only=False)
        days = days.astype(np.int64)
        return np.where(days == np.iinfo(np.int32).min, np.iinfo(np.int64).min, days * 86_400_000_000)
    raise InvalidArgumentError(f"window column must be a timestamp or date, got {dtype}")


def unscaled(column: pa.ChunkedArray, scale: int) -> np.ndarray:
    """Decimal values as int64 multiples of 10**-scale (nulls → 0)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.type.precision <= 18:
        buf = array.buffers()[1]
        if buf is None:
            return np.zeros(len(array), dtype=np.int64)
        words = np.frombuffer(buf, dtype=np.int64, count=2 * (array.offset + len(array)))
        low = words[2 * array.offset :: 2].copy()
        if array.null_count:
            low[~np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
        return low
    return np.array([0 if v is None else int(v.scaleb(scale)) for v in array.to_pylist()], dtype=np.int64)


def decimal_array(values: np.ndarray, valid: np.ndarray | None, dtype: pa.DataType) -> pa.Array:
    """Decimals from their unscaled int64 values (``valid``: False → NULL; None: all valid).

    >>> valid = np.array([True, True, False])
    >>> decimal_array(np.array([150, -5, 7]), valid, pa.decimal128(12, 2)).to_pylist()
    [Decimal('1.50'), Decimal('-0.05'), None]
    """
    low = values.astype(np.int64, copy=False)
    words = np.empty((len(low), 2), dtype=np.int64)
    words[:, 0] = low
    words[:, 1] = low >> 63
    bitmap, nulls = None, 0
    if valid is not None and not valid.all():
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = len(valid) - int(np.count_nonzero(valid))
    return pa.Array.from_buffers(dtype, len(low), [bitmap, pa.py_buffer(words)], null_count=nulls)


def unscaled_default(default: Any, scale: int) -> int | None:
    """A sum's default as an unscaled int64 at ``scale``, or None if it is not one exactly.

    >>> unscaled_default(0, 2), unscaled_default("1.5", 2), unscaled_default("0.001", 2)
    (0, 150, None)
    """
    try:
        scaled = Decimal(default).scaleb(scale)
    except (ArithmeticError, TypeError, ValueError):
        return None
    if scaled != scaled.to_integral_value() or not -(2**63) <= scaled < 2**63:
        return None
    return int(scaled)


def key_array(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A key column from its values in state form (int64, see :func:`state_ints`): the inverse of
    :func:`state_ints` for the integer and temporal types it accepts.

    >>> key_array(np.array([3, -1]), pa.int32()).to_pylist()
    [3, -1]
    >>> key_array(np.array([60_000_000]), pa.timestamp("us", tz="UTC")).to_pylist()[0].isoformat()
    '1970-01-01T00:01:00+00:00'
    """
    storage = _storage_type(type_) or type_
    array = pa.array(values.astype(storage.to_pandas_dtype(), copy=False))
    return array if storage == type_ else array.view(type_)


def is_valid(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def column_ints(data: pa.Table, name: str, ints: dict[str, np.ndarray]) -> np.ndarray:
    """:func:`value_keys` of the column ``name``, kept in ``ints`` for the rest of the batch."""
    values = ints.get(name)
    if values is None:
        values = ints[name] = value_keys(data.column(name))
    return values


def value_keys(column: pa.ChunkedArray) -> np.ndarray:
    """A column's values as int64 value keys: their state form (see :mod:`flowlake.flow._stateform`);
    NULLs are 0 (callers mask them)."""
    type_ = column.type
    if pa.types.is_decimal(type_):
        return unscaled(column, type_.scale)
    storage = _storage_type(type_)
    if storage is not None:
        column = column.cast(storage)
    if column.null_count:
        column = pc.fill_null(column, 0)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)


def value_array(keys: np.ndarray, valid: np.ndarray, type_: pa.DataType) -> pa.Array:
    """The inverse of :func:`value_keys` (invalid → NULL)."""
    if pa.types.is_decimal(type_):
        return decimal_array(keys, valid, type_)
    storage = _storage_type(type_) or type_
    return pa.array(keys, pa.int64(), mask=~valid).cast(storage).cast(type_)


def state_ints(column: pa.ChunkedArray) -> np.ndarray | None:
    """A key column without NULLs as the int64 values of its state form (an integer column, or a
    temporal one held as its count of units), else None."""
    type_ = column.type
    if column.null_count:
        return None
    if pa.types.is_integer(type_) and type_ != pa.uint64():
        return np.asarray(column.to_numpy(), np.int64)
    storage = _storage_type(type_)
    if storage is None or pa.types.is_decimal(storage):
        return None
    return np.asarray(column.cast(storage).to_numpy(), np.int64)
