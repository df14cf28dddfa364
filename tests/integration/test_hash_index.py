"""Bucket splits and merges on a live table: reads, changelogs and concurrent writers stay exact."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.catalog.base import DataFile, FileContent, TableRecord
from flowlake.status import table_status
from flowlake.table.commit import commit_bucket_map
from flowlake.table.writer import plan_write
from flowlake.testing import apply_changelog, rows_by_key

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64())])


def rows(keys: range | list[int], v: int) -> pa.Table:
    keys = list(keys)
    return pa.table({"k": keys, "v": [v] * len(keys)}, schema=SCHEMA)


def test_split_on_compaction_and_merge_after_deletes(catalog: fl.Catalog) -> None:
    t = catalog.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=2, properties={"bucket_target_rows": "400"}
    )
    t.upsert(rows(range(2000), 0))
    commit = t.compact()
    assert commit is not None and commit.summary["bucket_map_version"] > 0
    sizes = [f.row_count for f in t._store.live_files(t._record.id, t.version)]
    assert len(t.bucket_map.buckets) >= 6 and max(sizes) <= 400
    assert sorted(rows_by_key(t.read(), ["k"])) == list(range(2000))
    t.upsert(rows(range(0, 2000, 2), 1))  # writers route by the new map
    assert {r["v"] for r in t.read().to_pylist() if r["k"] % 2 == 0} == {1}
    t.delete(pa.table({"k": list(range(1990))}))
    t.compact()
    merged = t.rebalance()
    assert merged is None or merged.summary.get("bucket_map_version")
    for _ in range(8):
        if t.rebalance() is None:
            break
    assert len(t.bucket_map.buckets) < 6
    assert sorted(rows_by_key(t.read(), ["k"])) == list(range(1990, 2000))
    # a changelog that spans the splits and merges has every change once
    assert apply_changelog({}, t.changes(0), ["k"]) == rows_by_key(t.read(), ["k"])
    assert [c.operation for c in t.history()].count("compact") >= 3


def test_writer_from_an_older_map_is_rerouted(catalog: fl.Catalog) -> None:
    t = catalog.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=1, properties={"bucket_target_rows": "100"}
    )
    t.upsert(rows(range(300), 0))
    writer = catalog.load_table("ods.t")
    record = writer.refresh()._record
    plan = plan_write(writer._current_state(record), rows([5, 150], 9), np.zeros(2, bool))
    t.compact()  # splits bucket 0 while the writer holds a plan routed by the old map
    # the catalog refuses rows routed by the old map; the commit routes them again by the new one
    commit, landed = writer._commit_plan(record, plan, None, None)
    assert landed and set(commit.summary["buckets"]) <= {b.id for b in t.refresh().bucket_map.buckets}
    writer.upsert(rows([6, 151], 9), on_conflict="fail")  # the public path re-routes, even under "fail"
    got = rows_by_key(t.read(), ["k"])
    assert [got[k]["v"] for k in (5, 150, 6, 151)] == [9] * 4 and len(got) == 300
    for f in t._store.live_files(t._record.id, t.version):
        assert f.bucket in {b.id for b in t.bucket_map.buckets}  # no file routed to a retired bucket


def test_split_fails_cleanly_when_a_writer_touches_the_bucket(catalog: fl.Catalog) -> None:
    t = catalog.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=1, properties={"bucket_target_rows": "100"}
    )
    t.upsert(rows(range(300), 0))
    compactor = catalog.load_table("ods.t")
    original = compactor._write_files
    fired: list[int] = []

    def write_then_race(
        record: TableRecord, instant: str, content: FileContent, parts: Sequence[tuple[int, pa.Table]]
    ) -> list[DataFile]:
        if not fired:
            fired.append(1)
            t.upsert(rows([7], 5))  # a writer lands in the bucket being split
        return original(record, instant, content, parts)

    compactor._write_files = write_then_race  # type: ignore[method-assign]
    commit = compactor.compact()  # the split catches up with the write made while it wrote its bases
    assert commit is not None and commit.summary["moved_rows"] == 1
    assert (commit.summary["catchup_rounds"], commit.summary["fenced"]) == (0, False)
    assert rows_by_key(t.read(), ["k"])[7]["v"] == 5 and t.read().num_rows == 300


def test_split_rounds_then_fence_when_writers_keep_winning(catalog: fl.Catalog) -> None:
    """A writer lands in the old bucket between every catch-up round and its commit (deterministically,
    from inside the split's file writes): the split runs its rounds, then fences and lands."""
    t = catalog.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=1,
        properties={"bucket_target_rows": "100", "split_catchup_rounds": "2"},
    )  # fmt: skip
    t.upsert(rows(range(300), 0))
    compactor = catalog.load_table("ods.t")
    original = compactor._write_files
    raced: list[int] = []

    def race(
        record: TableRecord, instant: str, content: FileContent, parts: Sequence[tuple[int, pa.Table]]
    ) -> list[DataFile]:
        # after each round's read, before its commit; a writer would wait for a fenced bucket
        if (content == "moved" or not raced) and not t.refresh().bucket_map.fences:
            raced.append(t.upsert(rows([1000 + len(raced)], 7)).version)
        return original(record, instant, content, parts)

    compactor._write_files = race  # type: ignore[method-assign]
    commit = compactor.compact()
    assert commit is not None and commit.summary["fenced"] and commit.summary["catchup_rounds"] == 2
    fences = [c for c in t.history() if "bucket_fence" in c.summary]
    assert len(fences) == 1 and fences[0].version < commit.version
    assert t.refresh().bucket_map.fences == ()
    got = rows_by_key(t.read(), ["k"])
    assert len(raced) == 3 and all(got[1000 + i]["v"] == 7 for i in range(3)) and len(got) == 303
    assert apply_changelog({}, t.changes(0), ["k"]) == got  # moved rows are not changes twice
    assert commit.summary["moved_rows"] == 3  # every write made during the split went to the children


