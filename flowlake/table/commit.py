"""The write path's commit pipeline: bring the key state up to date, write log files, commit them.

A write is planned against the writer's cached key state, which :func:`current_state` keeps at the
version the writer read (catching up by replaying the changelogs of the commits in between, or
loading the snapshot afresh). :func:`commit_plan` routes the planned changelog's rows to buckets by
key hash and :func:`commit_changelog` writes one log file per bucket and commits them in one inflight
instant; if the commit fails, :func:`discard` deletes the files written and aborts the instant (a
file it cannot delete is an orphan that cleaning removes later).

Files are written through a :data:`WriteFiles` callable (the table's ``_write_files``, which calls
:func:`write_files`), so a table routes every data file it writes, logs and bases alike, through one
method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from flowlake.catalog.base import Commit, CommitRequest, DataFile, FileContent, MetaStore, TableRecord
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import CommitConflictError
from flowlake.io.fs import Storage
from flowlake.io.parquet import MAX_GROUP_ROWS, parallel, write_parquet, write_parquet_groups
from flowlake.table.bucketing import key_hash, sorted_unique, split_by_bucket
from flowlake.table.bucketmap import BucketMap
from flowlake.table.clustering import ClusterSpec
from flowlake.table.fileparts import distinct_bytes, layout_metadata, part_path, physical_paths
from flowlake.table.keystate import KeyState, key_list
from flowlake.table.livefiles import LiveFiles
from flowlake.table.lookup import BASE_ROW_GROUP_ROWS, lookup
from flowlake.table.scan import read_changes, read_snapshot
from flowlake.table.stats import compute_stats, compute_stats_many
from flowlake.table.versions import unless_cleaned
from flowlake.table.writer import PlannedWrite, changelog_to_write, plan_write

WriteFiles = Callable[[TableRecord, str, FileContent, Sequence[tuple[int, pa.Table]]], list[DataFile]]
"""Writes ``(bucket, rows)`` parts as data files of one instant: ``(record, instant, content, parts)``."""


def new_instant() -> str:
    """A sortable, unique commit instant: microseconds since the epoch and a random suffix."""
    return f"{time.time_ns() // 1000:017d}-{uuid.uuid4().hex[:8]}"


def write_files(
    storage: Storage,
    record: TableRecord,
    instant: str,
    content: FileContent,
    parts: Sequence[tuple[int, pa.Table]],
) -> list[DataFile]:
    """Write each ``(bucket, rows)`` part as one Parquet file of ``instant`` (in parallel).

    Base files get Parquet row-group statistics for the table's clustering columns (and its key).
    A log file keeps its ``-U`` rows (before-images, which only ``changes()`` reads) after the others,
    in row groups of their own marked by ``_kind`` statistics, so snapshot reads skip them undecoded;
    ``_pos`` still gives the changelog order.
    """
    if content == "log" and record.primary_key and len(parts) > 1 and all(d.num_rows for _, d in parts):
        return write_shared_log(storage, record, instant, parts)
    stats_columns = list(dict.fromkeys([*ClusterSpec.from_properties(record.properties).columns,
                                        *record.primary_key]))  # fmt: skip

    def write_one(item: tuple[int, tuple[int, pa.Table]]) -> DataFile:
        n, (bucket, data) = item
        rel = f"{record.location}/data/bucket-{bucket:05d}/{instant}-{content}-{n}.parquet"
        base = content == "base"
        layout, group_rows = (data, BASE_ROW_GROUP_ROWS) if base else _before_images_last(data, content)
        written = write_parquet(
            storage,
            storage.path(rel),
            layout,
            dictionary=base,
            row_group_size=group_rows,
            compression="zstd" if base else "lz4",  # logs are read by every merge until compacted
            statistics=stats_columns if base else [KIND_COLUMN] if group_rows else False,
        )
        return DataFile(
            path=rel, bucket=bucket, content=content, row_count=data.num_rows, size=written.size,
            stats=compute_stats(data), checksum=written.checksum,
        )  # fmt: skip

    return parallel(write_one, list(enumerate(parts)))


def write_shared_log(
    storage: Storage, record: TableRecord, instant: str, parts: Sequence[tuple[int, pa.Table]]
) -> list[DataFile]:
    """Write the ``(bucket, rows)`` log parts of one commit as one file, a part per bucket (see
    :mod:`flowlake.table.fileparts`): each bucket's images in one row group, then its ``-U`` rows in
    another, ``_kind`` statistics on every group."""
    physical = f"{record.location}/data/commits/{instant}-log.parquet"
    groups: list[pa.Table] = []
    counts: list[tuple[int, int]] = []
    for bucket, data in parts:
        layout, images = _before_images_last(data, "log")
        kinds = [layout] if images is None else [layout.slice(0, images), layout.slice(images)]
        pieces = [
            kind.slice(start, MAX_GROUP_ROWS)
            for kind in kinds
            for start in range(0, kind.num_rows, MAX_GROUP_ROWS)
        ]
        groups += pieces
        counts.append((bucket, len(pieces)))
    written = write_parquet_groups(
        storage, storage.path(physical), groups, metadata=layout_metadata(counts), statistics=[KIND_COLUMN]
    )
    stats = compute_stats_many([data for _, data in parts])
    return [
        DataFile(
            path=part_path(physical, bucket),
            bucket=bucket,
            content="log",
            row_count=data.num_rows,
            size=written.size,
            stats=part_stats,
            checksum=written.checksum,
        )
        for (bucket, data), part_stats in zip(parts, stats, strict=True)
    ]


def _before_images_last(data: pa.Table, content: FileContent) -> tuple[pa.Table, int | None]:
    """A log's rows with the ``-U`` rows moved after the others (each part keeping its order), and
    the row-group size that puts them in groups of their own; ``(data, None)`` if there is nothing
    to move."""
    if content != "log" or KIND_COLUMN not in data.column_names:
        return data, None
    before = np.asarray(data.column(KIND_COLUMN).to_numpy(), dtype=np.int8) == int(RowKind.UPDATE_BEFORE)
    count = int(before.sum())
    if count in (0, data.num_rows):
        return data, None
    return data.take(pa.array(np.argsort(before, kind="stable"))), data.num_rows - count  # images first


def discard(
    store: MetaStore, storage: Storage, record: TableRecord, instant: str, files: Sequence[DataFile]
) -> None:
    """Delete the files of a commit that did not land and abort its instant (best effort)."""
    for path in physical_paths(f.path for f in files):
        with contextlib.suppress(OSError):  # else an orphan: cleaning removes it later
            storage.fs.delete_file(storage.path(path))
    with contextlib.suppress(Exception):
        store.abort_commit(record.id, instant)


def commit_plan(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    plan: PlannedWrite,
    token: str | None,
    sources: Mapping[str, Any] | None,
    columns: Sequence[str] = (),
    *,
    write_files: WriteFiles,
) -> tuple[Commit, bool]:
    """Write the plan's log files and commit them; False if an earlier commit had the token.

    Rows are routed by the bucket map of ``record``. If the map moves before the commit lands (a split
    or merge landed), the changelog is routed again by the new map and committed on the same read
    version (the catalog still checks its keys against every commit since); it never waits for the
    split to be redone. A bucket fenced by a split in progress is waited for (see
    :func:`await_fences`).
    """
    hashes = (
        key_hash(plan.changelog, record.primary_key) if plan.changelog.num_rows else np.empty(0, np.uint64)
    )
    decided = plan.keys if plan.keys is not None else plan.changelog
    touched = key_hash(decided, record.primary_key) if decided.num_rows else np.empty(0, np.uint64)

    def route(bmap: BucketMap) -> dict[int, pa.Table]:
        return split_by_bucket(plan.changelog, bmap.route(hashes))

    return commit_changelog(
        store, storage, record, {}, plan.counts, token, sources, write_files=write_files,
        key_hashes=sorted_unique(touched).tobytes(), columns=tuple(columns), route=route,
    )  # fmt: skip


_MAX_REROUTES = 32
FENCE_POLL_SECONDS = 0.005
"""How often a writer waiting on a fenced bucket looks at the catalog again."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def commit_bucket_map(
    store: MetaStore, record: TableRecord, new_map: BucketMap, expected: int, summary: Mapping[str, Any]
) -> Commit:
    """Install ``new_map`` (fences set or lifted, no data change) if the map is still at ``expected``.

    Raises:
        CommitConflictError: The map moved meanwhile (``reroute``), or the schema changed.
    """
    instant = new_instant()
    store.begin_commit(record.id, instant, "compact")
    try:
        return store.complete_commit(
            record,
            CommitRequest(
                instant=instant, read_version=record.current_version, operation="compact",
                conflicts_with_writes=False, new_bucket_map=new_map.to_json(), map_version=expected,
                summary={**summary, "bucket_map_version": new_map.version},
            ),
        )  # fmt: skip
    except BaseException:
        with contextlib.suppress(Exception):
            store.abort_commit(record.id, instant)
        raise


