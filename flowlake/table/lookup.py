"""Point lookups: the live rows of given keys, reading only the row groups that can hold them.

For each data file of a snapshot a :class:`KeyIndex` holds the hash of every row's key, sorted, with
the row positions in that order and the file's row-group boundaries. It is built once per file (files
are immutable: their names carry the commit instant and a uuid, and the first read verifies the
file's checksum) and kept in a process-wide LRU cache bounded in bytes. A lookup then costs, per file,
one binary search of the wanted hashes; only files with a hit are read, and of them only the row
groups holding the hits (compaction writes base files in row groups of :data:`BASE_ROW_GROUP_ROWS`
rows, ordered by key or by the table's ``sort_by`` / ``cluster_by``: the index does not care). The
hits of every file are merged as a snapshot read merges (newest image per key, deletes removed), then
matched to the wanted keys on their values, so a hash
collision never returns another key's row.

No bucket routing is needed: at any version a key's images live in the files of one bucket, and a
file without the key has no row with its hash, so the other buckets' files fall out of the search.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowlake.catalog.base import DataFile
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError, StorageError
from flowlake.io.fs import Storage
from flowlake.io.parquet import parallel, read_parquet
from flowlake.table.bucketing import key_hash
from flowlake.table.merge import latest_rows
from flowlake.table.schema import conform

BASE_ROW_GROUP_ROWS = 16_384
"""Rows per row group of a base file: what a point lookup decodes to find one key."""

DEFAULT_CACHE_BYTES = int(os.environ.get("FLOWLAKE_LOOKUP_CACHE_MB", "256")) * 1024 * 1024
"""Bound of the key-index cache (``FLOWLAKE_LOOKUP_CACHE_MB``, default 256 MiB): about 16 bytes per row."""

_ORDER = "__flowlake_order"


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """The sorted key hashes of one data file, where each sits, and the file's row groups."""

    hashes: np.ndarray
    """uint64 key hashes, ascending."""
    rows: np.ndarray
    """The row position of each hash in ``hashes``."""
    group_starts: np.ndarray
    """First row of each row group, then the file's row count."""
    metadata: pq.FileMetaData

    @property
    def nbytes(self) -> int:
        """Memory held."""
        return int(self.hashes.nbytes + self.rows.nbytes + self.group_starts.nbytes) + 1024

    def positions(self, wanted: np.ndarray) -> np.ndarray:
        """Rows of this file whose key hash is one of ``wanted`` (sorted uint64), ascending."""
        lo = np.searchsorted(self.hashes, wanted, side="left")
        hi = np.searchsorted(self.hashes, wanted, side="right")
        hit = hi > lo
        if not hit.any():
            return np.empty(0, np.int64)
        lo, hi = lo[hit], hi[hit]
        counts = hi - lo
        if int(counts.max()) == 1:
            picks = lo
        else:  # equal hashes: several rows of one key (a log), or a collision
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            picks = np.repeat(lo, counts) + offsets
        return np.sort(self.rows[picks].astype(np.int64))


class KeyIndexCache:
    """A thread-safe LRU of :class:`KeyIndex` by file path, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, KeyIndex] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Memory the cached indexes hold."""
        return self._bytes

    def get(self, storage: Storage, file: DataFile, primary_key: Sequence[str]) -> KeyIndex:
        """The index of ``file`` (built on first use: reads and verifies the file's key columns)."""
        path = storage.path(file.path)
        with self._lock:
            found = self._items.get(path)
            if found is not None:
                self._items.move_to_end(path)
                return found
        index = _build(storage, path, file, primary_key)
        with self._lock:
            if path not in self._items:
                self._items[path] = index
                self._bytes += index.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return index


CACHE = KeyIndexCache()
"""The process-wide key-index cache."""


