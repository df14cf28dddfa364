"""The lake table's behaviour, the same on memory://, file:// and s3:// (a real moto S3 endpoint)."""

from __future__ import annotations

import datetime as dt
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from _builders import changelog, order, orders_table
from conftest import ORDERS

import flowlake as fl
from flowlake.table.writer import plan_write
from flowlake.testing import apply_changelog, rows_by_key

pytestmark = pytest.mark.integration


def keyed(table: fl.LakeTable, version: int | None = None) -> dict[int, dict[str, object]]:
    return rows_by_key(table.read(version=version), ["order_id"])


def test_upsert_delete_read_on_every_warehouse(warehouse_catalog: fl.Catalog) -> None:
    t = warehouse_catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=4)
    c1 = t.upsert(orders_table(order(i) for i in range(20)))
    c2 = t.upsert(orders_table([order(3, amount="99.00"), order(20)]))
    c3 = t.delete(pa.table({"order_id": [5, 6, 1000]}))
    assert (c1.version, c2.version, c3.version) == (1, 2, 3)
    rows = keyed(t)
    assert sorted(rows) == [i for i in range(21) if i not in (5, 6)]
    assert str(rows[3]["amount"]) == "99.00"
    assert sorted(keyed(t, version=1)) == list(range(20))
    assert c3.summary["rows"] == {"+I": 0, "-U": 0, "+U": 0, "-D": 2}


def test_changes_are_exact_with_before_images(warehouse_catalog: fl.Catalog) -> None:
    t = warehouse_catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=2)
    t.upsert(orders_table([order(1), order(2)]))
    t.upsert(orders_table([order(1, amount="11.00"), order(3)]))
    t.delete(pa.table({"order_id": [2]}))
    changes = t.changes(1)
    got = [
        (k, r["order_id"], str(r["amount"]))
        for k, r in zip(changes["_kind"].to_pylist(), changes.to_pylist(), strict=True)
    ]
    assert got == [(1, 1, "10.00"), (2, 1, "11.00"), (0, 3, "10.00"), (3, 2, "10.00")]
    assert changes["_seq"].to_pylist() == sorted(changes["_seq"].to_pylist())
    assert apply_changelog(keyed(t, 1), changes, ["order_id"]) == keyed(t)


def test_compaction_keeps_reads_and_changes(warehouse_catalog: fl.Catalog) -> None:
    t = warehouse_catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=3)
    for batch in range(5):
        t.upsert(orders_table(order(i, qty=batch) for i in range(batch * 5, batch * 5 + 10)))
    before = keyed(t)
    changes_before = t.changes(0)
    commit = t.compact()
    assert commit is not None and commit.operation == "compact"
    assert keyed(t) == before
    assert t.changes(0).equals(changes_before)
    assert t.compact() is None  # nothing left to fold
    assert t.dataset().count_rows() == len(before)


def test_clean_removes_old_versions_and_keeps_head(warehouse_catalog: fl.Catalog) -> None:
    t = warehouse_catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=2)
    for batch in range(4):
        t.upsert(orders_table(order(i, qty=batch) for i in range(10)))
    t.compact()
    head = keyed(t)
    result = t.clean(retain_last=1)
    assert result.files_deleted > 0
    assert keyed(t) == head
    with pytest.raises(fl.VersionCleanedError, match=r"was cleaned"):
        t.read(version=2)
    with pytest.raises(fl.VersionCleanedError):
        t.changes(1)
    t.upsert(orders_table([order(100)]))
    assert 100 in keyed(t)


def test_time_travel_by_timestamp(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    t.upsert(orders_table([order(1)]))
    middle = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    t.upsert(orders_table([order(2)]))
    assert sorted(rows_by_key(t.read(as_of=middle), ["order_id"])) == [1]
    assert sorted(rows_by_key(t.read(as_of=int(time.time() * 1000)), ["order_id"])) == [1, 2]
    with pytest.raises(fl.VersionNotFoundError, match=r"no version committed"):
        t.read(as_of=dt.datetime(2000, 1, 1))
    history = t.history()
    assert [c.operation for c in history] == ["create", "write", "write"]
    assert history[1].summary["rows"]["+I"] == 1


def test_noop_writes_make_no_change(orders: fl.LakeTable) -> None:
    first = orders.upsert(orders_table([order(1), order(2)]))
    same = orders.upsert(orders_table([order(1)]))
    absent = orders.delete(pa.table({"order_id": [42]}))
    assert same.version == absent.version == first.version
    assert orders.changes(first.version).num_rows == 0


def test_last_occurrence_in_a_batch_wins(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1, amount="1.00"), order(1, amount="2.00")]))
    orders.apply(
        changelog([(0, order(2)), (3, order(2)), (0, order(3)), (1, order(3)), (2, order(3, qty=7))])
    )
    rows = keyed(orders)
    assert str(rows[1]["amount"]) == "2.00"
    assert 2 not in rows
    assert rows[3]["qty"] == 7