def await_fences(
    store: MetaStore, record: TableRecord, route: Callable[[BucketMap], dict[int, pa.Table]]
) -> tuple[BucketMap, dict[int, pa.Table]]:
    """The current map and the rows routed by it, once none of their buckets is fenced.

    A fence holds writers off a bucket while a split lands it (a short moment): this waits for the
    map to move on, re-routing when it does. A fence whose deadline passed (its split died) is lifted
    here, by a commit that moves the map on (so that split can no longer land).
    """
    bmap = BucketMap.from_json(record.bucket_map, record.buckets)
    while True:
        parts = route(bmap)
        now = _now_ms()
        if not bmap.fences or (not bmap.fenced(parts, now) and not bmap.expired_fences(now)):
            return bmap, parts
        if bmap.expired_fences(now):
            lifted = dataclasses.replace(
                bmap, fences=tuple(f for f in bmap.fences if f[1] > now), version=bmap.version + 1
            )
            with contextlib.suppress(CommitConflictError):  # the map moved anyway
                commit_bucket_map(store, record, lifted, bmap.version, {"bucket_fence_lifted": True})
        else:
            time.sleep(FENCE_POLL_SECONDS)
        fresh = store.get_table(record.namespace, record.name)
        bmap = BucketMap.from_json(fresh.bucket_map, fresh.buckets)


