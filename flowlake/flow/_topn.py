"""Pure changelog logic behind the Top-N operator (``ROW_NUMBER() OVER (...) <= N``), no bytewax here.

Ordering follows SQL and DuckDB: each ``ORDER BY`` column ascending or descending, NULLs last unless
``nulls_first``, NaN above every number; rows that tie on every ``ORDER BY`` column are ranked by
their remaining columns (ascending), so the result does not depend on arrival order. That order is
total over rows: two rows sort side by side with nothing between them exactly when they are
identical, which is how a retraction finds the row it retracts.

State, per key partition of the stream, in Arrow (no per-row Python objects):

- ``kept``: for each partition (``PARTITION BY`` value), its best rows in rank order: the top ``n``
  plus a buffer of ``buffer`` more, so that retracting a top row usually promotes a kept one. The
  kept rows of a partition are always a prefix of its live rows in rank order.
- ``spill``: every other live row, and retractions of rows that were spilled (as negative weights),
  as Arrow chunks: the cold store, like Flink's rank state behind its Top-N cache. It is read back
  only for a partition whose kept rows fell below ``n`` while it has spilled rows (the buffer ran
  out), and netted as a whole when retractions pile up in it.

A retraction of a row that is not live is dropped (counted in ``dropped_retractions``); where the
partition has spilled rows that is only known when the spill is netted, so until then it waits there
as a negative weight (and would cancel an identical row inserted later).

With a state folder (:meth:`TopNState.keep_chunks`) the spill is kept on disk: once
:attr:`TopNState.spill_map_rows` spilled rows are in memory, they are written to an Arrow file in the
folder's ``spill`` subfolder and memory-mapped back (the pages are the operating system's to drop). A
large state also snapshots what changed since the last snapshot: the kept and spilled rows of every
partition hash a batch touched (a hash without rows gets a row that says it is gone) go to a chunk of
a :class:`TopNChunkLog` (an Arrow file sorted by hash, read memory-mapped), and the snapshot is the
manifest. With a memory bound (:meth:`TopNState.keep_in_memory`) right after a snapshot the kept rows
of the least recently changed partitions leave memory (see
:class:`~flowlake.flow._grouplog.ShedsToChunks`), and a batch reads a touched partition's kept rows
back from the chunks (:meth:`TopNChunkLog.find_kept`) before ranking. A resume merges the chunks
back range by range (each hash's rows from the newest chunk naming it): every kept row, or for a
large state none (they are read back as batches touch them) with the spill mapped from files.

A batch is folded with one sort of the touched partitions' kept rows and the batch's changes,
netting identical rows; the new top ``n`` of each touched partition is compared with the old one and
only the difference goes out: with a rank column, a rank whose row changed becomes ``-U``/``+U``
(``+I`` or ``-D`` where the rank appears or disappears); without one, rows leaving the top become
``-D`` and rows entering it ``+I`` (deletes first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.flow._grouplog import TABLE, GroupChunkLog, ShedsToChunks, memory_bound, resume_eagerly
from flowlake.flow._joinside import SPILL_FOLDER, spill_table
from flowlake.flow._keptruns import Runs
from flowlake.flow._relational import body_schema
from flowlake.flow._snapshot import ROWS, Manifest, Records, load_chunk
from flowlake.flow._stateform import from_state
from flowlake.flow.batch import _zero, kinds_of, weights
from flowlake.table.bucketing import key_hash, sorted_unique

_PH = "__flowlake_ph"
"""State column: a hash of the row's partition (collisions only make more partitions look touched)."""
_W = "__flowlake_w"
_SRC = "__flowlake_src"
_RANK = "__flowlake_rank"
_WHERE = "__flowlake_where"
"""Snapshot chunk column: 0 for a kept row, 1 for a spilled one, 2 (:data:`_GONE`) for a row that only
names its partition hash (the partition has no rows left)."""
_GONE = 2
_MAX_CHUNKS = 16
"""Kept rows, or spilled rows in memory, in more Arrow chunks than this are combined into one."""
_COMPACT_MIN = 65_536
"""Dead kept rows are dropped once they are more than this and a quarter of the live ones."""
_ORDER, _POS = "__flowlake_order", "__flowlake_pos"
LOG_FORM = 2
"""Snapshot chunks are hash-sorted Arrow files read memory-mapped (before: pickled records)."""
_INTERNAL = (_PH, _W, _SRC, _RANK)
_HASHABLE = (
    pa.types.is_integer, pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
    pa.types.is_large_binary, pa.types.is_temporal, pa.types.is_decimal,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``ORDER BY`` column of a Top-N.

    >>> SortKey("amount", descending=True)
    SortKey(column='amount', descending=True, nulls_first=False)
    """

    column: str
    descending: bool = False
    nulls_first: bool = False


def _sortable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column itself, or a stand-in Arrow can sort and compare (nested values: their text)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_nested(column.type):
        return pa.chunked_array([[None if v is None else repr(v) for v in column.to_pylist()]], pa.string())
    return column


def _partition_hash(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """A uint64 per row from its partition values (equal values, equal hash; NULL like a zero)."""
    arrays: dict[str, pa.ChunkedArray | pa.Array] = {}
    for name in columns:
        column = _sortable(table.column(name))
        if pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            column = column.cast(pa.string())
        if not any(check(column.type) for check in _HASHABLE):
            return np.zeros(table.num_rows, np.uint64)  # one hash for all: correct, only less selective
        if column.null_count:
            column = pc.fill_null(column, _zero(column.type))
        arrays[name] = column
    if not arrays or table.num_rows == 0:
        return np.zeros(table.num_rows, np.uint64)
    return key_hash(pa.table(arrays), list(arrays))


def _adjacent_equal(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For ``i >= 1``: whether row ``i`` equals row ``i - 1`` (NULL equals NULL, NaN equals NaN)."""
    if len(column) < 2:
        return np.zeros(0, dtype=bool)
    a, b = column[1:], column[:-1]
    eq = pc.fill_null(pc.equal(a, b), False)
    eq = pc.or_(eq, pc.and_(pc.is_null(a), pc.is_null(b)))
    if pa.types.is_floating(column.type):
        eq = pc.or_(eq, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)


def _starts(columns: Sequence[pa.ChunkedArray | pa.Array], n: int) -> np.ndarray:
    """Whether each row starts a new run (differs from the row before it on some column)."""
    new = np.ones(n, dtype=bool)
    if n > 1:
        same = np.ones(n - 1, dtype=bool)
        for column in columns:
            same &= _adjacent_equal(column)
        new[1:] = ~same
    return new


def _group_rank(starts: np.ndarray) -> np.ndarray:
    """0-based position of each row within its run (runs begin where ``starts`` is True)."""
    index = np.arange(len(starts), dtype=np.int64)
    first = np.maximum.accumulate(np.where(starts, index, 0))
    return index - first


def topn_cache_bytes(max_mb: float | None = None) -> int:
    """A Top-N key partition's memory bound for its kept rows: ``max_mb`` MiB, else
    ``$FLOWLAKE_TOPN_STATE_MB``, else 128 MiB; 0: no bound.

    >>> topn_cache_bytes(2), topn_cache_bytes(0)
    (2097152, 0)
    """
    return memory_bound(max_mb, "FLOWLAKE_TOPN_STATE_MB", 128)


def merge_partition_rows(tables: Sequence[pa.Table], *, drop_dead: bool) -> pa.Table:
    """Chunk tables of Top-N rows (oldest first; each sorted by partition hash, a hash's rows in
    rank order): each hash's rows from the newest table naming it, in chunk order; the rows that only
    name a gone partition dropped if ``drop_dead``.

    >>> def t(ph, where):
    ...     return pa.table({_PH: pa.array(ph, pa.uint64()), _WHERE: pa.array(where, pa.int8())})
    >>> merged = merge_partition_rows([t([1, 2, 2], [0, 0, 1]), t([2], [_GONE])], drop_dead=True)
    >>> merged.column(_PH).to_pylist()
    [1]
    """
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    both = pa.concat_tables(
        [
            t.append_column(_ORDER, pa.array(np.full(t.num_rows, i, np.int32))).append_column(
                _POS, pa.array(np.arange(t.num_rows, dtype=np.int64))
            )
            for i, t in enumerate(tables)
        ],
        promote_options="permissive",
    )
    keys = [(_PH, "ascending"), (_ORDER, "descending"), (_POS, "ascending")]
    both = both.take(pc.sort_indices(both, sort_keys=keys))
    hashes = both.column(_PH).to_numpy()
    made = both.column(_ORDER).to_numpy()
    starts = np.ones(len(hashes), bool)
    starts[1:] = hashes[1:] != hashes[:-1]
    keep = made == made[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    if drop_dead:
        keep &= both.column(_WHERE).to_numpy() != _GONE
    return both.filter(pa.array(keep)).drop_columns([_ORDER, _POS])


def _log_schema(kept: pa.Schema) -> pa.Schema:
    """A chunk table's columns: the kept rows' (nullable: a gone partition's row is NULLs), the
    weight and where the row was."""
    fields = [f.with_nullable(True) for f in kept]
    return pa.schema([*fields, pa.field(_W, pa.int64()), pa.field(_WHERE, pa.int8())])


def _chunk_table(rows: pa.Table | None, keys: np.ndarray, schema: pa.Schema | None) -> pa.Table:
    """The chunk table of ``rows`` (kept and spilled rows with weight and place) naming ``keys``
    (sorted partition hashes; those without rows get a row that says they are gone), sorted by hash
    (stable: a partition's kept rows stay in rank order)."""
    held = np.zeros(0, np.uint64) if rows is None else np.asarray(rows.column(_PH).to_numpy(), np.uint64)
    gone = keys[~np.isin(keys, held)]
    if schema is None:
        schema = pa.schema(
            [pa.field(_PH, pa.uint64()), pa.field(_W, pa.int64()), pa.field(_WHERE, pa.int8())]
        )
    arrays = [
        pa.array(gone, pa.uint64())
        if f.name == _PH
        else pa.array(np.full(len(gone), _GONE, np.int8))
        if f.name == _WHERE
        else pa.nulls(len(gone), f.type)
        for f in schema
    ]
    parts = [pa.Table.from_arrays(arrays, schema=schema)]
    if rows is not None and rows.num_rows:
        parts.insert(0, rows.select(schema.names).cast(schema))
    table = pa.concat_tables(parts)
    if table.num_rows > 1:
        table = table.take(pc.sort_indices(table, sort_keys=[(_PH, "ascending")]))  # (stable)
    return table.combine_chunks()


class TopNChunkLog(GroupChunkLog):
    """Snapshot chunks of Top-N state: per chunk, the kept and spilled rows of the partition hashes
    it names, sorted by hash, in an Arrow file read memory-mapped; :meth:`find_kept` reads the kept
    rows of some partitions without reading the chunks. Chunks of the former pickled form
    (:data:`LOG_FORM` 1) are read as the same table."""

    hash_column = _PH

    def _load(self, path: Path) -> Records:
        with path.open("rb") as file:
            arrow = file.read(6) == b"ARROW1"
        if arrow:
            return super()._load(path)
        records = load_chunk(path)  # (pickled records: keys, and rows with weight and place)
        rows: pa.Table | None = records[ROWS]
        schema = None if rows is None else _log_schema(rows.drop_columns([_W, _WHERE]).schema)
        return {TABLE: _chunk_table(rows, np.asarray(records["keys"], np.uint64), schema)}

    def _merge_tables(self, tables: Sequence[pa.Table], *, drop_dead: bool) -> pa.Table:
        return merge_partition_rows(tables, drop_dead=drop_dead)

    def find_kept(self, hashes: np.ndarray) -> pa.Table | None:
        """The kept rows at the last snapshot (in rank order per partition) of the partitions whose
        hashes are ``hashes`` (sorted, distinct); None if none has any."""
        pending = np.asarray(hashes, np.uint64)
        found: list[pa.Table] = []
        for name, _ in reversed(self.chunks):
            if not len(pending):
                break
            chunk = self._chunk(name)
            which = np.searchsorted(chunk.firsts, pending, "right") - 1
            named = np.zeros(len(pending), bool)
            for run in np.unique(which[which >= 0]).tolist():
                at = np.flatnonzero(which == run)
                level, table = chunk.runs[run]
                lo = np.searchsorted(level, pending[at], "left")
                hi = np.searchsorted(level, pending[at], "right")
                hit = hi > lo
                named[at[hit]] = True
                if not hit.any():
                    continue
                width = (hi - lo)[hit]
                rows = (
                    np.repeat(lo[hit], width)
                    + np.arange(int(width.sum()))
                    - np.repeat(np.cumsum(width) - width, width)
                )
                taken = table.take(pa.array(rows))
                found.append(taken.filter(pc.equal(taken.column(_WHERE), 0)))
            pending = pending[~named]
        found = [t for t in found if t.num_rows]
        return pa.concat_tables(found) if found else None


class TopNState(ShedsToChunks):
    """The kept best rows and the spilled rest of the partitions of one key partition of the stream.

    Args:
        partition_by: ``PARTITION BY`` columns (none: one partition).
        order_by: ``ORDER BY`` columns.
        n: How many rows per partition the result holds.
        rank: Name of the output's rank column (1..n), or None for none.
        buffer: Rows kept beyond the top ``n`` per partition (default ``max(n, 8)``).
    """

    def __init__(
        self,
        partition_by: Sequence[str],
        order_by: Sequence[SortKey],
        n: int,
        rank: str | None,
        *,
        buffer: int | None = None,
    ) -> None:
        self.partition_by = tuple(partition_by)
        self.order_by = tuple(order_by)
        self.n = n
        self.rank = rank
        self.buffer = max(n, 8) if buffer is None else buffer
        self.kept: pa.Table | None = None
        self.spill: list[pa.Table] = []
        self.spilled = np.empty(0, np.uint64)
        """Sorted hashes of partitions that may have spilled rows."""
        self.spill_retractions = 0
        """Retractions in ``spill`` not yet netted."""
        self.dropped_retractions = 0
        self._changed: list[np.ndarray] = []
        """Partition hashes changed since the last chunked snapshot (kept only while chunked)."""
        self._on_disk: list[bool] = []
        """Per chunk of ``spill``, whether it is memory-mapped from a file (see :meth:`_settle`)."""

    def __len__(self) -> int:
        """Rows held (kept and spilled)."""
        return int(self._held() + sum(t.num_rows for t in self.spill))

    # -- ordering -------------------------------------------------------------------------------------

    def _view(self, table: pa.Table) -> tuple[pa.Table, list[tuple[str, str, str]], int]:
        """Sortable columns of ``table`` in rank order (partition, ORDER BY, the rest), their sort keys,
        and how many of them belong to the partition."""
        arrays: list[pa.ChunkedArray | pa.Array] = []
        keys: list[tuple[str, str, str]] = []

        def add(column: pa.ChunkedArray | pa.Array, order: str, nulls: str) -> None:
            keys.append((f"c{len(arrays)}", order, nulls))
            arrays.append(column)

        for name in self.partition_by:
            add(_sortable(table.column(name)), "ascending", "at_end")
        parts = len(arrays)
        ordered = {k.column for k in self.order_by}
        for key in self.order_by:
            column = _sortable(table.column(key.column))
            order = "descending" if key.descending else "ascending"
            if pa.types.is_floating(column.type):  # NaN above every number, as in DuckDB
                nan = pc.fill_null(pc.is_nan(column), key.descending == key.nulls_first)
                add(nan, order, "at_end")
            add(column, order, "at_start" if key.nulls_first else "at_end")
        for name in body_schema(table.schema).names:
            if name not in ordered and name not in self.partition_by and name not in _INTERNAL:
                add(_sortable(table.column(name)), "ascending", "at_end")
        return pa.Table.from_arrays(arrays, names=[k[0] for k in keys]), keys, parts

    def _sorted(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The rank order of ``table``'s rows (indices, the table is not copied), and in that order
        where each partition starts and where each distinct row starts. Identical rows are only
        looked for when some weight is negative: without retractions nothing needs netting."""
        view, keys, parts = self._view(table)
        n = table.num_rows
        if n > 1:
            order = np.asarray(pc.sort_indices(view, options=pc.SortOptions(keys)), dtype=np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        indices = pa.array(order)
        part_starts = _starts([view.column(i).take(indices) for i in range(parts)], n)
        if (table.column(_W).to_numpy() > 0).all():
            return order, part_starts, np.ones(n, dtype=bool)
        rest = [view.column(i).take(indices) for i in range(parts, view.num_columns)]
        return order, part_starts, part_starts | _starts(rest, n)

    # -- folding --------------------------------------------------------------------------------------

    # -- snapshots (see ChunkedSnapshot) --------------------------------------------------------------

    log_class = TopNChunkLog
    _dead: np.ndarray | None = None
    """Per row of the stored kept table, whether a later batch replaced it (None: none did)."""
    _dead_rows = 0
    _runs: Runs | None = None
    """Where each partition's live kept rows are in the stored table (None: to be found)."""
    _not_pickled = (*ShedsToChunks._not_pickled, "_dead", "_dead_rows", "_runs")
    net_spill_min = 65_536
    """Retractions the spill holds before it is netted (also at least a quarter of its rows)."""

    spill_map_rows = 1 << 16
    """Spilled rows in memory from which a state with a folder moves them to a memory-mapped file."""

    def __getstate__(self) -> dict[str, Any]:
        self._compact()
        return {**super().__getstate__(), "_changed": [], "_on_disk": []}

    # -- the kept rows: replaced rows are marked dead, not copied out (see _keptruns) -------------------

    @property
    def kept(self) -> pa.Table | None:
        """The kept rows (live ones only: reading this drops the dead ones)."""
        self._compact()
        table: pa.Table | None = self.__dict__.get("kept")
        return table

    @kept.setter
    def kept(self, table: pa.Table | None) -> None:
        self.__dict__["kept"] = table
        self._dead, self._dead_rows, self._runs = None, 0, None

    def _schema(self) -> pa.Schema | None:
        table: pa.Table | None = self.__dict__.get("kept")
        return None if table is None else table.schema

    def _stored(self) -> pa.Table:
        """The kept table as stored, dead rows included."""
        table: pa.Table | None = self.__dict__.get("kept")
        assert table is not None
        return table

    def _compact(self) -> None:
        """Drop the dead kept rows (the live ones keep their order)."""
        if self._dead is None:
            return
        dead, runs = self._dead[: self._stored().num_rows], self._runs
        table = self._stored().filter(pa.array(~dead))
        self.kept = table.combine_chunks() if table.column(_PH).num_chunks > _MAX_CHUNKS else table
        if runs is not None:  # the live rows keep their order: each run moves up by the dead before it
            self._runs = runs.compacted(dead)

    def _index(self) -> Runs:
        """The runs of the live kept rows (found from the stored table if not known)."""
        if self._runs is None:
            self._compact()
            hashes = np.asarray(self._stored().column(_PH).to_numpy(), np.uint64)
            runs = Runs.of(hashes)
            if runs is None:  # a partition in two places: gathered (each partition's order kept)
                order = hashes.argsort(kind="stable")
                self.kept = self._stored().take(pa.array(order, pa.int64()))
                runs = Runs.of(hashes[order])
                assert runs is not None
            self._runs = runs
        return self._runs

    def _kept_of(self, touched: np.ndarray, *, remove: bool) -> pa.Table:
        """The live kept rows of the partitions ``touched`` (sorted hashes), partition by partition in
        rank order; ``remove``: marked dead and their runs emptied (a batch replaces them)."""
        runs = self._index()
        _, at = runs.find(touched)
        rows = runs.rows_at(at)
        taken = take_rows(self._stored(), rows)
        if remove and len(rows):
            if self._dead is None:
                self._dead = np.zeros(self._stored().num_rows, bool)
            self._dead[rows] = True
            self._dead_rows += len(rows)
            runs.empty_at(at)
        return taken

    def _append_kept(self, new: pa.Table) -> None:
        """Add a batch's new kept rows (each partition's contiguous) at the end of the kept table."""
        runs = self._index()  # (first: finding the runs may compact the table)
        stored = self._stored()
        base = stored.num_rows
        added = Runs.of(np.asarray(new.column(_PH).to_numpy(), np.uint64), base)
        table = pa.concat_tables([stored, new]) if new.num_rows else stored
        if table.column(_PH).num_chunks > _MAX_CHUNKS:  # (each Arrow call pays per chunk)
            table = _combine_tail(table)
        dead, dead_rows = self._dead, self._dead_rows
        self.__dict__["kept"] = table
        if dead is not None and new.num_rows:
            dead = np.concatenate([dead, np.zeros(new.num_rows, bool)])
        self._dead, self._dead_rows = dead, dead_rows
        self._runs = None if added is None else runs.placed(added)
        if dead_rows > max(_COMPACT_MIN, (table.num_rows - dead_rows) // 4):
            self._compact()

    def _note(self, hashes: np.ndarray) -> None:
        if self._log is not None and len(hashes):
            self._changed.append(np.asarray(hashes, np.uint64))

    def _mark_all_changed(self) -> None:
        self._changed = []
        if self.kept is not None:
            self._changed.append(np.asarray(self.kept.column(_PH).to_numpy(), np.uint64))
        self._changed += [np.asarray(t.column(_PH).to_numpy(), np.uint64) for t in self.spill]

    def _changed_since_snapshot(self) -> np.ndarray:
        """The partition hashes changed since the last snapshot (sorted, distinct)."""
        return sorted_unique(np.concatenate(self._changed)) if self._changed else np.empty(0, np.uint64)

    def _changed_records(self) -> Records:
        """The kept and spilled rows of the partition hashes changed since the last snapshot."""
        keys = self._changed_since_snapshot()
        self._changed = []
        if self._schema() is None:
            return {TABLE: _chunk_table(None, keys, None)}
        value_set = pa.array(keys, pa.uint64())
        kept = self._kept_of(keys, remove=False)
        parts = [kept.append_column(_W, pa.array(np.ones(kept.num_rows, np.int64)))
                     .append_column(_WHERE, pa.array(np.zeros(kept.num_rows, np.int8)))]  # fmt: skip
        for chunk in self.spill:
            rows = chunk.filter(pc.is_in(chunk.column(_PH), value_set=value_set))
            parts.append(rows.append_column(_WHERE, pa.array(np.ones(rows.num_rows, np.int8))))
        return {TABLE: _chunk_table(pa.concat_tables(parts), keys, _log_schema(self._stored().schema))}

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        scalars = {
            "partition_by": self.partition_by, "order_by": self.order_by, "n": self.n, "rank": self.rank,
            "buffer": self.buffer, "dropped_retractions": self.dropped_retractions,
            "schema": self._schema(), "log_form": LOG_FORM,
            "cold": self._cold,
        }  # fmt: skip
        return _ChunkedTopN(manifest, scalars)

    # -- the memory bound (see ShedsToChunks): kept rows of the least recently changed partitions -----

    def _held(self) -> int:
        table = self.__dict__.get("kept")
        return 0 if table is None else int(table.num_rows) - self._dead_rows

    def _item_bytes(self) -> int:
        table = self.__dict__.get("kept")
        if table is None or not table.num_rows:
            return 1
        return max(1, int(table.nbytes) // int(table.num_rows))

    def _shed(self, drop: int) -> None:
        """Drop the kept rows of the partitions of the first ``drop`` kept rows: ``kept`` holds the
        partitions in the order a batch last touched them (a batch's go to its end)."""
        assert self.kept is not None
        hashes = np.asarray(self.kept.column(_PH).to_numpy(), np.uint64)
        victims = sorted_unique(hashes[:drop])
        self.kept = self.kept.filter(pa.array(~_members(victims, hashes))).combine_chunks()

    def _read_back(self, hashes: np.ndarray, held: np.ndarray) -> pa.Table | None:
        """The kept rows, from the chunks, of the partitions ``hashes`` (sorted) that may be on disk
        only: not ``held`` in memory and not changed since the last snapshot (whose rows are what
        memory says, none included); None if there are none."""
        if not self._cold or self._log is None or self.__dict__.get("kept") is None or not len(hashes):
            return None
        assert isinstance(self._log, TopNChunkLog)
        ask = hashes[~np.isin(hashes, held)]
        ask = ask[~_members(self._changed_since_snapshot(), ask)]
        rows = self._log.find_kept(ask) if len(ask) else None
        if rows is None:
            return None
        return rows.drop_columns([_W, _WHERE]).cast(self._stored().schema)

    def load_cold(self) -> None:
        """Read every partition on disk only back into memory (states are equal after this)."""
        if self.kept is None or not self._cold or self._log is None:
            return
        assert isinstance(self._log, TopNChunkLog)
        on_disk = self._log.load()[TABLE]
        if on_disk is not None:
            hashes = sorted_unique(np.asarray(on_disk.column(_PH).to_numpy(), np.uint64))
            held = np.asarray(self.kept.column(_PH).to_numpy(), np.uint64)
            back = self._read_back(hashes, held)
            if back is not None:
                self.kept = pa.concat_tables([back, self.kept])
        self._cold = False

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_changed", [])
        state["_on_disk"] = [False] * len(state.get("spill", ()))  # (unpickled: in memory)
        if "live" in state:  # pickled by the former per-row Top-N: its rows are folded in on first use
            legacy = [row for entries in state.pop("live").values() for _, row in entries]
            state.pop("emitted", None)
            state.update(buffer=max(state["n"], 8), kept=None, spill=[], spilled=np.empty(0, np.uint64),
                         spill_retractions=0, legacy=legacy)  # fmt: skip
        self.__dict__.update(state)

    def _adopt_legacy(self, schema: pa.Schema) -> None:
        """Fold in the live rows of a state saved by the per-row Top-N (its emitted top is what these
        rows rank first, so nothing is emitted)."""
        rows: list[tuple[Any, ...]] = self.__dict__.pop("legacy")
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
        arrays = [from_state(list(c), f.type) for c, f in zip(columns, schema, strict=True)]
        data = pa.Table.from_arrays(arrays, schema=schema)
        self.apply(data.append_column(KIND_COLUMN, pa.array(np.zeros(len(rows), np.int8))))

    def apply(self, data: pa.Table) -> pa.Table:
        """Fold a changelog batch; return the changes of the top rows (with the rank column if any)."""
        schema = body_schema(data.schema)
        if "legacy" in self.__dict__:
            self._adopt_legacy(schema)
        body = data.select(schema.names)
        hashes = _partition_hash(body, self.partition_by)
        batch = body.append_column(_PH, pa.array(hashes, pa.uint64()))
        if self.__dict__.get("kept") is None:
            self.kept = batch.schema.empty_table()
        elif batch.schema != self._stored().schema:
            batch = batch.cast(self._stored().schema)
        if data.num_rows == 0:
            return self._output(
                schema, self._top(self._stored().slice(0, 0)), np.empty(0, np.int64), np.empty(0, np.int8)
            )
        touched = sorted_unique(hashes)
        old = self._kept_of(touched, remove=True)
        back = self._read_back(touched, np.asarray(old.column(_PH).to_numpy(), np.uint64))
        if back is not None:  # partitions shed from memory (or not read on resume): their kept rows
            old = pa.concat_tables([old, back])
        work = pa.concat_tables([
            _with(old, np.ones(old.num_rows, np.int64), 0),
            _with(batch, weights(kinds_of(data)), 1),
        ])  # fmt: skip
        new, evicted, needy = self._fold(work)
        if len(needy):
            new, evicted = self._refill(new, evicted, needy)
        self._append_kept(new)
        self._note(touched)  # only touched partitions' kept and spilled rows change (needy ⊆ touched)
        self._to_spill(evicted)
        return self._diff(schema, old, new)

    def _fold(self, work: pa.Table) -> tuple[pa.Table, pa.Table, np.ndarray]:
        """Net ``work`` (kept rows and changes, with weights) per identical row: the new kept rows of its
        partitions (in rank order), what goes to the spill (rows, and retractions as weight -1), and
        the hashes of partitions left with fewer than ``n`` kept rows while they have spilled ones."""
        order, part_starts, row_starts = self._sorted(work)
        firsts = np.flatnonzero(row_starts)
        w = np.asarray(work.column(_W).to_numpy(), dtype=np.int64)[order]
        net = np.add.reduceat(w, firsts) if len(firsts) else np.zeros(0, np.int64)
        was_kept = np.asarray(work.column(_SRC).to_numpy() == 0, dtype=np.int8)[order]
        run_was_kept = np.maximum.reduceat(was_kept, firsts) > 0 if len(firsts) else np.zeros(0, bool)
        part_of_run = (np.cumsum(part_starts) - 1)[firsts]
        part_hash = work.column(_PH).to_numpy()[order[np.flatnonzero(part_starts)]]
        has_spill = _members(self.spilled, part_hash)
        spilled = has_spill[part_of_run]
        # a partition's kept rows are a prefix of its live rows: a change may land among them only if
        # it sorts at or before the last kept row, or if the partition has spilled nothing
        runs = np.arange(len(firsts), dtype=np.int64)
        last_kept = np.full(len(part_hash), -1, dtype=np.int64)
        np.maximum.at(last_kept, part_of_run, np.where(run_was_kept, runs, -1))
        in_range = ~spilled | (runs <= last_kept[part_of_run])
        keep_counts = np.where(in_range, np.maximum(net, 0), 0)
        spill_counts = np.where(in_range & (net > 0), 0, net)  # spilled rows, or retractions of them
        unmatched = (net < 0) & ~spilled
        self.dropped_retractions += int(-net[unmatched].sum())
        spill_counts[unmatched] = 0
        cand = np.repeat(firsts, keep_counts)
        cand_part = np.repeat(part_of_run, keep_counts)
        cand_starts = np.ones(len(cand), dtype=bool)
        cand_starts[1:] = cand_part[1:] != cand_part[:-1]
        keep = _group_rank(cand_starts) < self.n + self.buffer
        kept_per_part = np.bincount(cand_part[keep], minlength=len(part_hash))
        needy = sorted_unique(part_hash[(kept_per_part < self.n) & has_spill])
        magnitude = np.abs(spill_counts)
        spill_idx = np.concatenate([cand[~keep], np.repeat(firsts, magnitude)])
        spill_w = np.concatenate([np.ones(len(cand) - int(keep.sum()), np.int64),
                                  np.repeat(np.sign(spill_counts), magnitude)])  # fmt: skip
        kept = work.take(pa.array(order[cand[keep]], pa.int64())).drop_columns([_W, _SRC])
        spill = work.take(pa.array(order[spill_idx], pa.int64())).drop_columns([_W, _SRC])
        return kept, spill.append_column(_W, pa.array(spill_w, pa.int64())), needy

    def _refill(self, kept: pa.Table, evicted: pa.Table, needy: np.ndarray) -> tuple[pa.Table, pa.Table]:
        """Read the ``needy`` partitions' spilled rows back and rank them with their kept rows (the
        fallback when the buffer ran out)."""
        value_set = pa.array(needy, pa.uint64())
        back, rest, on_disk = [], [], []
        for chunk, mapped in zip([*self.spill, evicted], [*self._on_disk, False], strict=True):
            mask = pc.is_in(chunk.column(_PH), value_set=value_set)
            if not pc.any(mask).as_py():  # (a chunk without the partitions stays as it is, mapped or not)
                rest.append(chunk)
                on_disk.append(mapped)
                continue
            back.append(chunk.filter(mask))
            rest.append(chunk.filter(pc.invert(mask)))
            on_disk.append(False)
        self.spill = [t for t in rest[:-1] if t.num_rows]
        self._on_disk = [d for t, d in zip(rest[:-1], on_disk[:-1], strict=True) if t.num_rows]
        self.spilled = self.spilled[~_members(needy, self.spilled)]
        self.spill_retractions = sum(int(pc.sum(pc.less(t.column(_W), 0)).as_py() or 0) for t in self.spill)
        mask = pc.is_in(kept.column(_PH), value_set=value_set)
        parts = [_with(kept.filter(mask), np.ones(int(pc.sum(mask).as_py() or 0), np.int64), 0)]
        parts += [_with(b.drop_columns([_W]), b.column(_W).to_numpy(), 1) for b in back if b.num_rows]
        refilled, spill, _ = self._fold(pa.concat_tables(parts))
        kept = pa.concat_tables([kept.filter(pc.invert(mask)), refilled])
        return kept, pa.concat_tables([rest[-1], spill])

    def _to_spill(self, evicted: pa.Table) -> None:
        if evicted.num_rows:
            self.spill.append(evicted)
            self._on_disk.append(False)
            fresh = [i for i, mapped in enumerate(self._on_disk) if not mapped]
            if len(fresh) > _MAX_CHUNKS:  # a batch's few evicted rows each: one table in memory
                merged = pa.concat_tables([self.spill[i] for i in fresh]).combine_chunks()
                self.spill = [t for t, mapped in zip(self.spill, self._on_disk, strict=True) if mapped]
                self.spill.append(merged)
                self._on_disk = [True] * (len(self.spill) - 1) + [False]
            self.spilled = _with_members(self.spilled, evicted.column(_PH).to_numpy())
            self.spill_retractions += int(pc.sum(pc.less(evicted.column(_W), 0)).as_py() or 0)
            if self.spill_retractions > max(self.net_spill_min, sum(t.num_rows for t in self.spill) // 4):
                self._net_spill()
        self._settle()

    def _settle(self) -> None:
        """With a state folder: once the spilled rows in memory reach :attr:`spill_map_rows`, write
        them to one Arrow file there and keep them memory-mapped instead."""
        if self._chunk_root is None or len(self._on_disk) != len(self.spill):
            return
        fresh = [t for t, mapped in zip(self.spill, self._on_disk, strict=True) if not mapped]
        if not fresh or sum(t.num_rows for t in fresh) < self.spill_map_rows:
            return
        table = pa.concat_tables(fresh).combine_chunks()
        mapped = spill_table(self._chunk_root / SPILL_FOLDER, table)
        self.spill = [t for t, d in zip(self.spill, self._on_disk, strict=True) if d] + [mapped]
        self._on_disk = [True] * (len(self.spill) - 1) + [mapped is not table]

    def _net_spill(self) -> None:
        """Net the whole spill (rows against their retractions) into one chunk. Only the partitions
        with retractions in it change (the others' spilled rows stay the same rows); those that are on
        disk only are read back first, so that their next snapshot record holds their kept rows."""
        spill = pa.concat_tables(self.spill)
        netted = np.asarray(spill.column(_PH).to_numpy(), np.uint64)[spill.column(_W).to_numpy() < 0]
        changed = sorted_unique(netted)
        if self.kept is not None:
            back = self._read_back(changed, np.asarray(self.kept.column(_PH).to_numpy(), np.uint64))
            if back is not None:
                self.kept = pa.concat_tables([self.kept, back])
        self._note(changed)
        work = _with(spill.drop_columns([_W]), spill.column(_W).to_numpy(), 1)
        order, _, row_starts = self._sorted(work)
        firsts = np.flatnonzero(row_starts)
        net = np.add.reduceat(np.asarray(work.column(_W).to_numpy(), np.int64)[order], firsts)
        self.dropped_retractions += int(-net[net < 0].sum())
        alive = order[np.repeat(firsts, np.maximum(net, 0))]
        live = work.take(pa.array(alive, pa.int64())).drop_columns([_W, _SRC])
        live = live.append_column(_W, pa.array(np.ones(live.num_rows, np.int64)))
        self.spill = [live] if live.num_rows else []
        self._on_disk = [False] * len(self.spill)
        self.spilled = sorted_unique(live.column(_PH).to_numpy().astype(np.uint64))
        self.spill_retractions = 0

    # -- output ---------------------------------------------------------------------------------------

    def _diff(self, schema: pa.Schema, old: pa.Table, new: pa.Table) -> pa.Table:
        """The changes that turn the old top ``n`` of the touched partitions into the new one."""
        old_top, new_top = self._top(old), self._top(new)
        if self.rank is not None:
            return self._diff_ranked(schema, old_top, new_top)
        work = pa.concat_tables([
            _with(old_top, np.full(old_top.num_rows, -1, np.int64), 0),
            _with(new_top, np.ones(new_top.num_rows, np.int64), 1),
        ])  # fmt: skip
        order, _, row_starts = self._sorted(work)
        firsts = np.flatnonzero(row_starts)
        if not len(firsts):
            return self._output(schema, work, np.empty(0, np.int64), np.empty(0, np.int8))
        net = np.add.reduceat(np.asarray(work.column(_W).to_numpy(), np.int64)[order], firsts)
        gone, came = np.repeat(firsts, np.maximum(-net, 0)), np.repeat(firsts, np.maximum(net, 0))
        kinds = np.concatenate([np.full(len(gone), RowKind.DELETE, np.int8),
                                np.full(len(came), RowKind.INSERT, np.int8)])  # fmt: skip
        return self._output(schema, work, order[np.concatenate([gone, came])], kinds)

    def _top(self, kept: pa.Table) -> pa.Table:
        """The first ``n`` kept rows of each partition, with their 0-based rank."""
        view, _, parts = self._view(kept)
        rank = _group_rank(_starts(view.columns[:parts], kept.num_rows))
        top = np.flatnonzero(rank < self.n)
        return kept.take(pa.array(top, pa.int64())).append_column(_RANK, pa.array(rank[top], pa.int64()))

    def _diff_ranked(self, schema: pa.Schema, old: pa.Table, new: pa.Table) -> pa.Table:
        work = pa.concat_tables([_with(old, np.zeros(old.num_rows, np.int64), 0),
                                 _with(new, np.zeros(new.num_rows, np.int64), 1)])  # fmt: skip
        view, keys, parts = self._view(work)
        view = view.append_column(_RANK, work.column(_RANK)).append_column(_SRC, work.column(_SRC))
        order = pc.sort_indices(view, options=pc.SortOptions(
            [*keys[:parts], (_RANK, "ascending", "at_end"), (_SRC, "ascending", "at_end")]
        ))  # fmt: skip
        view = view.take(order)
        n = work.num_rows
        slot_starts = _starts([*view.columns[:parts], view.column(_RANK)], n)
        same_row = ~_starts(view.columns[:-2], n)  # identical to the row before (same slot implied)
        src = np.asarray(view.column(_SRC).to_numpy(), dtype=np.int8)
        paired_new = ~slot_starts  # a slot holds at most one old (first) and one new row
        paired_old = np.zeros(n, dtype=bool)
        paired_old[:-1] = paired_new[1:]
        changed_new = paired_new & ~same_row
        changed_old = np.zeros(n, dtype=bool)
        changed_old[:-1] = changed_new[1:]
        kinds = np.full(n, -1, np.int8)
        kinds[(src == 0) & ~paired_old] = RowKind.DELETE
        kinds[(src == 1) & ~paired_new] = RowKind.INSERT
        kinds[changed_old] = RowKind.UPDATE_BEFORE
        kinds[changed_new] = RowKind.UPDATE_AFTER
        emit = np.flatnonzero(kinds >= 0)
        return self._output(schema, work, np.asarray(order, np.int64)[emit], kinds[emit])

    def _output(self, schema: pa.Schema, work: pa.Table, rows: np.ndarray, kinds: np.ndarray) -> pa.Table:
        out = work.take(pa.array(rows, pa.int64())) if len(rows) else work.slice(0, 0)
        columns = [
            out.column(name).cast(field.type) for name, field in zip(schema.names, schema, strict=True)
        ]
        names = list(schema.names)
        if self.rank is not None:
            rank = out.column(_RANK) if _RANK in out.column_names else pa.array([], pa.int64())
            columns.append(pc.add(rank, 1).cast(pa.int64()))
            names.append(self.rank)
        columns.append(pa.array(kinds, pa.int8()))
        names.append(KIND_COLUMN)
        fields = [*schema]
        if self.rank is not None:
            fields.append(pa.field(self.rank, pa.int64(), nullable=False))
        fields.append(pa.field(KIND_COLUMN, pa.int8()))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _members(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Whether each of ``values`` is in ``ordered`` (sorted, distinct): a binary search per value, not
    ``np.isin``'s sort of both (which costs the size of ``ordered``: every partition with a spill).

    >>> _members(np.array([2, 5, 9], np.uint64), np.array([9, 1, 5], np.uint64)).tolist()
    [True, False, True]
    """
    if not len(ordered):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)
    found: np.ndarray = ordered[at] == values
    return found


def _with_members(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``ordered`` (sorted, distinct) with ``values`` added, still sorted and distinct.

    >>> _with_members(np.array([2, 5], np.uint64), np.array([5, 3, 3], np.uint64)).tolist()
    [2, 3, 5]
    """
    new = sorted_unique(np.asarray(values, ordered.dtype))
    new = new[~_members(ordered, new)]
    return np.insert(ordered, np.searchsorted(ordered, new), new) if len(new) else ordered


def _with(table: pa.Table, weight: np.ndarray, src: int) -> pa.Table:
    """``table`` with a weight and a source column (0: kept rows, 1: changes)."""
    table = table.append_column(_W, pa.array(np.asarray(weight, np.int64), pa.int64()))
    return table.append_column(_SRC, pa.array(np.full(table.num_rows, src, np.int8), pa.int8()))


class _ChunkedTopN:
    """A chunked Top-N snapshot: unpickling it (:func:`~flowlake.flow._snapshot.thaw`) rebuilds the state."""

    def __init__(self, manifest: Manifest, scalars: dict[str, Any]) -> None:
        self.manifest, self.scalars = manifest, scalars

    def __reduce__(self) -> tuple[Any, tuple[Manifest, dict[str, Any]]]:
        return restore_topn, (self.manifest, self.scalars)


def restore_topn(manifest: Manifest, scalars: dict[str, Any]) -> TopNState:
    """The Top-N state a chunked snapshot describes, its chunk log continuing from that snapshot: with
    every partition's kept rows in memory, or (a state that had shed partitions, or a large one, see
    :func:`~flowlake.flow._grouplog.resume_eagerly`) with none until changes touch them and its
    spilled rows written range by range to memory-mapped files beside the chunks' folder."""
    state = TopNState(scalars["partition_by"], scalars["order_by"], scalars["n"], scalars["rank"],
                      buffer=scalars["buffer"])  # fmt: skip
    state.dropped_retractions = scalars["dropped_retractions"]
    log = TopNChunkLog(manifest)
    state._log = log
    schema: pa.Schema | None = scalars["schema"]
    if schema is None:
        return state
    spill_schema = pa.schema([*schema, pa.field(_W, pa.int64())])
    ranges = log.merged_ranges([name for name, _ in log.chunks], drop_dead=True)
    kept: list[pa.Table] = []
    spill: list[pa.Table] = []
    on_disk: list[bool] = []
    eager = resume_eagerly(manifest, scalars.get("cold", False))
    state._cold = not eager
    for rows in ranges:
        spilled = pc.equal(rows.column(_WHERE), 1)
        if eager:
            kept.append(rows.filter(pc.invert(spilled)).drop_columns([_W, _WHERE]).cast(schema))
        part = rows.filter(spilled).drop_columns([_WHERE]).cast(spill_schema)
        if part.num_rows:
            held = part if eager else spill_table(log.folder.parent / SPILL_FOLDER, part)
            spill.append(held)
            on_disk.append(held is not part)
    state.kept = pa.concat_tables(kept) if kept else schema.empty_table()
    if spill:
        state.spill, state._on_disk = spill, on_disk
        hashes = np.concatenate([np.asarray(t.column(_PH).to_numpy(), np.uint64) for t in spill])
        state.spilled = sorted_unique(hashes)
        state.spill_retractions = sum(int(pc.sum(pc.less(t.column(_W), 0)).as_py() or 0) for t in spill)
    return state


def _combine_tail(table: pa.Table) -> pa.Table:
    """``table`` in at most two chunks: its first chunk as it is where that holds most rows (a
    combine of the rest copies only them), else all combined."""
    first = len(table.column(_PH).chunk(0))
    if first * 4 < table.num_rows * 3:
        return table.combine_chunks()
    return pa.concat_tables([table.slice(0, first), table.slice(first).combine_chunks()])


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)``, taken chunk by chunk: Arrow's take on a table of several chunks joins
    them all first (a copy of the whole table for a few rows of it).

    >>> t = pa.concat_tables([pa.table({"x": [0, 1, 2]}), pa.table({"x": [3, 4]})])
    >>> take_rows(t, np.array([4, 0, 3, 2])).column("x").to_pylist()
    [4, 0, 3, 2]
    """
    batches = table.to_batches()
    if len(batches) <= 1 or not len(rows):
        return table.take(pa.array(rows, pa.int64()))
    ends = np.cumsum([b.num_rows for b in batches])
    which = ends.searchsorted(rows, side="right")
    order = which.argsort(kind="stable")
    grouped, starts = which[order], ends - np.array([b.num_rows for b in batches])
    bounds = grouped.searchsorted(np.arange(len(batches) + 1))
    parts = [
        batches[i].take(pa.array(rows[order[lo:hi]] - starts[i], pa.int64()))
        for i, (lo, hi) in enumerate(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        if hi > lo
    ]
    inverse = np.empty(len(order), np.int64)
    inverse[order] = np.arange(len(order), dtype=np.int64)
    joined = pa.Table.from_batches(parts, schema=table.schema).combine_chunks()
    return joined.take(pa.array(inverse, pa.int64()))
