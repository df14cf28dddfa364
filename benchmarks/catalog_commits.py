"""Catalog commit throughput (1 and 8 writer processes; SQLite and PostgreSQL) and the cost of the
row-level conflict check as the number of intervening commits grows.

    python benchmarks/catalog_commits.py [--commits 200] [--postgres postgresql://root@127.0.0.1:5432/test]
        [--json out.json]

Each commit upserts 10 rows of disjoint keys, so the figures are the catalog's per-commit overhead
(inflight record, Parquet log file, one compare-and-set transaction) rather than data volume.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
from _report import report

import flowlake as fl
from flowlake.table.writer import plan_write

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64())])


def batch(writer: int, i: int) -> pa.Table:
    keys = [writer * 10_000_000 + i * 10 + j for j in range(10)]
    return pa.table({"k": keys, "v": [i] * 10}, schema=SCHEMA)


def writer_loop(catalog: str, warehouse: str, writer: int, commits: int, start: float) -> float:
    cat = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench")
    t = cat.load_table("bench.commits")
    t.upsert(batch(writer, -1))  # warm the writer's state outside the timing
    while time.time() < start:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in range(commits):
        t.upsert(batch(writer, i))
    return time.perf_counter() - t0


def commits_per_second(catalog: str, writers: int, commits: int) -> float:
    warehouse = Path(tempfile.mkdtemp(prefix="flowlake-bench-")).as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench")
    cat.create_table("bench.commits", SCHEMA, primary_key=["k"], buckets=4)
    start = time.time() + 2.0
    with mp.get_context("spawn").Pool(writers) as pool:
        args = [(catalog, warehouse, w, commits, start) for w in range(writers)]
        durations = pool.starmap(writer_loop, args)
    return writers * commits / max(durations)


def conflict_check_ms(catalog: str, intervening: int, repeats: int = 5) -> float:
    """Median time of a commit that must check ``intervening`` commits made since it read."""
    warehouse = Path(tempfile.mkdtemp(prefix="flowlake-bench-")).as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench")
    name = f"bench.conflict_{uuid.uuid4().hex[:8]}"
    other = cat.create_table(name, SCHEMA, primary_key=["k"], buckets=4)
    stale = cat.load_table(name)
    times = []
    for r in range(repeats):
        record = stale.refresh()._record
        state = stale._current_state(record)
        plan = plan_write(state, batch(1, r), np.zeros(10, dtype=bool))
        for i in range(intervening):
            other.upsert(batch(2, r * 100_000 + i))
        t0 = time.perf_counter()
        stale._commit_plan(record, plan, None, None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    """Run, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=200, help="commits per writer")
    parser.add_argument("--postgres", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    backends = {"sqlite": lambda: f"sqlite:///{tempfile.mkdtemp(prefix='flowlake-bench-')}/catalog.db"}
    if args.postgres:
        import psycopg

        def pg() -> str:
            schema = f"flb_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"create schema {schema}")
            return f"{args.postgres}?options=-csearch_path%3D{schema}"

        backends["postgres"] = pg
    figures: dict[str, object] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    for backend, make_url in backends.items():
        for writers in (1, 8):
            rate = commits_per_second(make_url(), writers, args.commits // (1 if writers == 1 else 4))
            figures[f"{backend}_commits_per_s_{writers}_writers"] = round(rate, 1)
        for n in (0, 10, 100, 500):
            figures[f"{backend}_commit_ms_after_{n}_intervening"] = round(conflict_check_ms(make_url(), n), 2)
    report(figures, args.json)


if __name__ == "__main__":
    main()
