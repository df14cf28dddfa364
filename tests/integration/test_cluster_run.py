"""A dataflow across a bytewax cluster: 2 processes x 2 workers sharing a PostgreSQL catalog and an S3
warehouse (moto's server) give exactly the table a single worker gives, and verify against DuckDB."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import s3fs
from bytewax.testing import run_main
from conftest import s3_options

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload
from flowlake.flow.verify import verify_table
from flowlake.testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_two_processes_two_workers_equal_one_worker(
    postgres_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    bucket = f"cluster-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(**s3_options(s3_endpoint)).mkdir(bucket)
    env = {
        **os.environ,
        "FLOWLAKE_CATALOG": postgres_url,
        "FLOWLAKE_WAREHOUSE": f"s3://{bucket}/wh",
        "FLOWLAKE_S3_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "FLOWLAKE_FLOW_STOP": "head",
        "FLOWLAKE_HORIZON": "100d",
    }
    cat = fl.connect(
        catalog=postgres_url, warehouse=f"s3://{bucket}/wh", storage_options=s3_options(s3_endpoint)
    )
    shop.ensure_tables(cat)
    cat.load_table("ods.shops").upsert(shop.shops_table(30))
    workload = OrdersWorkload(shops=30, seed=5)
    orders = cat.load_table("ods.orders")
    orders.upsert(workload.initial(2000))
    for _ in range(3):
        orders.apply(workload.changes(400))
    options = shop.FlowOptions(catalog=cat, stop="head", horizon="100d")
    run_main(shop.dwd_orders_flow(options), epoch_interval=dt.timedelta(0))  # type: ignore[no-untyped-call]

    ports = [free_port(), free_port()]
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
    target = f"{ROOT / 'dataflows' / 'dws_shop_minute.py'}:flow"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", target, "-w", "2", "-i", str(i), "-a", addresses],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-3000:]
    cluster = cat.load_table("dws.shop_gmv_minute").read()
    report = verify_table(cat, "dws.shop_gmv_minute")
    assert report.ok, [str(d) for d in report.differences[:3]]

    # the same input through one worker, into a fresh catalog, gives the same rows
    single_url = f"sqlite:///{tmp_path / 'single.db'}"
    single = fl.connect(catalog=single_url, warehouse=(tmp_path / "wh").as_uri())
    shop.ensure_tables(single)
    for name in ("ods.shops", "dwd.orders_enriched"):
        single.load_table(name).upsert(cat.load_table(name).read())
    run_main(shop.dws_shop_minute_flow(shop.FlowOptions(catalog=single, stop="head", horizon="100d")))  # type: ignore[no-untyped-call]
    one = single.load_table("dws.shop_gmv_minute").read()
    order = [("shop_id", "ascending"), ("minute", "ascending")]
    assert cluster.num_rows > 100
    assert cluster.sort_by(order).to_pylist() == one.sort_by(order).to_pylist()
