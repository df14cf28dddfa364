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
folder's ``spill`` subfolder and memory-mapped back (the pages are the operating system's to drop), so
a partition's memory is its kept rows (``n`` + ``buffer`` per partition) and fewer spilled rows than
that bound. A large state also snapshots what changed since the
last snapshot: the kept and spilled rows of every partition hash a batch touched (a hash without rows
is a tombstone) go to a chunk file of a :class:`~flowlake.flow._snapshot.RowsChunkLog`, and the
snapshot is the manifest; a resume merges the chunks back (each hash's rows from the newest chunk
naming it) and derives the spilled hashes and pending retractions from the spill.

A batch is folded with one sort of the touched partitions' kept rows and the batch's changes,
netting identical rows; the new top ``n`` of each touched partition is compared with the old one and
only the difference goes out: with a rank column, a rank whose row changed becomes ``-U``/``+U``
(``+I`` or ``-D`` where the rank appears or disappears); without one, rows leaving the top become
``-D`` and rows entering it ``+I`` (deletes first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.flow._joinside import SPILL_FOLDER, spill_table
from flowlake.flow._relational import body_schema
from flowlake.flow._snapshot import ROWS, ChunkedSnapshot, Manifest, Records, RowsChunkLog
from flowlake.flow._stateform import from_state
from flowlake.flow.batch import _zero, kinds_of, weights
from flowlake.table.bucketing import key_hash, sorted_unique

_PH = "__flowlake_ph"
"""State column: a hash of the row's partition (collisions only make more partitions look touched)."""
_W = "__flowlake_w"
_SRC = "__flowlake_src"
_RANK = "__flowlake_rank"
_WHERE = "__flowlake_where"
"""Snapshot chunk column: 0 for a kept row, 1 for a spilled one."""
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


class TopNChunkLog(RowsChunkLog):
    """Snapshot chunks of Top-N state: rows keyed by their partition hash."""

    key = _PH


class TopNState(ChunkedSnapshot):
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
        kept = self.kept.num_rows if self.kept is not None else 0
        return int(kept + sum(t.num_rows for t in self.spill))

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
    net_spill_min = 65_536
    """Retractions the spill holds before it is netted (also at least a quarter of its rows)."""

    spill_map_rows = 1 << 16
    """Spilled rows in memory from which a state with a folder moves them to a memory-mapped file."""

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_changed": [], "_on_disk": []}

    def _note(self, hashes: np.ndarray) -> None:
        if self._log is not None and len(hashes):
            self._changed.append(np.asarray(hashes, np.uint64))

    def _mark_all_changed(self) -> None:
        self._changed = []
        if self.kept is not None:
            self._changed.append(np.asarray(self.kept.column(_PH).to_numpy(), np.uint64))
        self._changed += [np.asarray(t.column(_PH).to_numpy(), np.uint64) for t in self.spill]

    def _changed_records(self) -> Records:
        """The kept and spilled rows of the partition hashes changed since the last snapshot."""
        keys = sorted_unique(np.concatenate(self._changed)) if self._changed else np.empty(0, np.uint64)
        self._changed = []
        if self.kept is None:
            return {"keys": keys, ROWS: None}
        value_set = pa.array(keys, pa.uint64())
        kept = self.kept.filter(pc.is_in(self.kept.column(_PH), value_set=value_set))
        parts = [kept.append_column(_W, pa.array(np.ones(kept.num_rows, np.int64)))
                     .append_column(_WHERE, pa.array(np.zeros(kept.num_rows, np.int8)))]  # fmt: skip
        for chunk in self.spill:
            rows = chunk.filter(pc.is_in(chunk.column(_PH), value_set=value_set))
            parts.append(rows.append_column(_WHERE, pa.array(np.ones(rows.num_rows, np.int8))))
        return {"keys": keys, ROWS: pa.concat_tables(parts).combine_chunks()}

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        scalars = {
            "partition_by": self.partition_by, "order_by": self.order_by, "n": self.n, "rank": self.rank,
            "buffer": self.buffer, "dropped_retractions": self.dropped_retractions,
            "schema": None if self.kept is None else self.kept.schema,
        }  # fmt: skip
        return _ChunkedTopN(manifest, scalars)

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
        if self.kept is None:
            self.kept = batch.schema.empty_table()
        elif batch.schema != self.kept.schema:
            batch = batch.cast(self.kept.schema)
        if data.num_rows == 0:
            return self._output(
                schema, self._top(self.kept.slice(0, 0)), np.empty(0, np.int64), np.empty(0, np.int8)
            )
        touched = sorted_unique(hashes)
        old, others = self._split_kept(touched)
        work = pa.concat_tables([
            _with(old, np.ones(old.num_rows, np.int64), 0),
            _with(batch, weights(kinds_of(data)), 1),
        ])  # fmt: skip
        new, evicted, needy = self._fold(work)
        if len(needy):
            new, evicted = self._refill(new, evicted, needy)
        self.kept = pa.concat_tables([others, new])
        self._note(touched)  # only touched partitions' kept and spilled rows change (needy ⊆ touched)
        self._to_spill(evicted)
        return self._diff(schema, old, new)

    def _split_kept(self, touched: np.ndarray) -> tuple[pa.Table, pa.Table]:
        """The kept rows of the ``touched`` partitions (in rank order per partition), and the others."""
        assert self.kept is not None
        mask = pc.is_in(self.kept.column(_PH), value_set=pa.array(touched, pa.uint64()))
        return self.kept.filter(mask), self.kept.filter(pc.invert(mask))

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
        spilled = np.isin(part_hash, self.spilled)[part_of_run]
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
        needy = sorted_unique(part_hash[(kept_per_part < self.n) & np.isin(part_hash, self.spilled)])
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
        self.spilled = self.spilled[~np.isin(self.spilled, needy)]
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
            self.spilled = sorted_unique(np.concatenate([self.spilled, evicted.column(_PH).to_numpy()]))
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
        """Net the whole spill (rows against their retractions) into one chunk."""
        spill = pa.concat_tables(self.spill)
        self._note(sorted_unique(spill.column(_PH).to_numpy()))
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
    """The Top-N state a chunked snapshot describes, its chunk log continuing from that snapshot."""
    state = TopNState(scalars["partition_by"], scalars["order_by"], scalars["n"], scalars["rank"],
                      buffer=scalars["buffer"])  # fmt: skip
    state.dropped_retractions = scalars["dropped_retractions"]
    log = TopNChunkLog(manifest)
    rows: pa.Table | None = log.load()[ROWS]
    schema: pa.Schema | None = scalars["schema"]
    if schema is not None:
        if rows is None or not rows.num_rows:
            state.kept = schema.empty_table()
        else:
            spilled = pc.equal(rows.column(_WHERE), 1)
            state.kept = rows.filter(pc.invert(spilled)).drop_columns([_W, _WHERE]).cast(schema)
            spill = rows.filter(spilled).drop_columns([_WHERE])
            if spill.num_rows:
                state.spill, state._on_disk = [spill], [False]
                state.spilled = sorted_unique(spill.column(_PH).to_numpy().astype(np.uint64))
                state.spill_retractions = int(pc.sum(pc.less(spill.column(_W), 0)).as_py() or 0)
    state._log = log
    return state
