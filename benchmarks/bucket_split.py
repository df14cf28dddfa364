"""Bucket splits under continuous writes: how soon a bucket that outgrew its target is split, and what
the splits cost the writers.

    python benchmarks/bucket_split.py [--seconds 20] [--writers 4] [--rate 40] [--json out.json]

``--writers`` processes commit a random 1-400 keys (out of 200k; one commit in ten deletes) at
``--rate`` commits/s in all, on a table created with ``buckets=2`` and ``bucket_target_rows=500``,
while another process calls ``compact()`` every 0.3 s. The same run is repeated with a target no
bucket reaches (compaction without splits), on 2 buckets and on as many buckets as the split run
ended with (a commit writes one log file per bucket it touches, so the bucket count alone costs the
writers). Figures:

* bucket over target → split landed: from the commit after which a bucket's files hold more rows
  than the target to the commit that split it (p50, max); it includes waiting for the next
  ``compact()`` call (every 0.3 s);
* split duration: the ``compact()`` calls that split, from call to commit;
* writers' commit latency (p50, p99): all commits, the commits that overlapped a split and those
  that did not, against the runs without splits.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from _report import report

import flowlake as fl

SCHEMA = pa.schema([("k", pa.int64()), ("writer", pa.int64()), ("seq", pa.int64()), ("pad", pa.string())])
KEYS = 200_000
TARGET = 500


def ready_then_wait(go: str) -> tuple[float, float]:
    """Say this process is warm, wait for the go file; return its ``(start, stop)``."""
    Path(f"{go}.{os.getpid()}.ready").touch()
    while not Path(go).exists():
        time.sleep(0.005)
    start, stop = map(float, Path(go).read_text().split())
    while time.time() < start:
        time.sleep(0.005)
    return start, stop


def writer_loop(catalog: str, warehouse: str, w: int, rate: float, go: str) -> list[Any]:
    """Commit at ``rate`` per second until the stop time; return ``(began, ended)`` of each commit."""
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench").load_table("bench.split")
    t.read()
    rng = random.Random(w)
    out = []
    i = 0
    start, stop = ready_then_wait(go)
    while (now := time.time()) < stop:
        due = start + i / rate
        if due > now:
            time.sleep(due - now)
        keys = rng.sample(range(KEYS), rng.randint(1, 400))
        began = time.time()
        if rng.random() < 0.1:
            t.delete(pa.table({"k": keys}), token=f"w{w}-{i}")
        else:
            n = len(keys)
            t.upsert(pa.table({"k": keys, "writer": [w] * n, "seq": [i] * n, "pad": ["x" * 16] * n}, SCHEMA))
        out.append((began, time.time()))
        i += 1
    return out


def compactor_loop(catalog: str, warehouse: str, go: str) -> list[Any]:
    """Call ``compact()`` every 0.3 s until the stop time; return ``(began, ended, version, summary)``."""
    t = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench").load_table("bench.split")
    t.read()
    out: list[Any] = []
    _, stop = ready_then_wait(go)
    while time.time() < stop:
        began = time.time()
        try:
            c = t.compact()
        except fl.CommitConflictError as exc:
            out.append((began, time.time(), None, {"error": str(exc)}))
            continue
        out.append((began, time.time(), c.version if c else None, dict(c.summary) if c else {}))
        time.sleep(max(0.0, 0.3 - (time.time() - began)))
    return out


def run(seconds: float, writers: int, rate: float, target: int, buckets: int = 2) -> dict[str, Any]:
    """One run on a table of ``buckets`` buckets; the raw commit times, compactions and the table's
    files and commits."""
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-bench-"))
    catalog, warehouse = f"sqlite:///{tmp / 'catalog.db'}", (tmp / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse, principal="bench")
    t = cat.create_table(
        "bench.split",
        SCHEMA,
        primary_key=["k"],
        buckets=buckets,
        properties={"bucket_target_rows": str(target)},
    )
    go = tmp / "go"
    with mp.get_context("spawn").Pool(writers + 1) as pool:
        compactor = pool.apply_async(compactor_loop, (catalog, warehouse, str(go)))
        done_async = pool.starmap_async(
            writer_loop, [(catalog, warehouse, w, rate / writers, str(go)) for w in range(writers)]
        )
        while len(list(tmp.glob("go.*.ready"))) < writers + 1:  # every process warm, however loaded
            time.sleep(0.05)
        start = time.time() + 0.2
        (tmp / "go.tmp").write_text(f"{start} {start + seconds}")
        (tmp / "go.tmp").rename(go)
        done = done_async.get()
        compactions = compactor.get()
    t.refresh()
    files = t._store.live_files(t._record.id, t.version) + t._store.retired_files(t._record.id, t.version)
    return {
        "commits": [c for per_writer in done for c in per_writer], "compactions": compactions,
        "history": t.history(), "files": files, "seconds": seconds, "buckets": len(t.bucket_map.buckets),
    }  # fmt: skip


def over_target_to_split(result: dict[str, Any]) -> list[float]:
    """For each bucket a split rewrote: seconds from its files passing the target to the split."""
    when = {c.version: c.committed_at.timestamp() for c in result["history"]}
    delays = []
    for c in result["history"]:
        for bucket in c.summary.get("buckets_rewritten", []):
            rows: dict[int, int] = {}
            for f in result["files"]:
                if f.bucket == bucket:
                    rows[f.added_version] = rows.get(f.added_version, 0) + f.row_count
                    if f.removed_version is not None and f.removed_version < c.version:
                        rows[f.removed_version] = rows.get(f.removed_version, 0) - f.row_count
            total = 0
            for version in sorted(rows):
                total += rows[version]
                if total > TARGET:
                    delays.append(when[c.version] - when[version])
                    break
    return delays


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    """Run with and without splits, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=40.0, help="commits per second, all writers")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at start",
        "workload": f"{args.writers} writer processes, {args.rate:g} commits/s of 1-400 keys, "
        "compact() every 0.3 s",
    }
    runs = [("splits", TARGET), ("no_splits", 10**9), ("no_splits_as_many_buckets", 10**9)]
    end_buckets = 2
    for label, target in runs:
        # the third run starts with as many buckets as the split run ended with: a commit of 1-400
        # random keys writes one log file per bucket it touches, so the bucket count alone costs the
        # writers, splits or not
        buckets = end_buckets if label == "no_splits_as_many_buckets" else 2
        result = run(args.seconds, args.writers, args.rate, target, buckets)
        if label == "splits":
            end_buckets = result["buckets"]
        else:
            figures[f"{label}: buckets"] = buckets
        latency = [(e - b) * 1000 for b, e in result["commits"]]
        compactions = result["compactions"]
        splitting = [(b, e) for b, e, v, s in compactions if s.get("buckets_rewritten")]
        figures[f"{label}: commits/s achieved"] = round(len(latency) / result["seconds"], 1)
        figures[f"{label}: commit ms p50 / p99"] = (
            f"{percentile(latency, 50):.0f} / {percentile(latency, 99):.0f}"
        )
        figures[f"{label}: compact() calls / landed / failed"] = (
            f"{len(compactions)} / {sum(1 for c in compactions if c[2])} / "
            f"{sum(1 for c in compactions if 'error' in c[3])}"
        )
        if target != TARGET:
            continue
        during = [
            (e - b) * 1000 for b, e in result["commits"] if any(b < se and e > sb for sb, se in splitting)
        ]
        delays = over_target_to_split(result)
        summaries = [s for *_, s in compactions if s.get("buckets_rewritten")]
        figures["splits: commits landed / buckets at the end"] = f"{len(splitting)} / {result['buckets']}"
        figures["splits: catch-up rounds (per split) / fenced"] = (
            f"{sorted(s['catchup_rounds'] for s in summaries)} / {sum(s['fenced'] for s in summaries)}"
        )
        figures["splits: over target -> split landed s p50 / max"] = (
            f"{percentile(delays, 50):.2f} / {max(delays, default=float('nan')):.2f}"
        )
        durations = [e - b for b, e in splitting]
        figures["splits: compact() that split s p50 / max"] = (
            f"{percentile(durations, 50):.2f} / {max(durations, default=float('nan')):.2f}"
        )
        figures["splits: commit ms during splits p50 / p99"] = (
            f"{percentile(during, 50):.0f} / {percentile(during, 99):.0f} ({len(during)} commits)"
        )
        outside = [
            (e - b) * 1000 for b, e in result["commits"] if not any(b < se and e > sb for sb, se in splitting)
        ]
        figures["splits: commit ms outside splits p50 / p99"] = (
            f"{percentile(outside, 50):.0f} / {percentile(outside, 99):.0f} ({len(outside)} commits)"
        )
    figures["load average at the end"] = round(os.getloadavg()[0], 1)
    report(figures, args.json)


if __name__ == "__main__":
    main()
