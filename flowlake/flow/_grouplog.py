"""Chunk logs readable by key: what lets an aggregate or dedup state keep only some keys in memory.

Each chunk is one Arrow table of records sorted by a stable 64-bit hash of the key: the hash, the
key's identity (:func:`group_ident`, canonical bytes), ``live`` (False: a tombstone) and the state's
own columns (an aggregate's key columns and running values; a dedup's key and row). A chunk file is
an Arrow IPC file of hash-range runs, memory-mapped on read, so :meth:`GroupChunkLog.find` looks keys
up with one ``searchsorted`` per run over mapped pages, newest chunk first: the newest record of a
key is its state at the last snapshot. Merges go one hash range at a time, deduplicate in Arrow, and
drop tombstones into the base chunk and the records of windows that closed.
:class:`ShedsToChunks` is the memory bound on top: what a state sheds after a snapshot, and when.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.config import mib_setting
from flowlake.flow._snapshot import ChunkedSnapshot, ChunkLog, Frozen, Manifest, Records

TABLE = "table"
"""A :class:`GroupChunkLog` chunk's one entry: the Arrow table of its records."""
HASH, IDENT, LIVE, WINDOW_START = "hash", "ident", "live", "win"
"""Columns every record table has (``win``: windowed states only, the window's start in us)."""
_ORDER = "_order"


def memory_bound(max_mb: float | None, env: str, default_mb: float) -> int:
    """A state's memory bound in bytes: ``max_mb``, else ``$env``, else ``default_mb``; ``0`` or
    less: no bound (0).

    >>> memory_bound(1.5, "UNSET_VARIABLE", 8), memory_bound(None, "UNSET_VARIABLE", 0)
    (1572864, 0)
    """
    if max_mb is None:
        max_mb = mib_setting(env, default_mb)
    return max(0, int(max_mb * 2**20))


def _canonical(part: Any) -> Any:
    if type(part) is float and part == 0:
        return 0.0  # (the sign of a zero)
    if isinstance(part, Decimal) and part.is_finite():
        return part.normalize()  # (1.50 and 1.5)
    return part


def group_ident(key: Any) -> bytes:
    """A key's identity: equal keys (as the state's index compares them), equal bytes.

    Keys are in state form (:mod:`flowlake.flow._stateform`), or Python values: ints, strings,
    floats, bools, bytes, None, decimals, datetimes, or tuples of those, whose ``repr`` is canonical
    but for a float zero's sign and a decimal's trailing zeros.

    >>> group_ident(("a", 1, None)), group_ident(-0.0) == group_ident(0.0)
    (b"('a', 1, None)", True)
    >>> group_ident((Decimal("1.50"),)) == group_ident((Decimal("1.5"),))
    True
    """
    if type(key) is tuple:
        if any(type(part) is float or isinstance(part, Decimal) for part in key):
            key = tuple(_canonical(part) for part in key)
    else:
        key = _canonical(key)
    return repr(key).encode()


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1, _MIX_2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer of uint64 values (a bijection that spreads every input bit)."""
    with np.errstate(over="ignore"):
        x = values + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _MIX_1
        x = (x ^ (x >> np.uint64(27))) * _MIX_2
        return x ^ (x >> np.uint64(31))


def int_key_hashes(rows: np.ndarray, *, single: bool) -> np.ndarray:
    """The stable hash of keys of ints given as rows of an int64 array: plain ints (``single``, one
    column) or tuples."""
    if single:
        return _splitmix(rows[:, 0].view(np.uint64))
    acc = np.full(len(rows), np.uint64(rows.shape[1]), np.uint64)
    for j in range(rows.shape[1]):
        acc = _splitmix(acc ^ _splitmix(rows[:, j].view(np.uint64)))
    return acc


def int_key_idents(rows: np.ndarray, *, single: bool) -> pa.Array:
    """:func:`group_ident` of keys of ints given as rows of an int64 array (see
    :func:`int_key_hashes`), made in Arrow.

    >>> keys = [(1, -2), (30, 4)]
    >>> int_key_idents(np.array(keys), single=False).to_pylist() == [group_ident(k) for k in keys]
    True
    """
    parts = [pc.cast(pa.array(rows[:, j]), pa.string()) for j in range(rows.shape[1])]
    if single:
        return parts[0].cast(pa.binary())
    if len(parts) == 1:  # (a tuple of one)
        return pc.binary_join_element_wise("(", parts[0], ",)", "").cast(pa.binary())
    joined = pc.binary_join_element_wise(*parts, ", ")
    return pc.binary_join_element_wise("(", joined, ")", "").cast(pa.binary())


_INT64 = range(-(1 << 63), 1 << 63)


def _int_parts(key: Any) -> tuple[int, ...] | None:
    """A key's ints, if it is an int in int64 range or a tuple of such (hashed by :func:`int_key_hashes`)."""
    parts = key if type(key) is tuple else (key,)
    return parts if parts and all(type(p) is int and p in _INT64 for p in parts) else None


