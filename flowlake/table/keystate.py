"""The writer's cached state of a table: current rows and a key → position index.

A commit needs the current row of every key it touches, to emit exact before-images (``-U``, ``-D``)
and to drop no-op rewrites. Scanning the table for them would make the write cost grow with the
table; instead each writer keeps the table's rows in memory, indexed by key, and brings the cache up
to date from the changelogs of commits made elsewhere (a cost that follows those changes).

Rows are stored in append-only Arrow chunks: a write appends its new row images as a chunk and points
the index at them, so positions never move. Neighbouring chunks are combined when they are of similar
size (positions are unchanged by that), which keeps the chunk count logarithmic; once superseded rows
outnumber live ones the whole state is rebuilt, so rebuilding costs O(1) amortized per change.

The key → position index is a dict of the keys' Python values, except for a key of one integer
column (the common ODS case): that one is an :class:`IntIndex` of sorted numpy runs, so a commit's
lookups and updates are a few vectorized searches and sorts instead of a dict operation per key.

A state may be *bounded* (``max_rows``): once it holds more live rows than that it forgets the older
half (the rows written or learned longest ago) and is no longer *complete*. A bounded state's chunks
stay under an eighth of its bound, so it forgets by dropping its oldest chunks and the index entries
that point into them, without copying the rows it keeps (copying a million wide rows held up the
commit that crossed the bound for about a second). A key that an incomplete
state does not hold may still be live in the table, so the writer looks such keys up in the table's
files (a point lookup at the state's version) and :meth:`KeyState.learn` their rows before planning a
write. A table too large for the bound is never loaded whole: its state starts empty and incomplete.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from flowlake.config import mib_setting

Keys: TypeAlias = list[Any] | np.ndarray
"""Key values of rows: Python values (:func:`key_list`), or a numpy array for an integer key."""


STATE_MB_ENV = "FLOWLAKE_KEY_STATE_MB"
"""Environment variable: the memory a writer's key state of one table may hold, in MiB."""

DEFAULT_STATE_MB = 256.0
"""A table whose rows take more than this (estimated from its row count and schema) is not kept
whole by a writer: its key state holds the rows written or looked up most recently, up to this."""

_CHUNKS_PER_BOUND = 8
"""A bounded state merges its chunks up to this fraction of its bound (so that it can drop old ones)."""
_INDEX_BYTES = 16
"""Bytes of index per row (a key and a position in :class:`IntIndex`; more for a dict)."""
_VARIABLE_BYTES = 24
"""Bytes assumed per value of a string, binary or nested column (offsets and a short value)."""


