"""Catalog commit throughput (1 and 8 writer processes; SQLite and PostgreSQL) and the cost of the
row-level conflict check as the number of intervening commits grows; with ``--rest``, commits through
the REST metastore under load instead.

    python benchmarks/catalog_commits.py [--commits 200] [--postgres postgresql://root@127.0.0.1:5432/test]
        [--json out.json]
    python benchmarks/catalog_commits.py --rest [--clients 16] [--rest-commits 40] [--json out.json]

Each commit upserts 10 rows of disjoint keys, so the figures are the catalog's per-commit overhead
(inflight record, Parquet log file, one compare-and-set transaction) rather than data volume.

``--rest`` starts ``flowlake serve`` (a subprocess) over a fresh PostgreSQL schema, then ``--clients``
client processes that start at once: each opens the metastore with a token, creates its own table
(``exist_ok``, in a namespace they all create together) and makes ``--rest-commits`` commits. It
reports commits/s over the whole run, p50/p99 latency of one commit, the errors (any exception
counts), and whether every table holds exactly its rows and versions afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
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


def rest_client(
    url: str, warehouse: str, token: str, client: int, commits: int, start: float
) -> tuple[list[float], list[str]]:
    """One metastore client: create its table, then commit; returns commit latencies (s) and errors."""
    while time.time() < start:  # every client opens and creates at the same moment
        time.sleep(0.001)
    errors: list[str] = []
    try:
        cat = fl.connect(catalog=url, warehouse=warehouse, token=token)
        t = cat.create_table(f"rest.c{client}", SCHEMA, primary_key=["k"], buckets=4, exist_ok=True)
    except Exception as exc:  # every failure counts as an error of the run
        return [], [f"open/create: {type(exc).__name__}: {exc}"]
    latencies = []
    for i in range(commits):
        t0 = time.perf_counter()
        try:
            t.upsert(batch(client, i))
        except Exception as exc:  # every failure counts as an error of the run
            errors.append(f"commit {i}: {type(exc).__name__}: {exc}")
            continue
        latencies.append(time.perf_counter() - t0)
    return latencies, errors


def _fresh_pg_schema(dsn: str) -> str:
    import psycopg

    schema = f"flb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")  # generated name, not user input
    return f"{dsn}?options=-csearch_path%3D{schema}"


def rest_figures(postgres: str, clients: int, commits: int) -> dict[str, object]:
    """Commits through one ``flowlake serve`` over PostgreSQL by ``clients`` processes at once."""
    from flowlake.testing import free_port
    from flowlake.testing.services import wait_for_port

    catalog = _fresh_pg_schema(postgres)
    warehouse = Path(tempfile.mkdtemp(prefix="flowlake-bench-")).as_uri()
    owner = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench")
    token = owner.create_principal("bench_client")
    owner.grant("admin", "*", "bench_client")
    port = free_port()
    exe = Path(sys.executable).with_name("flowlake")
    server = subprocess.Popen([str(exe), "serve", "--catalog", catalog, "--port", str(port)])  # noqa: S603
    try:
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"
        start = time.time() + 3.0 + 0.3 * clients  # time for the client processes to import flowlake
        with mp.get_context("spawn").Pool(clients) as pool:
            args = [(url, warehouse, token, c, commits, start) for c in range(clients)]
            t0 = time.time()
            results = pool.starmap(rest_client, args)
            elapsed = time.time() - max(start, t0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    try:
        return _rest_summary(owner, results, clients, commits, elapsed)
    finally:
        _drop_pg_schema(postgres, catalog)


def _drop_pg_schema(dsn: str, catalog: str) -> None:
    import psycopg

    schema = catalog.rsplit("%3D", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"drop schema {schema} cascade")  # the name _fresh_pg_schema generated


def _rest_summary(
    owner: fl.Catalog,
    results: list[tuple[list[float], list[str]]],
    clients: int,
    commits: int,
    elapsed: float,
) -> dict[str, object]:
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = [e for _, errs in results for e in errs]
    exact = all(
        owner.load_table(f"rest.c{c}").read().num_rows == 10 * commits
        and owner.load_table(f"rest.c{c}").version == commits
        for c in range(clients)
    )
    for e in errors[:5]:
        print("error:", e)
    return {
        "rest_clients": clients,
        "rest_commits_per_client": commits,
        "rest_commits_ok": len(latencies),
        "rest_errors": len(errors),
        "rest_commits_per_s": round(len(latencies) / elapsed, 1),
        "rest_commit_p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "rest_commit_p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "rest_tables_exact": exact,
    }


def main() -> None:
    """Run, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=200, help="commits per writer")
    parser.add_argument("--postgres", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--json", default=None)
    parser.add_argument("--rest", action="store_true", help="only the REST metastore run (PostgreSQL)")
    parser.add_argument("--clients", type=int, default=16, help="--rest: client processes")
    parser.add_argument("--rest-commits", type=int, default=40, help="--rest: commits per client")
    args = parser.parse_args()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    if args.rest:
        rest: dict[str, object] = {"machine": machine}
        rest.update(rest_figures(args.postgres, args.clients, args.rest_commits))
        report(rest, args.json)
        return
    backends: dict[str, Callable[[], str]] = {
        "sqlite": lambda: f"sqlite:///{tempfile.mkdtemp(prefix='flowlake-bench-')}/catalog.db"
    }
    if args.postgres:
        backends["postgres"] = lambda: _fresh_pg_schema(args.postgres)
    figures: dict[str, object] = {"machine": machine}
    for backend, make_url in backends.items():
        for writers in (1, 8):
            rate = commits_per_second(make_url(), writers, args.commits // (1 if writers == 1 else 4))
            figures[f"{backend}_commits_per_s_{writers}_writers"] = round(rate, 1)
        for n in (0, 10, 100, 500):
            figures[f"{backend}_commit_ms_after_{n}_intervening"] = round(conflict_check_ms(make_url(), n), 2)
    report(figures, args.json)


if __name__ == "__main__":
    main()