def _int_rows(keys: Sequence[Any]) -> tuple[np.ndarray, bool] | None:
    """Keys that are all ints in int64 range, or all tuples of such ints of one width, as rows of an
    int64 array (and whether they are plain ints); else None."""
    if not keys:
        return None
    if all(type(k) is int for k in keys):
        try:
            return np.asarray(keys, np.int64).reshape(len(keys), 1), True
        except OverflowError:
            return None
    if type(keys[0]) is not tuple or not keys[0]:
        return None
    width = len(keys[0])
    if not all(type(k) is tuple and len(k) == width and all(type(x) is int for x in k) for k in keys):
        return None
    try:
        return np.asarray(keys, np.int64).reshape(len(keys), width), False
    except OverflowError:
        return None


def key_identities(keys: Sequence[Any]) -> tuple[pa.Array, np.ndarray]:
    """Each key's :func:`group_ident` (an Arrow binary array) and stable 64-bit hash (uint64: the same
    in every process, unlike Python's ``hash`` of a string). Keys of ints are hashed in numpy, by
    :func:`int_key_hashes`, wherever they are; other keys by BLAKE2b of their identity.

    >>> idents, hashes = key_identities([(1, 2), "a", (1, 2), None])
    >>> idents.to_pylist()[:2], bool(hashes[0] == hashes[2] != hashes[1])
    ([b'(1, 2)', b"'a'"], True)
    >>> bool(key_identities([(1, 2)])[1][0] == hashes[0]), key_identities([(1, 2)])[0].to_pylist()
    (True, [b'(1, 2)'])
    """
    whole = _int_rows(keys)
    if whole is not None:
        rows, single = whole
        return int_key_idents(rows, single=single), int_key_hashes(rows, single=single)
    idents = [group_ident(k) for k in keys]
    hashes = np.zeros(len(keys), np.uint64)
    digest = hashlib.blake2b
    ints: dict[tuple[bool, int], list[int]] = {}  # (plain int, width) → positions
    for i, key in enumerate(keys):
        parts = _int_parts(key)
        if parts is None:
            hashes[i] = int.from_bytes(digest(idents[i], digest_size=8).digest(), "little")
        else:
            ints.setdefault((type(key) is not tuple, len(parts)), []).append(i)
    for (single, width), at in ints.items():
        rows = np.asarray([_int_parts(keys[i]) for i in at], np.int64).reshape(len(at), width)
        hashes[at] = int_key_hashes(rows, single=single)
    return pa.array(idents, pa.binary()), hashes


def sort_records(table: pa.Table) -> pa.Table:
    """``table`` in the chunk order: by hash, then identity."""
    if table.num_rows < 2:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(HASH, "ascending"), (IDENT, "ascending")]))