def state_budget_rows(schema: pa.Schema, max_mb: float | None = None) -> int | None:
    """The most rows a key state of ``schema`` may hold within ``max_mb`` MiB (default
    ``$FLOWLAKE_KEY_STATE_MB``, else :data:`DEFAULT_STATE_MB`; ``0`` or less: no bound, None).

    Each row is estimated at its fixed-width values' bytes, :data:`_VARIABLE_BYTES` per other value,
    plus :data:`_INDEX_BYTES`.

    >>> state_budget_rows(pa.schema([("id", pa.int64()), ("name", pa.string())]), max_mb=1)
    21845
    >>> state_budget_rows(pa.schema([("id", pa.int64())]), max_mb=0) is None
    True
    """
    if max_mb is None:
        max_mb = mib_setting(STATE_MB_ENV, DEFAULT_STATE_MB)
    if max_mb <= 0:
        return None
    width = _INDEX_BYTES
    for field in schema:
        try:
            width += max(1, field.type.bit_width // 8)
        except ValueError:  # no fixed width
            width += _VARIABLE_BYTES
    return max(1, int(max_mb * 2**20) // width)


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    # integers without nulls through numpy: the same Python ints, several times faster than to_pylist
    if pa.types.is_integer(column.type) and not column.null_count:
        return list(column.to_numpy().tolist())
    return list(column.to_pylist())


def key_list(table: pa.Table, primary_key: Sequence[str]) -> list[Any]:
    """Python values of the key (scalars for one column, tuples for several) of every row.

    >>> key_list(pa.table({"a": [1, 2], "b": ["x", "y"]}), ["a", "b"])
    [(1, 'x'), (2, 'y')]
    """
    if len(primary_key) == 1:
        return _column_values(table.column(primary_key[0]))
    return list(zip(*(_column_values(table.column(k)) for k in primary_key), strict=True))


def _last_wins(keys: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ``keys``, each with the position of its last occurrence."""
    order = np.argsort(keys, kind="stable")  # equal keys keep their order: the last one is newest
    keys, positions = keys[order], positions[order]
    if len(keys) < 2:
        return keys, positions
    last = np.empty(len(keys), dtype=bool)
    last[-1] = True
    np.not_equal(keys[1:], keys[:-1], out=last[:-1])
    return keys[last], positions[last]


class IntIndex:
    """Integer key → position, as sorted runs of (keys, positions); position -1 marks a deleted key.

    A lookup searches the runs newest first (``np.searchsorted``); an update adds a run and merges it
    into older ones of no more than twice its size, so there are O(log n) runs and each entry is
    re-sorted O(log n) times. Deletion marks are dropped when they reach the oldest run.

    >>> index = IntIndex(np.dtype(np.int64))
    >>> index.put(np.array([5, 7, 9]), np.array([0, 1, 2]))
    >>> index.put(np.array([7, 5]), np.array([3, -1]))  # 7 moves to position 3, 5 is deleted
    >>> index.get(np.array([5, 7, 9, 4])).tolist(), len(index)
    ([-1, 3, 2, -1], 2)
    >>> sorted(index.positions().tolist())
    [2, 3]
    """

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._live = 0

    def __len__(self) -> int:
        return self._live

    def get(self, keys: np.ndarray) -> np.ndarray:
        """Position of each key, or -1 where it is absent."""
        keys = np.asarray(keys, dtype=self.dtype)
        out = np.full(len(keys), -1, dtype=np.int64)
        if len(keys) > 1 and self._runs and bool(np.any(keys[1:] < keys[:-1])):
            # searched in key order: np.searchsorted starts each search where the last one ended,
            # about twice as fast over a large run as the same keys unsorted
            pending = np.argsort(keys, kind="stable")
            keys = keys[pending]
        else:
            pending = np.arange(len(keys))
        for run_keys, run_positions in reversed(self._runs):
            if not len(pending):
                break
            at = np.searchsorted(run_keys, keys)
            np.minimum(at, len(run_keys) - 1, out=at)
            hit = run_keys[at] == keys
            out[pending[hit]] = run_positions[at[hit]]
            miss = ~hit
            pending, keys = pending[miss], keys[miss]
        return out

    def put(self, keys: np.ndarray, positions: np.ndarray) -> None:
        """Point ``keys`` at ``positions`` (-1: delete them); a key named twice takes its last."""
        if not len(keys):
            return
        keys, positions = _last_wins(np.asarray(keys, dtype=self.dtype), np.asarray(positions, np.int64))
        self._live += int(np.count_nonzero(positions >= 0)) - int(np.count_nonzero(self.get(keys) >= 0))
        self._runs.append((keys, positions))
        while len(self._runs) >= 2 and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0]):
            newer_keys, newer_positions = self._runs.pop()
            older_keys, older_positions = self._runs.pop()
            keys, positions = _last_wins(
                np.concatenate([older_keys, newer_keys]), np.concatenate([older_positions, newer_positions])
            )
            if not self._runs:  # the oldest run: nothing below for a deletion mark to hide
                live = positions >= 0
                keys, positions = keys[live], positions[live]
            if len(keys):
                self._runs.append((keys, positions))

    def _folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Every key named by a run, sorted, with its newest position (-1: deleted)."""
        if not self._runs:
            return np.empty(0, self.dtype), np.empty(0, dtype=np.int64)
        return _last_wins(
            np.concatenate([k for k, _ in self._runs]), np.concatenate([p for _, p in self._runs])
        )

    def forget_below(self, cutoff: int) -> None:
        """Forget every key whose position is below ``cutoff`` (their rows are gone): one run."""
        keys, positions = self._folded()
        kept = positions >= cutoff
        self._runs = [(keys[kept], positions[kept])] if kept.any() else []
        self._live = int(np.count_nonzero(kept))

    def positions(self) -> np.ndarray:
        """The position of every live key (in key order)."""
        _, positions = self._folded()
        return positions[positions >= 0]


def _int_dtype(schema: pa.Schema, primary_key: Sequence[str]) -> np.dtype[Any] | None:
    """The numpy dtype of an :class:`IntIndex` for this key, or None if the key is not one integer."""
    if len(primary_key) != 1:
        return None
    dtype = schema.field(primary_key[0]).type
    if not pa.types.is_integer(dtype):
        return None
    return np.dtype(np.uint64 if pa.types.is_uint64(dtype) else np.int64)


class KeyState:
    """Live rows of a table at one version, indexed by primary key: every live row (``complete``),
    or, for a state bounded by ``max_rows``, the rows of the keys written or learned most recently.

    >>> state = KeyState(pa.table({"id": [1, 2, 3]}), ["id"], version=0, max_rows=2)
    >>> state.complete, len(state)  # over its bound: it kept the newest row, and knows it is partial
    (False, 1)
    >>> state.learn(pa.table({"id": [1]}))  # the current row of a key it lacked, read from the table
    >>> sorted(state.rows().column("id").to_pylist())
    [1, 3]
    """

    def __init__(
        self,
        rows: pa.Table,
        primary_key: Sequence[str],
        version: int,
        *,
        max_rows: int | None = None,
        complete: bool = True,
    ) -> None:
        self.primary_key = tuple(primary_key)
        self.version = version
        self.schema = rows.schema
        self.max_rows = max_rows
        self.complete = complete
        """Whether every live row of the table is here (else a key missing here may be live there)."""
        self._chunks: list[pa.Table] = []
        self._offsets: list[int] = []
        """The position of each chunk's first row (positions only grow: dropping old chunks moves none)."""
        self._size = 0
        """The position the next row image gets."""
        self._chunk_cap = None if max_rows is None else max(1, max_rows // _CHUNKS_PER_BOUND)
        """The most rows chunks are merged up to (None: no cap)."""
        self._dtype = _int_dtype(rows.schema, self.primary_key)
        self._index: dict[Any, int] = {}
        self._ints = None if self._dtype is None else IntIndex(self._dtype)
        self._append(rows, self.keys_of(rows))
        self._bound()

    def __len__(self) -> int:
        return len(self._index) if self._ints is None else len(self._ints)

    @property
    def garbage(self) -> int:
        """Row images kept in memory that no key points at any more."""
        return self._held() - len(self)

    def _held(self) -> int:
        """Row images in the chunks."""
        return self._size - self._offsets[0] if self._offsets else 0

    def keys_of(self, rows: pa.Table) -> Keys:
        """The key values of ``rows`` in the form this state's lookups take fastest (no nulls).

        >>> state = KeyState(pa.table({"id": [3, 1]}), ["id"], version=0)
        >>> state.lookup(state.keys_of(pa.table({"id": [1, 2]}))).tolist()
        [1, -1]
        """
        if self._dtype is None:
            return key_list(rows, self.primary_key)
        return np.asarray(rows.column(self.primary_key[0]).to_numpy(), dtype=self._dtype)

    def _append(self, rows: pa.Table, keys: Keys) -> None:
        if rows.num_rows == 0:
            return
        base = self._size
        self._chunks.append(rows.combine_chunks())
        self._offsets.append(base)
        self._size += rows.num_rows
        if self._ints is not None:
            self._ints.put(np.asarray(keys), np.arange(base, base + rows.num_rows, dtype=np.int64))
        else:
            self._index.update(zip(keys, range(base, base + rows.num_rows), strict=True))
        cap = self._chunk_cap
        while len(self._chunks) >= 2 and self._chunks[-1].num_rows * 2 >= self._chunks[-2].num_rows:
            if cap is not None and self._chunks[-1].num_rows + self._chunks[-2].num_rows > cap:
                break
            last = self._chunks.pop()
            self._offsets.pop()
            self._chunks[-1] = pa.concat_tables([self._chunks[-1], last]).combine_chunks()

    def learn(self, rows: pa.Table) -> None:
        """Add the current rows (at this state's version) of keys this state did not hold."""
        if rows.num_rows:
            rows = rows.select(self.schema.names).cast(self.schema)
            self._append(rows, self.keys_of(rows))

    def missing(self, rows: pa.Table) -> pa.Table:
        """The distinct keys of ``rows`` (key columns) that this incomplete state does not hold
        (none if it is complete): those the writer must look up in the table."""
        if self.complete or rows.num_rows == 0:
            return rows.select(list(self.primary_key)).slice(0, 0)
        keys = rows.select(list(self.primary_key))
        absent = self.lookup(self.keys_of(keys)) < 0
        if not absent.any():
            return keys.slice(0, 0)
        return keys.filter(pa.array(absent)).group_by(list(self.primary_key)).aggregate([])

    def lookup(self, keys: Keys | Sequence[Any]) -> np.ndarray:
        """Position of each key's current row, or -1 where the key is absent."""
        if self._ints is not None:
            return self._ints.get(np.asarray(keys))
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
            return self._chunks[0].take(pa.array(positions - offsets[0]))
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
        self, upserted: pa.Table, upserted_keys: Keys, deleted_keys: Keys | Sequence[Any], version: int
    ) -> None:
        """Move the state to ``version``: new row images for some keys, removal of others."""
        if upserted.num_rows:
            self._append(upserted.select(self.schema.names).cast(self.schema), upserted_keys)
        if self._ints is not None:
            self._ints.put(np.asarray(deleted_keys), np.full(len(deleted_keys), -1, dtype=np.int64))
        else:
            pop = self._index.pop
            for key in deleted_keys:
                pop(key, None)
        self.version = version
        if self.garbage > max(len(self), 65_536):
            self._rebuild()
        self._bound()

    def rows(self) -> pa.Table:
        """All live rows held (in no particular order)."""
        return self.take(self._live_positions())

    def _live_positions(self) -> np.ndarray:
        """The position of every live row held, ascending (oldest first)."""
        if self._ints is not None:
            positions = self._ints.positions()
        else:
            positions = np.fromiter(self._index.values(), dtype=np.int64, count=len(self._index))
        return np.sort(positions)

    def _rebuild(self, keep: int | None = None) -> None:
        """Drop superseded row images; with ``keep``, also all but the ``keep`` newest live rows."""
        positions = self._live_positions()
        if keep is not None:
            positions = positions[len(positions) - keep :] if keep else positions[:0]
        live = self.take(positions)
        self._chunks, self._offsets, self._size, self._index = [], [], 0, {}
        self._ints = None if self._dtype is None else IntIndex(self._dtype)
        self._append(live, self.keys_of(live))

    def _bound(self) -> None:
        """Over ``max_rows`` live rows: keep the newest half (positions grow with every write and
        every row learned) and stop being complete. The oldest chunks are dropped whole while the
        images after them are at least half the bound; only a state whose oldest chunk is most of
        it (a table loaded whole) copies its newest half instead."""
        if self.max_rows is None or len(self) <= self.max_rows:
            return
        self.complete = False
        keep = self.max_rows // 2
        drop = 0
        while drop + 1 < len(self._chunks) and self._size - self._offsets[drop + 1] >= keep:
            drop += 1
        if not drop:
            self._rebuild(keep=keep)
            return
        cutoff = self._offsets[drop]
        del self._chunks[:drop], self._offsets[:drop]
        if self._ints is not None:
            self._ints.forget_below(cutoff)
        else:
            self._index = {key: at for key, at in self._index.items() if at >= cutoff}
        if len(self) > self.max_rows:  # the newest chunk alone is over the bound (one large write)
            self._rebuild(keep=keep)
