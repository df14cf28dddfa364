"""Compaction (fold log files into new base files) and cleaning (delete files no one needs).

Compaction rewrites the buckets that have log files: it merges each bucket's base and logs at the
version it read, sorts the live rows by key and writes them as base files of at most
``target_file_rows`` rows. It commits as a ``compact`` operation that replaces exactly the files it
read, so writers that commit meanwhile are unaffected (their logs stay on top of the new base), and
two compactions of the same files cannot both land.

Cleaning keeps every file that a version from ``head - retain_last + 1`` on still needs, moves the
table's oldest readable version there, and deletes the rest; it also deletes orphan files left by
writers that died before committing (after a grace period, so inflight writers are never touched:
an instant inflight for longer than the grace is aborted in the catalog before its files are taken
for orphans, so its writer can no longer complete a commit that references them).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from flowlake.catalog.base import DataFile
from flowlake.table.bucketing import key_hash
from flowlake.table.bucketmap import MAX_DEPTH, BucketMap

DEFAULT_TARGET_FILE_ROWS = 1_000_000
DEFAULT_TARGET_BUCKET_ROWS = 2_000_000


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """Which files compaction replaces, per bucket."""

    by_bucket: dict[int, list[DataFile]]


def plan_compaction(
    files: Sequence[DataFile], *, append_only: bool = False, target_file_rows: int = DEFAULT_TARGET_FILE_ROWS
) -> CompactionPlan:
    """Pick what to rewrite.

    Key tables: every bucket with log (or moved) files (all its files are merged into new base files). Append
    tables: per partition, the files smaller than half the target size, when there are two or more
    of them (content is unchanged, only the file count falls).
    """
    by_bucket: dict[int, list[DataFile]] = defaultdict(list)
    for f in files:
        by_bucket[f.bucket].append(f)
    if not append_only:
        return CompactionPlan({b: fs for b, fs in by_bucket.items() if any(f.content != "base" for f in fs)})
    chosen = {}
    for bucket, bucket_files in by_bucket.items():
        small = [f for f in bucket_files if f.row_count < target_file_rows // 2]
        if len(small) >= 2:
            chosen[bucket] = small
    return CompactionPlan(chosen)


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What a clean removed."""

    oldest_version: int
    files_deleted: int
    bytes_deleted: int
    orphans_deleted: int


def stale_instants(inflight: Sequence[tuple[str, int]], *, grace_seconds: float, now: float) -> list[str]:
    """The inflight instants (``(instant, started_ms)``) that started ``grace_seconds`` or more ago."""
    return [i for i, started_ms in inflight if now - started_ms / 1000 >= grace_seconds]


def orphan_paths(
    listed: Sequence[tuple[str, float]],
    referenced: set[str],
    inflight: Sequence[tuple[str, int]],
    *,
    grace_seconds: float,
    now: float | None = None,
) -> tuple[list[str], list[str]]:
    """Split unreferenced files into deletable orphans; also return stale inflight instants.

    ``listed`` holds (relative path, modification time) as listed *before* ``inflight`` and
    ``referenced`` were read, so a writer that began after the listing cannot lose its files.
    The stale instants' files count as orphans, so they must be aborted (with the same ``now``)
    *before* ``referenced`` is read: a stale writer that completes between the two reads would
    otherwise have its committed files deleted.
    """
    now = time.time() if now is None else now
    stale_inflight = stale_instants(inflight, grace_seconds=grace_seconds, now=now)
    live_inflight = {i for i, _ in inflight} - set(stale_inflight)
    orphans = []
    for path, mtime in listed:
        if path in referenced:
            continue
        instant = instant_of(path)
        if instant in live_inflight:
            continue
        if instant is None and now - mtime < grace_seconds:
            continue  # not one of ours by name: only old ones go
        orphans.append(path)
    return orphans, stale_inflight


def instant_of(path: str) -> str | None:
    """The commit instant a data file name carries (``<instant>-<content>-<n>.parquet``)."""
    name = path.rsplit("/", 1)[-1]
    parts = name.split("-")
    if len(parts) < 3 or not parts[0].isdigit():
        return None
    return f"{parts[0]}-{parts[1]}"


@dataclass(frozen=True, slots=True)
class RewriteGroup:
    """Buckets rewritten together: one bucket (compaction or split) or two siblings (merge)."""

    buckets: tuple[int, ...]
    files: tuple[DataFile, ...]


def plan_rebalance(
    files: Sequence[DataFile],
    bucket_map: BucketMap,
    compacted: Mapping[int, Sequence[DataFile]],
    *,
    target_bucket_rows: int,
) -> list[RewriteGroup]:
    """Rewrite groups for a key table: the buckets compaction picked, plus splits and merges.

    A bucket whose files hold more than ``target_bucket_rows`` rows is rewritten (and split while
    rewriting); two sibling buckets that together hold fewer than a quarter of it are merged.
    Row counts here are the files' (an upper bound of the live rows: logs also count deletes).
    """
    by_bucket: dict[int, list[DataFile]] = defaultdict(list)
    for f in files:
        by_bucket[f.bucket].append(f)
    size = {b: sum(f.row_count for f in fs) for b, fs in by_bucket.items()}
    groups: list[RewriteGroup] = []
    taken: set[int] = set()
    for bucket in sorted(by_bucket):
        if bucket in taken:
            continue
        sibling = bucket_map.sibling(bucket)
        if (
            sibling is not None
            and sibling.id not in taken
            and size[bucket] + size.get(sibling.id, 0) < target_bucket_rows // 4
        ):
            pair = (bucket, sibling.id)
            groups.append(RewriteGroup(pair, tuple(by_bucket[bucket] + by_bucket.get(sibling.id, []))))
            taken.update(pair)
        elif bucket in compacted or size[bucket] > target_bucket_rows:
            groups.append(RewriteGroup((bucket,), tuple(by_bucket[bucket])))
            taken.add(bucket)
    return groups


def split_rows(
    rows: pa.Table,
    bucket_map: BucketMap,
    bucket: int,
    primary_key: Sequence[str],
    *,
    target_bucket_rows: int,
) -> tuple[BucketMap, dict[int, pa.Table]]:
    """Split ``bucket`` (holding ``rows``) until every piece fits ``target_bucket_rows``."""
    pending = {bucket: rows}
    done: dict[int, pa.Table] = {}
    while pending:
        current, data = pending.popitem()
        if data.num_rows <= target_bucket_rows or bucket_map.bucket(current).depth >= MAX_DEPTH:
            done[current] = data
            continue
        bucket_map, low, high = bucket_map.split(current)
        routed = bucket_map.route(key_hash(data, primary_key))
        pending[low.id] = data.filter(pa.array(routed == low.id))
        pending[high.id] = data.filter(pa.array(routed == high.id))
    return bucket_map, done