def test_apply_computes_true_before_images(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1, qty=1)]))
    # the input's -U is stale (qty=99); the table's changelog must carry the real old row
    orders.apply(changelog([(1, order(1, qty=99)), (2, order(1, qty=2))]))
    changes = orders.changes(1).to_pylist()
    assert [(c["_kind"], c["qty"]) for c in changes] == [(1, 1), (2, 2)]


def test_filter_skips_files_by_stats(orders: fl.LakeTable) -> None:
    for batch in range(4):
        orders.upsert(orders_table(order(i) for i in range(batch * 100, batch * 100 + 100)))
    orders.compact()
    got = orders.read(filter=[("order_id", ">=", 350)])
    assert sorted(got["order_id"].to_pylist()) == list(range(350, 400))
    # compacted buckets are single base files spanning the key range, so use a column that moves by commit
    orders.upsert(orders_table(order(i, qty=5) for i in range(1000, 1010)))
    got = orders.read(filter=[("qty", "=", 5)])
    assert sorted(got["order_id"].to_pylist()) == list(range(1000, 1010))
    # base files are a bucket's oldest layer: one that cannot match is skipped whole, never read
    assert orders.last_scan.files_skipped >= 4 and orders.last_scan.files_keys_only == 0
    orders.upsert(orders_table(order(i, qty=7) for i in range(3000, 3005)))
    orders.upsert(orders_table(order(i, qty=8) for i in range(3000, 3003)))
    got = orders.read(filter=[("qty", "=", 8)])
    assert sorted(got["order_id"].to_pylist()) == list(range(3000, 3003))
    assert orders.last_scan.files_keys_only > 0  # the qty=7 logs were read for their keys only
    assert orders.read(filter=[("order_id", ">", 10**9)]).num_rows == 0
    assert orders.last_scan.files_skipped == orders.last_scan.files


def test_filter_never_resurrects_old_rows(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1, qty=5)]))
    orders.upsert(orders_table([order(1, qty=6)]))  # newest image no longer matches qty=5
    assert orders.read(filter=[("qty", "=", 5)]).num_rows == 0
    assert orders.read(filter=pa.compute.field("qty") == 6).num_rows == 1


def test_dataset_is_queryable_by_duckdb(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table(order(i, shop=f"s{i % 3}") for i in range(30)))
    orders.delete(pa.table({"order_id": [0, 1, 2]}))
    for dataset in (orders.dataset(), (orders.compact(), orders.dataset())[1]):
        con = duckdb.connect()
        con.register("orders_ds", dataset)
        got = con.execute("select shop, count(*) from orders_ds group by shop order by shop").fetchall()
        assert got == [("s0", 9), ("s1", 9), ("s2", 9)]


def test_projection(orders: fl.LakeTable) -> None:
    orders.upsert(orders_table([order(1), order(2)]))
    orders.upsert(orders_table([order(2, shop="x")]))
    got = orders.read(columns=["shop"])
    assert got.column_names == ["shop"]
    assert sorted(got["shop"].to_pylist()) == ["s1", "x"]


def test_two_writers_on_one_table(catalog: fl.Catalog) -> None:
    a = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    b = catalog.load_table("ods.orders")
    a.upsert(orders_table([order(1)]))
    b.upsert(orders_table([order(1, qty=2), order(2)]))  # b's cache must catch up with a's commit
    a.upsert(orders_table([order(1, qty=3)]))
    changes = a.changes(0)
    assert apply_changelog({}, changes, ["order_id"]) == keyed(a)


def test_conflicting_write_fails_or_retries(catalog: fl.Catalog) -> None:
    a = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    b = catalog.load_table("ods.orders")
    a.upsert(orders_table([order(1)]))
    b.upsert(orders_table([order(2)]))  # b is now at version 2
    a.upsert(orders_table([order(1, qty=3)]))  # version 3, b does not know yet
    stale_record = b._record
    state = b._current_state(stale_record)
    plan = plan_write(state, orders_table([order(1, qty=4)]), np.zeros(1, dtype=bool))
    with pytest.raises(fl.CommitConflictError, match=r"prepared against version 2"):
        b._commit_plan(stale_record, plan, None, None)
    assert b.read().num_rows == 2  # the failed attempt left nothing visible
    c = b.upsert(orders_table([order(1, qty=4)]))  # the public path re-reads and succeeds
    assert c.version == 4
    assert [r["qty"] for r in b.changes(3).to_pylist()] == [3, 4]


