"""Landing a bucket split or merge while writers keep writing.

A compaction that splits or merges buckets reads them at version ``V`` and writes the new buckets'
base files. Writers go on committing to the old buckets (they route by the map they started from)
until the new map lands, so by then the old buckets have log files that the new base files lack.
Instead of starting over, the compaction *rebases*: it reads the old buckets' log files of the commits
since the last version it saw, routes their rows into the new buckets by the new map, writes them as
``moved`` files (one per new bucket, in commit order) and commits against that version:

* the catalog refuses the commit if a writer wrote to an old bucket after that version (the
  compaction's *guarded* buckets), so no change is ever left behind in a bucket that leaves the map;
* it also refuses it if the map moved meanwhile (another split, or a lifted fence), and writers that
  routed by the old map find the map moved and route their rows again (:mod:`~flowlake.table.commit`);
* the commit retires the old buckets' base and log files and adds the new base and moved files, so
  every version reads exactly: before it, the old buckets; from it on, the new ones.

``moved`` files are read like log files by snapshots, but they are not part of the changelog: the
changes they hold are already there, in the log files of the commits that wrote them.

Each such catch-up round reads only the changes since the last one. After ``split_catchup_rounds``
rounds that writers beat, the compaction *fences* the old buckets: one commit moves the map to a
version in which writers do not commit to them, so the next round cannot be beaten (writers of other
buckets do not wait; writers of the fenced ones wait for the split to land, a few milliseconds). The
fence has a deadline (``bucket_fence_seconds``): if the compaction dies, the first writer after the
deadline lifts the fence, which moves the map and so makes that compaction's commit impossible.
Nothing here depends on timing for correctness: every decision is a compare-and-set in the catalog.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.catalog.base import Commit, CommitRequest, DataFile, MetaStore, TableRecord
from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import CommitConflictError
from flowlake.io.fs import Storage
from flowlake.table.bucketing import key_hash, split_by_bucket
from flowlake.table.bucketmap import BucketMap
from flowlake.table.commit import WriteFiles, commit_bucket_map
from flowlake.table.scan import read_changes
from flowlake.table.versions import unless_cleaned
from flowlake.table.writer import POS_COLUMN

DEFAULT_CATCHUP_ROUNDS = 3
DEFAULT_FENCE_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class Rebalance:
    """A split/merge compaction whose base files are written, ready to land.

    ``old_map`` is the map the compaction read at ``record``'s version and ``new_map`` the map after
    its splits and merges; ``guarded`` are the buckets that leave the map.
    """

    record: TableRecord
    instant: str
    base_files: tuple[DataFile, ...]
    removed: tuple[str, ...]
    old_map: BucketMap
    new_map: BucketMap
    guarded: tuple[int, ...]
    summary: Mapping[str, Any]


@dataclass
class _CatchUp:
    """The changes of the guarded buckets since the compaction read, and the files holding them."""

    seen: int
    changes: pa.Table | None = None
    logs: list[str] = dataclasses.field(default_factory=list)
    moved: list[DataFile] = dataclasses.field(default_factory=list)


def land(
    store: MetaStore,
    storage: Storage,
    job: Rebalance,
    *,
    write_files: WriteFiles,
    rounds: int = DEFAULT_CATCHUP_ROUNDS,
    fence_seconds: float = DEFAULT_FENCE_SECONDS,
) -> Commit:
    """Commit ``job``, catching up with writers for up to ``rounds`` rounds, then behind a fence.

    Raises:
        CommitConflictError: Another compaction replaced the files, the map or schema moved, or the
            fenced round failed; the caller discards the compaction's files and may start over.
        VersionCleanedError: A clean removed log files the catch-up needed.
    """
    record = job.record
    state = _CatchUp(seen=record.current_version)
    expected = job.old_map
    fenced = False
    try:
        for attempt in range(rounds + 1):
            if attempt == rounds:  # last resort: keep writers off the old buckets for one round
                expected = _fence(store, record, expected, job.guarded, fence_seconds)
                fenced = True
            fresh = _check_still_possible(store, job, expected, state)
            _catch_up(store, storage, job, state, fresh, write_files=write_files)
            # no fence survives: a fence of another split in the map can no longer land anyway (the
            # map moves under it), so keeping it would only hold writers off until its deadline
            final = dataclasses.replace(job.new_map, version=expected.version + 1, fences=())
            request = CommitRequest(
                instant=job.instant, read_version=state.seen, operation="compact",
                added=[*job.base_files, *state.moved], removed=[*job.removed, *state.logs],
                conflicts_with_writes=False, new_bucket_map=final.to_json(), map_version=expected.version,
                guarded_buckets=job.guarded,
                summary={
                    **job.summary, "bucket_map_version": final.version, "catchup_rounds": attempt,
                    "fenced": fenced, "moved_rows": sum(f.row_count for f in state.moved),
                    "files_added": len(job.base_files) + len(state.moved),
                },
            )  # fmt: skip
            try:
                return store.complete_commit(record, request)
            except CommitConflictError as conflict:
                if conflict.reroute or fenced:
                    raise
                # most likely a writer wrote to a guarded bucket after state.seen: catch up again
                # (the next round finds out if the compaction can still land at all)
        raise AssertionError("unreachable")  # pragma: no cover
    except BaseException:
        _delete(storage, state.moved)
        if fenced:
            _lift(store, record, expected, job.guarded)
        raise


def _fence(
    store: MetaStore, record: TableRecord, expected: BucketMap, guarded: Sequence[int], seconds: float
) -> BucketMap:
    """Commit a map that fences ``guarded`` (the map must still be ``expected``); return it."""
    until = time.time_ns() // 1_000_000 + int(seconds * 1000)
    fenced = expected.fence(guarded, until)
    commit_bucket_map(store, record, fenced, expected.version, {"bucket_fence": sorted(guarded)})
    return fenced


def _lift(store: MetaStore, record: TableRecord, fenced: BucketMap, guarded: Sequence[int]) -> None:
    """Take our fences down again (best effort: their deadline lifts them otherwise)."""
    lifted = dataclasses.replace(
        fenced, fences=tuple(f for f in fenced.fences if f[0] not in guarded), version=fenced.version + 1
    )
    with contextlib.suppress(Exception):
        commit_bucket_map(store, record, lifted, fenced.version, {"bucket_fence_lifted": sorted(guarded)})


def _check_still_possible(
    store: MetaStore, job: Rebalance, expected: BucketMap, state: _CatchUp
) -> TableRecord:
    """The table's entry now, if the compaction can still land on it; else a conflict."""
    record = job.record
    fresh = store.get_table(record.namespace, record.name)
    current = BucketMap.from_json(fresh.bucket_map, fresh.buckets)
    reason = ""
    if fresh.schema_id != record.schema_id:
        reason = "the schema changed"
    elif current.version != expected.version:
        reason = f"the bucket map moved from version {expected.version} to {current.version}"
    elif state.seen != record.current_version:  # after a failed round: are our files still there?
        live = {f.path for f in store.live_files(record.id, fresh.current_version)}
        if not live.issuperset(job.removed) or not live.issuperset(state.logs):
            reason = "another compaction replaced the files this one rewrites"
    if reason:
        raise CommitConflictError(
            record.qualified_name, record.current_version, fresh.current_version,
            reason=f"{reason} while a split or merge caught up with writers; run it again",
        )  # fmt: skip
    return fresh


