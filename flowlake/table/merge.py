"""Merge-on-read: the latest row of each key across a bucket's base and log files.

Parts arrive in commit order (base files first, then log files oldest to newest), each holding row
images and a ``_kind`` column; the last image of a key wins, and a key whose last image is a ``-D``
is absent. Log parts hold no ``-U`` rows (callers drop them): every other kind is an after-image.

When the leading parts are a bucket's base files (keys unique among them), the merge does not sort
them: it finds the newest image of each key among the logs only, and drops the base rows whose key
the logs mention (one hash-set probe per base row).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind

_INDEX = "__flowlake_row"
_STORAGE = {32: pa.int32(), 64: pa.int64()}


def latest_rows(parts: Sequence[pa.Table], primary_key: Sequence[str], *, base_count: int = 0) -> pa.Table:
    """Merge parts (same schema, with ``_kind``) into the live rows, without ``_kind``.

    ``base_count`` leading parts are base files whose keys are unique among themselves.
    """
    if base_count and len(primary_key) == 1 and base_count < len(parts):
        bases = pa.concat_tables(parts[:base_count])
        logs = _newest(pa.concat_tables(parts[base_count:]), primary_key)
        key = primary_key[0]
        overridden = pc.is_in(bases.column(key), value_set=logs.column(key).combine_chunks())
        kept = bases.filter(pc.invert(overridden))
        live_logs = logs.filter(pc.not_equal(logs.column(KIND_COLUMN), int(RowKind.DELETE)))
        return pa.concat_tables([kept, live_logs]).drop_columns([KIND_COLUMN])
    combined = pa.concat_tables(parts) if len(parts) != 1 else parts[0]
    rows = _newest(combined, primary_key)
    rows = rows.filter(pc.not_equal(rows.column(KIND_COLUMN), int(RowKind.DELETE)))
    return rows.drop_columns([KIND_COLUMN])


def _newest(combined: pa.Table, primary_key: Sequence[str]) -> pa.Table:
    """The last row of every key (deletes included)."""
    if combined.num_rows == 0:
        return combined
    if len(primary_key) == 1:
        winners = _last_index_single(combined.column(primary_key[0]))
    else:
        index = pa.array(np.arange(combined.num_rows, dtype=np.int64))
        grouped = (
            combined.select(list(primary_key))
            .append_column(_INDEX, index)
            .group_by(list(primary_key), use_threads=False)
            .aggregate([(_INDEX, "max")])
        )
        winners = np.sort(grouped.column(f"{_INDEX}_max").to_numpy())
    return combined.take(pa.array(winners))


def _last_index_single(keys: pa.ChunkedArray) -> np.ndarray:
    """Row index of the last occurrence of every distinct key, ascending."""
    array = keys.combine_chunks()
    if pa.types.is_integer(array.type) or pa.types.is_date(array.type) or pa.types.is_timestamp(array.type):
        values = array if pa.types.is_integer(array.type) else array.view(_STORAGE[array.type.bit_width])
        np_values = values.to_numpy(zero_copy_only=False)
    else:
        np_values = pc.dictionary_encode(array).indices.to_numpy(zero_copy_only=False)
    reversed_values = np_values[::-1]
    _, first_in_reversed = np.unique(reversed_values, return_index=True)
    return np.sort(len(np_values) - 1 - first_in_reversed)
