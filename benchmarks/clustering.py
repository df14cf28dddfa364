"""Selective queries through ``flowlake sql`` on clustered tables, beside DuckDB on plain Parquet.

One orders snapshot of ``--rows`` rows (default 1M; the README's figures use 10M) is loaded into
three tables, each compacted: without clustering (base files sorted by key), with
``sort_by=created_at``, and with ``cluster_by=shop_id,created_at`` (Z-order). The same rows are
written as one plain Parquet file (pyarrow's defaults: statistics on), and once more sorted by
``created_at`` (what a clustered layout costs DuckDB, as a second peer). Each query runs through the
``flowlake sql`` path (:func:`flowlake.sql.sandbox.run_query`: grants, snapshot resolution, the
sandboxed DuckDB over ``t.dataset()``) and through DuckDB's ``read_parquet`` on the plain file; the
median of ``--runs`` runs is reported, and every engine's answer is checked to be the same.

Queries (``created_at`` spans one hour, uniformly, independent of the key):

* ``range_agg``: count and sum over a 1% ``created_at`` range;
* ``range_rows``: the rows of that range (every column);
* ``shop_range``: one shop (of 500) within a 10% ``created_at`` range (0.02% of rows; the Z-order's case).

    python benchmarks/clustering.py [--rows 1000000] [--runs 5] [--json out.json]

Targets (issue 17): a selective filter on a 10M-row table through ``flowlake sql`` <= 2x DuckDB on
the same rows as plain Parquet, and >= 5x faster than the same table without clustering.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from _report import report

import flowlake as fl
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload
from flowlake.sql.sandbox import run_query

LAYOUTS: dict[str, dict[str, str]] = {
    "unclustered": {},
    "sort_by": {"sort_by": "created_at"},
    "cluster_by": {"cluster_by": "shop_id,created_at"},
}
_START = "TIMESTAMPTZ '2026-11-01 00:30:00+00'"
QUERIES: dict[str, str] = {
    "range_agg": (
        "select count(*) as n, sum(amount) as total from {t} "
        f"where created_at >= {_START} and created_at < {_START} + interval 36 second"
    ),
    "range_rows": (
        f"select * from {{t}} where created_at >= {_START} and created_at < {_START} + interval 36 second "
        "order by order_id"
    ),
    "shop_range": (
        "select count(*) as n, sum(amount) as total from {t} "
        f"where shop_id = 7 and created_at >= {_START} and created_at < {_START} + interval 6 minute"
    ),
}


def timed(func: Callable[[], pa.Table], runs: int) -> tuple[pa.Table, float]:
    """The result of ``func`` and its median time in seconds over ``runs`` runs."""
    times, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t)
    assert result is not None
    return result, statistics.median(times)


def plain_query(con: duckdb.DuckDBPyConnection, sql: str, plain: Path) -> pa.Table:
    """``sql`` run by DuckDB over the plain Parquet file."""
    return con.sql(sql.format(t=f"'{plain}'")).to_arrow_table()


def lake_query(cat: fl.Catalog, sql: str) -> pa.Table:
    """``sql`` run the way ``flowlake sql`` runs it."""
    return run_query(cat, sql).table


def run(args: argparse.Namespace) -> dict[str, object]:
    """Load the layouts and the plain file, run every query on each; return the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-clustering-"))
    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_start": round(os.getloadavg()[0], 1),
        "rows": args.rows,
    }
    try:
        cat = fl.connect(catalog=f"sqlite:///{tmp / 'catalog.db'}", warehouse=(tmp / "wh").as_uri())
        chunks = [
            OrdersWorkload(seed=args.seed + i).initial(min(1_000_000, args.rows - start))
            for i, start in enumerate(range(0, args.rows, 1_000_000))
        ]
        # distinct keys across chunks: each chunk's generator starts at 0, so shift the ids
        offset = 0
        for i, chunk in enumerate(chunks):
            ids = pa.array(range(offset, offset + chunk.num_rows), pa.int64())
            chunks[i] = chunk.set_column(0, ORDERS_SCHEMA.field("order_id"), ids)
            offset += chunk.num_rows
        plain, plain_sorted = tmp / "plain.parquet", tmp / "plain_sorted.parquet"
        everything = pa.concat_tables(chunks)
        pq.write_table(everything, plain, compression="zstd")
        pq.write_table(everything.sort_by("created_at"), plain_sorted, compression="zstd")
        del everything
        for name, props in LAYOUTS.items():
            table = cat.create_table(
                f"ods.{name}", ORDERS_SCHEMA, primary_key=["order_id"], buckets=args.buckets, properties=props
            )
            t = time.perf_counter()
            for chunk in chunks:
                table.upsert(chunk)
            figures[f"load_s.{name}"] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            table.compact()
            figures[f"compact_s.{name}"] = round(time.perf_counter() - t, 1)
        con = duckdb.connect()
        for query, sql in QUERIES.items():
            baseline, plain_s = timed(partial(plain_query, con, sql, plain), args.runs)
            figures[f"{query}.rows_matched"] = int(
                baseline.num_rows if query == "range_rows" else baseline["n"][0].as_py()
            )
            figures[f"{query}.duckdb_plain_ms"] = round(plain_s * 1000, 1)
            _, sorted_s = timed(partial(plain_query, con, sql, plain_sorted), args.runs)
            figures[f"{query}.duckdb_plain_sorted_ms"] = round(sorted_s * 1000, 1)
            times: dict[str, float] = {}
            for name in LAYOUTS:
                got, times[name] = timed(partial(lake_query, cat, sql.format(t=f"ods.{name}")), args.runs)
                assert got.equals(baseline.cast(got.schema)), (
                    f"{query} on {name} differs from DuckDB on plain Parquet"
                )
                figures[f"{query}.{name}_ms"] = round(times[name] * 1000, 1)
            for name in ("sort_by", "cluster_by"):
                figures[f"{query}.{name}_over_duckdb"] = round(times[name] / plain_s, 2)
                figures[f"{query}.{name}_speedup_vs_unclustered"] = round(
                    times["unclustered"] / times[name], 1
                )
        figures["load_avg_end"] = round(os.getloadavg()[0], 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def main() -> None:
    """Parse arguments, run, print and optionally save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    report(run(args), args.json)


if __name__ == "__main__":
    main()
