"""The DWD enrichment as a stateless lookup join vs the state-holding stream join: memory and speed.

``--orders`` orders (default 1M) and ``--shops`` shops (default 100k, compacted) are committed to lake
tables; then, each in its own process on one worker, the same enrichment runs from version 0 to the
head into a DWD table:

* ``join``: the regular stream-stream left join (both sides held in keyed state, as the Python shop
  flow's DWD does);
* ``lookup``: ``lookup_join`` on the dimension's primary key, which looks each batch's shop ids up
  with ``LakeTable.get`` and holds nothing of the dimension.

Per mode: changes/s, peak RSS of the process, rows out; the two DWD tables are checked equal.

    python benchmarks/lookup_join.py [--orders 1000000] [--shops 100000] [--json out.json]

Target (issue 17): the lookup join needs >= 5x less memory than the stream join, at >= 1/2 its speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from _report import report

import flowlake as fl
from flowlake.demo.flows import SHOPS_SCHEMA, shops_table
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload

ENRICHED = pa.schema([*ORDERS_SCHEMA, *[f for f in SHOPS_SCHEMA if f.name != "shop_id"]])


def prepare(root: Path, orders: int, shops: int, seed: int) -> str:
    """Commit the orders (in 100k commits) and the shops; return the catalog URL."""
    url = f"sqlite:///{root / 'catalog.db'}"
    cat = fl.connect(catalog=url, warehouse=(root / "wh").as_uri())
    workload = OrdersWorkload(seed=seed)
    ods = cat.create_table("ods.orders", ORDERS_SCHEMA, primary_key=["order_id"], buckets=4)
    for start in range(0, orders, 100_000):
        batch = workload.initial(min(100_000, orders - start))
        rng = np.random.default_rng(start)
        shop_ids = pa.array(rng.integers(0, shops, batch.num_rows), pa.int32())
        ods.upsert(batch.set_column(batch.schema.get_field_index("shop_id"), "shop_id", shop_ids))
    dim = cat.create_table("ods.shops", SHOPS_SCHEMA, primary_key=["shop_id"], buckets=4)
    dim.upsert(shops_table(shops))
    dim.compact()
    for mode in ("join", "lookup"):
        cat.create_table(f"dwd.enriched_{mode}", ENRICHED, primary_key=["order_id"], buckets=4)
    return url


def run_mode(url: str, warehouse: str, mode: str) -> dict[str, object]:
    """Run one mode to the head in this process; return its figures."""
    import datetime as dt

    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    from flowlake.flow import join, lake_input, lake_output, lookup_join

    cat = fl.connect(catalog=url, warehouse=warehouse)
    flow = Dataflow(f"dwd_{mode}")
    orders = lake_input("orders", flow, "ods.orders", catalog=cat, stop="head")
    if mode == "join":
        shops = lake_input("shops", flow, "ods.shops", catalog=cat, stop="head")
        enriched = join("enrich", orders, shops, on=["shop_id"], how="left",
                        left_schema=ORDERS_SCHEMA, right_schema=SHOPS_SCHEMA, partitions=4)  # fmt: skip
    else:
        columns = [f.name for f in SHOPS_SCHEMA if f.name != "shop_id"]
        enriched = lookup_join("enrich", orders, "ods.shops", ["shop_id"], columns, catalog=cat)
    lake_output("out", enriched, f"dwd.enriched_{mode}", catalog=cat)
    t = time.perf_counter()
    run_main(flow, epoch_interval=dt.timedelta(seconds=1))  # type: ignore[no-untyped-call]
    elapsed = time.perf_counter() - t
    out = cat.load_table(f"dwd.enriched_{mode}").read()
    events = cat.load_table("ods.orders").read(columns=["order_id"]).num_rows
    if mode == "join":
        events += cat.load_table("ods.shops").read(columns=["shop_id"]).num_rows
    return {
        "seconds": round(elapsed, 2),
        "changes_per_s": round(events / elapsed),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "rows_out": out.num_rows,
    }


def main() -> None:
    """Parse arguments; prepare, run both modes in child processes, compare, report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--shops", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--child", nargs=3, metavar=("URL", "WAREHOUSE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(*args.child)))
        return
    root = Path(tempfile.mkdtemp(prefix="flowlake-lookup-join-"))
    try:
        url = prepare(root, args.orders, args.shops, args.seed)
        warehouse = (root / "wh").as_uri()
        results = {}
        for mode in ("join", "lookup"):
            child = subprocess.run(  # noqa: S603 - this script with fixed arguments
                [sys.executable, __file__, "--child", url, warehouse, mode],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
        cat = fl.connect(catalog=url, warehouse=warehouse)
        joined = cat.load_table("dwd.enriched_join").read().sort_by("order_id")
        looked = cat.load_table("dwd.enriched_lookup").read().sort_by("order_id")
        figures: dict[str, object] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
            "orders": args.orders,
            "shops": args.shops,
        }
        for mode, result in results.items():
            figures |= {f"{mode}_{k}": v for k, v in result.items()}
        join_rss, lookup_rss = float(results["join"]["peak_rss_mb"]), float(results["lookup"]["peak_rss_mb"])
        figures["memory_join_over_lookup"] = round(join_rss / lookup_rss, 2)
        join_speed = float(results["join"]["changes_per_s"])
        figures["speed_lookup_over_join"] = round(float(results["lookup"]["changes_per_s"]) / join_speed, 2)
        figures["tables_equal"] = joined.equals(looked)
        report(figures, args.json_path)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