def commit_changelog(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    parts: Mapping[int, pa.Table],
    counts: Mapping[str, int],
    token: str | None,
    sources: Mapping[str, Any] | None,
    *,
    write_files: WriteFiles,
    key_hashes: bytes | None = None,
    columns: tuple[str, ...] = (),
    route: Callable[[BucketMap], dict[int, pa.Table]] | None = None,
) -> tuple[Commit, bool]:
    """Write one log file per bucket of ``parts`` and commit them; False if the token was committed.

    With ``route`` (a key table), the parts are ``route(map)`` for the table's bucket map instead,
    and a commit that finds the map moved is routed again (see :func:`commit_plan`).
    """
    instant = new_instant()
    store.begin_commit(record.id, instant, "write")
    written: list[DataFile] = []
    bmap: BucketMap | None = None
    try:
        if route is not None:
            bmap, parts = await_fences(store, record, route)
        written = write_files(record, instant, "log", sorted(parts.items()))
        for reroutes in range(_MAX_REROUTES):
            request = CommitRequest(
                instant=instant,
                read_version=record.current_version,
                operation="write",
                added=written,
                summary={
                    "rows": dict(counts),
                    "files_added": len(written),
                    "buckets": sorted(parts),
                    "columns": list(columns) or record.schema.names,
                    "bytes_added": distinct_bytes((f.path, f.size) for f in written),
                    **({"sources": dict(sources)} if sources else {}),
                },
                token=token,
                sources=dict(sources or {}),
                key_hashes=key_hashes,
                columns=columns,
                map_version=None if bmap is None else bmap.version,
                conflicts_with_writes=bool(record.primary_key),
            )
            try:
                commit = store.complete_commit(record, request)
                break
            except CommitConflictError as conflict:
                if not conflict.reroute or route is None or reroutes == _MAX_REROUTES - 1:
                    raise
            fresh = store.get_table(record.namespace, record.name)
            bmap, new_parts = await_fences(store, fresh, route)
            if set(new_parts) != set(parts):  # a bucket we wrote to was split or merged: write again
                for path in physical_paths(f.path for f in written):
                    with contextlib.suppress(OSError):
                        storage.fs.delete_file(storage.path(path))
                written, parts = [], new_parts
                written = write_files(record, instant, "log", sorted(parts.items()))
    except BaseException:
        discard(store, storage, record, instant, written)
        raise
    if commit.instant != instant:  # the token was committed by an earlier attempt
        discard(store, storage, record, instant, written)
        return commit, False
    return commit, True


