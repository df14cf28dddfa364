"""An aggregate or Top-N state larger than its memory bound: what the bound saves in memory and costs
in time.

A count/sum by an integer key takes ``--groups`` new groups (in batches of ``--batch``), then
``--updates`` batches of changes to keys drawn uniformly from all of them (so a bounded state finds
most of them on disk), with a chunked snapshot after every batch (bytewax's epoch). It runs twice, each
in a fresh process: bounded to ``--state-mb`` MiB (``FLOWLAKE_AGG_STATE_MB``) and unbounded (the
baseline: every group in memory). With ``--state topn`` the state is a Top-3 by amount (rank column)
over ``--groups``/4 partitions of 4 rows each (``FLOWLAKE_TOPN_STATE_MB``), the updates new rows of
partitions drawn uniformly. The figures are each run's peak RSS (and its anonymous part: the
file-backed rest is mapped chunk pages the kernel may drop; the anonymous peak is sampled every 50 ms),
groups in memory, and the time of the
load and the update phase. Run:

    python benchmarks/aggregate_spill.py [--groups 4000000] [--updates 100] [--json out.json]
    python benchmarks/aggregate_spill.py --state topn [--groups 4000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from _measure import proc_status_kb
from _report import report

SCHEMA = pa.schema([("g", pa.int64()), ("v", pa.int64()), ("_kind", pa.int8())])


def batch(keys: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Inserts of one order per key (amounts 1..999)."""
    n = len(keys)
    return pa.table({"g": keys, "v": rng.integers(1, 1000, n), "_kind": np.zeros(n, np.int8)}, schema=SCHEMA)


class _TopN:
    """The Top-N state behind the aggregate's interface here: ``apply`` returns (changes, None)."""

    def __init__(self, root: Path, state_mb: float) -> None:
        from flowlake.flow._topn import SortKey, TopNState, topn_cache_bytes

        self.state = TopNState(["g"], [SortKey("v", descending=True)], 3, "rn")
        self.state.keep_chunks(root, 0)
        self.state.keep_in_memory(topn_cache_bytes(state_mb))

    def apply(self, data: pa.Table) -> tuple[pa.Table, None]:
        return self.state.apply(data), None

    def __deepcopy__(self, memo: dict[int, Any]) -> object:
        return copy.deepcopy(self.state, memo)  # (bytewax's snapshot)

    @property
    def groups(self) -> int:
        """Kept rows in memory."""
        return self.state._held()


def child(state_mb: float, groups: int, size: int, updates: int, kind: str) -> dict[str, Any]:
    """One run in this process (see the module)."""
    from flowlake.flow import aggs
    from flowlake.flow._aggstate import AggregateState, state_cache_bytes
    from flowlake.runtime.allocators import configure_worker_allocators

    configure_worker_allocators()
    root = Path(tempfile.mkdtemp(prefix="flowlake-agg-spill-"))
    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:  # (VmHWM counts mapped chunk pages too: the kernel may drop those)
        while not done.wait(0.05):
            peak_anon[0] = max(peak_anon[0], proc_status_kb("RssAnon") or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        spread = 4 if kind == "topn" else 1  # (rows per key)
        state: AggregateState | _TopN
        if kind == "topn":
            state = _TopN(root, state_mb)
        else:
            state = AggregateState(["g"], {"n": aggs.count(), "gmv": aggs.sum("v")}, None)
            state.keep_chunks(root, 0)
            state.keep_in_memory(state_cache_bytes(state_mb))
        rng = np.random.default_rng(7)
        started = time.perf_counter()
        for start in range(0, groups, size):
            state.apply(batch(np.arange(start, min(start + size, groups), dtype=np.int64) // spread, rng))
            copy.deepcopy(state)
        load_s = time.perf_counter() - started
        snapshot_s, out_rows = 0.0, 0
        started = time.perf_counter()
        for _ in range(updates):
            out, _ = state.apply(batch(rng.integers(0, groups // spread, size), rng))
            out_rows += out.num_rows
            before = time.perf_counter()
            copy.deepcopy(state)
            snapshot_s += time.perf_counter() - before
        update_s = time.perf_counter() - started
        return {
            "load_s": round(load_s, 1), "update_s": round(update_s, 2),
            "update_changes_per_s": round(updates * size / update_s),
            "snapshot_ms_per_batch": round(snapshot_s / max(updates, 1) * 1000, 1),
            "groups_in_memory": state.groups, "out_rows": out_rows,
            "peak_rss_mb": round((proc_status_kb("VmHWM") or 0) / 1024),
            "peak_anon_mb": round(peak_anon[0] / 1024),
            "rss_anon_mb": round((proc_status_kb("RssAnon") or 0) / 1024),
            "chunk_mb": round(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20),
        }  # fmt: skip
    finally:
        done.set()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    """Parse flags, run bounded and unbounded in fresh processes, print, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=4_000_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--state-mb", type=float, default=32.0)
    parser.add_argument("--state", choices=["aggregate", "topn"], default="aggregate")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.groups, args.batch, args.updates, args.state)))
        return
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "groups": args.groups,
        "batch": args.batch, "update_batches": args.updates, "state_mb": args.state_mb, "state": args.state,
    }  # fmt: skip
    for name, mb in (("bounded", args.state_mb), ("unbounded", 0.0)):
        command = [sys.executable, __file__, "--child", str(mb), "--groups", str(args.groups), "--batch",
                   str(args.batch), "--updates", str(args.updates), "--state", args.state]  # fmt: skip
        ran = subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603 - this script
        result = json.loads(ran.stdout)
        for key, value in result.items():
            figures[f"{name}_{key}"] = value
    figures["anon_ratio"] = round(figures["bounded_peak_anon_mb"] / figures["unbounded_peak_anon_mb"], 2)
    figures["update_time_ratio"] = round(figures["bounded_update_s"] / figures["unbounded_update_s"], 2)
    figures["same_output_rows"] = figures["bounded_out_rows"] == figures["unbounded_out_rows"]
    report(figures, args.json)


if __name__ == "__main__":
    main()
