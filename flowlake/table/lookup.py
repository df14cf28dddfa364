"""Point lookups: the live rows of given keys, reading only the rows that can hold them.

For each data file of a snapshot a :class:`KeyIndex` holds the hash of every row's key, sorted, with
the row positions in that order. It is built once per file (files are immutable: their names carry
the commit instant and a uuid, and the first read verifies the file's checksum) and kept in a
process-wide LRU cache bounded in bytes. A lookup then costs, per file, one binary search of the
wanted hashes; only files with a hit are read, and of them only the rows that hit: from the file's
copy in the local row store (:mod:`flowlake.table.rowstore`, memory-mapped Arrow, one gather per
column), or, with the row store off or full, by decoding the Parquet row groups holding the hits
(compaction writes base files in row groups of :data:`BASE_ROW_GROUP_ROWS` rows, ordered by key or
by the table's ``sort_by`` / ``cluster_by``: the index does not care). The hits of every file are
merged as a snapshot read merges (newest image per key, deletes removed), then matched to the
wanted keys on their values, so a hash collision never returns another key's row.

Bucket routing is not needed for correctness: at any version a key's images live in the files of one
bucket, and a file without the key has no row with its hash. It saves work: given the table's bucket
map, a file of a bucket in the map is searched only for the keys the map routes to that bucket
(bucket ids are never reused, so a bucket's key range never changes); a file of a bucket the map no
longer has (an old version, before a split or merge) is searched for every key.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowlake.catalog.base import DataFile
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError, StorageError
from flowlake.io.fs import Storage
from flowlake.io.parquet import parallel, read_parquet, without_layout_metadata
from flowlake.table.bucketing import key_hash, sorted_unique
from flowlake.table.bucketmap import BucketMap
from flowlake.table.fileparts import part_row_groups, physical_path, row_groups_of
from flowlake.table.merge import latest_rows
from flowlake.table.rowstore import RowStore
from flowlake.table.schema import conform
from flowlake.table.writer import POS_COLUMN

BASE_ROW_GROUP_ROWS = 16_384
"""Rows per row group of a base file: what a point lookup decodes to find one key without the row
store."""

DEFAULT_CACHE_BYTES = int(os.environ.get("FLOWLAKE_LOOKUP_CACHE_MB", "256")) * 1024 * 1024
"""Bound of the key-index cache (``FLOWLAKE_LOOKUP_CACHE_MB``, default 256 MiB): about 12 bytes per row."""

_ORDER = "__flowlake_order"


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """The sorted key hashes of one data file, where each sits, and how to fetch its rows."""

    hashes: np.ndarray
    """uint64 key hashes, ascending."""
    rows: np.ndarray
    """The row position of each hash in ``hashes``."""
    group_starts: np.ndarray
    """First row of each row group (of the part indexed), then its row count."""
    metadata: pq.FileMetaData | None
    """The Parquet footer (for reading row groups; None when ``stored`` holds the rows)."""
    stored: pa.Table | None = None
    """The file's rows, memory-mapped from the row store (None: read row groups of the file)."""
    first_group: int = 0
    """The first row group of the part indexed (a shared log file's bucket starts there)."""
    filter: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    """A bit per value of a hash's top bits, set where the file holds such a hash (see
    :func:`hash_filter`): most keys a file lacks are ruled out by it without a binary search."""

    @property
    def nbytes(self) -> int:
        """Memory held (a mapped copy lives in the page cache, not here)."""
        return (
            int(self.hashes.nbytes + self.rows.nbytes + self.group_starts.nbytes + self.filter.nbytes) + 1024
        )

    def positions(self, wanted: np.ndarray) -> np.ndarray:
        """Rows of this file whose key hash is one of ``wanted`` (sorted uint64), ascending."""
        n = len(self.hashes)
        if n == 0 or len(wanted) == 0:
            return np.empty(0, np.int64)
        if len(self.filter) and len(wanted) > 64:  # a few keys: the search alone is cheaper
            wanted = wanted[may_hold(self.filter, wanted)]
            if not len(wanted):
                return np.empty(0, np.int64)
        lo = np.searchsorted(self.hashes, wanted, side="left")
        hit = self.hashes[np.minimum(lo, n - 1)] == wanted  # one search; the second only for hits
        if not hit.any():
            return np.empty(0, np.int64)
        lo = lo[hit]
        hi = np.searchsorted(self.hashes, wanted[hit], side="right")
        counts = hi - lo
        if int(counts.max()) == 1:
            picks = lo
        else:  # equal hashes: several rows of one key (a log), or a collision
            offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            picks = np.repeat(lo, counts) + offsets
        return np.sort(self.rows[picks].astype(np.int64))


