"""The writer's cached state of a table: current rows and a key → position index.

A commit needs the current row of every key it touches, to emit exact before-images (``-U``, ``-D``)
and to drop no-op rewrites. Scanning the table for them would make the write cost grow with the
table; instead each writer keeps the table's rows in memory, indexed by key, and brings the cache up
to date from the changelogs of commits made elsewhere (a cost that follows those changes).

Rows are stored in append-only Arrow chunks: a write appends its new row images as a chunk and points
the index at them, so positions never move. Neighbouring chunks are combined when they are of similar
size (positions are unchanged by that), which keeps the chunk count logarithmic; once superseded rows
outnumber live ones the whole state is rebuilt, so rebuilding costs O(1) amortized per change.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa


def key_list(table: pa.Table, primary_key: Sequence[str]) -> list[Any]:
    """Python values of the key (scalars for one column, tuples for several) of every row."""
    if len(primary_key) == 1:
        return list(table.column(primary_key[0]).to_pylist())
    return list(zip(*(table.column(k).to_pylist() for k in primary_key), strict=True))


class KeyState:
    """Live rows of a table at one version, indexed by primary key."""

    def __init__(self, rows: pa.Table, primary_key: Sequence[str], version: int) -> None:
        self.primary_key = tuple(primary_key)
        self.version = version
        self.schema = rows.schema
        self._chunks: list[pa.Table] = []
        self._offsets: list[int] = []
        self._size = 0
        self._index: dict[Any, int] = {}
        self._append(rows, key_list(rows, primary_key))

    def __len__(self) -> int:
        return len(self._index)

    @property
    def garbage(self) -> int:
        """Row images kept in memory that no key points at any more."""
        return self._size - len(self._index)

    def _append(self, rows: pa.Table, keys: list[Any]) -> None:
        if rows.num_rows == 0:
            return
        base = self._size
        self._chunks.append(rows.combine_chunks())
        self._offsets.append(base)
        self._size += rows.num_rows
        self._index.update(zip(keys, range(base, base + rows.num_rows), strict=True))
        while len(self._chunks) >= 2 and self._chunks[-1].num_rows * 2 >= self._chunks[-2].num_rows:
            last = self._chunks.pop()
            self._offsets.pop()
            self._chunks[-1] = pa.concat_tables([self._chunks[-1], last]).combine_chunks()

    def lookup(self, keys: Sequence[Any]) -> np.ndarray:
        """Position of each key's current row, or -1 where the key is absent."""
        if not self._index:
            return np.full(len(keys), -1, dtype=np.int64)
        return np.fromiter(map(self._index.get, keys, repeat(-1)), dtype=np.int64, count=len(keys))

    def take(self, positions: np.ndarray) -> pa.Table:
        """Row images at ``positions`` (all valid), in that order."""
        if len(positions) == 0:
            return self.schema.empty_table()
        offsets = np.asarray(self._offsets, dtype=np.int64)
        chunk_of = np.searchsorted(offsets, positions, side="right") - 1
        if len(self._chunks) == 1:
            return self._chunks[0].take(pa.array(positions))
        pieces, order = [], []
        for chunk_id in np.unique(chunk_of):
            mask = chunk_of == chunk_id
            local = positions[mask] - offsets[chunk_id]
            pieces.append(self._chunks[chunk_id].take(pa.array(local)))
            order.append(np.flatnonzero(mask))
        gathered = pa.concat_tables(pieces)
        inverse = np.empty(len(positions), dtype=np.int64)
        inverse[np.concatenate(order)] = np.arange(len(positions))
        return gathered.take(pa.array(inverse))

    def apply(
        self, upserted: pa.Table, upserted_keys: list[Any], deleted_keys: Sequence[Any], version: int
    ) -> None:
        """Move the state to ``version``: new row images for some keys, removal of others."""
        if upserted.num_rows:
            self._append(upserted.select(self.schema.names).cast(self.schema), upserted_keys)
        pop = self._index.pop
        for key in deleted_keys:
            pop(key, None)
        self.version = version
        if self.garbage > max(len(self._index), 65_536):
            self._rebuild()

    def rows(self) -> pa.Table:
        """All live rows (in no particular order)."""
        positions = np.fromiter(self._index.values(), dtype=np.int64, count=len(self._index))
        return self.take(np.sort(positions))

    def _rebuild(self) -> None:
        live = self.rows()
        self._chunks, self._offsets, self._size, self._index = [], [], 0, {}
        self._append(live, key_list(live, self.primary_key))
