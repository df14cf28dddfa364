"""The form in which operator state holds column values: plain ints for temporal and decimal values.

State rows and values are hashed, compared and pickled at every snapshot; ints do all three several
times faster than ``datetime`` and ``Decimal`` objects and convert back exactly. Within one column
type the int form orders and compares exactly like the values (a decimal's unscaled integer at a fixed
scale, a timestamp's count of units), so min/max/distinct over it are unchanged.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pyarrow as pa

_INT64_VIEWS = (pa.types.is_timestamp, pa.types.is_duration, pa.types.is_date64, pa.types.is_time64)
_INT32_VIEWS = (pa.types.is_date32, pa.types.is_time32)
_LITTLE_ENDIAN = sys.byteorder == "little"


def _storage_type(type_: pa.DataType) -> pa.DataType | None:
    """The integer type a column is held as in operator state (None: as Python objects)."""
    if any(check(type_) for check in _INT64_VIEWS):
        return pa.int64()
    if any(check(type_) for check in _INT32_VIEWS):
        return pa.int32()
    if pa.types.is_decimal128(type_) and type_.precision <= 18 and _LITTLE_ENDIAN:
        return pa.decimal128(type_.precision, type_.scale)  # held as its unscaled int64
    return None


def to_state(column: pa.ChunkedArray) -> list[Any]:
    """A column as the values operator state holds: temporal values and decimals as plain ints.

    State rows are hashed, compared and pickled at every snapshot; ints do all three several times
    faster than ``datetime`` and ``Decimal`` objects, and convert back exactly (:func:`from_state`).
    """
    storage = _storage_type(column.type)
    if storage is None:
        return list(column.to_pylist())
    if not pa.types.is_decimal(storage):
        return list(column.cast(storage).to_pylist())
    array = column.combine_chunks()
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)
    values: list[Any] = words[2 * array.offset : 2 * (array.offset + len(array)) : 2].tolist()
    if array.null_count:
        nulls = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        values = [None if null else v for v, null in zip(values, nulls.tolist(), strict=True)]
    return values


def from_state(values: list[Any], type_: pa.DataType) -> pa.Array:
    """The inverse of :func:`to_state` for one column."""
    storage = _storage_type(type_)
    if storage is None:
        return pa.array(values, type_)
    if not pa.types.is_decimal(storage):
        return pa.array(values, storage).cast(type_)
    ints = pa.array(values, pa.int64())
    low = np.asarray(ints.fill_null(0).to_numpy(), dtype=np.int64)
    words = np.empty((len(low), 2), dtype=np.int64)
    words[:, 0], words[:, 1] = low, low >> 63
    validity = ints.buffers()[0] if ints.null_count else None
    return pa.Array.from_buffers(type_, len(low), [validity, pa.py_buffer(words)], null_count=ints.null_count)
