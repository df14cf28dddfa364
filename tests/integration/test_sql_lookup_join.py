"""A lookup join (``WITH (lookup = 'ods.shops')``) enriches each change with the dimension's current row
and keeps no state for that side: exact while the dimension is unchanged, and, as in Flink, rows
enriched earlier are not revised when it changes (new changes see the new row)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

import flowlake as fl
from flowlake.flow.verify import verify_history
from flowlake.sql import compile_views, explain

pytestmark = pytest.mark.integration

VIEW = """CREATE MATERIALIZED VIEW dwd.enriched WITH (lookup = 'ods.shops') AS
SELECT o.order_id, o.amount, s.city, s.shop_id AS matched_shop
FROM ods.orders o LEFT JOIN ods.shops s ON o.shop_id = s.shop_id"""


def run(cat: fl.Catalog, recovery: Path) -> None:
    if not recovery.exists():
        recovery.mkdir()
        init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
    flow = Dataflow("lookup")
    compile_views(VIEW, flow, catalog=cat, stop="head", max_versions=1, poll_interval=0.0)
    run_main(flow, epoch_interval=dt.timedelta(0), recovery_config=RecoveryConfig(str(recovery)))  # type: ignore[no-untyped-call]


def test_lookup_join_keeps_no_state_and_matches_duckdb_while_the_dimension_holds(tmp_path: Path) -> None:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    columns = [("order_id", pa.int64()), ("shop_id", pa.int64()), ("amount", pa.float64())]
    orders = cat.create_table("ods.orders", pa.schema(columns), primary_key=["order_id"])
    shops = cat.create_table(
        "ods.shops", pa.schema([("shop_id", pa.int32()), ("city", pa.string())]), primary_key=["shop_id"]
    )
    shops.upsert(pa.table({"shop_id": pa.array([1, 2], pa.int32()), "city": ["Oslo", "Lima"]}))
    plan = explain(VIEW, cat)
    assert "lookup join ods.shops on [shop_id]" in plan and "none per row" in plan
    assert "join on" not in plan  # no stateful join
    orders.upsert(pa.table({"order_id": [1, 2, 3], "shop_id": [1, 2, 9], "amount": [1.0, 2.0, 3.0]}))
    orders.upsert(pa.table({"order_id": [2, 4], "shop_id": [1, 2], "amount": [5.0, 6.0]}))
    orders.delete(pa.table({"order_id": [3]}))
    run(cat, tmp_path / "recovery")
    assert all(r.ok for r in verify_history(cat, "dwd.enriched"))
    rows = {r["order_id"]: r for r in cat.load_table("dwd.enriched").read().to_pylist()}
    assert {k: (r["city"], r["matched_shop"]) for k, r in rows.items()} == {
        1: ("Oslo", 1),
        2: ("Oslo", 1),
        4: ("Lima", 2),
    }

    shops.upsert(pa.table({"shop_id": pa.array([2], pa.int32()), "city": ["Pune"]}))  # the dimension changes
    orders.upsert(pa.table({"order_id": [5], "shop_id": [2], "amount": [7.0]}))
    run(cat, tmp_path / "recovery")
    rows = {r["order_id"]: r["city"] for r in cat.load_table("dwd.enriched").read().to_pylist()}
    assert rows[5] == "Pune"  # a new change sees the new row
    assert rows[4] == "Lima"  # an earlier one is not revised (Flink's lookup join semantics)