def with_keys(
    conflict: CommitConflictError, plan: PlannedWrite, primary_key: Sequence[str]
) -> CommitConflictError:
    """The conflict with the catalog's key hashes turned back into this batch's keys."""
    if not conflict.conflicting_hashes:
        return conflict
    decided = plan.keys if plan.keys is not None else plan.changelog
    hashes = key_hash(decided, primary_key)
    wanted = set(conflict.conflicting_hashes)
    keys = key_list(decided, primary_key)
    sample = list(dict.fromkeys(k for k, h in zip(keys, hashes.tolist(), strict=True) if h in wanted))
    return CommitConflictError(
        conflict.table, conflict.expected, conflict.found, reason=conflict.reason, sample_keys=sample,
        mergeable=conflict.mergeable, conflicting_hashes=conflict.conflicting_hashes,
        reroute=conflict.reroute,
    )  # fmt: skip


def current_state(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    cached: KeyState | None,
    max_rows: int | None = None,
) -> KeyState:
    """The key state at ``record.current_version``: ``cached`` (of the same schema) caught up, or a new one.

    ``cached`` is caught up in place (and returned) when it is at or before the record's version and
    that version is still readable from it; otherwise the snapshot is read into a new state, bounded
    by ``max_rows`` — unless the snapshot's files hold more rows than that: then the state starts
    empty and incomplete (see :func:`learn_missing`), and the table is never read whole.
    """
    name = record.qualified_name
    if cached is not None and cached.version <= record.current_version:
        if cached.version == record.current_version:
            return cached
        if cached.version >= record.oldest_version:
            with unless_cleaned(store, record.id, name, cached.version):
                logs = store.log_files_between(record.id, cached.version, record.current_version)
                changes = read_changes(storage, logs, record.schema)
            if changes.num_rows:
                kinds = changes.column(KIND_COLUMN).to_numpy(zero_copy_only=False)
                rows, is_delete = changelog_to_write(changes.drop_columns(["_seq"]))
                keep = kinds != RowKind.UPDATE_BEFORE
                rows = rows.filter(pa.array(keep))
                is_delete = is_delete[keep]
                plan = plan_write(cached, rows, is_delete)
                cached.apply(plan.upserted, plan.upserted_keys, plan.deleted_keys, record.current_version)
            cached.version = record.current_version
            return cached
    with unless_cleaned(store, record.id, name, record.current_version):
        files = store.live_files(record.id, record.current_version)
        if max_rows is not None and sum(f.row_count for f in files) > max_rows:
            empty = record.schema.empty_table()
            return KeyState(
                empty, record.primary_key, record.current_version, max_rows=max_rows, complete=False
            )
        rows = read_snapshot(storage, files, record.schema, record.primary_key)
    return KeyState(rows, record.primary_key, record.current_version, max_rows=max_rows)


def learn_missing(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    bucket_map: BucketMap,
    state: KeyState,
    rows: pa.Table,
    live: LiveFiles,
) -> None:
    """Give an incomplete ``state`` (at ``record.current_version``) the current rows of the keys of
    ``rows`` it does not hold, by point lookups in the table's files at that version (``bucket_map``:
    the record's, which routes each key to the files of its bucket; ``live``: the table's file list,
    kept by the caller across commits)."""
    wanted = state.missing(rows)
    if not wanted.num_rows:
        return
    wanted = wanted.cast(pa.schema([record.schema.field(k) for k in record.primary_key]))
    with unless_cleaned(store, record.id, record.qualified_name, state.version):
        files = live.at(state.version)
        found = lookup(storage, files, record.schema, record.primary_key, wanted, bucket_map=bucket_map)
    state.learn(found)
