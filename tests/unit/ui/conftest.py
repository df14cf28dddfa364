"""The console's test lake as a fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from _console_lake import Lake, build_lake


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """ods.orders → dwd.orders_enriched with a dead letter; alice is admin, bob may read dwd."""
    return build_lake(tmp_path)
