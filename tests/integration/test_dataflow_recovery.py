"""kill -9 a running dataflow (bytewax recovery on) while its input keeps changing, resume it, repeat:
every committed version of the output equals the batch recompute at the input version it records,
positions never go backwards, and no input change is counted twice or lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload
from flowlake.flow.verify import verify_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = "dws.shop_gmv_minute"


def dwd_changes(changes: pa.Table) -> pa.Table:
    """Orders changes shaped as dwd.orders_enriched rows (city/category from the shop id)."""
    shop_ids = changes.column("shop_id").to_pylist()
    columns = {
        name: changes.column(name) for name in shop.DWD_ORDERS_SCHEMA.names if name in changes.column_names
    }
    columns["city"] = pa.array([f"city{s % 5}" for s in shop_ids])
    columns["category"] = pa.array([f"cat{s % 3}" for s in shop_ids])
    table = pa.table({f.name: columns[f.name] for f in shop.DWD_ORDERS_SCHEMA}, schema=shop.DWD_ORDERS_SCHEMA)
    return table.append_column("_kind", changes.column("_kind"))


def flow_commits(cat: fl.Catalog) -> int:
    return sum(1 for c in cat.load_table(OUTPUT).history() if c.summary.get("sources"))


def test_kill_9_and_resume_is_exactly_once(tmp_path: Path) -> None:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    shop.ensure_tables(cat)
    dwd = cat.load_table("dwd.orders_enriched")
    workload = OrdersWorkload(shops=30, seed=17)
    initial = workload.initial(3000)
    dwd.apply(dwd_changes(initial.append_column("_kind", pa.array([0] * initial.num_rows, pa.int8()))))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    env = {
        **os.environ,
        "FLOWLAKE_CATALOG": cat.catalog_url,
        "FLOWLAKE_WAREHOUSE": cat.storage.uri,
        "FLOWLAKE_FLOW_MAX_VERSIONS": "2",
        "FLOWLAKE_FLOW_POLL": "0.05",
        "FLOWLAKE_HORIZON": "100d",
    }
    command = [sys.executable, "-m", "bytewax.run", "dataflows/dws_shop_minute.py:flow",
               "-r", str(recovery), "-s", "1", "-b", "0"]  # fmt: skip
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        before = flow_commits(cat)
        deadline = time.monotonic() + 40
        while flow_commits(cat) < before + 2 and time.monotonic() < deadline and proc.poll() is None:
            dwd.apply(dwd_changes(workload.changes(150)))
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))  # land the kill anywhere in the epoch / commit cycle
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        kills += 1
        for _ in range(3):  # the input moves on while the flow is down
            dwd.apply(dwd_changes(workload.changes(150)))
    final = subprocess.run(
        command, cwd=ROOT, env={**env, "FLOWLAKE_FLOW_STOP": "head"}, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    out = cat.load_table(OUTPUT)
    assert out.source_position("table:dwd.orders_enriched") == dwd.refresh().version
    reports = verify_history(cat, OUTPUT)
    assert len(reports) >= 2 * kills
    for report in reports:
        assert report.ok, f"{OUTPUT}@{report.version}: {[str(d) for d in report.differences[:3]]}"
    covered = [r.inputs["dwd.orders_enriched"] for r in reports]
    assert covered == sorted(covered), "an output commit went back to an older input version"
    tokens = [c.token for c in out.history() if c.token]
    assert len(tokens) == len(set(tokens))
