"""Chaos soak: the whole shop pipeline as processes, SIGKILLed at random moments, checked at the end.

Runs :class:`harness.chaos.ChaosRun`: a seeded source writes Debezium JSONL transactions while
the ingester, the three dataflows (bytewax with recovery) and periodic compaction and cleaning
processes run; a seeded killer SIGKILLs a random component every few seconds and restarts it. After
``--kills`` kills the pipeline drains and every layer is checked: ODS equals the source and its whole
changelog holds exactly the source's changes per commit; every table's changelog is well formed per key
and replays into its head; every DWD/DWS table equals its DuckDB batch recompute; no orphan files.

    python benchmarks/chaos.py [--kills 100] [--seed 1] [--workdir DIR] [--json out.json]
        [--tx-per-second 5] [--changes-per-tx 12]

Exit code 1 if a check fails; the seed and the replay command are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

from _report import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness is not installed
from harness.chaos import ChaosConfig, ChaosRun

LAYERS = {
    "ods": ("ods.orders", "ods.shops"),
    "dwd": ("dwd.orders_enriched",),
    "dws": ("dws.shop_gmv_minute", "dws.shop_gmv_minute_late", "dws.city_day"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary folder (kept)")
    parser.add_argument("--tx-per-second", type=float, default=5.0)
    parser.add_argument("--changes-per-tx", type=int, default=12)
    parser.add_argument("--quiet", action="store_true", help="no line per kill")
    parser.add_argument("--cpu-hogs", type=int, default=0, help="busy-loop processes beside the pipeline")
    parser.add_argument("--json")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowlake-chaos-"))
    config = ChaosConfig(
        seed=args.seed,
        kills=args.kills,
        tx_per_second=args.tx_per_second,
        changes_per_tx=args.changes_per_tx,
        cpu_hogs=args.cpu_hogs,
    )
    print(f"chaos soak: seed {args.seed}, {args.kills} kills, work folder {workdir}", flush=True)
    result = ChaosRun(workdir, config, say=None if args.quiet else lambda m: print(m, flush=True)).run()
    rows = {layer: sum(result.rows.get(t, 0) for t in tables) for layer, tables in LAYERS.items()}
    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "seed": result.seed,
        "kills": len(result.kills),
        **{f"kills_{component}": n for component, n in result.kills_by_component.items()},
        "source_transactions": result.transactions,
        "source_changes": result.source_changes,
        **{f"rows_{layer}": n for layer, n in rows.items()},
        **{f"versions_{t}": f"{v[0]}..{v[1]}" for t, v in result.versions.items()},
        "checks_passed": sum(c.ok for c in result.checks),
        "checks_failed": len(result.failures),
        "rows_lost": result.rows_lost,
        "rows_duplicated": result.rows_duplicated,
        "wall_s": result.wall_seconds,
        "replay": result.replay,
    }
    print(f"\n{result.summary()}\n")
    report(figures, args.json)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
