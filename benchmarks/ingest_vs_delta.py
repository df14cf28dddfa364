"""ODS upsert throughput: flowlake vs delta-rs (deltalake) MERGE, same workload, one process, one run.

A 1M-row orders snapshot, then 1M changes (60% inserts, 35% updates of random live keys, 5% deletes)
in 10k-change batches. Each delta-rs batch is one MERGE (delete when matched and op = d, update when
matched, insert when not matched); each flowlake batch is one ``apply``. Prints, per engine: changes/s,
mean batch time of the first 5 and last 5 batches, files and bytes on disk; then the read side: the
latest snapshot read after the 100 commits without compaction and after ``compact()``, against a plain
Parquet scan of the same rows. Both final tables are checked to match row for row.

    python benchmarks/ingest_vs_delta.py [--rows 1000000] [--batches 100] [--batch-size 10000]
        [--compact-every 0] [--engines flowlake,delta] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import flowlake as fl
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload

READ_RUNS = 5
"""Each read is timed this many times (a fresh reader each time); the median is reported."""


def workload(rows: int, batches: int, batch_size: int, seed: int) -> tuple[pa.Table, list[pa.Table]]:
    """The initial snapshot and the change batches (identical input for every engine)."""
    w = OrdersWorkload(seed=seed)
    return w.initial(rows), [w.changes(batch_size) for _ in range(batches)]


def disk_usage(path: Path) -> tuple[int, int]:
    """(files, bytes) of the data files under ``path``."""
    files = list(path.rglob("*.parquet"))
    return len(files), sum(p.stat().st_size for p in files)


def summarize(times: list[float], changes: int) -> dict[str, Any]:
    return {
        "changes_per_s": round(changes / sum(times)),
        "mean_batch_ms_first5": round(statistics.mean(times[:5]) * 1000, 1),
        "mean_batch_ms_last5": round(statistics.mean(times[-5:]) * 1000, 1),
        "last5_over_first5": round(statistics.mean(times[-5:]) / statistics.mean(times[:5]), 3),
    }


def run_flowlake(
    root: Path, initial: pa.Table, batches: list[pa.Table], compact_every: int
) -> tuple[dict[str, Any], pa.Table]:
    cat = fl.connect(catalog=f"sqlite:///{root / 'catalog.db'}", warehouse=(root / "wh").as_uri())
    table = cat.create_table("ods.orders", ORDERS_SCHEMA, primary_key=["order_id"], buckets=8)
    t0 = time.perf_counter()
    table.upsert(initial)
    load_s = time.perf_counter() - t0
    times, changes, compact_times = [], 0, []
    for i, batch in enumerate(batches):
        t = time.perf_counter()
        commit = table.apply(batch)
        times.append(time.perf_counter() - t)
        counts = commit.summary["rows"]
        changes += counts["+I"] + counts["+U"] + counts["-D"]
        if compact_every and (i + 1) % compact_every == 0:
            t = time.perf_counter()
            table.compact()
            compact_times.append(time.perf_counter() - t)
    figures = {"load_s": round(load_s, 2), **summarize(times, changes), "changes": changes}
    files, size = disk_usage(root / "wh")
    figures |= {"files": files, "bytes": size}
    merged, figures["read_uncompacted_s"], figures["read_uncompacted_cpu_s"] = timed_read(
        lambda: fresh_table(cat).read()
    )
    t = time.perf_counter()
    table.compact()
    figures["compact_s"] = round(time.perf_counter() - t, 2)
    compacted, figures["read_compacted_s"], figures["read_compacted_cpu_s"] = timed_read(
        lambda: fresh_table(cat).read()
    )
    if compact_times:
        figures["mean_compact_s"] = round(statistics.mean(compact_times), 2)
    plain = root / "plain.parquet"
    pq.write_table(compacted, plain, compression="zstd", compression_level=1)
    _, figures["plain_parquet_scan_s"], figures["plain_parquet_scan_cpu_s"] = timed_read(
        lambda: pq.read_table(plain)
    )
    plain_s = figures["plain_parquet_scan_s"]
    figures["uncompacted_over_plain"] = round(figures["read_uncompacted_s"] / plain_s, 2)
    figures["compacted_over_plain"] = round(figures["read_compacted_s"] / plain_s, 2)
    assert merged.num_rows == compacted.num_rows
    return figures, compacted


def timed_read(read: Callable[[], pa.Table], runs: int = READ_RUNS) -> tuple[pa.Table, float, float]:
    """The result of ``read``, its median wall time and median CPU time (all threads) over ``runs``
    runs: on a shared machine the wall time follows the scheduler, the CPU time the work."""
    times, cpu, result = [], [], None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        result = read()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    assert result is not None
    return result, round(statistics.median(times), 3), round(statistics.median(cpu), 3)


def fresh_table(cat: fl.Catalog) -> fl.LakeTable:
    """A reader that shares nothing with the writer (no warm caches)."""
    return cat.load_table("ods.orders")


def run_delta(root: Path, initial: pa.Table, batches: list[pa.Table]) -> tuple[dict[str, Any], pa.Table]:
    from deltalake import DeltaTable, write_deltalake

    path = str(root / "delta")
    t0 = time.perf_counter()
    write_deltalake(path, initial)
    load_s = time.perf_counter() - t0
    dt = DeltaTable(path)
    columns = ORDERS_SCHEMA.names
    times, changes = [], 0
    for batch in batches:
        ops = pc.if_else(pc.equal(batch[KIND_COLUMN], int(RowKind.DELETE)), "d", "u")
        source = batch.drop_columns([KIND_COLUMN]).append_column("_op", ops)
        t = time.perf_counter()
        (
            dt.merge(source=source, predicate="t.order_id = s.order_id", source_alias="s", target_alias="t")
            .when_matched_delete(predicate="s._op = 'd'")
            .when_matched_update(updates={c: f"s.{c}" for c in columns}, predicate="s._op != 'd'")
            .when_not_matched_insert(updates={c: f"s.{c}" for c in columns}, predicate="s._op != 'd'")
            .execute()
        )
        times.append(time.perf_counter() - t)
        changes += batch.num_rows
    figures = {"load_s": round(load_s, 2), **summarize(times, changes), "changes": changes}
    files, size = disk_usage(root / "delta")
    figures |= {"files": files, "bytes": size}
    snapshot, figures["read_s"], figures["read_cpu_s"] = timed_read(
        lambda: DeltaTable(path).to_pyarrow_table()
    )
    return figures, snapshot


def main() -> None:
    """Run the engines, print a table, check the results match, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--compact-every", type=int, default=0)
    parser.add_argument("--engines", default="flowlake,delta")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    initial, batches = workload(args.rows, args.batches, args.batch_size, args.seed)
    root = Path(tempfile.mkdtemp(prefix="flowlake-vs-delta-"))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_at_start": round(os.getloadavg()[0], 1),
        "rows": args.rows, "batches": args.batches, "batch_size": args.batch_size,
        "compact_every": args.compact_every,
    }  # fmt: skip
    finals: dict[str, pa.Table] = {}
    engines = args.engines.split(",")
    if "flowlake" in engines:
        results["flowlake"], finals["flowlake"] = run_flowlake(root, initial, batches, args.compact_every)
    if "delta" in engines:
        results["delta"], finals["delta"] = run_delta(root, initial, batches)
    if len(finals) == 2:
        a, b = (t.select(ORDERS_SCHEMA.names).sort_by("order_id") for t in finals.values())
        results["tables_match"] = a.cast(ORDERS_SCHEMA).equals(b.cast(ORDERS_SCHEMA))
        results["speedup"] = round(
            results["flowlake"]["changes_per_s"] / results["delta"]["changes_per_s"], 1
        )
        assert results["tables_match"], "flowlake and delta-rs disagree on the final table"
    shutil.rmtree(root, ignore_errors=True)
    for key, value in results.items():
        if isinstance(value, dict):
            for k, v in value.items():
                print(f"{key:<9} {k:<24} {v}")
        else:
            print(f"{key:<34} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
