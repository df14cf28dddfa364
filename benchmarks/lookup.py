"""Point lookups (``LakeTable.get``) on a large primary-key table, beside DuckDB on plain Parquet.

An orders table of ``--rows`` rows (default 10M) is loaded and compacted (base files sorted by key),
then ``--changes`` random updates are committed on top as log files, so lookups merge base and log
rows as a real table's do. Measured warm (after one lookup has built the key indexes):

* one random key: median and p99 of ``--single`` lookups;
* ``--batch`` random keys at once: median of ``--repeats`` lookups;
* the same two through DuckDB over the same rows written as one plain Parquet file
  (``WHERE order_id IN (...)``), the bare baseline;
* the first (cold) lookup, which builds the key indexes and the local row store (memory-mapped
  Arrow copies of the files, in the run's temporary directory), and the sizes of both.

``--no-row-store`` measures lookups that decode Parquet row groups instead (the row store off).

    python benchmarks/lookup.py [--rows 10000000] [--single 300] [--batch 10000] [--no-row-store]
        [--json out.json]

Targets (issue 17): one key <= 5 ms median, 10k random keys <= 100 ms, on a 10M-row table, warm.
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

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _report import report

import flowlake as fl
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload
from flowlake.table.lookup import CACHE
from flowlake.table.rowstore import RowStore


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _time_lookups(
    table: fl.LakeTable, keys: np.ndarray, rng: np.random.Generator, args: argparse.Namespace
) -> tuple[list[float], float, list[float], float]:
    """Wall times of one-key and batch lookups, and the CPU time of each kind on average."""
    single: list[float] = []
    cpu = time.process_time()
    for k in keys.tolist():
        t = time.perf_counter()
        got = table.get([k])
        single.append(time.perf_counter() - t)
        assert got.num_rows == 1
    single_cpu = (time.process_time() - cpu) / len(single)
    batches: list[float] = []
    cpu = time.process_time()
    for _ in range(args.repeats):
        batch = rng.integers(0, args.rows, size=args.batch).tolist()
        t = time.perf_counter()
        got = table.get(batch)
        batches.append(time.perf_counter() - t)
        assert got.num_rows == len(batch)
    return single, single_cpu, batches, (time.process_time() - cpu) / len(batches)


def run(args: argparse.Namespace) -> dict[str, object]:
    """Load, compact, update, then time lookups; return the figures."""
    rng = np.random.default_rng(args.seed)
    workload = OrdersWorkload(seed=args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-lookup-"))
    CACHE.store = RowStore(tmp / "rows", max_bytes=0 if args.no_row_store else None)
    try:
        cat = fl.connect(catalog=f"sqlite:///{tmp / 'catalog.db'}", warehouse=(tmp / "wh").as_uri())
        table = cat.create_table("ods.orders", ORDERS_SCHEMA, primary_key=["order_id"], buckets=args.buckets)
        t0 = time.perf_counter()
        for start in range(0, args.rows, 1_000_000):
            table.upsert(workload.initial(min(1_000_000, args.rows - start)))
        table.compact()
        for _ in range(args.commits):
            table.apply(workload.changes(args.changes // args.commits, inserts=0.0, updates=1.0))
        load_s = time.perf_counter() - t0
        table.refresh()
        rows = table.read(columns=["order_id"]).num_rows
        plain = tmp / "plain.parquet"
        pq.write_table(table.read(), plain, compression="zstd")
        keys = rng.integers(0, args.rows, size=args.single)

        t = time.perf_counter()
        first = table.get([int(keys[0])])
        cold_s = time.perf_counter() - t
        assert first.num_rows == 1, first

        single, single_cpu, batches, batch_cpu = _time_lookups(table, keys, rng, args)

        con = duckdb.connect(config={"threads": 1})
        con.execute(f"create view plain as select * from read_parquet('{plain}')")
        con.sql("select * from plain where order_id = 1").to_arrow_table()  # warm
        duck_single: list[float] = []
        for k in keys[: min(len(keys), 50)].tolist():
            t = time.perf_counter()
            con.sql(f"select * from plain where order_id = {int(k)}").to_arrow_table()
            duck_single.append(time.perf_counter() - t)
        duck_batches: list[float] = []
        for _ in range(args.repeats):
            batch = pa.table({"order_id": rng.integers(0, args.rows, size=args.batch)})
            con.register("wanted", batch)
            t = time.perf_counter()
            con.sql("select p.* from plain p semi join wanted w using (order_id)").to_arrow_table()
            duck_batches.append(time.perf_counter() - t)
        con.close()
        single_ms = sorted(_ms(s) for s in single)
        return {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
            "rows": rows,
            "log_files_on_top": args.commits,
            "load_compact_update_s": round(load_s, 1),
            "cold_first_lookup_ms": _ms(cold_s),
            "key_index_cache_mb": round(CACHE.nbytes / 2**20, 1),
            "row_store_mb": round(CACHE.store.nbytes() / 2**20, 1),
            "one_key_median_ms": statistics.median(single_ms),
            "one_key_p99_ms": single_ms[min(len(single_ms) - 1, int(len(single_ms) * 0.99))],
            "one_key_cpu_ms": _ms(single_cpu),
            f"{args.batch}_keys_median_ms": _ms(statistics.median(batches)),
            f"{args.batch}_keys_cpu_ms": _ms(batch_cpu),
            "duckdb_parquet_one_key_median_ms": _ms(statistics.median(duck_single)),
            f"duckdb_parquet_{args.batch}_keys_median_ms": _ms(statistics.median(duck_batches)),
            "one_key_vs_duckdb": round(statistics.median(duck_single) / statistics.median(single), 2),
            f"{args.batch}_keys_vs_duckdb": round(
                statistics.median(duck_batches) / statistics.median(batches), 2
            ),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--changes", type=int, default=100_000, help="updates committed after compaction")
    parser.add_argument("--commits", type=int, default=10, help="commits those updates arrive in")
    parser.add_argument("--single", type=int, default=300, help="one-key lookups timed")
    parser.add_argument("--batch", type=int, default=10_000, help="keys per batch lookup")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-row-store", action="store_true", help="decode Parquet row groups instead")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    report(run(args), args.json_path)


if __name__ == "__main__":
    main()
