"""Reading a table: snapshots (merge-on-read with file skipping) and incremental changelogs.

Skipping files is only safe where it cannot resurrect an older image of a key. For each bucket:

* a log file whose stats cannot match the filter is read for its key columns only, and its rows count
  as deletions in the merge (their keys' newest images do not match, so older ones must not win);
* a base file that cannot match is skipped whole (base files are a bucket's oldest layer: their rows
  never hide a newer image), and of a base file that may match only the row groups whose footer
  statistics may match are decoded (compaction writes statistics for the clustering columns and the
  key, see :mod:`flowlake.table.clustering`);
* a bucket where no file can match is skipped whole; a bucket with base files only needs no merge.

Every file of the snapshot is read in one parallel pass (pyarrow decodes without the GIL), then each
bucket with log files is merged (:mod:`flowlake.table.merge`), also in parallel.

The filter is then applied to the merged rows, so results are exact whatever the stats say.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from flowlake.catalog.base import DataFile
from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.io.fs import Storage
from flowlake.io.parquet import parallel, read_parquet_parts
from flowlake.table._merged_buckets import merged_buckets_dataset
from flowlake.table.bucketing import key_hash
from flowlake.table.bucketmap import BucketMap
from flowlake.table.fileparts import layout_of, part_span, physical_path
from flowlake.table.merge import latest_rows
from flowlake.table.schema import conform
from flowlake.table.stats import (
    Filter,
    filter_columns,
    matching_row_groups,
    may_match,
    normalize_filter,
    read_stats,
    to_expression,
)
from flowlake.table.writer import POS_COLUMN

T = TypeVar("T")


@dataclass(slots=True)
class ScanMetrics:
    """What the last read did: files considered, read whole, read for keys only, skipped."""

    files: int = 0
    files_read: int = 0
    files_keys_only: int = 0
    files_skipped: int = 0
    row_groups_skipped: int = 0
    """Row groups of base files left undecoded by their footer statistics."""
    rows_read: int = 0
    buckets_merged: int = 0
    buckets_pruned: int = 0
    """Buckets left out because the filter pins the primary key to values that hash elsewhere."""
    by_bucket: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Task:
    file: DataFile
    columns: list[str]
    keys_only: bool
    filter: Filter | None = None
    """Base files only: decode just the row groups whose footer statistics may match."""


def _row_groups(filter: Filter, skipped: list[int], metadata: pq.FileMetaData) -> list[int] | None:
    chosen = matching_row_groups(filter, metadata)
    if chosen is not None:
        skipped.append(metadata.num_row_groups - len(chosen))  # list.append is atomic across threads
    return chosen


def _image_row_groups(metadata: pq.FileMetaData) -> list[int] | None:
    """The row groups of a log file that hold more than ``-U`` rows (by their ``_kind`` statistics;
    None, all of them, for a file written without)."""
    if metadata.num_row_groups < 2:
        return None
    names = [metadata.row_group(0).column(j).path_in_schema for j in range(metadata.num_columns)]
    if KIND_COLUMN not in names:
        return None
    j = names.index(KIND_COLUMN)
    chosen = []
    for i in range(metadata.num_row_groups):
        chunk = metadata.row_group(i).column(j)
        stats = chunk.statistics if chunk.is_stats_set else None
        only_before = (
            stats is not None and stats.has_min_max and stats.min == stats.max == int(RowKind.UPDATE_BEFORE)
        )
        if not only_before:
            chosen.append(i)
    return chosen


def _row_group_chooser(
    task: _Task, skipped: list[int]
) -> Callable[[pq.FileMetaData], Sequence[int] | None] | None:
    """What picks the row groups to decode: a log's groups holding images; a base file's groups
    whose statistics may match the filter; None: all groups."""
    if task.file.content != "base":
        return _image_row_groups
    return None if task.filter is None else partial(_row_groups, task.filter, skipped)


def _read_file(
    storage: Storage, schema: pa.Schema, tasks: Sequence[_Task], skipped: list[int]
) -> list[pa.Table]:
    """The tasks of one file (several when they read parts of a commit's shared log file, see
    :mod:`flowlake.table.fileparts`), decoded in one pass: per task, its ``columns`` (conformed to
    ``schema``) and ``_kind``: 0 for base rows, the stored kind for log rows, ``-D`` for a keys-only
    read. A log's row groups of ``-U`` rows only are not decoded; ``-U`` rows mixed with others
    (older files) are read, and the merge skips them."""
    first = tasks[0].file
    is_log = first.content != "base"  # a log, or a split's moved changes
    wanted = [[c for c in t.columns if c in schema.names] for t in tasks]
    columns = list(dict.fromkeys(c for names in wanted for c in names))
    choosers = [_row_group_chooser(t, skipped) for t in tasks]

    def parts(metadata: pq.FileMetaData) -> list[Sequence[int] | None]:
        layout = layout_of(metadata)
        images = _image_row_groups(metadata) if is_log else None  # once for all the file's parts
        out: list[Sequence[int] | None] = []
        for task, choose in zip(tasks, choosers, strict=True):
            picked = images if is_log else None if choose is None else choose(metadata)
            span = part_span(task.file.path, layout)
            if span is not None:
                picked = list(span) if picked is None else [g for g in picked if g in span]
            out.append(picked)
        return out

    read = read_parquet_parts(
        storage,
        storage.path(physical_path(first.path)),
        [*columns, *([KIND_COLUMN] if is_log else [])],
        size=first.size,
        checksum=first.checksum,
        parts=parts,
    )
    return [
        _shaped(t, part, names, schema, is_log) for t, part, names in zip(tasks, read, wanted, strict=True)
    ]


def _shaped(task: _Task, projected: pa.Table, wanted: list[str], schema: pa.Schema, is_log: bool) -> pa.Table:
    if task.keys_only:
        kinds = pa.array(np.full(projected.num_rows, RowKind.DELETE, np.int8))
    elif is_log:
        kinds = projected.column(KIND_COLUMN)
    else:
        kinds = pa.array(np.zeros(projected.num_rows, np.int8))
    names = set(projected.column_names)
    present = [c for c in wanted if c in names]
    target = pa.schema([schema.field(c) for c in present])
    return conform(projected.select(present), target).append_column(KIND_COLUMN, kinds)


def read_snapshot(
    storage: Storage,
    files: Sequence[DataFile],
    schema: pa.Schema,
    primary_key: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    filter: Filter | None = None,
    metrics: ScanMetrics | None = None,
    bucket_map: BucketMap | None = None,
) -> pa.Table:
    """The live rows of a snapshot made of ``files`` (in commit order), projected and filtered.

    With the table's ``bucket_map``, a filter that pins the primary key (``=`` or ``in`` on every
    key column, in each OR branch) reads only the buckets those keys hash to (:func:`prune_by_key`).
    """
    metrics = metrics if metrics is not None else ScanMetrics()
    kept = prune_by_key(files, filter, schema, primary_key, bucket_map)
    metrics.files += len(files) - len(kept)
    metrics.files_skipped += len(files) - len(kept)
    metrics.buckets_pruned += len({f.bucket for f in files} - {f.bucket for f in kept})
    files = kept
    out_columns = list(columns) if columns is not None else schema.names
    needed = list(dict.fromkeys([*primary_key, *out_columns, *sorted(filter_columns(filter))]))
    needed = [c for c in needed if c in schema.names]
    keys = list(primary_key)
    by_bucket: dict[int, list[DataFile]] = defaultdict(list)
    for f in files:
        by_bucket[f.bucket].append(f)
    tasks: list[list[_Task]] = []
    for bucket in sorted(by_bucket):
        bucket_files = sorted(by_bucket[bucket], key=lambda f: (f.content != "base", f.added_version, f.path))
        matching = [
            filter is None or may_match(filter, read_stats(f.stats), f.row_count) for f in bucket_files
        ]
        pairs = list(zip(bucket_files, matching, strict=True))
        metrics.files += len(bucket_files)
        if not any(matching):
            metrics.files_skipped += len(bucket_files)
            continue
        if not keys or all(f.content == "base" for f in bucket_files):  # nothing to merge
            chosen = [_Task(f, needed, False, _base_filter(f, filter)) for f, m in pairs if m]
            metrics.files_skipped += len(bucket_files) - len(chosen)
            tasks.append(chosen)
            continue
        metrics.buckets_merged += 1
        # A base file is a bucket's oldest layer: its rows never hide a newer image, so one that
        # cannot match is skipped whole. A log that cannot match is read for its keys (deletions).
        bucket_tasks = [
            _Task(f, needed, False, _base_filter(f, filter)) if m else _Task(f, keys, True)
            for f, m in pairs
            if m or f.content != "base"
        ]
        metrics.files_skipped += len(bucket_files) - len(bucket_tasks)
        metrics.files_keys_only += sum(1 for t in bucket_tasks if t.keys_only)
        tasks.append(bucket_tasks)
    metrics.files_read += sum(1 for group in tasks for t in group if not t.keys_only)
    needed_schema = pa.schema([schema.field(c) for c in needed]).append(pa.field(KIND_COLUMN, pa.int8()))

    flat = [t for group in tasks for t in group]
    skipped: list[int] = []
    read = _read_all(storage, schema, flat, needed_schema, skipped)
    metrics.row_groups_skipped += sum(skipped)
    starts = np.cumsum([0, *(len(group) for group in tasks)])
    groups = [(group, read[starts[i] : starts[i + 1]]) for i, group in enumerate(tasks)]

    def bucket_rows(item: tuple[list[_Task], list[pa.Table]]) -> list[pa.Table]:
        group, parts = item
        if not keys or all(t.file.content == "base" for t in group):
            return [p.drop_columns([KIND_COLUMN]) for p in parts]
        return [latest_rows(parts, keys, base_count=_base_count(group))]

    merged_parts = [part for parts in parallel(bucket_rows, groups) for part in parts]
    metrics.rows_read += sum(p.num_rows for p in merged_parts)
    result_schema = pa.schema([schema.field(c) for c in needed])
    result = pa.concat_tables(merged_parts) if merged_parts else result_schema.empty_table()
    if filter is not None:
        result = result.filter(to_expression(filter))
    return result.select(out_columns)


def _read_all(
    storage: Storage, schema: pa.Schema, flat: list[_Task], needed_schema: pa.Schema, skipped: list[int]
) -> list[pa.Table]:
    """Every task's rows, in order, read in parallel runs of files (a file read once for all its tasks)."""
    by_file: dict[str, list[int]] = defaultdict(list)  # a shared log file's parts are read in one pass
    for i, t in enumerate(flat):
        by_file[physical_path(t.file.path)].append(i)
    units = list(by_file.values())

    def read_chunk(chunk: list[list[int]]) -> list[tuple[int, pa.Table]]:
        out = []
        for unit in chunk:
            parts = _read_file(storage, schema, [flat[i] for i in unit], skipped)
            out += [(i, _fill(part, needed_schema)) for i, part in zip(unit, parts, strict=True)]
        return out

    # a few tasks of many files each: threads on a small machine switch less than with one per file
    sizes = [max(flat[unit[0]].file.size or 0, 1) for unit in units]
    read: list[pa.Table] = [needed_schema.empty_table()] * len(flat)
    for done in parallel(read_chunk, _chunks(units, sizes, _READ_CHUNKS)):
        for i, part in done:
            read[i] = part
    return read