def _catch_up(
    store: MetaStore,
    storage: Storage,
    job: Rebalance,
    state: _CatchUp,
    fresh: TableRecord,
    *,
    write_files: WriteFiles,
) -> None:
    """Read the guarded buckets' changes up to ``fresh``'s version; write them as moved files."""
    record = job.record
    head = fresh.current_version
    if head == state.seen:
        return
    guarded = set(job.guarded)
    with unless_cleaned(store, record.id, record.qualified_name, state.seen):
        logs = [f for f in store.log_files_between(record.id, state.seen, head) if f.bucket in guarded]
        new = read_changes(storage, logs, record.schema)
    state.seen = head
    if not logs:
        return
    state.logs += [f.path for f in logs]
    new = new.filter(pc.not_equal(new.column(KIND_COLUMN), int(RowKind.UPDATE_BEFORE)))
    state.changes = new if state.changes is None else pa.concat_tables([state.changes, new])
    _delete(storage, state.moved)
    state.moved = []
    changes = state.changes.drop_columns([SEQ_COLUMN])  # in commit order already
    routed = job.new_map.route(key_hash(changes, record.primary_key))
    parts = [
        (bucket, rows.append_column(POS_COLUMN, pa.array(np.arange(rows.num_rows, dtype=np.int32))))
        for bucket, rows in sorted(split_by_bucket(changes, routed).items())
    ]
    state.moved = write_files(record, job.instant, "moved", parts)


def _delete(storage: Storage, files: Sequence[DataFile]) -> None:
    for f in files:
        with contextlib.suppress(OSError):  # else an orphan: cleaning removes it later
            storage.fs.delete_file(storage.path(f.path))
