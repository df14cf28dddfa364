"""Incremental dedup (latest row per key) against recomputing it: ``DedupState`` folds ``--batches``
batches of ``--batch`` rows over ``--keys`` keys (a changelog of upserts: new rows for drawn keys),
each timed; the baseline in the same run is DuckDB computing the latest row per key over all rows
once (``row_number() over (partition by id order by seq desc) = 1``). The state's rows after the
batches are checked against DuckDB's result. Run:

    python benchmarks/dedup.py [--keys 200000] [--batch 10000] [--batches 50] [--json out.json]
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

from flowlake.flow._relational import DedupState

SCHEMA = pa.schema(
    [("id", pa.int64()), ("status", pa.string()), ("amount", pa.int64()), ("_kind", pa.int8())]
)


def main() -> None:
    """Parse flags, run, print, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import duckdb

    rng = np.random.default_rng(1)
    statuses = np.array(["new", "paid", "sent"])
    batches = [
        pa.table(
            {
                "id": rng.integers(0, args.keys, args.batch),
                "status": statuses[rng.integers(0, 3, args.batch)],
                "amount": rng.integers(0, 1000, args.batch),
                "_kind": np.zeros(args.batch, np.int8),
            },
            schema=SCHEMA,
        )
        for _ in range(args.batches)
    ]
    state = DedupState("last")
    times = []
    for batch in batches:
        started = time.perf_counter()
        state.apply(batch, ["id"])
        times.append(time.perf_counter() - started)
    every = pa.concat_tables(batches).drop_columns(["_kind"])
    every = every.append_column("seq", pa.array(np.arange(every.num_rows)))
    con = duckdb.connect()
    con.register("t", every)
    started = time.perf_counter()
    latest = con.sql(
        "select id, status, amount from t qualify row_number() over (partition by id order by seq desc) = 1"
    ).fetchall()
    recompute_s = time.perf_counter() - started
    held = {key[0]: row for key, row in state.rows.items()}
    median = float(np.median(times))
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "keys": args.keys, "batch_rows": args.batch, "batches": args.batches,
        "batch_ms_median": round(median * 1000, 1), "rows_per_s": round(args.batch / median),
        "duckdb_recompute_ms": round(recompute_s * 1000, 1),
        "recompute_over_batch": round(recompute_s / median, 1),
        "same_rows_as_duckdb": held == {r[0]: r for r in latest},
    }  # fmt: skip
    report(figures, args.json)


if __name__ == "__main__":
    main()
