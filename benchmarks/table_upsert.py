"""Upsert throughput of a primary-key lake table, and whether write cost grows with the table.

A 1M-row orders table is loaded, then 100 batches of 10k changes are committed (60% inserts of new
keys, 35% updates of random existing keys, 5% deletes). Prints changes/s and the mean batch time of the
first 5 and last 5 batches, and the CPU time of the ``apply`` calls (all threads; the machine is
shared, so CPU time is steadier than wall time); ``--json PATH`` writes the figures. ``--cdc`` sends
each update as a ``-U`` row followed by its ``+U`` (as a CDC source does), so keys repeat in a batch.

    python benchmarks/table_upsert.py [--rows 1000000] [--batches 100] [--batch-size 10000]
        [--buckets 8] [--compact-every 0] [--cdc] [--warehouse file:///tmp/x] [--json out.json]
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

import numpy as np
import pyarrow as pa
from _report import report

import flowlake as fl
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload


def with_before_images(batch: pa.Table) -> pa.Table:
    """The batch with a ``-U`` row right before each ``+U`` (a copy of it: before-images are not
    trusted by ``apply``, which computes exact ones)."""
    kinds = batch.column(KIND_COLUMN).to_numpy()
    updates = np.flatnonzero(kinds == RowKind.UPDATE_AFTER)
    before = batch.take(pa.array(updates))
    before = before.set_column(
        before.schema.get_field_index(KIND_COLUMN), KIND_COLUMN,
        pa.array(np.full(len(updates), RowKind.UPDATE_BEFORE, np.int8)),
    )  # fmt: skip
    order = np.argsort(np.concatenate([np.arange(len(kinds)) * 2 + 1, updates * 2]), kind="stable")
    return pa.concat_tables([batch, before]).take(pa.array(order))


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
    cpu_s = 0.0
    compact_times: list[float] = []
    total_changes = 0
    for i in range(args.batches):
        batch = workload.changes(args.batch_size)
        if args.cdc:
            batch = with_before_images(batch)
        t, c = time.perf_counter(), time.process_time()
        commit = table.apply(batch)
        batch_times.append(time.perf_counter() - t)
        cpu_s += time.process_time() - c
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
        "cdc": args.cdc,
        "load_rows_per_s": round(args.rows / load_s),
        "changes": total_changes,
        "changes_per_s": round(total_changes / write_s),
        "apply_cpu_s": round(cpu_s, 3),
        "changes_per_cpu_s": round(total_changes / cpu_s) if cpu_s else None,
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
    parser.add_argument("--cdc", action="store_true", help="send updates as -U/+U pairs")
    parser.add_argument("--warehouse", default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", default=None, help="write the figures to this path")
    args = parser.parse_args()
    figures = run(args)
    report(figures, args.json)


if __name__ == "__main__":
    main()