def merge_group_tables(
    tables: Sequence[pa.Table], *, drop_dead: bool, expire: tuple[int, int] | None = None
) -> pa.Table:
    """The newest record of each key in ``tables`` (oldest first), in chunk order; tombstones dropped
    if ``drop_dead``; with ``expire`` = (window size, watermark mark), the records of windows that end
    at or before the mark too (no change reaches a closed window again).

    >>> def t(keys, live):
    ...     idents, hashes = key_identities(keys)
    ...     return sort_records(pa.table({HASH: hashes, IDENT: idents, LIVE: live, "rows": [1] * len(keys)}))
    >>> merged = merge_group_tables([t(["a", "b"], [True, True]), t(["b"], [False])], drop_dead=True)
    >>> merged.column(IDENT).to_pylist()
    [b"'a'"]
    """
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    both = pa.concat_tables(
        [t.append_column(_ORDER, pa.array(np.full(t.num_rows, i, np.int32))) for i, t in enumerate(tables)]
    )
    keys = [(HASH, "ascending"), (IDENT, "ascending"), (_ORDER, "descending")]
    both = both.take(pc.sort_indices(both, sort_keys=keys))
    n = both.num_rows
    hashes = both.column(HASH).to_numpy()
    newest = np.ones(n, bool)
    if n > 1:
        idents = both.column(IDENT)
        same = pc.equal(idents.slice(1), idents.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        newest[1:] = (hashes[1:] != hashes[:-1]) | ~same
    if drop_dead:
        newest &= both.column(LIVE).to_numpy(zero_copy_only=False)
    if expire is not None and WINDOW_START in both.column_names:
        size, mark = expire
        newest &= both.column(WINDOW_START).to_numpy() + size > mark
    return both.filter(pa.array(newest)).drop_columns([_ORDER])


EAGER_RESUME_RECORDS = 1 << 16
"""A resumed state reads its chunks back whole only while they hold at most this many records; a
larger one (or one that had shed) starts with every key on disk and reads back what changes touch, so
a restart costs what the first batches touch, not the state."""


def resume_eagerly(manifest: Manifest, had_shed: bool) -> bool:
    """Whether a state resumed from ``manifest`` reads every record back (see :data:`EAGER_RESUME_RECORDS`).

    >>> resume_eagerly(Manifest("f", (("a", 10), ("b", 5)), (), 2), False)
    True
    """
    return not had_shed and sum(size for _, size in manifest.chunks) <= EAGER_RESUME_RECORDS


class _MappedChunk(NamedTuple):
    """A chunk as :meth:`GroupChunkLog.find` reads it: the whole table, and its runs (record batches,
    each one range of hashes) by their first hashes, each with its hashes (all memory-mapped)."""

    table: pa.Table
    firsts: np.ndarray
    runs: list[tuple[np.ndarray, pa.Table]]


MERGE_ROWS = 1 << 17
"""A merge reads, sorts and writes this many records of its inputs at a time (one hash range: the
memory a merge takes, whatever the size of the chunks)."""


class GroupChunkLog(ChunkLog):
    """A :class:`~flowlake.flow._snapshot.ChunkLog` of group record tables (see the module), which
    finds a key's newest record without reading the chunks.

    A chunk file is an Arrow IPC file of record batches that each hold one range of hashes, read
    memory-mapped; a merge of two chunks goes range by range (:data:`MERGE_ROWS` records at a time),
    so neither a merge nor a lookup holds a chunk in memory.
    """

    hash_column = HASH
    """The column of a record's key hash, by which a chunk is sorted."""

    def __init__(self, manifest: Manifest) -> None:
        super().__init__(manifest)
        self.expire: tuple[int, int] | None = None
        """(window size, mark) of a windowed state: merges drop the records of windows closed by then."""
        self._mapped: dict[str, _MappedChunk] = {}

    @staticmethod
    def size(records: Records) -> int:
        """Records in the chunk."""
        table: pa.Table = records[TABLE]
        return int(table.num_rows)

    def append(self, records: Records) -> Manifest:
        """As :meth:`ChunkLog.append`; the mapped chunks it merged away are let go (their mappings
        would keep the deleted files' pages)."""
        manifest = super().append(records)
        self._forget_retired()
        return manifest

    def _forget_retired(self) -> None:
        current = {name for name, _ in self.chunks}
        for name in [n for n in self._mapped if n not in current]:
            del self._mapped[name]

    def _load(self, path: Path) -> Records:
        mapped = pa.memory_map(str(path))
        table = pa.ipc.open_file(mapped).read_all()
        mapped.close()  # (the buffers keep the mapping; the file descriptor goes)
        return {TABLE: table}

    def _save(self, path: Path, records: Records) -> int:
        table: pa.Table = records[TABLE]
        return _write_runs(path, table.schema, [table.combine_chunks()])

    def _merge_tables(self, tables: Sequence[pa.Table], *, drop_dead: bool) -> pa.Table:
        """The records of ``tables`` (oldest first, one range of hashes) that a merge keeps, in chunk
        order (a table without columns for none)."""
        return merge_group_tables(tables, drop_dead=drop_dead, expire=self.expire)

    def merged_ranges(self, names: Sequence[str], *, drop_dead: bool) -> Iterator[pa.Table]:
        """The chunks ``names`` (oldest first) merged one range of hashes (about :data:`MERGE_ROWS`
        records of the biggest) at a time, in chunk order."""
        tables = [t for t in (self._table(name) for name in names) if t.num_rows]
        if not tables:
            return
        total = sum(t.num_rows for t in tables)
        big = max(tables, key=lambda t: t.num_rows)
        column = big.column(self.hash_column)
        cuts = [
            int(column[int(i)].as_py()) for i in np.linspace(0, big.num_rows, total // MERGE_ROWS + 2)[1:-1]
        ]
        bounds: list[int | None] = [0, *sorted(set(cuts)), None]
        for lo, hi in itertools.pairwise(bounds):
            assert lo is not None
            parts = [_hash_range(t, lo, hi, self.hash_column) for t in tables]
            merged = self._merge_tables(parts, drop_dead=drop_dead)
            if merged.num_columns and merged.num_rows:
                yield merged.combine_chunks()

    def _merge_pair(self, older: str, newer: str, *, drop_dead: bool) -> tuple[str, int]:
        """The two chunks merged range of hashes by range into a new chunk file."""
        tables = [self._table(older), self._table(newer)]
        schema = max(tables, key=lambda t: t.num_rows).schema
        written = 0

        def pieces() -> Iterator[pa.Table]:
            nonlocal written
            for merged in self.merged_ranges([older, newer], drop_dead=drop_dead):
                written += merged.num_rows
                yield merged

        name = self._new_name()
        self.bytes_written += _write_runs(self.folder / name, schema, pieces())
        return name, written

    def load(self) -> Records:
        """Every live record of the manifest's chunks, in chunk order (``{TABLE: None}`` for none)."""
        tables = [self._table(name) for name, _ in self.chunks]
        merged = self._merge_tables(tables, drop_dead=True)
        return {TABLE: merged if merged.num_columns else None}

    def _table(self, name: str) -> pa.Table:
        return self._chunk(name).table

    def _chunk(self, name: str) -> _MappedChunk:
        """A chunk, mapped, with its runs (kept until a merge retires the chunk)."""
        if name not in self._mapped:
            table: pa.Table = self.read(name)[TABLE]
            runs = [
                (b.column(self.hash_column).to_numpy(), pa.Table.from_batches([b]))
                for b in table.to_batches()
                if b.num_rows
            ]
            firsts = np.array([h[0] for h, _ in runs], np.uint64)
            self._mapped[name] = _MappedChunk(table, firsts, runs)
        return self._mapped[name]

    def find(self, idents: Sequence[bytes], hashes: np.ndarray) -> tuple[np.ndarray, pa.Table | None]:
        """The positions of ``idents`` (with their hashes, see :func:`key_identities`) whose newest
        record is live, and those records in that order (None if none is)."""
        pending = np.arange(len(idents))
        found: list[np.ndarray] = []
        records: list[pa.Table] = []
        for name, _ in reversed(self.chunks):
            if not len(pending):
                break
            chunk = self._chunk(name)
            which = np.searchsorted(chunk.firsts, hashes[pending], "right") - 1
            resolved: list[np.ndarray] = []
            for run in np.unique(which[which >= 0]).tolist():
                probes = pending[which == run]
                level, table = chunk.runs[run]
                hit, rows = _matches(level, table, hashes[probes], [idents[i] for i in probes.tolist()])
                if not len(hit):
                    continue
                resolved.append(probes[hit])
                taken = table.take(pa.array(rows))
                live = taken.column(LIVE).to_numpy(zero_copy_only=False)
                if live.any():
                    found.append(probes[hit[live]])
                    records.append(taken.filter(pa.array(live)))
            if resolved:
                pending = np.setdiff1d(pending, np.concatenate(resolved), assume_unique=True)
        if not found:
            return np.zeros(0, np.int64), None
        return np.concatenate(found), pa.concat_tables(records)


def _matches(
    level: np.ndarray, table: pa.Table, hashes: np.ndarray, idents: Sequence[bytes]
) -> tuple[np.ndarray, np.ndarray]:
    """Which of the probes (``hashes``, ``idents``) have a record in one run, and its row there."""
    lo, hi = np.searchsorted(level, hashes, "left"), np.searchsorted(level, hashes, "right")
    probes = np.flatnonzero(hi > lo)
    if not len(probes):
        return probes, probes
    width = (hi - lo)[probes]
    owners = np.repeat(probes, width)
    within = np.arange(len(owners)) - np.repeat(np.cumsum(width) - width, width)
    rows = np.repeat(lo[probes], width) + within
    held = table.column(IDENT).take(pa.array(rows)).to_pylist()
    match = np.flatnonzero(
        np.fromiter((held[i] == idents[o] for i, o in enumerate(owners.tolist())), bool, len(owners))
    )
    return owners[match], rows[match]  # (one row per probe: identities are unique in a chunk)


def _hash_range(table: pa.Table, lo: int, hi: int | None, hash_column: str = HASH) -> pa.Table:
    """The records of a chunk (sorted by hash) with ``lo <= hash < hi`` (no upper bound: None)."""
    column = table.column(hash_column)
    start = _position(column, lo)
    stop = table.num_rows if hi is None else _position(column, hi)
    return table.slice(start, stop - start)


def _position(column: pa.ChunkedArray, value: int) -> int:
    """Where ``value`` goes in a sorted hash column (its first equal entry), over its runs."""
    offset = 0
    for chunk in column.chunks:
        hashes = chunk.to_numpy()
        if len(hashes) and hashes[-1] >= value:
            return offset + int(np.searchsorted(hashes, np.uint64(value), "left"))
        offset += len(hashes)
    return offset


def _write_runs(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> int:
    """Write ``tables`` (each one record batch: one range of hashes) to an Arrow IPC file, fsynced;
    the bytes written."""
    with pa.OSFile(str(path), "wb") as sink:
        with pa.ipc.new_file(sink, schema) as writer:
            for table in tables:
                writer.write_table(
                    table.cast(schema) if table.schema != schema else table, max_chunksize=1 << 62
                )
        size = int(sink.tell())
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return size


KEEP_AFTER_SHEDDING = 7 / 8
"""A state over its bound keeps this share of it (so that it sheds once per eighth, not every snapshot)."""


class ShedsToChunks(ChunkedSnapshot):
    """Mixin: a chunked state bounded in memory (:meth:`keep_in_memory`). Right after a chunked
    snapshot wrote every change, a state over its bound drops its least recently changed items down to
    :data:`KEEP_AFTER_SHEDDING` of it; they need no writing (their newest record is in the chunks),
    and the subclass reads them back from its :class:`GroupChunkLog` when changes touch them.

    A subclass says how many items it holds (:meth:`_held`), estimates one's memory
    (:meth:`_item_bytes`) and drops the least recently changed ones (:meth:`_shed`).
    """

    log_class = GroupChunkLog
    _cache_bytes = 0
    """The memory bound (0: none; not pickled: the operator sets it before each batch)."""
    _cold = False
    """Whether items may be on disk only (shed, or not read back on resume)."""
    _not_pickled = (*ChunkedSnapshot._not_pickled, "_cache_bytes")

    def keep_in_memory(self, max_bytes: int) -> None:
        """Bound the memory of the items to about ``max_bytes`` (0: no bound) once snapshots are
        chunked (see the class)."""
        self._cache_bytes = max_bytes

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        drop = self._over_bound()
        self._cold = self._cold or drop > 0  # (before the snapshot: a resume must know to look on disk)
        frozen = super().__deepcopy__(memo)
        if drop:
            self._shed(drop)
        return frozen

    def _over_bound(self) -> int:
        """How many items to shed at a snapshot: 0 within the bound (or without one, or while the
        snapshots are not chunked yet)."""
        if not self._cache_bytes or self._log is None:
            return 0
        held, cap = self._held(), max(1, self._cache_bytes // self._item_bytes())
        return 0 if held <= cap else held - max(1, int(cap * KEEP_AFTER_SHEDDING))

    def _held(self) -> int:
        raise NotImplementedError

    def _item_bytes(self) -> int:
        raise NotImplementedError

    def _shed(self, drop: int) -> None:
        raise NotImplementedError
