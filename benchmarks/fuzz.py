"""Mutation fuzzing at scale: the Debezium decoder, the table API and CDC ingestion, 100k inputs each.

Runs :func:`harness.fuzz.fuzz_decoder` (seeded from the Debezium peer vectors when found),
:func:`~harness.fuzz.fuzz_table_api` and :func:`~harness.fuzz.fuzz_ingest` and prints,
per target, inputs, accepted, rejected by error class (ingestion: by kind of bad record), dead letters,
commits, crashes (exceptions other than ``FlowlakeError`` and broken invariants; must be 0) and inputs/s.
Exits with status 1 and the failing inputs if any target found a crash.

    python benchmarks/fuzz.py [--inputs 100000] [--seed 1] [--targets decoder,table_api,ingest]
        [--vectors ../shared/peer-vectors/debezium] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

from _report import report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness is not installed
from harness.fuzz import FuzzReport, fuzz_decoder, fuzz_ingest, fuzz_table_api

TARGETS = ("decoder", "table_api", "ingest")
VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "peer-vectors" / "debezium"


def corpus(folder: Path) -> list[list[bytes]]:
    """The messages of each ``*.jsonl`` vector file in ``folder`` (none if it is missing)."""
    files = sorted(p for p in folder.glob("*.jsonl") if ".expected." not in p.name) if folder.is_dir() else []
    return [p.read_bytes().splitlines() for p in files]


def run(target: str, args: argparse.Namespace) -> FuzzReport:
    """Fuzz one target with ``args.inputs`` inputs."""
    if target == "decoder":
        return fuzz_decoder(args.inputs, args.seed, corpus=corpus(Path(args.vectors)))
    if target == "table_api":
        return fuzz_table_api(args.inputs, args.seed)
    return fuzz_ingest(args.inputs, args.seed)


def main() -> None:
    """Parse flags, run each target, print the figures, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--vectors", default=str(VECTORS), help="folder of Debezium peer vectors")
    parser.add_argument("--json", default=None, help="write the figures to this path")
    args = parser.parse_args()
    figures: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "seed": args.seed,
        "peer vector files": len(corpus(Path(args.vectors))),
    }
    failed: list[FuzzReport] = []
    for target in args.targets.split(","):
        result = run(target, args)
        figures.update(
            {f"{target}: {key}": value for key, value in result.figures().items() if key != "seed"}
        )
        if result.crashes:
            failed.append(result)
    report(figures, args.json)
    for result in failed:
        print(result.describe(), file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
