"""One side of the regular stream-stream join, in Arrow and numpy (no per-row Python, no bytewax).

A side holds its rows in Arrow chunks addressed by a row id (the position over the chunks), each
with its multiplicity (``count``; identical rows count, as in a multiset). A batch without
retractions is appended as it comes, so a row may be stored more than once: its count is the sum
over its copies. A row whose count fell to 0 stays, dead, until the side is compacted (when dead rows
outnumber live ones). Per row id, numpy arrays hold the count and a 64-bit hash of its join key in a
common type (``int32`` and ``int64`` keys, or two decimal scales, hash alike); a hash of the whole
row (its identity: a retraction finds its row by it) is computed only once a retraction needs it, so
an append-only input never pays for it. Sorted indexes over those hashes answer "which rows may be
this row / have this key" with a binary search; every candidate is then checked by comparing values,
so a hash collision costs time, never a wrong answer. Rows whose key has a NULL are stored (a left
row must be retractable) but left out of the key index: NULL keys never match.

Chunks are merged as they come so that there are few (a binary-counter scheme), and rows are taken
chunk by chunk when they are few (see :meth:`JoinSide.take`). A batch costs its own rows, not the
side's: the per-row arrays grow in place and each index takes new rows into a small recent level
(:mod:`flowlake.flow._hashindex`); the live-row count is kept as counts change. The indexes are
rebuilt, not pickled, after a resume.

With a spill folder (:attr:`JoinSide.spill`: the flow's state folder) the rows stay on disk: a chunk
that reaches :data:`SPILL_ROWS` rows is written there as an Arrow file, memory-mapped, and its file
deleted at once (the mapping keeps it while the chunk lives; a crash leaves nothing behind); such a
chunk is *settled* and never merged again. The memory a side holds is then its chunks under
:data:`SPILL_ROWS` and the per-row arrays (count, hashes, indexes: about 37 bytes a row); the rows
themselves are pages of mapped files, read when a join takes them and dropped by the operating system
when memory is short. Chunks a resume reads from the snapshot's files are mapped the same way.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError
from flowlake.flow._hashindex import HashIndex, extended, id_dtype
from flowlake.flow.batch import _zero
from flowlake.table.bucketing import _PRIME, _column_hash, _splitmix

_log = logging.getLogger(__name__)

_NULL_HASH = np.uint64(0x6A09E667F3BCC908)
"""The hash of a NULL value (mixed in where a column is NULL, so NULL and zero differ)."""
_HASHABLE = (
    pa.types.is_integer, pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
    pa.types.is_large_binary, pa.types.is_temporal, pa.types.is_decimal,
)  # fmt: skip
_COMPARABLE = (*_HASHABLE, pa.types.is_floating, pa.types.is_boolean, pa.types.is_fixed_size_binary)
_MAX_CHUNKS = 12
_COMPACT_MIN = 1024
"""Dead rows a side keeps at least before it is compacted."""
SPILL_ROWS = 1 << 20
"""Rows from which a chunk of a side with a spill folder is kept on disk, memory-mapped."""
_SCAN_QUERIES = 8
"""Row hashes looked for by a scan, not by building the row-hash index (see ``_row_candidates``)."""
SPILL_FOLDER = "spill"
"""The subfolder of a join step's state folder that its sides spill to."""