def test_a_dead_splits_fence_is_lifted_by_the_next_writer(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.t", SCHEMA, primary_key=["k"], buckets=2)
    t.upsert(rows(range(10), 0))
    record = t.refresh()._record
    fenced = t.bucket_map.fence([0, 1], until_ms=time.time_ns() // 1_000_000 + 200)
    commit_bucket_map(t._store, record, fenced, t.bucket_map.version, {"bucket_fence": [0, 1]})
    began = time.monotonic()
    t.upsert(rows(range(5), 1))  # waits out the deadline (the split "died"), lifts the fence, lands
    assert time.monotonic() - began >= 0.15
    assert t.refresh().bucket_map.fences == () and t.bucket_map.version == fenced.version + 1
    assert [r["v"] for r in t.read().sort_by("k").to_pylist()] == [1] * 5 + [0] * 5
    with pytest.raises(fl.CommitConflictError, match="bucket map moved"):  # the dead split cannot land
        commit_bucket_map(t._store, record, fenced.unfenced(), fenced.version, {})


def test_log_backlog_is_visible_and_can_slow_writers(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.t", SCHEMA, primary_key=["k"], buckets=2)
    for i in range(4):
        t.upsert(rows(range(i * 10, i * 10 + 10), i))
    assert [c.summary["log_backlog"] for c in t.history() if c.operation == "write"] == [2, 4, 6, 8]
    t.compact()
    assert t.history()[-1].summary["log_backlog"] == 0
    stalled = catalog.create_table(
        "ods.s", SCHEMA, primary_key=["k"], buckets=2, properties={"log_backlog_compact": "4"}
    )
    for i in range(6):
        stalled.upsert(rows(range(i * 10, i * 10 + 10), i))
    backlog = [c.summary["log_backlog"] for c in stalled.history() if c.operation != "create"]
    assert max(backlog) <= 6 and "compact" in [c.operation for c in stalled.history()]
    assert stalled.read().num_rows == 60


def test_a_splits_moved_files_count_in_the_log_backlog(catalog: fl.Catalog) -> None:
    """Reads merge a split's moved files like log files until compaction folds them, so the backlog
    that ``log_backlog_compact``, the metrics and ``flowlake status`` report counts them too."""
    t = catalog.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=1, properties={"bucket_target_rows": "100"}
    )
    t.upsert(rows(range(300), 0))
    compactor = catalog.load_table("ods.t")
    original = compactor._write_files

    def write_then_race(
        record: TableRecord, instant: str, content: FileContent, parts: Sequence[tuple[int, pa.Table]]
    ) -> list[DataFile]:
        if content == "base" and t.refresh().bucket_map.version == 0:
            t.upsert(rows([7, 8], 5))  # the split catches this write up into moved files
        return original(record, instant, content, parts)

    compactor._write_files = write_then_race  # type: ignore[method-assign]
    assert compactor.compact() is not None
    files = t._store.live_files(t._record.id, t.refresh().version)
    assert [f for f in files if f.content == "moved"]
    commit = t.upsert(rows([9], 1))
    pending = [f for f in t._store.live_files(t._record.id, commit.version) if f.content != "base"]
    assert commit.summary["log_backlog"] == len(pending)
    assert table_status(catalog, "ods.t").log_files == len(pending)
