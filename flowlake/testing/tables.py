"""Comparing tables and replaying changelogs in tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind


def rows_by_key(table: pa.Table, primary_key: Sequence[str]) -> dict[Any, dict[str, Any]]:
    """``{key: row}`` of a table (key is a scalar for one key column, a tuple for several)."""
    out: dict[Any, dict[str, Any]] = {}
    for row in table.to_pylist():
        key = row[primary_key[0]] if len(primary_key) == 1 else tuple(row[k] for k in primary_key)
        if key in out:
            raise AssertionError(f"key {key!r} appears twice")
        out[key] = row
    return out


def apply_changelog(
    rows: Mapping[Any, Mapping[str, Any]], changes: pa.Table, primary_key: Sequence[str]
) -> dict[Any, dict[str, Any]]:
    """Apply a changelog strictly.

    ``-U``/``-D`` must retract the exact current row, and ``+I``/``+U`` need an absent key.
    """
    state = {k: dict(v) for k, v in rows.items()}
    for change in changes.to_pylist():
        kind = RowKind(change.pop(KIND_COLUMN))
        change.pop(SEQ_COLUMN, None)
        key = change[primary_key[0]] if len(primary_key) == 1 else tuple(change[k] for k in primary_key)
        if kind is RowKind.INSERT:
            if key in state:
                raise AssertionError(f"+I for key {key!r} that is present")
            state[key] = change
        elif kind is RowKind.UPDATE_AFTER:
            if key in state:
                raise AssertionError(f"+U for key {key!r} without a preceding -U")
            state[key] = change
        else:
            if state.get(key) != change:
                raise AssertionError(
                    f"{kind.symbol} for key {key!r} retracts {change!r}, current is {state.get(key)!r}"
                )
            del state[key]
    return state


def assert_tables_equal(actual: pa.Table, expected: pa.Table, *, sort_by: Sequence[str]) -> None:
    """Assert two tables hold the same rows (same columns), ignoring row order."""
    assert actual.column_names == expected.column_names, (actual.column_names, expected.column_names)
    order = [(c, "ascending") for c in sort_by]
    a, e = actual.sort_by(order).to_pylist(), expected.sort_by(order).to_pylist()
    assert a == e, f"tables differ: {len(a)} vs {len(e)} rows; first differences: " + repr(
        [(x, y) for x, y in zip(a, e, strict=False) if x != y][:3]
    )


def data_file_rows(table: Any, file: Any, columns: Sequence[str] | None = None) -> pa.Table:
    """The stored rows of one of ``table``'s data files (a ``LakeTable`` and a catalog ``DataFile``):
    the whole file, or the bucket's row groups when it names a part of a commit's shared log file
    (:mod:`flowlake.table.fileparts`)."""
    import pyarrow.parquet as pq

    from flowlake.table.fileparts import physical_path, row_groups_of

    storage = table._storage
    parquet = pq.ParquetFile(storage.path(physical_path(file.path)), filesystem=storage.fs)
    span = row_groups_of(file.path, parquet.metadata)
    return parquet.read_row_groups(list(span), columns=None if columns is None else list(columns))