class KeyIndexCache:
    """A thread-safe LRU of :class:`KeyIndex` by file path, bounded by ``max_bytes``.

    ``store`` is the row store the indexes fetch rows from (default: the process's, see
    :mod:`flowlake.table.rowstore`).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, *, store: RowStore | None = None) -> None:
        self.max_bytes = max_bytes
        self.store = store if store is not None else RowStore()
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
        """The index of ``file`` (built on first use: reads and verifies the file)."""
        return self.get_many(storage, [file], primary_key)[0]

    def get_many(
        self, storage: Storage, files: Sequence[DataFile], primary_key: Sequence[str]
    ) -> list[KeyIndex]:
        """The indexes of ``files``, in order; missing ones are built in parallel."""
        paths = [storage.path(f.path) for f in files]
        found: list[KeyIndex | None] = []
        with self._lock:
            for path in paths:
                index = self._items.get(path)
                if index is not None:
                    self._items.move_to_end(path)
                found.append(index)
        missing = [i for i, index in enumerate(found) if index is None]
        if not missing:
            return found  # type: ignore[return-value]
        built = parallel(lambda i: _build(storage, paths[i], files[i], primary_key, self.store), missing)
        with self._lock:
            for i, index in zip(missing, built, strict=True):
                found[i] = index
                if paths[i] not in self._items:
                    self._items[paths[i]] = index
                    self._bytes += index.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
        return found  # type: ignore[return-value]


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


def _build(
    storage: Storage, path: str, file: DataFile, primary_key: Sequence[str], store: RowStore
) -> KeyIndex:
    """Index ``file`` (``path``: its catalog path under the storage root, which may name a part of a
    shared file, see :mod:`flowlake.table.fileparts`): from its row-store copy if there is one, else by
    reading (and verifying) it; with the row store on, the whole part is read once and copied there."""
    physical, part = physical_path(path), partial(part_row_groups, path)
    if store.enabled:
        name = store.name(path, file.size, file.checksum, type(storage.fs).__name__)
        stored = store.open(name)
        if stored is None:
            data = read_parquet(storage, physical, size=file.size, checksum=file.checksum, row_groups=part)
            if POS_COLUMN in data.column_names:
                data = data.drop_columns([POS_COLUMN])
            stored = store.put(name, data)
        if stored is not None:
            starts = np.array([0, stored.num_rows])
            return _index(stored, primary_key, starts, None, stored, 0)
    keys = read_parquet(
        storage, physical, list(primary_key), size=file.size, checksum=file.checksum, row_groups=part
    )
    with storage.fs.open_input_file(physical) as handle:
        metadata = pq.ParquetFile(handle).metadata
    span = row_groups_of(path, metadata)
    sizes = [metadata.row_group(i).num_rows for i in span]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
    return _index(keys, primary_key, starts, metadata, None, span.start)


_FILTER_BITS_PER_KEY = 8
"""Filter bits per key hash of a file: about one in eight keys it lacks passes (and is searched)."""


def hash_filter(hashes: np.ndarray) -> np.ndarray:
    """A bitmap of the top bits of ``hashes`` (at least 8 bits a hash, a power of two in all).

    >>> bits = hash_filter(np.array([1 << 63, 5], np.uint64))
    >>> may_hold(bits, np.array([1 << 63, 5, (1 << 62) + 9], np.uint64)).tolist()
    [True, True, False]
    """
    width = max(9, int(len(hashes) * _FILTER_BITS_PER_KEY).bit_length())  # 2**width bits
    bits = np.zeros(1 << width, dtype=bool)
    bits[(hashes >> np.uint64(64 - width)).astype(np.int64)] = True
    return np.packbits(bits, bitorder="little")


def may_hold(bitmap: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Whether each of ``hashes`` may be among those :func:`hash_filter` made ``bitmap`` of (False:
    certainly not)."""
    width = (len(bitmap) * 8).bit_length() - 1
    slot = (hashes >> np.uint64(64 - width)).astype(np.int64)
    return np.asarray((bitmap[slot >> 3] >> (slot & 7).astype(np.uint8)) & 1, dtype=bool)


def _index(
    keys: pa.Table,
    primary_key: Sequence[str],
    starts: np.ndarray,
    metadata: pq.FileMetaData | None,
    stored: pa.Table | None,
    first_group: int,
) -> KeyIndex:
    hashes = key_hash(keys, primary_key)
    order = np.argsort(hashes, kind="stable")
    rows = order.astype(np.int32 if keys.num_rows < 2**31 else np.int64)
    sorted_hashes = hashes[order]
    return KeyIndex(
        sorted_hashes,
        rows,
        starts.astype(np.int64),
        metadata,
        stored,
        first_group,
        hash_filter(sorted_hashes),
    )