def snapshot_dataset(
    storage: Storage,
    files: Sequence[DataFile],
    schema: pa.Schema,
    primary_key: Sequence[str],
    *,
    columns: Sequence[str] | None = None,
    filter: Filter | None = None,
    bucket_map: BucketMap | None = None,
) -> ds.Dataset:
    """A snapshot as a ``pyarrow.dataset.Dataset`` that reads and merges lazily, bucket by bucket.

    Buckets made of base files only (every bucket, after a compaction) stay on storage as a file
    dataset, read when the dataset is scanned. A bucket with log files is merged when a scan reaches
    it (:mod:`flowlake.table._merged_buckets`), so a scan holds the buckets it is reading, not the
    table, and each scan merges again. A scanner's filter skips base files by their catalog stats
    and row groups by their footers (see :func:`_base_dataset`).

    ``columns`` (plus those a DNF ``filter`` reads) are the dataset's columns; ``filter`` is applied
    to its rows, and before that skips the files that cannot match and merges the buckets with log
    files as a filtered :func:`read_snapshot` does (with ``bucket_map``, a filter that pins the key
    first leaves out the other buckets: :func:`prune_by_key`).
    """
    keys = list(primary_key)
    files = prune_by_key(files, filter, schema, keys, bucket_map)
    wanted = list(columns) if columns is not None else schema.names
    needed = [c for c in dict.fromkeys([*wanted, *sorted(filter_columns(filter))]) if c in schema.names]
    if isinstance(filter, pc.Expression):
        needed = schema.names  # the columns an Expression reads are not known
    shown = pa.schema([schema.field(c) for c in needed])
    logged = {f.bucket for f in files if f.content != "base"} if keys else set()
    base = [
        f
        for f in files
        if f.bucket not in logged and (filter is None or may_match(filter, read_stats(f.stats), f.row_count))
    ]
    lazy = _base_dataset(storage, base, schema, shown)
    if logged:
        merge = partial(
            read_snapshot, storage, schema=schema, primary_key=keys, columns=needed, filter=filter
        )
        merged = merged_buckets_dataset([f for f in files if f.bucket in logged], shown, merge)
        lazy = ds.dataset([lazy, merged])
    return lazy if filter is None else lazy.filter(to_expression(filter))


