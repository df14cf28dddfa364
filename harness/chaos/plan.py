"""The seeded kill schedule: which component each kill hits, the gaps, down times and moments."""

from __future__ import annotations

import random
from dataclasses import dataclass

from harness.chaos.config import COMPONENTS, ChaosConfig


@dataclass(frozen=True, slots=True)
class PlannedKill:
    """One entry of the seeded schedule."""

    component: str
    gap: float
    """Seconds after the previous kill."""
    down: float
    """Seconds a long-running component stays down."""
    fraction: float
    """Where in a maintenance run's work the kill lands (0..1)."""


def kill_plan(config: ChaosConfig) -> list[PlannedKill]:
    """The seeded schedule: bags of every component kind in random order, random gaps and moments."""
    rng = random.Random(config.seed)  # noqa: S311 - seeded chaos, not security
    order: list[str] = []
    while len(order) < config.kills:
        bag = list(COMPONENTS)
        rng.shuffle(bag)
        order += bag
    return [
        PlannedKill(c, rng.uniform(*config.kill_gap), rng.uniform(*config.down_time), rng.random())
        for c in order[: config.kills]
    ]
