"""The pipeline's processes: their command lines, and starting, stopping and killing process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from harness.chaos.config import COMPONENTS, FLOWS, ChaosConfig

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
"""The checkout that holds the ``harness`` package (outside the installed ``flowlake``)."""

_CLI: Final = "import sys; from flowlake.cli.main import main; sys.exit(main())"
"""The ``flowlake`` command (``python -m flowlake.cli.main`` would not register the subcommands)."""


class Component:
    """One component: its command, its current process (in its own process group) and its log."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.log, self.cwd = name, list(argv), dict(env), log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.starts = 0
        self.mark = 0
        self.killed = False
        self.reaped = True
        self.restart_at: float | None = None
        self.next_run = 0.0
        self.wanted = True
        """Whether the supervisor keeps it running (False once stopped on purpose)."""

    def start(self) -> None:
        """Start a new process, appending its output to the log."""
        self.mark = self.log.stat().st_size if self.log.exists() else 0
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"=== start #{self.starts} at {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and argv
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd,
                start_new_session=True,
            )  # fmt: skip
        self.started_at = time.monotonic()
        self.killed, self.reaped, self.restart_at = False, False, None

    @property
    def running(self) -> bool:
        """Whether its process is alive."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def uptime(self) -> float:
        """Seconds since its last start."""
        return time.monotonic() - self.started_at

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process group and reap the process."""
        if self.proc is None:
            return
        self.killed = True
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, signum: int, timeout: float) -> int | None:
        """Ask the group to stop; its exit code, or None if it had to be killed after ``timeout``."""
        self.wanted = False
        if not self.running or self.proc is None:
            return None if self.proc is None else self.proc.returncode
        self.signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def output(self) -> str:
        """What the current process wrote so far."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self.mark)
            return f.read().decode(errors="replace")

    def tail(self, chars: int = 2500) -> str:
        """The end of the log."""
        if not self.log.exists():
            return ""
        data = self.log.read_bytes()[-chars:]
        return data.decode(errors="replace")


def build_components(
    workdir: Path, config: ChaosConfig, *, cdc: Path, catalog_url: str, warehouse: str
) -> dict[str, Component]:
    """Every component of a run in ``workdir``, not started, with a fresh recovery folder per dataflow.

    Args:
        workdir: The run's folder; logs go to ``logs/<component>.log``, dataflow recovery to ``recovery/``.
        config: Sets the dataflows' snapshot interval and the maintenance processes' options.
        cdc: The folder of source JSONL files the ingester follows.
        catalog_url: The catalog every process connects to.
        warehouse: The warehouse every process writes to.
    """
    from bytewax.recovery import init_db_dir

    env = {
        **os.environ, "FLOWLAKE_CATALOG": catalog_url, "FLOWLAKE_WAREHOUSE": warehouse,
        "FLOWLAKE_FLOW_POLL": "0.2", "FLOWLAKE_LOG": "info", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    env.pop("FLOWLAKE_FLOW_STOP", None)
    # the maintenance components run ``python -m harness.chaos`` from the run's folder: the harness
    # is not installed with flowlake, so its checkout goes on their path
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    py = sys.executable
    argv: dict[str, list[str]] = {
        "ingester": [py, "-c", _CLI, "ingest", "--source", "debezium-jsonl", cdc.as_uri()],
        "compaction": [py, "-m", "harness.chaos", "maintain", "compact",
                       "--slow-writes", str(config.slow_writes)],
        "cleaning": [py, "-m", "harness.chaos", "maintain", "clean",
                     "--retain-last", str(config.retain_last),
                     "--orphan-grace", str(config.orphan_grace)],
    }  # fmt: skip
    for name, target in FLOWS.items():
        recovery = workdir / "recovery" / name
        recovery.mkdir(parents=True)
        init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
        s = str(config.snapshot_interval)
        argv[name] = [py, "-m", "flowlake.flow.runner", target, "-r", str(recovery), "-s", s, "-b", "0"]
    return {
        name: Component(name, argv[name], env, workdir / "logs" / f"{name}.log", workdir)
        for name in COMPONENTS
    }