MAX_PINNED_KEYS = 100_000
"""Most keys a filter may pin for :func:`prune_by_key` to hash them (more: no pruning)."""


def pinned_buckets(
    filter: Filter | None, schema: pa.Schema, primary_key: Sequence[str], bucket_map: BucketMap
) -> set[int] | None:
    """The buckets of ``bucket_map`` that can hold rows matching a DNF ``filter``, or None if some OR
    branch does not pin every key column to a finite set of values (``=``, ``==``, ``in``).

    >>> schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    >>> pinned_buckets([("id", "in", [1, 2]), ("v", "=", "x")], schema, ["id"], BucketMap.initial(4))
    {1, 2}
    >>> pinned_buckets([[("id", "=", 1)], [("v", "=", "x")]], schema, ["id"], BucketMap.initial(4)) is None
    True
    """
    groups = normalize_filter(filter)
    if groups is None or not primary_key:
        return None
    buckets: set[int] = set()
    for group in groups:
        per_column: list[list[Any]] = []
        for name in primary_key:
            allowed: set[Any] | None = None
            for column, op, value in group:
                if column != name or op not in ("=", "==", "in"):
                    continue
                values = list(value) if op == "in" else [value]
                try:
                    found = {v for v in values if v is not None}  # = NULL matches no row
                except TypeError:  # unhashable literals: do not prune
                    return None
                allowed = found if allowed is None else allowed & found
            if allowed is None:
                return None
            per_column.append(sorted(allowed, key=repr))
        combos = 1
        for values in per_column:
            combos *= len(values)
        if combos > MAX_PINNED_KEYS:
            return None
        if combos == 0:
            continue
        rows = list(itertools.product(*per_column))
        try:
            keys = pa.Table.from_arrays(
                [pa.array([r[i] for r in rows], schema.field(k).type) for i, k in enumerate(primary_key)],
                names=list(primary_key),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            return None  # a literal the key column cannot hold: leave the decision to the row filter
        buckets.update(int(b) for b in np.unique(bucket_map.route(key_hash(keys, primary_key))))
    return buckets


def prune_by_key(
    files: Sequence[DataFile],
    filter: Filter | None,
    schema: pa.Schema,
    primary_key: Sequence[str],
    bucket_map: BucketMap | None,
) -> list[DataFile]:
    """``files`` without those of buckets that cannot hold a key the filter pins.

    Only files of buckets that are in ``bucket_map`` are left out: bucket ids are never reused, so a
    bucket's hash range never changes, and the map need not be the version's own (a file of a
    bucket that a later split or merge removed from the map is kept).
    """
    if bucket_map is None or filter is None or not primary_key:
        return list(files)
    buckets = pinned_buckets(filter, schema, primary_key, bucket_map)
    if buckets is None:
        return list(files)
    leaves = {b.id for b in bucket_map.buckets}
    return [f for f in files if f.bucket in buckets or f.bucket not in leaves]


def _base_dataset(
    storage: Storage, files: Sequence[DataFile], schema: pa.Schema, shown: pa.Schema
) -> ds.Dataset:
    """Base files as a lazy dataset; each file carries its catalog min/max as a guarantee, so a
    scanner's filter (pyarrow's, or DuckDB's pushed into it) skips files without opening them, and
    the footers' row-group statistics skip row groups."""
    if not files:
        return ds.dataset(shown.empty_table())
    fmt = ds.ParquetFileFormat()
    fragments = [
        fmt.make_fragment(
            storage.path(f.path), filesystem=storage.fs, partition_expression=_guarantee(f, schema)
        )
        for f in files
    ]
    return ds.FileSystemDataset(fragments, shown, fmt, filesystem=storage.fs)


def _guarantee(file: DataFile, schema: pa.Schema) -> pc.Expression:
    """What every row of ``file`` satisfies, from its catalog stats: ``min <= c <= max`` for each
    column without nulls (a column with nulls, or without bounds, promises nothing)."""
    guarantee: pc.Expression = pc.scalar(True)
    for name, col in read_stats(file.stats).items():
        if name not in schema.names or col.null_count or col.min is None or col.max is None:
            continue
        dtype = schema.field(name).type
        try:
            lo, hi = pa.scalar(col.min, dtype), pa.scalar(col.max, dtype)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
            continue
        guarantee = guarantee & (pc.field(name) >= lo) & (pc.field(name) <= hi)
    return guarantee


_READ_CHUNKS = 16
"""How many parallel tasks a snapshot's files are read in (each a run of files of similar bytes)."""


def _chunks(units: list[T], sizes: Sequence[int], count: int) -> list[list[T]]:
    """``units`` in order, cut into at most ``count`` runs of about equal ``sizes`` (bytes).

    >>> _chunks(["f0", "f1", "f2", "f3", "f4", "f5"], [5, 1, 1, 1, 1, 5], 3)
    [['f0'], ['f1', 'f2', 'f3', 'f4'], ['f5']]
    """
    if len(units) <= count:
        return [[u] for u in units]
    weights = np.array(sizes, dtype=np.float64)
    middles = np.cumsum(weights) - weights / 2  # each unit goes to the run its middle byte falls in
    runs = np.minimum((middles * count / weights.sum()).astype(np.int64), count - 1)
    cuts = [0, *(np.flatnonzero(np.diff(runs)) + 1).tolist(), len(units)]
    return [units[a:b] for a, b in itertools.pairwise(cuts)]


def _base_filter(file: DataFile, filter: Filter | None) -> Filter | None:
    return filter if file.content == "base" and normalize_filter(filter) is not None else None


def _base_count(group: list[_Task]) -> int:
    return sum(1 for t in group if t.file.content == "base")


def _fill(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give a keys-only part the full needed columns (nulls), so parts concatenate."""
    if part.schema.equals(schema):
        return part
    arrays = [
        part.column(f.name) if f.name in part.column_names else pa.nulls(part.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_changes(
    storage: Storage,
    log_files: Sequence[DataFile],
    schema: pa.Schema,
    *,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The changelog stored in ``log_files``, in commit order, with ``_kind`` and ``_seq``."""
    out_columns = list(columns) if columns is not None else schema.names
    target = pa.schema([schema.field(c) for c in out_columns])

    def read_one(files: list[DataFile]) -> pa.Table:
        """The rows of ``files``: one file, or parts of one commit's shared file (one version), read in
        one pass (see :mod:`flowlake.table.fileparts`)."""
        f = files[0]

        def groups(metadata: pq.FileMetaData) -> list[Sequence[int] | None]:
            layout = layout_of(metadata)
            spans = [part_span(part.path, layout) for part in files]
            if any(span is None for span in spans):  # a whole file (alone: files are grouped by file)
                return [None]
            return [sorted({g for span in spans if span is not None for g in span})]

        data = read_parquet_parts(
            storage,
            storage.path(physical_path(f.path)),
            [*out_columns, KIND_COLUMN, POS_COLUMN],
            size=f.size,
            checksum=f.checksum,
            parts=groups,
        )[0]
        kinds, pos = data.column(KIND_COLUMN), data.column(POS_COLUMN)
        body = conform(data.select([c for c in out_columns if c in data.column_names]), target)
        seq = pc.add(pc.cast(pos, pa.int64()), pa.scalar(f.added_version << 32, pa.int64()))
        return body.append_column(KIND_COLUMN, kinds).append_column(SEQ_COLUMN, seq)

    empty = target.append(pa.field(KIND_COLUMN, pa.int8())).append(pa.field(SEQ_COLUMN, pa.int64()))
    by_file: dict[tuple[str, int], list[DataFile]] = defaultdict(list)  # a file's parts: one version
    for f in log_files:
        by_file[(physical_path(f.path), f.added_version)].append(f)
    parts = parallel(read_one, list(by_file.values()))
    if not parts:
        return empty.empty_table()
    changes = pa.concat_tables(parts)
    seq = np.asarray(changes.column(SEQ_COLUMN).to_numpy(), dtype=np.int64)
    if len(seq) < 2 or bool((seq[1:] > seq[:-1]).all()):
        return changes  # already in commit order (one file per commit, e.g. an append table): no copy
    return changes.take(pa.array(np.argsort(seq, kind="stable")))
