"""Running a compaction or a rebalance: rewrite the planned buckets as base files in one commit.

:mod:`flowlake.table.maintenance` decides what to rewrite; this module does it. Each rewrite group
(one bucket, or two sibling buckets to merge) is read as a snapshot at the version the compaction
read. A key table's bucket that holds more than ``bucket_target_rows`` live rows is split (the bucket
map changes) and two merged siblings become their parent; every resulting bucket's rows are ordered
(see below) and written as base files of at most ``target_file_rows`` rows.

The commit replaces exactly the files read. A plain compaction does not conflict with writes made
meanwhile (their logs stay on top of the new base files). Buckets that are split or merged are
*guarded*: writes made to them meanwhile are caught up with (re-routed into the new buckets) before
the commit lands, see :mod:`~flowlake.table.rebalance`. A rebalance rewrites only the groups that
split or merge.

Base files are written in the table's clustering order (``sort_by`` / ``cluster_by``, see
:mod:`~flowlake.table.clustering`), by key when it has none, with Parquet row-group statistics for
the clustering columns.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from flowlake.catalog.base import Commit, CommitRequest, DataFile, MetaStore, TableRecord
from flowlake.io.fs import Storage
from flowlake.table import maintenance, rebalance
from flowlake.table.bucketmap import BucketMap
from flowlake.table.clustering import ClusterSpec
from flowlake.table.commit import WriteFiles, discard, new_instant
from flowlake.table.scan import read_snapshot
from flowlake.table.versions import unless_cleaned


def compact_once(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    *,
    target_file_rows: int | None,
    rebalance_only: bool,
    write_files: WriteFiles,
) -> Commit | None:
    """Compact (or only rebalance) the table at ``record``'s version; None if there was nothing to do.

    Args:
        store: The table's catalog.
        storage: Where the table's files live.
        record: The table's catalog entry, freshly read.
        target_file_rows: Rows per base file (default: the ``target_file_rows`` property).
        rebalance_only: Only split and merge buckets (no folding of other buckets' logs).
        write_files: Writes the new base files (see :data:`~flowlake.table.commit.WriteFiles`).

    Raises:
        CommitConflictError: Another compaction won, or a split or merge could not catch up with the
            writers of its buckets even behind a fence (see :mod:`~flowlake.table.rebalance`).
        VersionCleanedError: A clean moved past the version read.
    """
    props = record.properties
    rows_per_file = target_file_rows or int(
        props.get("target_file_rows", maintenance.DEFAULT_TARGET_FILE_ROWS)
    )
    bucket_rows = int(props.get("bucket_target_rows", maintenance.DEFAULT_TARGET_BUCKET_ROWS))
    append_only = not record.primary_key
    files = store.live_files(record.id, record.current_version)
    plan = maintenance.plan_compaction(files, append_only=append_only, target_file_rows=rows_per_file)
    bmap = BucketMap.from_json(record.bucket_map, record.buckets)
    cluster = ClusterSpec.from_properties(props)
    cluster.check(record.qualified_name, record.schema)
    if append_only:
        groups = [maintenance.RewriteGroup((b,), tuple(fs)) for b, fs in sorted(plan.by_bucket.items())]
    else:
        groups = maintenance.plan_rebalance(files, bmap, plan.by_bucket, target_bucket_rows=bucket_rows)
    outputs: list[tuple[int, pa.Table]] = []
    guarded: list[int] = []
    for group in groups:
        with unless_cleaned(store, record.id, record.qualified_name, record.current_version):
            rows = read_snapshot(storage, group.files, record.schema, record.primary_key)
        bmap, pieces = _reshape(
            rows, bmap, group, record.primary_key, bucket_rows=bucket_rows, rebalance_only=rebalance_only
        )
        if pieces is None:
            continue
        if set(pieces) != set(group.buckets):
            guarded.extend(group.buckets)
        outputs += _base_parts(pieces, record.primary_key, rows_per_file, cluster)
    rewritten = [g for g in groups if not rebalance_only or set(g.buckets) <= set(guarded)]
    if not rewritten:
        return None
    removed = [f.path for g in rewritten for f in g.files]
    return commit_compaction(
        store, storage, record, outputs, removed, bmap, tuple(guarded),
        write_files=write_files,
    )  # fmt: skip


def _reshape(
    rows: pa.Table,
    bmap: BucketMap,
    group: maintenance.RewriteGroup,
    primary_key: Sequence[str],
    *,
    bucket_rows: int,
    rebalance_only: bool,
) -> tuple[BucketMap, dict[int, pa.Table] | None]:
    """The group's rows by bucket after a merge or split, and the map; None pieces: leave it alone."""
    if len(group.buckets) == 2:
        bmap, parent = bmap.merge(group.buckets[0])
        return bmap, {parent.id: rows}
    if primary_key and rows.num_rows > bucket_rows:
        return maintenance.split_rows(
            rows, bmap, group.buckets[0], primary_key, target_bucket_rows=bucket_rows
        )
    if rebalance_only:
        return bmap, None
    return bmap, {group.buckets[0]: rows}


def _base_parts(
    pieces: dict[int, pa.Table], primary_key: Sequence[str], rows_per_file: int, cluster: ClusterSpec
) -> list[tuple[int, pa.Table]]:
    """Each bucket's rows in the table's clustering order (by key if it has none), cut into
    ``(bucket, rows)`` parts of ``rows_per_file``."""
    parts: list[tuple[int, pa.Table]] = []
    for bucket, piece in sorted(pieces.items()):
        data = piece.take(pa.array(cluster.order(piece, primary_key))) if piece.num_rows else piece
        parts += [(bucket, data.slice(s, rows_per_file)) for s in range(0, data.num_rows, rows_per_file)]
    return parts


def commit_compaction(
    store: MetaStore,
    storage: Storage,
    record: TableRecord,
    outputs: Sequence[tuple[int, pa.Table]],
    removed: Sequence[str],
    bmap: BucketMap,
    guarded: tuple[int, ...],
    *,
    write_files: WriteFiles,
) -> Commit:
    """Write ``outputs`` as base files and commit them in place of the ``removed`` files.

    A compaction that splits or merges buckets (``guarded``) lands by catching up with the writers
    of those buckets (see :mod:`~flowlake.table.rebalance`).
    """
    instant = new_instant()
    store.begin_commit(record.id, instant, "compact")
    written: list[DataFile] = []
    old_map = BucketMap.from_json(record.bucket_map, record.buckets)
    summary = {
        "compacted_version": record.current_version,
        "buckets": sorted({b for b, _ in outputs}),
        "files_removed": len(removed),
        "rows": 0,
        **({"buckets_rewritten": list(guarded)} if guarded else {}),
    }
    try:
        written = write_files(record, instant, "base", outputs)
        summary.update(files_added=len(written), rows=sum(f.row_count for f in written))
        if guarded:
            props = record.properties
            job = rebalance.Rebalance(
                record, instant, tuple(written), tuple(removed), old_map, bmap, guarded, summary
            )
            return rebalance.land(
                store, storage, job, write_files=write_files,
                rounds=int(props.get("split_catchup_rounds", rebalance.DEFAULT_CATCHUP_ROUNDS)),
                fence_seconds=float(props.get("bucket_fence_seconds", rebalance.DEFAULT_FENCE_SECONDS)),
            )  # fmt: skip
        request = CommitRequest(
            instant=instant,
            read_version=record.current_version,
            operation="compact",
            added=written,
            removed=removed,
            conflicts_with_writes=False,
            summary=summary,
        )
        commit = store.complete_commit(record, request)
    except BaseException:
        discard(store, storage, record, instant, written)
        raise
    return commit
