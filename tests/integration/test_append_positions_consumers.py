"""Append tables, source positions stored with commits, and consumers that pin history."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from _builders import order, orders_table

import flowlake as fl

pytestmark = pytest.mark.integration

EVENTS = pa.schema([("dt", pa.date32()), ("user_id", pa.int64()), ("event", pa.string())])


def events(day: int, n: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "dt": [dt.date(2026, 11, day)] * n,
            "user_id": list(range(start, start + n)),
            "event": ["click"] * n,
        },
        schema=EVENTS,
    )


def test_append_table_keeps_every_row_and_partitions(warehouse_catalog: fl.Catalog) -> None:
    t = warehouse_catalog.create_table("ods.events", EVENTS, primary_key=None, partition_by=["dt"])
    assert t.is_append_only and t.partition_by == ("dt",)
    t.append(pa.concat_tables([events(1, 5), events(2, 5)]))
    t.append(events(1, 5))  # duplicates stay: no dedupe
    assert t.read().num_rows == 15
    got = t.read(filter=[("dt", "=", dt.date(2026, 11, 2))])
    assert got.num_rows == 5
    assert t.last_scan.files_skipped == 2  # the two files of 2026-11-01
    changes = t.changes(0)
    assert set(changes["_kind"].to_pylist()) == {0} and changes.num_rows == 15


def test_append_compaction_reduces_files_not_content(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.events", EVENTS, primary_key=None)
    for i in range(6):
        t.append(events(1, 10, start=i * 10))
    before = t.read()
    files_before = len(t._store.live_files(t._record.id, t.version))
    commit = t.compact()
    assert commit is not None
    files_after = len(t._store.live_files(t._record.id, t.version))
    assert (files_before, files_after) == (6, 1)
    assert t.read().equals(before)  # same rows, same order
    assert t.compact() is None


def test_append_table_refuses_key_operations(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.events", EVENTS, primary_key=None)
    with pytest.raises(fl.InvalidArgumentError, match="append table"):
        t.upsert(events(1, 1))
    keyed = catalog.create_table("ods.orders2", orders_table([]).schema, primary_key=["order_id"])
    with pytest.raises(fl.InvalidArgumentError, match="use upsert"):
        keyed.append(orders_table([order(1)]))
    with pytest.raises(fl.InvalidArgumentError, match="partition_by is for append tables"):
        catalog.create_table("ods.bad", EVENTS, primary_key=["user_id"], partition_by=["dt"])


def test_source_positions_are_committed_atomically(orders: fl.LakeTable) -> None:
    src = "mysql://127.0.0.1:3306"
    assert orders.source_position(src) is None
    orders.upsert(orders_table([order(1)]), sources={src: {"file": "bin.000001", "pos": 100}})
    orders.upsert(orders_table([order(2)]), sources={"table:ods.other": 7})
    assert orders.source_position(src) == {"file": "bin.000001", "pos": 100}
    assert orders.source_position("table:ods.other") == 7
    # a batch that changes nothing still moves the position (its changes were dead letters, say)
    commit = orders.upsert(orders_table([order(1)]), sources={src: {"file": "bin.000001", "pos": 200}})
    assert commit.summary["rows"]["+I"] == 0 and commit.summary["sources"][src]["pos"] == 200
    position = orders.source_position(src)
    assert position is not None
    assert position["pos"] == 200


def test_consumers_pin_history_against_clean(catalog: fl.Catalog, orders: fl.LakeTable) -> None:
    for i in range(5):
        orders.upsert(orders_table([order(i)]))
    catalog.register_consumer("dwd_orders", "ods.orders", 2)
    assert catalog.list_consumers("ods.orders") == {"dwd_orders": 2}
    orders.compact()
    orders.clean(retain_last=1)
    assert orders.changes(2).num_rows == 3  # still readable for the consumer
    with pytest.raises(fl.VersionCleanedError):
        orders.changes(1)
    catalog.advance_consumer("dwd_orders", "ods.orders", 5)
    with pytest.raises(fl.InvalidArgumentError, match="cannot move back"):
        catalog.advance_consumer("dwd_orders", "ods.orders", 3)
    orders.clean(retain_last=1)
    with pytest.raises(fl.VersionCleanedError):
        orders.changes(2)
    assert catalog.drop_consumer("dwd_orders", "ods.orders")
    assert catalog.consumer_position("dwd_orders", "ods.orders") is None
    with pytest.raises(fl.InvalidNameError):
        catalog.register_consumer("bad name;", "ods.orders", 1)


def test_recreated_tables_never_see_a_dropped_tables_schema(catalog: fl.Catalog) -> None:
    first = catalog.create_table("ods.first", EVENTS, primary_key=None)
    first.append(events(1, 3))
    catalog.drop_table("ods.first")
    stock = pa.schema([("sku", pa.string()), ("day", pa.date32())])
    t = catalog.create_table("ods.stock", stock, primary_key=["sku"])
    assert t.schema.names == ["sku", "day"]
    t.apply(pa.table({"sku": ["a"], "day": [dt.date(2026, 1, 1)], "_kind": pa.array([0], pa.int8())}))
    assert catalog.load_table("ods.stock").read().num_rows == 1