def _read_rows(
    storage: Storage, file: DataFile, index: KeyIndex, positions: np.ndarray, columns: list[str]
) -> pa.Table:
    """The rows at ``positions`` (ascending) of ``file``: gathered from its row-store copy, or
    decoded from the row groups that hold them."""
    if index.stored is not None:
        present = index.stored.column_names
        return index.stored.select([c for c in columns if c in present]).take(pa.array(positions))
    groups = np.searchsorted(index.group_starts, positions, side="right") - 1
    wanted_groups = np.unique(groups)
    path = storage.path(physical_path(file.path))
    try:
        with storage.fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle, metadata=index.metadata)
            names = parquet.schema_arrow.names
            data = parquet.read_row_groups(
                (wanted_groups + index.first_group).tolist(),
                columns=[c for c in columns if c in names],
                use_threads=False,
            )
    except FileNotFoundError as exc:
        raise StorageError(
            f"data file {path!r} is missing; it may have been cleaned while this version was read "
            "(pin versions that are being read, or keep more history)"
        ) from exc
    sizes = np.diff(index.group_starts)[wanted_groups]
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    local = positions - index.group_starts[groups] + firsts[np.searchsorted(wanted_groups, groups)]
    return without_layout_metadata(data.take(pa.array(local)))


def lookup(
    storage: Storage,
    files: Sequence[DataFile],
    schema: pa.Schema,
    primary_key: Sequence[str],
    keys: pa.Table,
    *,
    columns: Sequence[str] | None = None,
    cache: KeyIndexCache | None = None,
    bucket_map: BucketMap | None = None,
) -> pa.Table:
    """The live rows of ``keys`` (a table of the key columns) in the snapshot made of ``files``.

    One row per row of ``keys`` whose key is live, in the order of ``keys``; ``columns`` (default
    all) always come back in the table's column order. With the table's ``bucket_map``, a file of
    a bucket in the map is searched only for the keys that route to that bucket.
    """
    cache = cache if cache is not None else CACHE
    pk = list(primary_key)
    out_columns = list(columns) if columns is not None else schema.names
    needed = list(dict.fromkeys([*pk, *out_columns]))
    wanted = sorted_unique(key_hash(keys, pk))
    routed = _router(wanted, bucket_map)
    # only the files of buckets some key routes to: the others are never read, nor indexed
    ordered = sorted(
        (f for f in files if len(routed(f.bucket))),
        key=lambda f: (f.content != "base", f.added_version, f.path),
    )
    indexes = cache.get_many(storage, ordered, pk)
    found = [(f, index, index.positions(routed(f.bucket))) for f, index in zip(ordered, indexes, strict=True)]
    found = [hit for hit in found if len(hit[2])]
    target = pa.schema([schema.field(c) for c in needed])

    def rows_of(hit: tuple[DataFile, KeyIndex, np.ndarray]) -> pa.Table:
        file, index, positions = hit
        is_log = file.content != "base"
        rows = _read_rows(storage, file, index, positions, [*needed, *([KIND_COLUMN] if is_log else [])])
        body = conform(rows.select([c for c in needed if c in rows.column_names]), target)
        if is_log:
            kinds = rows.column(KIND_COLUMN)
            keep = pc.not_equal(kinds, int(RowKind.UPDATE_BEFORE))
            return body.append_column(KIND_COLUMN, kinds).filter(keep)
        zeros = pa.array(np.zeros(body.num_rows, np.int8))
        return body.append_column(KIND_COLUMN, zeros)

    # gathers from mapped copies are cheap: threads pay only for decoding Parquet row groups
    decoding = sum(1 for _, index, _ in found if index.stored is None)
    parts = parallel(rows_of, found) if decoding > 1 else [rows_of(hit) for hit in found]
    if not parts:
        return pa.schema([schema.field(c) for c in out_columns]).empty_table()
    merged = latest_rows(parts, pk)
    return _match(keys.select(pk), merged, pk).select(out_columns)


def _router(wanted: np.ndarray, bucket_map: BucketMap | None) -> Callable[[int], np.ndarray]:
    """The wanted hashes a file of a given bucket can hold: those the map routes there if the bucket
    is in the map (bucket ids are never reused, so a bucket's range never changes), else all."""
    if bucket_map is None or len(wanted) == 0:
        return lambda bucket: wanted
    leaves = {b.id for b in bucket_map.buckets}
    buckets = bucket_map.route(wanted)
    memo: dict[int, np.ndarray] = {}

    def routed(bucket: int) -> np.ndarray:
        if bucket not in leaves:
            return wanted
        found = memo.get(bucket)
        if found is None:
            found = memo[bucket] = wanted[buckets == bucket]
        return found

    return routed


def _match(keys: pa.Table, merged: pa.Table, primary_key: list[str]) -> pa.Table:
    """The rows of ``merged`` (one per key) for each row of ``keys``, in the order of ``keys``."""
    if len(primary_key) == 1:
        name = primary_key[0]
        try:
            where = pc.index_in(keys.column(name), value_set=merged.column(name))
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # a key type index_in cannot compare: join
        else:
            return merged.take(where.drop_null())
    numbered = keys.append_column(_ORDER, pa.array(np.arange(keys.num_rows, dtype=np.int64)))
    matched = numbered.join(merged, keys=primary_key, join_type="inner", use_threads=False)
    return matched.sort_by(_ORDER).drop_columns([_ORDER])
