"""A whole chaos run: set up, supervise and kill components on the seeded schedule, drain, check."""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from flowlake.lake import Catalog, connect
from flowlake.testing.load import cpu_hogs
from harness.chaos.checks import ChangelogAuditor, Checker
from harness.chaos.components import Component, build_components
from harness.chaos.config import (
    FLOWS,
    LONG_RUNNING,
    MAINTENANCE,
    OUTPUTS,
    ChaosConfig,
    ChaosResult,
    Check,
    Kill,
)
from harness.chaos.maintain import READY
from harness.chaos.plan import PlannedKill, kill_plan
from harness.chaos.source import SourceWriter

_MAX_EXITS: Final = 20
"""Unexpected exits after which a run gives up."""


class ChaosRun:
    """One chaos run in ``workdir`` (see the package docs); :meth:`run` returns a :class:`ChaosResult`."""

    def __init__(
        self, workdir: Path, config: ChaosConfig, *, say: Callable[[str], None] | None = None
    ) -> None:
        self.workdir, self.config = workdir, config
        self._say_to = say
        self.catalog_url = f"sqlite:///{workdir / 'catalog.db'}"
        self.warehouse = (workdir / "warehouse").as_uri()
        self.cdc = workdir / "cdc"
        self.source = SourceWriter(self.cdc, config)
        self.result = ChaosResult(config.seed, config, workdir)
        self.components: dict[str, Component] = {}
        self._lock = threading.RLock()
        self._abort = threading.Event()
        self._maintain = True
        self._rng = random.Random(config.seed + 1)  # noqa: S311 - seeded chaos
        self._work_seconds = dict.fromkeys(MAINTENANCE, 0.5)
        self._exits: list[str] = []
        self._started = time.monotonic()
        self.auditor: ChangelogAuditor | None = None
        self._audited = 0.0
        self._catalog_cache: Catalog | None = None

    def say(self, message: str) -> None:
        """Report progress (with the time since the start)."""
        if self._say_to is not None:
            self._say_to(f"[chaos {time.monotonic() - self._started:6.1f}s] {message}")

    # -- setup -----------------------------------------------------------------------------------------

    def _catalog(self) -> Catalog:
        if self._catalog_cache is None:
            self._catalog_cache = connect(catalog=self.catalog_url, warehouse=self.warehouse)
        return self._catalog_cache

    def _setup(self) -> None:
        from flowlake.demo.flows import TABLES, ensure_tables

        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        ensure_tables(self._catalog())
        self.auditor = ChangelogAuditor(self._catalog(), list(TABLES))
        self.source.write_snapshot()
        self.components = build_components(
            self.workdir, self.config, cdc=self.cdc, catalog_url=self.catalog_url, warehouse=self.warehouse
        )

    # -- supervision -------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        """One round: restart what is due, note unexpected exits, run maintenance when due, audit."""
        now = time.monotonic()
        if self.auditor is not None and now - self._audited >= 2.0:
            self.auditor.poll()
            self._audited = now
        with self._lock:
            for name in LONG_RUNNING:
                c = self.components[name]
                if c.running or c.proc is None or not c.wanted:
                    continue
                if c.restart_at is None and not c.reaped:
                    self._unexpected(c)
                    c.restart_at = now + 1.0
                c.reaped = True
                if c.restart_at is not None and now >= c.restart_at:
                    c.start()
            for name in MAINTENANCE:
                c = self.components[name]
                if c.proc is not None and not c.running and not c.reaped:
                    c.reaped = True
                    if not c.killed and c.proc.returncode != 0:
                        self._unexpected(c)
                    elif not c.killed:
                        self._learn_work_time(c)
                if self._maintain and not c.running and now >= c.next_run:
                    c.start()
                    c.next_run = now + self._rng.uniform(*self.config.maintenance_every)

    def _unexpected(self, c: Component) -> None:
        code = c.proc.returncode if c.proc is not None else None
        self._exits.append(f"{c.name} exited on its own with code {code}:\n{c.output()[-2000:]}")
        self.say(f"{c.name} exited on its own with code {code}")

    def _learn_work_time(self, c: Component) -> None:
        for line in reversed(c.output().splitlines()):
            if line.startswith("done in "):
                seconds = float(line.split()[2].rstrip("s"))
                self._work_seconds[c.name] = 0.5 * self._work_seconds[c.name] + 0.5 * seconds
                return

    def _supervise_until(self, done: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._supervise()
            if done():
                return True
            time.sleep(0.1)
        self.say(f"{what}: not reached within {timeout:.0f}s")
        return False

    # -- the killer --------------------------------------------------------------------------------------

    def _killer(self, plan: Sequence[PlannedKill]) -> None:
        for planned in plan:
            if self._abort.wait(planned.gap):
                return
            if planned.component in MAINTENANCE:
                self._kill_maintenance(planned)
            else:
                self._kill_long_running(planned)

    def _record(self, c: Component, doing: str) -> None:
        assert c.proc is not None
        kill = Kill(c.name, round(time.monotonic() - self._started, 2), c.proc.pid, round(c.uptime, 2), doing)
        self.result.kills.append(kill)
        self.say(f"kill #{len(self.result.kills)}: {c.name} (pid {kill.pid}, up {kill.uptime:.1f}s) {doing}")

    def _kill_long_running(self, planned: PlannedKill) -> None:
        c = self.components[planned.component]
        deadline = time.monotonic() + 60
        while not self._abort.is_set():
            if time.monotonic() > deadline:
                self.say(f"{c.name} did not stay up {self.config.min_uptime}s within 60s: kill skipped")
                return
            with self._lock:
                if c.running and c.uptime >= self.config.min_uptime:
                    c.kill()
                    self._record(c, "")
                    c.restart_at = time.monotonic() + planned.down
                    return
            time.sleep(0.05)

    def _kill_maintenance(self, planned: PlannedKill) -> None:
        """Kill a maintenance run at ``planned.fraction`` of its work (retrying if it finished first)."""
        c = self.components[planned.component]
        for attempt in range(10):
            with self._lock:
                if not c.running:
                    c.start()
            while not self._abort.is_set() and c.running and READY not in c.output():
                time.sleep(0.005)
            if self._abort.is_set():
                return
            time.sleep(planned.fraction * self._work_seconds[c.name] / (attempt + 1))
            with self._lock:
                lines = [x for x in c.output().splitlines() if x.strip()]
                if c.running and lines and not lines[-1].startswith("done in"):
                    c.kill()
                    self._record(c, f"during '{lines[-1].strip()}'")
                    return
            if c.proc is not None:
                c.proc.wait()  # it finished its work first: let it exit, try again
        self.say(f"{c.name} always finished before its kill: kill skipped")

    # -- phases ------------------------------------------------------------------------------------------

    def _chaos(self) -> None:
        plan = kill_plan(self.config)
        self.say(f"seed {self.config.seed}: {len(plan)} kills planned: {[p.component for p in plan]}")
        with self._lock:
            for name in LONG_RUNNING:
                self.components[name].start()
        self.source.start()
        killer = threading.Thread(target=self._killer, args=(plan,), name="chaos-killer", daemon=True)
        killer.start()
        while killer.is_alive() or time.monotonic() - self._started < self.config.min_duration:
            self._supervise()
            if len(self._exits) > _MAX_EXITS:
                self.say(f"giving up: {len(self._exits)} unexpected exits")
                self._abort.set()
                break
            time.sleep(0.05)
        self.source.stop.set()
        self.source.join()
        self.say(
            f"chaos done: {len(self.result.kills)} kills; source wrote {len(self.source.transactions)} files"
        )

    def _ingested_all(self) -> bool:
        last = len(self.source.transactions) - 1
        size = (self.cdc / self.source.file_name(last)).stat().st_size
        position = self._catalog().load_table("ods.orders").source_position(f"jsonl:{self.cdc.as_uri()}")
        if not isinstance(position, dict):
            return False
        return (
            Path(str(position.get("file", ""))).name == self.source.file_name(last)
            and position.get("offset") == size
        )

    def _caught_up(self) -> bool:
        cat = self._catalog()
        for name, inputs in OUTPUTS.items():
            out = cat.load_table(name)
            for source in inputs:
                if out.source_position(f"table:{source}") != cat.load_table(source).version:
                    return False
        return True

    def _drain(self) -> bool:
        self._maintain = False
        self.say("draining: maintenance off, waiting for the ingester to reach the last file")
        for name in MAINTENANCE:
            c = self.components[name]
            if c.proc is not None and c.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(30)
        if not self._supervise_until(self._ingested_all, self.config.drain_timeout, "ingester drained"):
            return False
        with self._lock:
            code = self.components["ingester"].stop(signal.SIGTERM, 30)
        self.result.checks.append(
            Check("the ingester stops cleanly on SIGTERM", code == 0, f"exit code {code}")
        )
        self.say("waiting for every output's lineage to reach its inputs' heads")
        if not self._supervise_until(self._caught_up, self.config.drain_timeout, "outputs caught up"):
            return False
        time.sleep(2 * self.config.snapshot_interval + 0.5)
        with self._lock:
            for name in FLOWS:
                code = self.components[name].stop(signal.SIGINT, 15)
                self.say(f"stopped {name} (exit code {code})")
        return True

    def check(self) -> list[Check]:
        """Run the end-of-run checks on the stopped pipeline (again, if you like) and return them.

        Also sets the result's rows, versions and rows lost / duplicated.
        """
        scratch = ChaosResult(self.config.seed, self.config, self.workdir)
        Checker(self, scratch).run()
        self.result.rows, self.result.versions = scratch.rows, scratch.versions
        self.result.rows_lost, self.result.rows_duplicated = scratch.rows_lost, scratch.rows_duplicated
        return scratch.checks

    def run(self) -> ChaosResult:
        """Set up, run the chaos phase, drain, stop everything and check; never leaves processes behind."""
        started = time.monotonic()
        previous = None
        if threading.current_thread() is threading.main_thread():  # SIGTERM still stops the processes
            previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        with cpu_hogs(self.config.cpu_hogs):
            try:
                self._setup()
                self._chaos()
                drained = not self._abort.is_set() and self._drain()
            finally:
                self._abort.set()
                self.source.stop.set()
                with self._lock:
                    for c in self.components.values():
                        if c.running:
                            c.kill()
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        self.result.transactions = len(self.source.transactions)
        self.result.source_changes = self.source.changes
        what = "pipeline drained: the ingester read the last file, every output reached its inputs' heads"
        self.result.checks.append(Check(what, drained, ""))
        self.result.checks.append(
            Check("no component exited on its own", not self._exits, "\n".join(self._exits))
        )
        self.say("checking")
        self.result.checks += self.check()
        self.result.wall_seconds = round(time.monotonic() - started, 1)
        if not self.result.ok:
            self.result.log_tails = {name: c.tail() for name, c in self.components.items()}
        self.say(f"done: {'all checks passed' if self.result.ok else 'FAILED'}")
        return self.result


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_chaos(
    workdir: Path, *, seed: int, kills: int = 12, say: Callable[[str], None] | None = None, **options: Any
) -> ChaosResult:
    """Run one chaos run in ``workdir`` (see :class:`ChaosConfig` for ``options``)."""
    return ChaosRun(workdir, ChaosConfig(seed=seed, kills=kills, **options), say=say).run()
