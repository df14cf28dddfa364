"""Build an Arrow changelog from decoded ``(kind, row)`` pairs, finding the rows that do not fit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN
from flowlake.errors import short_repr

_BUILD_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError)


def build_rows(
    rows: Sequence[tuple[int, dict[str, Any]]], schema: pa.Schema
) -> tuple[pa.Table, dict[int, tuple[str, str]]]:
    """Columns of ``schema`` (all nullable) plus ``_kind`` from ``rows``.

    Returns:
        The changelog without the rows that cannot be held, and those rows' indexes with the column
        and the reason.
    """
    bad: dict[int, tuple[str, str]] = {}
    columns: list[pa.Array] = []
    for f in schema:
        values = [row.get(f.name) for _, row in rows]
        try:
            columns.append(pa.array(values, type=f.type))
        except _BUILD_ERRORS:
            _bisect(values, f, 0, len(values), bad)
            columns.append(pa.array([None if i in bad else v for i, v in enumerate(values)], type=f.type))
    kinds = pa.array([k for k, _ in rows], type=pa.int8())
    out_schema = pa.schema([*(f.with_nullable(True) for f in schema), pa.field(KIND_COLUMN, pa.int8())])
    table = pa.Table.from_arrays([*columns, kinds], schema=out_schema)
    if bad:
        keep = pa.array([i not in bad for i in range(len(rows))])
        table = table.filter(keep)
    return table, bad


def _bisect(values: list[Any], f: pa.Field, lo: int, hi: int, bad: dict[int, tuple[str, str]]) -> None:
    if lo >= hi:
        return
    try:
        pa.array(values[lo:hi], type=f.type)
        return
    except _BUILD_ERRORS as exc:
        if hi - lo == 1:
            reason = f"column {f.name!r} ({f.type}) cannot hold {short_repr(values[lo])}: {exc}"
            bad.setdefault(lo, (f.name, reason))
            return
    mid = (lo + hi) // 2
    _bisect(values, f, lo, mid, bad)
    _bisect(values, f, mid, hi, bad)