def test_a_write_that_changes_nothing_still_conflicts_on_its_keys(catalog: fl.Catalog) -> None:
    """A delete of a key that was absent when the writer read, committed after another writer inserted
    that key, must not be a silent no-op (the insert would win although the delete came last)."""
    a = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    b = catalog.load_table("ods.orders")
    a.upsert(orders_table([order(2)]))
    record = b.refresh()._record
    plan = plan_write(b._current_state(record), orders_table([order(1)]), np.ones(1, dtype=bool))
    assert plan.empty  # order 1 is absent at the version b read
    a.upsert(orders_table([order(1)]))
    with pytest.raises(fl.CommitConflictError, match="same keys"):
        b._commit_plan(record, plan, "delete-1", None)
    b.delete(pa.table({"order_id": [1]}), token="delete-1")  # the public path re-reads: 1 is deleted
    assert sorted(keyed(a)) == [2]


def test_compaction_concurrent_with_writes(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=2)
    t.upsert(orders_table(order(i) for i in range(10)))
    compactor = catalog.load_table("ods.orders")
    compactor.refresh()
    t.upsert(orders_table([order(3, qty=9), order(50)]))
    # compaction read version 1's files but commits after version 2: it must not lose version 2
    compactor._record = compactor._store.get_table("ods", "orders")
    compactor.compact()
    rows = keyed(t)
    assert rows[3]["qty"] == 9 and 50 in rows
    t.upsert(orders_table([order(3, qty=10)]))
    assert keyed(t)[3]["qty"] == 10


def test_tokens_make_writes_idempotent(orders: fl.LakeTable) -> None:
    c1 = orders.upsert(orders_table([order(1)]), token="flow-a/0/epoch-1")
    again = orders.upsert(orders_table([order(1, qty=5)]), token="flow-a/0/epoch-1")
    assert again.version == c1.version and again.token == "flow-a/0/epoch-1"
    assert keyed(orders)[1]["qty"] == 1
    empty = orders.upsert(orders_table([order(1)]), token="flow-a/0/epoch-2")
    assert empty.version == c1.version + 1  # a token is recorded even when nothing changed


def test_log_files_keep_before_images_in_row_groups_of_their_own(orders: fl.LakeTable) -> None:
    """Snapshot reads skip a log's -U row groups undecoded; changes() still gives the exact order."""
    import pyarrow.parquet as pq

    from flowlake.table.fileparts import physical_path, row_groups_of

    orders.upsert(orders_table(order(i) for i in range(20)))
    orders.upsert(orders_table([*(order(i, qty=9) for i in range(0, 20, 2)), order(100)]))
    orders.delete(pa.table({"order_id": [4, 6]}))
    head = orders.version
    update_logs = [
        f for f in orders._store.live_files(orders._record.id, head) if f.added_version == head - 1
    ]
    assert update_logs
    for f in update_logs:  # a bucket's part of the commit's log file (see flowlake.table.fileparts)
        with orders._storage.fs.open_input_file(orders._storage.path(physical_path(f.path))) as handle:
            data = pq.ParquetFile(handle)
            meta = data.metadata
            span = row_groups_of(f.path, meta)
            kinds = data.read_row_groups(list(span), columns=["_kind"])["_kind"].to_pylist()
        assert len(kinds) == f.row_count
        images = [k for k in kinds if k != 1]
        assert kinds == images + [1] * (len(kinds) - len(images))  # -U rows last
        if len(images) < len(kinds):
            assert len(span) >= 2
            last = meta.row_group(span[-1]).column(meta.schema.names.index("_kind")).statistics
            assert last.min == last.max == 1
    changes = orders.changes(head - 2, head - 1).to_pylist()
    assert [(c["order_id"], c["_kind"]) for c in changes][:4] == [(0, 1), (0, 2), (2, 1), (2, 2)]
    got = keyed(orders)
    assert set(got) == set(range(20)) - {4, 6} | {100}
    assert all(got[i]["qty"] == (9 if i % 2 == 0 else 1) for i in got if i < 20)