def spill_table(folder: Path, table: pa.Table) -> pa.Table:
    """``table`` written to a file under ``folder`` and memory-mapped back (the file is deleted at
    once: the mapping keeps its pages). ``table`` itself if it cannot be written (disk full, a
    read-only folder), with a warning: the rows then stay in memory.

    >>> import tempfile
    >>> mapped = spill_table(Path(tempfile.mkdtemp()), pa.table({"a": [1, 2]}))
    >>> mapped.column("a").to_pylist()
    [1, 2]
    """
    path = folder / f"{uuid.uuid4().hex}.arrow"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    except OSError as exc:
        _log.warning(
            "join state: cannot spill %d rows to %s (%s); they stay in memory", table.num_rows, folder, exc
        )
        return table
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def key_types(left: pa.Schema, right: pa.Schema, on: Sequence[str]) -> list[pa.DataType]:
    """The type each join key column is compared in: the common type of its two sides.

    >>> key_types(pa.schema([("k", pa.int32())]), pa.schema([("k", pa.int64())]), ["k"])
    [DataType(int64)]
    """
    out: list[pa.DataType] = []
    for name in on:
        a, b = (_plain(s.field(name).type) for s in (left, right))
        if a == b:
            out.append(a)
            continue
        try:
            unified = pa.unify_schemas(
                [pa.schema([(name, a)]), pa.schema([(name, b)])], promote_options="permissive"
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InvalidArgumentError(
                f"join: key column {name!r} is {a} on the left and {b} on the right, which have no common "
                "type; cast one side with map_changes"
            ) from exc
        out.append(unified.field(name).type)
    return out


def _plain(type_: pa.DataType) -> pa.DataType:
    return type_.value_type if pa.types.is_dictionary(type_) else type_


def column_hash(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A uint64 per value: equal values (NULL with NULL, NaN with NaN, 0.0 with -0.0) hash alike.

    Types without a vector hash (nested ones) hash to one value: correct, only less selective.
    """
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    n = len(column)
    type_ = column.type
    if pa.types.is_floating(type_):
        values = np.asarray(column.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False)) + 0.0
        values[np.isnan(values)] = np.nan
        hashes = _splitmix(values.view(np.uint64))
    elif pa.types.is_boolean(type_):
        hashes = _column_hash(pc.fill_null(column, False).cast(pa.int8()))
    elif any(check(type_) for check in _HASHABLE):
        zero = pa.scalar(Decimal(0), type_) if pa.types.is_decimal(type_) else _zero(type_)
        filled = pc.fill_null(column, zero) if column.null_count else column
        hashes = _column_hash(filled)
    else:
        return np.zeros(n, np.uint64)
    if column.null_count:
        nulls = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        hashes = np.where(nulls, _NULL_HASH, hashes)
    return np.asarray(hashes, np.uint64)


def table_hash(columns: Sequence[pa.ChunkedArray | pa.Array], n: int) -> np.ndarray:
    """A uint64 per row from the values of ``columns`` (see :func:`column_hash`)."""
    result = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            result = _splitmix(result * _PRIME ^ column_hash(column))
    return result


def values_equal(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array, *, nulls: bool) -> np.ndarray:
    """Whether ``a[i]`` equals ``b[i]``; NULL equals NULL only if ``nulls`` (NaN equals NaN if it does)."""
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    type_ = _plain(a.type)
    if not any(check(type_) for check in _COMPARABLE) or _plain(b.type) != type_:
        pairs = zip(a.to_pylist(), b.to_pylist(), strict=True)
        return np.array([x == y and (nulls or x is not None) for x, y in pairs], dtype=bool)
    if pa.types.is_dictionary(a.type):
        a = a.cast(type_)
    if pa.types.is_dictionary(b.type):
        b = b.cast(type_)
    eq = pc.fill_null(pc.equal(a, b), False)
    if nulls:
        eq = pc.or_(eq, pc.and_(pc.is_null(a), pc.is_null(b)))
        if pa.types.is_floating(type_):
            eq = pc.or_(eq, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
    return np.asarray(eq.to_numpy(zero_copy_only=False), dtype=bool)


def rows_equal(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Whether row ``i`` of ``a`` and of ``b`` (same columns) hold the same values (NULL = NULL)."""
    eq = np.ones(a.num_rows, dtype=bool)
    for x, y in zip(a.columns, b.columns, strict=True):
        eq &= values_equal(x, y, nulls=True)
    return eq


class JoinSide:
    """The rows of one input of a join (one key partition), with counts and hash indexes.

    Args:
        schema: The side's columns (without ``_kind``/``_seq``).
        on: The join key columns.
    """

    spill: Path | None = None
    """Where chunks of :data:`SPILL_ROWS` rows go to be memory-mapped (None: they stay in memory);
    set by the join's state from its state folder, never pickled."""

    def __init__(self, schema: pa.Schema, on: Sequence[str]) -> None:
        self.schema = schema
        self.on = tuple(on)
        self.chunks: list[pa.Table] = []
        self._settled = 0
        """The first chunks that are never merged again (on disk, or as large as a spilled one)."""
        self.count = np.zeros(0, np.int32)
        """Per row id its multiplicity (int32 while every count fits, else int64); change it through
        :meth:`add`, :meth:`grow` and :meth:`retract` only (they keep the live-row count)."""
        self.key_hash = np.zeros(0, np.uint64)
        self.keyed = np.zeros(0, dtype=bool)
        """Whether the row's key has no NULL (only those can match)."""
        self.row_hash = np.zeros(0, np.uint64)
        """Hashes of the first ``len(row_hash)`` rows: computed when a retraction first needs them."""
        self._live = 0
        """Rows whose count is not 0."""
        self._buffers: dict[str, np.ndarray] = {}
        """The buffers the per-row arrays above are views of, with room to grow (see ``extended``)."""
        self._table: pa.Table | None = None
        self._row_index: HashIndex | None = None
        self._key_index: HashIndex | None = None

    def __len__(self) -> int:
        """Live stored rows."""
        return self._live

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_table=None, _row_index=None, _key_index=None, _settled=0)  # rebuilt on first use
        state.pop("spill", None)
        state.pop("_buffers", None)
        state["chunks"] = [self.table()] if len(self.chunks) > 1 else self.chunks
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_settled", 0)
        self.__dict__.update(state)
        self._buffers = {}
        if "_live" not in state:  # pickled before the live-row count was kept
            self._live = int(np.count_nonzero(self.count))

    def _extend(self, name: str, values: np.ndarray) -> None:
        setattr(self, name, extended(getattr(self, name), values, self._buffers, name))

    def table(self) -> pa.Table:
        """Every stored row (live or dead), in row-id order."""
        if self._table is None:
            self._table = pa.concat_tables(self.chunks) if self.chunks else self.schema.empty_table()
        return self._table

    def take(self, ids: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        """The stored rows ``ids`` (of ``columns``, default all).

        Arrow's take over a chunked table costs time in proportion to the whole table; for a few rows
        of a large side they are taken chunk by chunk instead.
        """
        chunks = [c.select(list(columns)) for c in self.chunks] if columns is not None else self.chunks
        if not chunks:
            return (
                self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
            ).empty_table()
        if len(chunks) == 1 or len(ids) * 8 >= len(self.count):
            return pa.concat_tables(chunks).take(pa.array(ids, pa.int64()))
        bounds = np.cumsum([0, *(c.num_rows for c in chunks)])
        which = np.searchsorted(bounds, ids, "right") - 1
        order = np.argsort(which, kind="stable")
        ordered, chunk_of = ids[order], which[order]
        cuts = np.searchsorted(chunk_of, np.arange(len(chunks) + 1))
        parts = [
            chunk.take(pa.array(ordered[cuts[i] : cuts[i + 1]] - bounds[i], pa.int64()))
            for i, chunk in enumerate(chunks)
            if cuts[i + 1] > cuts[i]
        ]
        if not parts:
            return chunks[0].slice(0, 0)
        taken = pa.concat_tables(parts).combine_chunks()
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order), dtype=np.int64)
        return taken.take(pa.array(inverse))

    def find_rows(self, rows: pa.Table, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (index into ``rows``, row id) pair of equal rows, sorted by index then row id.

        A row may be stored more than once (an insert-only batch is appended without looking for its
        rows): its count is the sum over its copies.
        """
        if not len(self.count) or not rows.num_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        query, ids = self._row_candidates(hashes)
        if len(ids):
            same = rows_equal(rows.take(pa.array(query)), self.take(ids))
            query, ids = query[same], ids[same]
        order = np.lexsort((ids, query))
        return query[order], ids[order]

    def find_keys(
        self, keys: pa.Table, hashes: np.ndarray, types: Sequence[pa.DataType]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every (index into ``keys``, live row id) pair whose join keys are equal (NULLs never are).

        ``keys`` holds the join key columns in ``types``, the common types of the two sides.
        """
        if not len(self.count) or not keys.num_rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self._key_index is None:
            ids = np.flatnonzero(self.keyed)
            self._key_index = HashIndex(self.key_hash[ids], ids)
        query, ids = self._key_index.find(hashes, self.key_hash)
        alive = self.count[ids] > 0
        query, ids = query[alive], ids[alive]
        if not len(ids):
            return query, ids
        mine = self.take(ids, self.on)
        same = np.ones(len(ids), dtype=bool)
        for type_, theirs, column in zip(types, keys.columns, mine.columns, strict=True):
            same &= values_equal(theirs.take(pa.array(query)), column.cast(type_), nulls=False)
        return query[same], ids[same]

    def row_hashes(self) -> np.ndarray:
        """The hash of every stored row (computing those not hashed yet), by row id."""
        n, done = len(self.count), len(self.row_hash)
        if done < n:  # hash the rows stored since the last retraction
            fresh = self.table().slice(done)
            fresh_hash = table_hash(fresh.columns, fresh.num_rows)
            self._extend("row_hash", fresh_hash)
            if self._row_index is not None:
                self._row_index.insert(fresh_hash, np.arange(done, n, dtype=np.int64))
        return self.row_hash

    def live_rows_with_row_hash(self, hashes: np.ndarray) -> np.ndarray:
        """Ids of the live rows whose row hash is one of ``hashes`` (sorted unique), in row-id order."""
        if not len(hashes) or not len(self.count):
            return np.zeros(0, np.int64)
        _, ids = self._row_candidates(hashes)
        return np.sort(ids[self.count[ids] > 0])

    def _row_candidates(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (index into ``hashes``, row id) whose row hash is equal, sorted by index then id.

        Before the row-hash index exists (after a resume, or before a first retraction) a few hashes
        are found by a scan of the hashes: sorting millions of them for one update would hold up the
        first change after a restart (and a snapshot naming its rows) by a second or more; the index
        is built once a batch asks for more than :data:`_SCAN_QUERIES` hashes.
        """
        row_hash = self.row_hashes()
        if self._row_index is None and len(hashes) <= _SCAN_QUERIES:
            found = [np.flatnonzero(row_hash == h) for h in hashes]
            sizes = [len(f) for f in found]
            query = np.repeat(np.arange(len(hashes), dtype=np.int64), sizes)
            return query, np.concatenate([np.zeros(0, np.int64), *found])
        return self._row_hash_index().find(hashes, self.row_hash)

    def _row_hash_index(self) -> HashIndex:
        """Every stored row's id by its row hash (built once, then inserted into)."""
        self.row_hashes()
        if self._row_index is None:
            self._row_index = HashIndex(self.row_hash, np.arange(len(self.row_hash), dtype=np.int64))
        return self._row_index

    def restore(
        self,
        tables: Sequence[pa.Table],
        counts: np.ndarray,
        row_hash: np.ndarray,
        types: Sequence[pa.DataType],
    ) -> None:
        """Hold ``tables`` (in this order, not copied) with their rows' counts and row hashes: a state
        read back from a snapshot. Rows with count 0 are dead (dropped at the next compaction)."""
        self.chunks, self._settled = [], 0
        for table in tables:
            for batch in table.to_batches():
                self._append(pa.Table.from_batches([batch]), read=True)
        self._table, self._buffers = None, {}
        self.count = _narrow(np.asarray(counts, np.int64))
        self._live = int(np.count_nonzero(self.count))
        self.row_hash = np.asarray(row_hash, np.uint64)
        hashes, keyed = [np.zeros(0, np.uint64)], [np.zeros(0, dtype=bool)]
        for chunk in self.chunks:
            keys = key_columns(chunk, self.on, types)
            hashes.append(table_hash(keys.columns, chunk.num_rows))
            keyed.append(no_nulls(keys))
        self.key_hash, self.keyed = np.concatenate(hashes), np.concatenate(keyed)
        self._row_index = self._key_index = None

    def add(
        self,
        rows: pa.Table,
        counts: np.ndarray,
        key_hash: np.ndarray,
        keyed: np.ndarray,
        row_hash: np.ndarray | None = None,
    ) -> None:
        """Store rows with their counts (and their row hashes, if the caller has them: kept where
        every earlier row is hashed, so they are not computed again)."""
        if not rows.num_rows:
            return
        first = len(self.count)
        new_ids = np.arange(first, first + rows.num_rows, dtype=np.int64)
        if row_hash is not None and len(self.row_hash) == first:
            self._extend("row_hash", row_hash)
            if self._row_index is not None:
                self._row_index.insert(row_hash, new_ids)
        self._append(rows.combine_chunks())
        self._table = None
        counts = np.asarray(counts, np.int64)
        self._widen_counts(int(counts.max()))
        self._extend("count", counts.astype(self.count.dtype, copy=False))
        self._live += int(np.count_nonzero(counts))
        self._extend("key_hash", key_hash)
        self._extend("keyed", keyed)
        if self._key_index is not None:
            self._key_index.insert(key_hash[keyed], new_ids[keyed])

    def grow(self, ids: np.ndarray, delta: np.ndarray) -> None:
        """Add ``delta`` (positive) to the counts of the distinct rows ``ids`` (dead ones revive)."""
        grown = self.count[ids].astype(np.int64) + delta
        self._live += int(np.count_nonzero(grown == delta))  # (were 0)
        if len(grown):
            self._widen_counts(int(grown.max()))
        self.count[ids] = grown

    def _widen_counts(self, largest: int) -> None:
        """Hold the counts in int64 from now on if ``largest`` does not fit the int32 they are in."""
        if id_dtype(largest) is np.int64 and self.count.dtype != np.int64:
            self.count = self.count.astype(np.int64)
            self._buffers.pop("count", None)

    def _append(self, chunk: pa.Table, *, read: bool = False) -> None:
        """Add ``chunk`` (one record batch) after the others, merging the unsettled ones binary-counter
        style; with a spill folder, a chunk of :data:`SPILL_ROWS` rows is settled on disk. A chunk
        ``read`` from a snapshot's file is mapped already: a large one is settled as it is."""
        if not chunk.num_rows:
            return
        chunks, settled, spill = self.chunks, self._settled, self.spill
        chunks.append(chunk)
        if spill is not None and read and chunk.num_rows >= SPILL_ROWS:
            self._settled = len(chunks)
            return
        while len(chunks) - settled > 1 and chunks[-1].num_rows * 2 >= chunks[-2].num_rows:
            chunks[-2:] = [pa.concat_tables(chunks[-2:]).combine_chunks()]
        if len(chunks) - settled > _MAX_CHUNKS:
            chunks[settled:] = [pa.concat_tables(chunks[settled:]).combine_chunks()]
        if spill is not None and chunks[-1].num_rows >= SPILL_ROWS:
            # the merges went through every unsettled chunk (each was under twice the last): it is
            # the only one, so the settled chunks stay a prefix
            chunks[-1] = spill_table(spill, chunks[-1])
            self._settled = len(chunks)

    def _hold(self, table: pa.Table) -> None:
        """Hold ``table`` as the side's only rows (after a compaction or a rehash)."""
        self.chunks, self._settled = [], 0
        step = SPILL_ROWS if self.spill is not None else max(table.num_rows, 1)
        for start in range(0, table.num_rows, step):
            self._append(table.slice(start, step).combine_chunks())
        self._table = None

    def retract(self, query: np.ndarray, ids: np.ndarray, times: np.ndarray) -> None:
        """Take ``times[q]`` off the counts of the copies ``ids`` of row ``q`` (pairs sorted by ``q``,
        as :meth:`find_rows` gives them; the copies hold at least that many)."""
        counts = self.count[ids]
        if not len(ids):
            return
        starts = np.ones(len(query), dtype=bool)
        starts[1:] = query[1:] != query[:-1]
        run = np.cumsum(counts)
        before = (
            run
            - counts
            - np.repeat((run - counts)[starts], np.diff(np.append(np.flatnonzero(starts), len(query))))
        )
        after = counts - np.clip(times[query] - before, 0, counts)
        self.count[ids] = after
        self._live -= int(np.count_nonzero(counts)) - int(np.count_nonzero(after))  # (distinct ids)

    def compact(self) -> None:
        """Drop dead rows once they outnumber the live ones (row ids change; indexes are rebuilt)."""
        live = self._live
        if len(self.count) - live <= max(_COMPACT_MIN, live):
            return
        alive = np.flatnonzero(self.count)
        chunks = self.chunks
        bounds = np.searchsorted(alive, np.cumsum([0, *(c.num_rows for c in chunks)]))
        self.chunks, self._settled, self._table = [], 0, None
        offset = 0
        for i, chunk in enumerate(chunks):  # chunk by chunk: never the whole side in memory at once
            local = alive[bounds[i] : bounds[i + 1]] - offset
            offset += chunk.num_rows
            if len(local):
                self._append(chunk.take(pa.array(local, pa.int64())).combine_chunks())
        self._buffers = {}  # (the arrays below are new: their old buffers go)
        self.count = self.count[alive]
        self.row_hash = self.row_hash[alive[alive < len(self.row_hash)]]
        self.key_hash = self.key_hash[alive]
        self.keyed = self.keyed[alive]
        self._row_index = self._key_index = None

    def rehash(self, schema: pa.Schema, types: Sequence[pa.DataType]) -> None:
        """Take on a new schema or new key types (a flow rebuilt with other input types): cast the
        stored rows and hash them again."""
        table = self.table().cast(schema)
        self.schema = schema
        self._hold(table)
        self.row_hash, self._buffers = np.zeros(0, np.uint64), {}
        keys = key_columns(table, self.on, types)
        self.key_hash = table_hash(keys.columns, table.num_rows)
        self.keyed = no_nulls(keys)
        self._row_index = self._key_index = None


def _narrow(counts: np.ndarray) -> np.ndarray:
    """``counts`` as int32 if every one fits, else as they are."""
    return counts.astype(id_dtype(int(counts.max()) if len(counts) else 0), copy=False)


def key_columns(rows: pa.Table, on: Sequence[str], types: Sequence[pa.DataType]) -> pa.Table:
    """The join key columns of ``rows`` in the types they are compared in."""
    columns = [rows.column(name) for name in on]
    columns = [c if c.type == t else c.cast(t) for c, t in zip(columns, types, strict=True)]
    return pa.Table.from_arrays(columns, names=list(on))


def no_nulls(keys: pa.Table) -> np.ndarray:
    """Whether each row of ``keys`` has no NULL (a key with a NULL never matches)."""
    keyed = np.ones(keys.num_rows, dtype=bool)
    for column in keys.columns:
        if column.null_count:
            keyed &= ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return keyed
