"""Upsert throughput of a primary-key lake table, and whether write cost grows with the table.

A 1M-row orders table is loaded, then 100 batches of 10k changes are committed (60% inserts of new
keys, 35% updates of random existing keys, 5% deletes). Prints changes/s and the mean batch time of the
first 5 and last 5 batches; ``--json PATH`` writes the figures.

    python benchmarks/table_upsert.py [--rows 1000000] [--batches 100] [--batch-size 10000]
        [--buckets 8] [--compact-every 0] [--warehouse file:///tmp/x] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _report import report

import flowlake as fl
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload


def run(args: argparse.Namespace) -> dict[str, object]:
    """Run the workload and return the figures."""
    workload = OrdersWorkload(seed=args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-bench-"))
    warehouse = args.warehouse or (tmp / "wh").as_uri()
    cat = fl.connect(catalog=f"sqlite:///{tmp / 'catalog.db'}", warehouse=warehouse)
    table = cat.create_table("ods.orders", ORDERS_SCHEMA, primary_key=["order_id"], buckets=args.buckets)
    t0 = time.perf_counter()
    for start in range(0, args.rows, 1_000_000):
        table.upsert(workload.initial(min(1_000_000, args.rows - start)))
    load_s = time.perf_counter() - t0

    batch_times: list[float] = []
    compact_times: list[float] = []
    total_changes = 0
    for i in range(args.batches):
        batch = workload.changes(args.batch_size)
        t = time.perf_counter()
        commit = table.apply(batch)
        batch_times.append(time.perf_counter() - t)
        rows = commit.summary["rows"]
        total_changes += rows["+I"] + rows["+U"] + rows["-D"]
        if args.compact_every and (i + 1) % args.compact_every == 0:
            t = time.perf_counter()
            table.compact()
            compact_times.append(time.perf_counter() - t)
    write_s = sum(batch_times)

    t = time.perf_counter()
    snapshot = table.read()
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    table.compact()
    final_compact_s = time.perf_counter() - t
    t = time.perf_counter()
    compacted = table.read()
    read_compacted_s = time.perf_counter() - t
    assert snapshot.num_rows == compacted.num_rows == len(workload.live), (
        snapshot.num_rows,
        len(workload.live),
    )
    first5, last5 = statistics.mean(batch_times[:5]), statistics.mean(batch_times[-5:])
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "rows": args.rows,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "buckets": args.buckets,
        "compact_every": args.compact_every,
        "load_rows_per_s": round(args.rows / load_s),
        "changes": total_changes,
        "changes_per_s": round(total_changes / write_s),
        "mean_batch_ms_first5": round(first5 * 1000, 2),
        "mean_batch_ms_last5": round(last5 * 1000, 2),
        "last5_over_first5": round(last5 / first5, 3),
        "read_rows": snapshot.num_rows,
        "read_merged_s": round(read_s, 3),
        "final_compact_s": round(final_compact_s, 3),
        "read_compacted_s": round(read_compacted_s, 3),
        "mean_compact_s": round(statistics.mean(compact_times), 3) if compact_times else None,
    }


def main() -> None:
    """Parse flags, run, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--compact-every", type=int, default=0)
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None, help="write the figures to this path")
    args = parser.parse_args()
    figures = run(args)
    report(figures, args.json)


if __name__ == "__main__":
    main()
