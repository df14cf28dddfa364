"""A short run of ``benchmarks/freshness.py``: the whole MariaDB → ODS → DWD → DWS pipeline as separate
processes, latency measured per layer from the tables' timelines and lineage, results verified."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowlake.cdc.testing import mariadb_binaries
from harness.services import require_service

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("mariadb")]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "freshness.py"
P = "initial_1000_rate_400_"  # figures of a run with a non-default initial size carry its prefix
LAYERS = ("ods_orders", "dwd_orders_enriched", "dws_shop_gmv_minute", "dws_city_day")


def test_freshness_benchmark_measures_every_layer_and_verifies(tmp_path: Path) -> None:
    require_service(mariadb_binaries() is not None, "mariadb-install-db/mariadbd are not installed")
    out = tmp_path / "figures.json"
    args = ["--rates", "400", "--seconds", "3", "--initial", "1000", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures[P + "verified"] is True
    assert 0 < figures[P + "ods_changes"] <= figures[P + "source_changes"]
    assert figures[P + "timed_changes"] > 0.5 * figures[P + "source_changes"]
    previous = 0.0
    for layer in LAYERS:  # each layer sees a change no earlier than the one before it
        p50 = figures[f"{P}{layer}_p50_s"]
        assert previous <= p50 < 30, (layer, p50)
        previous = p50
