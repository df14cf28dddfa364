"""The command line: ``python -m harness.chaos run ...`` and ``... maintain compact|clean``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from harness.chaos.config import ChaosConfig
from harness.chaos.maintain import run_maintenance
from harness.chaos.run import ChaosRun


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.chaos run --seed N ...`` or ``... maintain compact|clean``."""
    from harness import chaos

    parser = argparse.ArgumentParser(
        prog="python -m harness.chaos", description=(chaos.__doc__ or "").split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one chaos run; exit code 1 if a check fails")
    run.add_argument("--workdir", type=Path, default=None, help="default: a new temporary folder")
    for f in fields(ChaosConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(ChaosConfig(), f.name)
        if isinstance(default, tuple):
            run.add_argument(flag, type=float, nargs=2, default=default)
        else:
            run.add_argument(flag, type=type(default), default=default)
    maintain = commands.add_parser("maintain", help="one compaction or cleaning pass (a chaos component)")
    maintain.add_argument("action", choices=["compact", "clean"])
    maintain.add_argument("--retain-last", type=int, default=3)
    maintain.add_argument("--orphan-grace", type=float, default=20.0)
    maintain.add_argument("--slow-writes", type=float, default=0.0, help="seconds added to each file write")
    args = parser.parse_args(argv)
    if args.command == "maintain":
        return run_maintenance(
            args.action,
            retain_last=args.retain_last,
            orphan_grace=args.orphan_grace,
            slow_writes=args.slow_writes,
        )
    import tempfile

    options = {f.name: getattr(args, f.name) for f in fields(ChaosConfig)}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flowlake-chaos-"))
    result = ChaosRun(workdir, ChaosConfig(**options), say=print).run()
    print(result.summary())
    return 0 if result.ok else 1
