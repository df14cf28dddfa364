"""The shop pipeline end to end in-process: ODS -> DWD -> DWS -> DWS, every committed version of every
output equal to a DuckDB batch recompute at the input versions in its lineage; reruns converge;
``flowlake verify`` and ``flowlake run`` from the command line."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from bytewax.testing import run_main

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload
from flowlake.flow.verify import verify_history, verify_table

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ("dwd.orders_enriched", "dws.shop_gmv_minute", "dws.city_day")


def load(cat: fl.Catalog, workload: OrdersWorkload, batches: int, *, seed: int) -> None:
    orders, shops = cat.load_table("ods.orders"), cat.load_table("ods.shops")
    for i in range(batches):
        orders.apply(workload.changes(300))
        if i % 2 == seed % 2:  # move a few shops to another city (their orders must follow)
            moved = shop.shops_table(40, seed=seed + i).slice(i, 5)
            shops.upsert(moved)


def run_all(cat: fl.Catalog) -> None:
    options = shop.FlowOptions(catalog=cat, stop="head", max_versions=1, horizon="100d")
    for build in (shop.dwd_orders_flow, shop.dws_shop_minute_flow, shop.dws_city_day_flow):
        run_main(build(options), epoch_interval=dt.timedelta(0))  # type: ignore[no-untyped-call]


def assert_verified(cat: fl.Catalog) -> None:
    for name in OUTPUTS:
        reports = verify_history(cat, name)
        assert len(reports) >= 2, f"{name}: expected several flow commits"
        bad = [r for r in reports if not r.ok]
        assert not bad, f"{name}@{bad[0].version}: {[str(d) for d in bad[0].differences[:3]]}"


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    c = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    shop.ensure_tables(c)
    c.load_table("ods.shops").upsert(shop.shops_table(40))
    return c


def test_pipeline_equals_batch_recompute_at_every_version(cat: fl.Catalog) -> None:
    workload = OrdersWorkload(shops=45, seed=3)  # shop ids 40..44 have no shop row: left join pads
    cat.load_table("ods.orders").upsert(workload.initial(2000))
    load(cat, workload, 4, seed=1)
    run_all(cat)
    assert_verified(cat)
    # a second run without bytewax state replays from the earliest version; the sinks hold the
    # replay until it passes what they committed, so no version goes backwards
    load(cat, workload, 3, seed=2)
    run_all(cat)
    assert_verified(cat)
    head = cat.load_table("dwd.orders_enriched").source_position("table:ods.orders")
    assert head == cat.load_table("ods.orders").version


def test_verify_cli_reports_differences(cat: fl.Catalog, tmp_path: Path) -> None:
    workload = OrdersWorkload(shops=40, seed=5)
    cat.load_table("ods.orders").upsert(workload.initial(500))
    run_all(cat)
    env = {**os.environ, "FLOWLAKE_CATALOG": cat.catalog_url, "FLOWLAKE_WAREHOUSE": cat.storage.uri}
    flowlake = [str(Path(sys.executable).with_name("flowlake"))]
    command = [*flowlake, "verify", "dws.shop_gmv_minute"]
    ok = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok" in ok.stdout
    table = cat.load_table("dws.shop_gmv_minute")
    row = table.read().slice(0, 1)
    tampered = row.set_column(row.schema.get_field_index("orders"), "orders", pa.array([999], pa.int64()))
    table.upsert(tampered)
    assert not verify_table(cat, "dws.shop_gmv_minute").ok
    bad = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "999" in bad.stdout


def test_flowlake_run_once_processes_to_head(cat: fl.Catalog) -> None:
    workload = OrdersWorkload(shops=40, seed=9)
    orders = cat.load_table("ods.orders")
    orders.upsert(workload.initial(300))
    orders.apply(workload.changes(100).filter(pa.array([True] * 100)))
    env = {**os.environ, "FLOWLAKE_CATALOG": cat.catalog_url, "FLOWLAKE_WAREHOUSE": cat.storage.uri}
    flowlake = str(Path(sys.executable).with_name("flowlake"))
    command = [flowlake, "run", str(ROOT / "dataflows/dwd_orders.py"), "--once"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    out = cat.load_table("dwd.orders_enriched")
    assert out.source_position("table:ods.orders") == orders.version
    assert out.read().num_rows == orders.read().num_rows
    assert verify_table(cat, "dwd.orders_enriched").ok
