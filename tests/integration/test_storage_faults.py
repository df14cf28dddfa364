"""Storage faults: commits are wholly visible or not at all, torn or altered files are never read,
the next writer recovers, and cleaning removes what failed writes left behind."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import fsspec
import pytest
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl
from flowlake.io.fs import ConcurrentMemoryFileSystem
from flowlake.table.fileparts import physical_path, physical_paths
from flowlake.testing.tables import rows_by_key
from harness.faults import FaultPlan, faulty_catalog

pytestmark = pytest.mark.integration


def setup(tmp_path: Path, plan: FaultPlan) -> tuple[fl.Catalog, fl.LakeTable, str]:
    root = f"/faults-{uuid.uuid4().hex}"
    cat = faulty_catalog(f"sqlite:///{tmp_path / 'c.db'}", ConcurrentMemoryFileSystem(), root, plan)
    t = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=4)
    return cat, t, root


@pytest.mark.parametrize("fault", ["fail", "torn"])
def test_failed_file_write_leaves_no_partial_commit(tmp_path: Path, fault: str) -> None:
    plan = FaultPlan()
    _, t, root = setup(tmp_path, plan)
    t.upsert(orders_table(order(i) for i in range(40)))
    before = rows_by_key(t.read(), ["order_id"])
    # a write's one log file (its buckets' parts) fails
    (plan.fail_writes if fault == "fail" else plan.torn_writes).add(plan.writes + 1)
    with pytest.raises(fl.StorageError, match="cannot write data file"):
        t.upsert(orders_table(order(i, qty=7) for i in range(40)))
    # a compaction writes a base file per bucket; make its third write fail
    t.upsert(orders_table(order(i, qty=6) for i in range(40, 60)))
    before = rows_by_key(t.read(), ["order_id"])
    (plan.fail_writes if fault == "fail" else plan.torn_writes).add(plan.writes + 3)
    with pytest.raises(fl.StorageError, match="cannot write data file"):
        t.compact()
    assert plan.injected == 2
    assert t.refresh().version == 2
    assert rows_by_key(t.read(), ["order_id"]) == before
    assert t._store.inflight_instants(t._record.id) == []  # the failed instants were aborted
    t.upsert(orders_table(order(i, qty=8) for i in range(60)))  # the next writer recovers
    assert {r["qty"] for r in t.read().to_pylist()} == {8}
    result = t.clean(retain_last=1, orphan_grace_seconds=0)
    leftovers = {p for p in fsspec.filesystem("memory").find(root) if p.endswith(".parquet")}
    live = {
        f"{root}/{p}" for p in physical_paths(f.path for f in t._store.live_files(t._record.id, t.version))
    }
    assert leftovers == live, f"orphans left: {leftovers - live} (clean removed {result.orphans_deleted})"


def test_altered_or_truncated_files_are_refused(tmp_path: Path) -> None:
    plan = FaultPlan()
    _, t, root = setup(tmp_path, plan)
    t.upsert(orders_table(order(i) for i in range(40)))
    memory = fsspec.filesystem("memory")
    victim = f"{root}/{physical_path(t._store.live_files(t._record.id, t.version)[0].path)}"
    data = memory.cat_file(victim)
    memory.pipe_file(victim, data[:-10] + bytes(10))  # same size, altered bytes
    with pytest.raises(fl.StorageError, match="does not match the checksum"):
        t.read()
    memory.pipe_file(victim, data[: len(data) // 2])
    with pytest.raises(fl.StorageError, match="was truncated or replaced"):
        t.read()
    memory.pipe_file(victim, data)
    assert t.read().num_rows == 40


def test_failed_reads_raise_storage_errors_and_change_nothing(tmp_path: Path) -> None:
    plan = FaultPlan()
    _, t, _ = setup(tmp_path, plan)
    t.upsert(orders_table(order(i) for i in range(40)))
    plan.fail_reads.add(plan.reads + 1)
    with pytest.raises(fl.StorageError, match="injected fault"):
        t.read()
    assert t.read().num_rows == 40


def test_many_random_faults_never_corrupt_the_table(tmp_path: Path) -> None:
    import random

    rng = random.Random(99)
    plan = FaultPlan()
    _, t, _ = setup(tmp_path, plan)
    expected: dict[int, int] = {}
    for step in range(60):
        if rng.random() < 0.3:
            target = plan.writes + rng.randint(1, 4)
            (plan.fail_writes if rng.random() < 0.5 else plan.torn_writes).add(target)
        keys = rng.sample(range(50), 8)
        batch = orders_table(order(k, qty=step) for k in keys)
        try:
            t.upsert(batch)
            expected.update(dict.fromkeys(keys, step))
        except fl.StorageError:
            pass
        if step % 15 == 14:
            with contextlib.suppress(fl.StorageError):
                t.compact()
        got = {r["order_id"]: r["qty"] for r in t.read().to_pylist()}
        assert got == expected, f"step {step}"
    assert plan.injected > 5
