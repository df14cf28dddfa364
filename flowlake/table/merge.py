"""Merge-on-read: the latest row of each key across a bucket's base and log files.

Parts arrive in commit order (base files first, then log files oldest to newest), each holding row
images and a ``_kind`` column; the last image of a key wins, and a key whose last image is a ``-D``
is absent. ``-U`` rows (before-images) are never images: the merge skips them.

The merge works on numpy arrays of the key and kind columns only and gathers the winning rows with
one ``take``, so no column but the key is copied more than once. Keys become int64 codes (integers
and temporal values as they are, others dictionary-encoded, composite keys re-coded column by
column, so equal codes mean equal keys); one stable argsort of the codes puts each key's images in
commit order, and the last of each run wins. When the leading parts are a bucket's base files (keys
unique among them), the sort covers the log rows only: base rows whose key the logs mention are
dropped with one hash-set probe each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind

_STORAGE = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}


def latest_rows(parts: Sequence[pa.Table], primary_key: Sequence[str], *, base_count: int = 0) -> pa.Table:
    """Merge parts (same schema, with ``_kind``) into the live rows, without ``_kind``.

    ``base_count`` leading parts are base files whose keys are unique among themselves.

    >>> import pyarrow as pa
    >>> old = pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"], "_kind": pa.array([0, 0, 0], pa.int8())})
    >>> log = pa.table({"k": [2, 2, 3, 4], "v": ["b", "B", "c", "d"],
    ...                 "_kind": pa.array([1, 2, 3, 0], pa.int8())})
    >>> latest_rows([old, log], ["k"], base_count=1).to_pydict()
    {'k': [1, 2, 4], 'v': ['a', 'B', 'd']}
    """
    combined = pa.concat_tables(parts) if len(parts) != 1 else parts[0]
    winners = live_positions(combined, primary_key, base_rows=sum(p.num_rows for p in parts[:base_count]))
    if len(winners) == combined.num_rows:
        return combined.drop_columns([KIND_COLUMN])
    return combined.drop_columns([KIND_COLUMN]).take(pa.array(winners))


def live_positions(combined: pa.Table, primary_key: Sequence[str], *, base_rows: int = 0) -> np.ndarray:
    """Ascending positions of the live rows of ``combined`` (rows in commit order, with ``_kind``).

    The first ``base_rows`` rows are base rows with unique keys.
    """
    n = combined.num_rows
    if n == 0:
        return np.empty(0, np.int64)
    kinds = np.asarray(combined.column(KIND_COLUMN).to_numpy(), dtype=np.int8)
    codes = key_codes(combined, primary_key)
    images = np.flatnonzero(kinds[base_rows:] != int(RowKind.UPDATE_BEFORE)) + base_rows
    newest = images[_last_of_each(codes[images])]
    live = np.zeros(n, dtype=bool)  # a mask orders the winners in O(n), where a sort would not
    live[newest] = True
    if base_rows:
        overridden = pc.is_in(pa.array(codes[:base_rows]), value_set=pa.array(codes[newest]))
        live[:base_rows] = ~np.asarray(overridden.to_numpy(zero_copy_only=False), dtype=bool)
    live &= kinds != int(RowKind.DELETE)
    return np.flatnonzero(live)


def _last_of_each(codes: np.ndarray) -> np.ndarray:
    """Index (into ``codes``) of the last occurrence of every distinct code, in no set order."""
    if len(codes) == 0:
        return np.empty(0, np.int64)
    order = np.argsort(codes, kind="stable")
    ordered = codes[order]
    last = np.empty(len(codes), dtype=bool)
    np.not_equal(ordered[1:], ordered[:-1], out=last[:-1])
    last[-1] = True
    return order[last]


def key_codes(table: pa.Table, primary_key: Sequence[str]) -> np.ndarray:
    """An int64 code per row, equal exactly when the rows' keys are equal."""
    codes = _column_codes(table.column(primary_key[0]))
    for name in primary_key[1:]:
        more = _column_codes(table.column(name))
        _, dense = np.unique(codes, return_inverse=True)
        _, dense_more = np.unique(more, return_inverse=True)
        width = int(dense_more.max()) + 1 if len(dense_more) else 1
        codes = dense.astype(np.int64) * width + dense_more.astype(np.int64)
    return codes


def _column_codes(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dtype = array.type
    if pa.types.is_integer(dtype) or pa.types.is_date(dtype) or pa.types.is_timestamp(dtype):
        values = array if pa.types.is_integer(dtype) else array.view(_STORAGE[dtype.bit_width])
        out: np.ndarray = values.to_numpy(zero_copy_only=False)
        if out.dtype == np.uint64:  # equality is all that counts: reinterpret, do not convert
            return np.asarray(out.view(np.int64))
        return np.asarray(out, dtype=np.int64)
    return np.asarray(pc.dictionary_encode(array).indices.to_numpy(zero_copy_only=False), dtype=np.int64)
