"""Incremental Top-N against recomputing it: the cost of one batch into a large Top-N state.

A Top-3 by amount per partition (``TopNState``, rank column) holds ``--partitions`` partitions of 6
rows each (3 kept + a buffer of 3, the rest spilled); then ``--batches`` batches of ``--batch`` new
rows in uniformly drawn partitions are folded, each timed. The baseline, in the same run: DuckDB
recomputing the same Top-3 (``row_number() over (partition by p order by a desc)``) over all the rows
after the batches, which is what a batch engine would do per refresh. The output rows of the batches
are checked against the difference of DuckDB's result before and after them. Run:

    python benchmarks/topn.py [--partitions 300000] [--batch 10000] [--batches 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _report import report

from flowlake.flow._topn import SortKey, TopNState

SCHEMA = pa.schema([("p", pa.int64()), ("a", pa.int64()), ("_kind", pa.int8())])


def inserts(p: np.ndarray, a: np.ndarray) -> pa.Table:
    return pa.table({"p": p, "a": a, "_kind": np.zeros(len(p), np.int8)}, schema=SCHEMA)


def duckdb_top(rows: pa.Table) -> tuple[float, set[tuple[int, int, int]]]:
    """DuckDB's Top-3 of ``rows`` (seconds, and the (p, a, rank) rows)."""
    import duckdb

    con = duckdb.connect()
    con.register("t", rows.drop_columns(["_kind"]))
    started = time.perf_counter()
    top = con.sql(
        "select p, a, rn from (select p, a, row_number() over (partition by p order by a desc) as rn "
        "from t) where rn <= 3"
    ).fetchall()
    return time.perf_counter() - started, set(top)


def main() -> None:
    """Parse flags, run, print, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    state = TopNState(["p"], [SortKey("a", descending=True)], 3, "rn", buffer=3)
    total = args.partitions * 6
    loaded = [inserts(np.arange(total) % args.partitions, rng.permutation(total))]
    started = time.perf_counter()
    state.apply(loaded[0])
    load_s = time.perf_counter() - started
    _, before = duckdb_top(loaded[0])
    batches = [
        inserts(rng.integers(0, args.partitions, args.batch), rng.integers(total, 2 * total, args.batch))
        for _ in range(args.batches)
    ]
    times, out = [], []
    for batch in batches:
        started = time.perf_counter()
        out.append(state.apply(batch))
        times.append(time.perf_counter() - started)
    recompute_s, after = duckdb_top(pa.concat_tables(loaded + batches))
    shown = set(before)
    for change in pa.concat_tables(out).to_pylist():
        row = (change["p"], change["a"], change["rn"])
        if change["_kind"] in (1, 3):
            shown.remove(row)
        else:
            shown.add(row)
    median = float(np.median(times))
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "partitions": args.partitions, "kept_rows": state._held(), "batch_rows": args.batch,
        "load_s": round(load_s, 2), "batch_ms_median": round(median * 1000, 1),
        "batch_ms_max": round(max(times) * 1000, 1), "rows_per_s": round(args.batch / median),
        "duckdb_recompute_ms": round(recompute_s * 1000, 1),
        "recompute_over_batch": round(recompute_s / median, 1), "same_result_as_duckdb": shown == after,
    }  # fmt: skip
    report(figures, args.json)


if __name__ == "__main__":
    main()
