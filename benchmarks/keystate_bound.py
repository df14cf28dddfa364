"""A writer's bounded key state under a stream of new keys: what crossing the bound costs a write.

A writer's key state of a large table holds at most ``FLOWLAKE_KEY_STATE_MB`` of rows (256 MiB: about
2M rows of ``dwd.orders_enriched``); each write that takes it over the bound makes it forget its
oldest rows. The same writes (``--writes`` of ``--rows`` new orders each, after a state filled to half
its bound) go into a bounded state and into an unbounded one (the baseline: no forgetting); the
figures are each one's median, p99 and slowest write and their total time. Run:

    python benchmarks/keystate_bound.py [--writes 300] [--rows 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from flowlake.table.keystate import KeyState, state_budget_rows

sys.path.insert(0, str(Path(__file__).parent))
from _report import report

SCHEMA = pa.schema([
    ("order_id", pa.int64()), ("shop_id", pa.int32()), ("city", pa.string()), ("category", pa.string()),
    ("user_id", pa.int64()), ("status", pa.string()), ("amount", pa.decimal128(12, 2)),
    ("created_at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
"""The columns of ``dwd.orders_enriched``."""
WORDS = np.array([f"w{i}" for i in range(30)])


def orders(rng: np.random.Generator, start: int, n: int) -> pa.Table:
    """``n`` orders with ids from ``start``."""
    cents = pa.array(rng.integers(100, 100_000, n), pa.int64()).cast(pa.decimal128(19, 0))
    return pa.table(
        {
            "order_id": pa.array(np.arange(start, start + n), pa.int64()),
            "shop_id": pa.array(rng.integers(0, 1000, n), pa.int32()),
            "city": pa.array(WORDS[rng.integers(0, 30, n)]),
            "category": pa.array(WORDS[rng.integers(0, 30, n)]),
            "user_id": pa.array(rng.integers(0, 10**6, n), pa.int64()),
            "status": pa.array(WORDS[rng.integers(0, 5, n)]),
            "amount": cents.cast(pa.decimal128(12, 2), safe=False),
            "created_at": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us", tz="UTC")),
        },
        schema=SCHEMA,
    )


def run(bound: int | None, first: int, writes: int, rows: int) -> dict[str, float]:
    """Write times (ms) of ``writes`` writes of ``rows`` new keys into a state of ``first`` rows."""
    rng = np.random.default_rng(1)
    state = KeyState(orders(rng, 0, first), ["order_id"], 0, max_rows=bound)
    times = []
    for i in range(writes):
        batch = orders(rng, first + i * rows, rows)
        started = time.perf_counter()
        state.apply(batch, state.keys_of(batch), [], 1)
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {
        "median_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1), "total_s": round(float(ms.sum()) / 1000, 2),
        "live_rows": len(state),
    }  # fmt: skip


def main() -> None:
    """Parse flags, run bounded and unbounded, print, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    bound = state_budget_rows(SCHEMA, 256)
    assert bound is not None
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "bound_rows": bound,
        "writes": args.writes, "rows_per_write": args.rows,
    }  # fmt: skip
    for name, limit in (("bounded", bound), ("unbounded", None)):
        for key, value in run(limit, bound // 2, args.writes, args.rows).items():
            figures[f"{name}_{key}"] = value
    figures["max_ratio"] = round(figures["bounded_max_ms"] / figures["unbounded_max_ms"], 2)
    report(figures, args.json)


if __name__ == "__main__":
    main()
