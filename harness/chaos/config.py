"""What a chaos run does and found: the pipeline's components, :class:`ChaosConfig`, kills and checks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Final

LONG_RUNNING: Final = ("ingester", "dwd_orders", "dws_shop_minute", "dws_city_day")
"""Components that run all the time and are restarted after a kill."""
MAINTENANCE: Final = ("compaction", "cleaning")
"""Short-lived components started periodically."""
COMPONENTS: Final = (*LONG_RUNNING, *MAINTENANCE)
FLOWS: Final = {
    "dwd_orders": "flowlake.demo.flows:dwd_orders_flow",
    "dws_shop_minute": "flowlake.demo.flows:dws_shop_minute_flow",
    "dws_city_day": "flowlake.demo.flows:dws_city_day_flow",
}
OUTPUTS: Final = {
    "dwd.orders_enriched": ("ods.orders", "ods.shops"),
    "dws.shop_gmv_minute": ("dwd.orders_enriched",),
    "dws.city_day": ("dws.shop_gmv_minute", "ods.shops"),
}
"""Each verified output and the inputs its lineage must reach."""
ODS: Final = {"orders": "ods.orders", "shops": "ods.shops"}
"""Source table → ODS table."""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    """What a chaos run does; the defaults are CI-sized (a minute or so on two cores)."""

    seed: int = 1
    kills: int = 12
    kill_gap: tuple[float, float] = (1.5, 4.5)
    """Seconds between one kill and the next (uniform)."""
    min_uptime: float = 1.5
    """A long-running component is killed only after it ran this long since its last start."""
    down_time: tuple[float, float] = (0.0, 1.5)
    """Seconds a killed long-running component stays down (uniform)."""
    min_duration: float = 0.0
    """Keep the chaos phase going at least this long, even when the kills are done."""
    tx_per_second: float = 5.0
    changes_per_tx: int = 12
    initial_orders: int = 1000
    shops: int = 30
    snapshot_interval: float = 0.5
    """``-s``: seconds per epoch (and sink commit) of the dataflows."""
    maintenance_every: tuple[float, float] = (3.0, 7.0)
    """Seconds between two runs of each maintenance kind (uniform)."""
    retain_last: int = 3
    slow_writes: float = 0.2
    """Seconds each file a compaction process writes is held open (see ``maintain._slow_writes``)."""
    orphan_grace: float = 20.0
    """Cleaning's grace period for orphan files (seconds)."""
    drain_timeout: float = 120.0
    verify_samples: int = 3
    """Earlier versions of each output verified besides the head (seeded choice)."""
    cpu_hogs: int = 0
    """Busy-loop processes run beside the pipeline, so timing-dependent losses show up."""


@dataclass(frozen=True, slots=True)
class Kill:
    """One SIGKILL: which component, when (seconds from the start), and what it was doing."""

    component: str
    at: float
    pid: int
    uptime: float
    doing: str = ""


@dataclass(frozen=True, slots=True)
class Check:
    """One end-of-run check."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class ChaosResult:
    """What a chaos run did and found."""

    seed: int
    config: ChaosConfig
    workdir: Path
    kills: list[Kill] = field(default_factory=list)
    transactions: int = 0
    source_changes: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """``{table: (oldest readable version, head)}`` at the end."""
    checks: list[Check] = field(default_factory=list)
    rows_lost: int = 0
    rows_duplicated: int = 0
    wall_seconds: float = 0.0
    log_tails: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    @property
    def kills_by_component(self) -> dict[str, int]:
        """Kills per component kind (every kind listed, zero included)."""
        counts = Counter(k.component for k in self.kills)
        return {c: counts.get(c, 0) for c in COMPONENTS}

    @property
    def replay(self) -> str:
        """The command that replays this run's seed and schedule."""
        return "python -m harness.chaos run " + " ".join(_config_args(self.config))

    def summary(self) -> str:
        """A readable report; on failure it names the seed, the replay command and the logs' tails."""
        kills = ", ".join(f"{c} {n}" for c, n in self.kills_by_component.items())
        lines = [
            f"chaos run seed={self.seed}: {len(self.kills)} kills ({kills}) in {self.wall_seconds:.1f}s",
            f"source: {self.transactions:,} transactions, {self.source_changes:,} changes",
            *(
                f"  {name:<26} {rows:>8,} rows  versions {self.versions.get(name, (0, 0))[0]}.."
                f"{self.versions.get(name, (0, 0))[1]}"
                for name, rows in self.rows.items()
            ),
            f"rows lost: {self.rows_lost}, rows duplicated: {self.rows_duplicated}",
            f"checks: {sum(c.ok for c in self.checks)} passed, {len(self.failures)} failed",
        ]
        for check in self.checks:
            lines.append(f"  ok      {check.name}" if check.ok else f"  FAILED  {check.name}: {check.detail}")
        if not self.ok:
            lines.append(f"seed {self.seed}; replay: {self.replay}")
            lines.append(f"work folder (logs, catalog, warehouse): {self.workdir}")
            for name, tail in self.log_tails.items():
                lines.append(f"--- tail of {name}.log ---\n{tail}")
        return "\n".join(lines)


def _config_args(config: ChaosConfig) -> list[str]:
    args = []
    for f in fields(ChaosConfig):
        value = getattr(config, f.name)
        flag = "--" + f.name.replace("_", "-")
        args += [flag, *map(str, value)] if isinstance(value, tuple) else [flag, str(value)]
    return args
