"""The catalog contract, run on SQLite and PostgreSQL alike: OCC, policies, tokens, grants, lineage."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import uvicorn
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl
from flowlake.catalog.base import DataFile, FileContent, TableRecord
from flowlake.catalog.engine import create_engine
from flowlake.catalog.rest import create_app
from flowlake.catalog.sql import SqlMetaStore
from flowlake.table.writer import plan_write
from flowlake.testing import free_port, rows_by_key
from flowlake.testing.services import wait_for_port

pytestmark = pytest.mark.integration


ConnectAs = Callable[[str], fl.Catalog]


@pytest.fixture(params=["sqlite", "postgres", "rest"])
def connect_as(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConnectAs]:
    """Open the catalog as a principal: embedded on SQLite or PostgreSQL, or through the REST
    metastore (over SQLite), where the principal is the one its bearer token names."""
    warehouse = (tmp_path / "wh").as_uri()
    if request.param != "rest":
        url = (
            str(request.getfixturevalue("postgres_url"))
            if request.param == "postgres"
            else f"sqlite:///{tmp_path / 'c.db'}"
        )
        yield lambda principal: fl.connect(catalog=url, warehouse=warehouse, principal=principal)
        return
    url = f"sqlite:///{tmp_path / 'c.db'}"
    owner = fl.connect(catalog=url, warehouse=warehouse, principal="owner")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(SqlMetaStore(create_engine(url))), port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)

    def connect(principal: str) -> fl.Catalog:
        token = owner.create_principal(principal)
        return fl.connect(catalog=f"http://127.0.0.1:{port}", warehouse=warehouse, token=token)

    yield connect
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def cat(connect_as: ConnectAs) -> fl.Catalog:
    return connect_as("owner")


def stale_commit(t: fl.LakeTable, batch: pa.Table, columns: tuple[str, ...] = ()) -> fl.Commit:
    """Commit ``batch`` against the version ``t`` last read, whatever happened since (no retry)."""
    record = t._record
    state = t._current_state(record)
    return t._commit_plan(
        record, plan_write(state, batch, np.zeros(batch.num_rows, bool)), None, None, columns
    )[0]


def test_disjoint_keys_rebase_without_rewriting(cat: fl.Catalog) -> None:
    a = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    b = cat.load_table("ods.orders")
    a.upsert(orders_table([order(1), order(2)]))
    b.refresh()
    b._current_state(b._record)
    a.upsert(orders_table([order(1, qty=5)]))  # b has not seen this
    commit = stale_commit(b, orders_table([order(2, qty=7), order(3)]))  # disjoint keys: rebased
    assert commit.version == 3
    rows = rows_by_key(b.read(), ["order_id"])
    assert (rows[1]["qty"], rows[2]["qty"], 3 in rows) == (5, 7, True)
    b.upsert(orders_table([order(4)]))  # b's cached state caught up correctly
    assert sorted(rows_by_key(a.read(), ["order_id"])) == [1, 2, 3, 4]


def test_same_keys_conflict_names_versions_and_keys(cat: fl.Catalog) -> None:
    a = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    b = cat.load_table("ods.orders")
    a.upsert(orders_table([order(1), order(2)]))
    b.refresh()
    b._current_state(b._record)
    a.upsert(orders_table([order(2, qty=5)]))
    with pytest.raises(
        fl.CommitConflictError, match=r"version 1 but the table is at version 2.*same keys"
    ) as err:
        stale_commit(b, orders_table([order(2, qty=9)]))
    assert not err.value.mergeable
    racing = iter([6, 7])
    write_files = b._write_files

    def race(
        record: TableRecord, instant: str, content: FileContent, parts: Sequence[tuple[int, pa.Table]]
    ) -> list[DataFile]:  # another writer commits key 2 while b writes its files
        qty = next(racing, None)
        if qty is not None:
            a.upsert(orders_table([order(2, qty=qty)]))
        return write_files(record, instant, content, parts)

    b._write_files = race  # type: ignore[method-assign]
    with pytest.raises(fl.CommitConflictError, match=r"sample keys: \[2\]"):
        b.upsert(orders_table([order(2, qty=9)]), on_conflict="fail")  # fail policy surfaces it
    assert rows_by_key(a.read(), ["order_id"])[2]["qty"] == 6
    b.upsert(orders_table([order(2, qty=9)]))  # retry policy: re-read, re-apply, last writer wins
    assert rows_by_key(a.read(), ["order_id"])[2]["qty"] == 9
    assert [c.operation for c in a.history()].count("write") == 5


def race(victim: fl.LakeTable, action: Callable[[], object]) -> None:
    """Run ``action`` (another writer's commit) once, while ``victim`` writes its next files."""
    write_files = victim._write_files
    pending = [action]

    def racing(
        record: TableRecord, instant: str, content: FileContent, parts: Sequence[tuple[int, pa.Table]]
    ) -> list[DataFile]:
        while pending:
            pending.pop()()
        return write_files(record, instant, content, parts)

    victim._write_files = racing  # type: ignore[method-assign]


def test_column_groups_merge(cat: fl.Catalog) -> None:
    t = cat.create_table(
        "ods.orders", ORDERS, primary_key=["order_id"], properties={"conflict_policy": "merge-columns"}
    )
    t.upsert(orders_table([order(1), order(2)]))
    pricing, shipping = cat.load_table("ods.orders"), cat.load_table("ods.orders")
    race(
        shipping,
        lambda: pricing.update_columns(pa.table({"order_id": [1, 2], "qty": pa.array([10, 20], pa.int32())})),
    )
    shipping.update_columns(pa.table({"order_id": [1, 2], "paid": [True, True]}))
    rows = rows_by_key(t.read(), ["order_id"])
    assert [(r["qty"], r["paid"]) for r in rows.values()] == [(10, True), (20, True)]
    assert [c.summary.get("columns") for c in t.history()[-2:]] == [["qty"], ["paid"]]
    # the same column from two writers is a real conflict under merge-columns
    race(
        shipping,
        lambda: pricing.update_columns(pa.table({"order_id": [1], "qty": pa.array([11], pa.int32())})),
    )
    with pytest.raises(fl.CommitConflictError, match=r"same keys"):
        shipping.update_columns(pa.table({"order_id": [1], "qty": pa.array([12], pa.int32())}))
    assert rows_by_key(t.read(), ["order_id"])[1]["qty"] == 11


def test_update_columns_on_new_keys_and_bad_input(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    t.update_columns(pa.table({"order_id": [5], "shop": ["x"]}))
    assert t.read().to_pylist()[0] | {"shop": None} == dict.fromkeys(ORDERS.names) | {"order_id": 5}
    with pytest.raises(fl.InvalidArgumentError, match=r"at least one non-key column"):
        t.update_columns(pa.table({"order_id": [5]}))
    with pytest.raises(fl.SchemaMismatchError, match=r"'nope'"):
        t.update_columns(pa.table({"order_id": [5], "nope": [1]}))


def test_tokens_are_idempotent_per_table(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    u = cat.create_table("ods.other", ORDERS, primary_key=["order_id"])
    c1 = t.upsert(orders_table([order(1)]), token="f/0/1")
    assert t.upsert(orders_table([order(2)]), token="f/0/1").version == c1.version
    assert u.upsert(orders_table([order(2)]), token="f/0/1").version == 1  # tokens are per table
    assert t.read().num_rows == 1


def test_grants_are_checked_on_every_path(cat: fl.Catalog, connect_as: ConnectAs) -> None:
    t = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    t.upsert(orders_table([order(1)]))
    alice = connect_as("alice")
    with pytest.raises(fl.PermissionDeniedError, match=r"'alice' lacks 'read' on 'ods.orders'"):
        alice.load_table("ods.orders")
    assert alice.list_tables() == []
    cat.grant("read", "ods", "alice")
    reader = alice.load_table("ods.orders")
    assert reader.read().num_rows == 1
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'write'"):
        reader.upsert(orders_table([order(2)]))
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'admin' on 'ods'"):
        alice.create_table("ods.mine", ORDERS, primary_key=["order_id"])
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'admin'"):
        alice.grant("admin", "*", "alice")
    cat.grant("write", "ods.orders", "alice")
    reader.upsert(orders_table([order(2)]))
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'admin' on 'ods.orders'"):
        alice.drop_table("ods.orders")
    cat.revoke("write", "ods.orders", "alice")
    if hasattr(alice.store, "_grant_cache"):
        alice.store._grant_cache.clear()  # another process would see the revocation within 2 s
    with pytest.raises(fl.PermissionDeniedError):
        reader.upsert(orders_table([order(3)]))
    actions = [(e["principal"], e["action"]) for e in cat.audit_log()]
    assert (
        ("owner", "revoke") in actions
        and ("alice", "commit") in actions
        and ("owner", "create_table") in actions
    )
    with pytest.raises(fl.PermissionDeniedError):
        alice.audit_log()


def test_lineage_and_freshness(cat: fl.Catalog) -> None:
    ods = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    dwd = cat.create_table("dwd.orders", ORDERS, primary_key=["order_id"])
    ods.upsert(
        orders_table([order(1)]), sources={"mysql://db:3306": {"file": "b.1", "pos": 4, "ts_ms": 1_000}}
    )
    dwd.upsert(orders_table([order(1)]), sources={"table:ods.orders": ods.version})
    graph = cat.lineage("dwd.orders").to_dict()
    assert graph["upstream"][0]["name"] == "ods.orders"
    position = {"file": "b.1", "pos": 4, "ts_ms": 1_000}
    expected: dict[str, Any] = {
        "name": "mysql://db:3306",
        "version": None,
        "position": position,
        "upstream": [],
    }
    assert graph["upstream"][0]["upstream"][0] == expected
    fresh = cat.freshness("dwd.orders")
    assert fresh is not None and fresh > 1_000_000  # the source event is from 1970


def test_files_changed_between_moves_a_file_list_to_the_listed_one(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.moves", ORDERS, primary_key=["order_id"], buckets=2)
    t.upsert(orders_table([order(1), order(2)]))
    start = t.refresh().version
    before = cat.store.live_files(t._record.id, start)
    t.upsert(orders_table([order(2, amount="5.00"), order(3)]))
    t.compact()
    t.upsert(orders_table([order(4)]))
    end = t.refresh().version
    changed = cat.store.files_changed_between(t._record.id, start, end)
    gone = {f.path for f in changed if f.removed_version is not None and f.removed_version <= end}
    moved = [f.path for f in before if f.path not in gone]
    moved += [f.path for f in changed if f.added_version > start and f.path not in gone]
    assert moved == [f.path for f in cat.store.live_files(t._record.id, end)]
    assert gone, "the compaction removed files"