def key_table(table: str, primary_key: Sequence[str], schema: pa.Schema, keys: Any) -> pa.Table:
    """``keys`` as a table of the key columns, cast to their types (clear errors naming the column).

    ``keys``: values of a one-column key, tuples of a composite key, a mapping of key column to
    values, or a table (or record batch) holding the key columns.

    >>> schema = pa.schema([("shop", pa.int32()), ("day", pa.string()), ("n", pa.int64())])
    >>> key_table("dws.t", ["shop", "day"], schema, [(1, "mon"), (2, "tue")]).to_pydict()
    {'shop': [1, 2], 'day': ['mon', 'tue']}
    """
    key = list(primary_key)
    if isinstance(keys, pa.RecordBatch):
        keys = pa.Table.from_batches([keys])
    columns: dict[str, Any]
    if isinstance(keys, pa.Table):
        columns = {k: keys.column(k) if k in keys.column_names else None for k in key}
    elif isinstance(keys, Mapping):
        columns = {k: keys.get(k) for k in key}
    elif len(key) == 1:
        columns = {key[0]: list(keys)}
    else:
        values = list(keys)
        bad = next((v for v in values if not isinstance(v, tuple | list) or len(v) != len(key)), None)
        if bad is not None:
            raise InvalidArgumentError(
                f"table {table!r} has the composite key {key}: give each key as a tuple of "
                f"{len(key)} values (got {bad!r})"
            )
        columns = {k: [v[i] for v in values] for i, k in enumerate(key)}
    arrays = []
    for k in key:
        values = columns[k]
        dtype = schema.field(k).type
        if values is None:
            raise InvalidArgumentError(f"table {table!r}: the keys lack key column {k!r}")
        try:
            if isinstance(values, pa.ChunkedArray | pa.Array):
                array = values.cast(dtype)
            else:
                array = pa.array(values, dtype)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"table {table!r}: key column {k!r} ({dtype}) cannot hold the keys given: {exc}"
            ) from exc
        if array.null_count:
            raise InvalidArgumentError(f"table {table!r}: key column {k!r} got a null key")
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=key)


def _build(storage: Storage, path: str, file: DataFile, primary_key: Sequence[str]) -> KeyIndex:
    keys = read_parquet(storage, path, list(primary_key), size=file.size, checksum=file.checksum)
    hashes = key_hash(keys, primary_key)
    order = np.argsort(hashes, kind="stable")
    rows = order.astype(np.int32 if keys.num_rows < 2**31 else np.int64)
    with storage.fs.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    return KeyIndex(hashes[order], rows, starts, metadata)


def _read_rows(
    storage: Storage, file: DataFile, index: KeyIndex, positions: np.ndarray, columns: list[str]
) -> pa.Table:
    """The rows at ``positions`` (ascending) of ``file``: only their row groups are decoded."""
    groups = np.searchsorted(index.group_starts, positions, side="right") - 1
    wanted_groups = np.unique(groups)
    path = storage.path(file.path)
    try:
        with storage.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle, metadata=index.metadata)
            names = parquet.schema_arrow.names
            data = parquet.read_row_groups(
                wanted_groups.tolist(), columns=[c for c in columns if c in names], use_threads=False
            )
    except FileNotFoundError as exc:
        raise StorageError(
            f"data file {path!r} is missing; it may have been cleaned while this version was read "
            "(pin versions that are being read, or keep more history)"
        ) from exc
    sizes = np.diff(index.group_starts)[wanted_groups]
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    local = positions - index.group_starts[groups] + firsts[np.searchsorted(wanted_groups, groups)]
    return data.take(pa.array(local))


def lookup(
    storage: Storage,
    files: Sequence[DataFile],
    schema: pa.Schema,
    primary_key: Sequence[str],
    keys: pa.Table,
    *,
    columns: Sequence[str] | None = None,
    cache: KeyIndexCache | None = None,
) -> pa.Table:
    """The live rows of ``keys`` (a table of the key columns) in the snapshot made of ``files``.

    One row per row of ``keys`` whose key is live, in the order of ``keys``; ``columns`` (default
    all) always come back in the table's column order.
    """
    cache = cache if cache is not None else CACHE
    pk = list(primary_key)
    out_columns = list(columns) if columns is not None else schema.names
    needed = list(dict.fromkeys([*pk, *out_columns]))
    wanted = np.unique(key_hash(keys, pk))
    ordered = sorted(files, key=lambda f: (f.content != "base", f.added_version, f.path))
    target = pa.schema([schema.field(c) for c in needed])

    def hits(file: DataFile) -> pa.Table | None:
        index = cache.get(storage, file, pk)
        positions = index.positions(wanted)
        if not len(positions):
            return None
        is_log = file.content != "base"
        rows = _read_rows(storage, file, index, positions, [*needed, *([KIND_COLUMN] if is_log else [])])
        body = conform(rows.select([c for c in needed if c in rows.column_names]), target)
        if is_log:
            kinds = rows.column(KIND_COLUMN)
            keep = pc.not_equal(kinds, int(RowKind.UPDATE_BEFORE))
            return body.append_column(KIND_COLUMN, kinds).filter(keep)
        zeros = pa.array(np.zeros(body.num_rows, np.int8))
        return body.append_column(KIND_COLUMN, zeros)

    parts = [p for p in parallel(hits, ordered) if p is not None]
    if not parts:
        return pa.schema([schema.field(c) for c in out_columns]).empty_table()
    merged = latest_rows(parts, pk)
    numbered = keys.select(pk).append_column(_ORDER, pa.array(np.arange(keys.num_rows, dtype=np.int64)))
    matched = numbered.join(merged, keys=pk, join_type="inner", use_threads=False)
    return matched.sort_by(_ORDER).select(out_columns)
