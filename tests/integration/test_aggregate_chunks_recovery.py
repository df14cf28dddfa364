"""Chunked snapshots (aggregate and join) under kill -9 and a rescale: a flow run by flowlake's runner
with recovery (which gives it the state folder ``<recovery>/state`` by default) is killed while its
inputs keep changing and resumed with a different number of workers (1 → 2 → 1); every committed
output version equals the batch recompute at the input versions it records, and no token repeats.
Once more with the aggregate's memory bound at a few groups, so that every snapshot sheds groups and
every resume starts with them on disk only."""

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


def dwd_changes(changes: pa.Table) -> pa.Table:
    """Orders changes shaped as dwd.orders_enriched rows (city/category from the shop id)."""
    shop_ids = changes.column("shop_id").to_pylist()
    columns = {n: changes.column(n) for n in shop.DWD_ORDERS_SCHEMA.names if n in changes.column_names}
    columns["city"] = pa.array([f"city{s % 5}" for s in shop_ids])
    columns["category"] = pa.array([f"cat{s % 3}" for s in shop_ids])
    table = pa.table({f.name: columns[f.name] for f in shop.DWD_ORDERS_SCHEMA}, schema=shop.DWD_ORDERS_SCHEMA)
    return table.append_column("_kind", changes.column("_kind"))


def flow_commits(cat: fl.Catalog, output: str) -> int:
    return sum(1 for c in cat.load_table(output).history() if c.summary.get("sources"))


class Inputs:
    """What the flow under test reads, and how the test keeps it changing."""

    def __init__(self, cat: fl.Catalog, flow: str) -> None:
        self.workload = OrdersWorkload(shops=30, seed=23)
        self.flow = flow
        initial = self.workload.initial(3000)
        initial = initial.append_column("_kind", pa.array([0] * initial.num_rows, pa.int8()))
        if flow == "dws_shop_minute":
            self.orders = cat.load_table("dwd.orders_enriched")
            self.orders.apply(dwd_changes(initial))
        else:  # the DWD join: orders and the shops they join with (some shops change as it runs)
            self.orders = cat.load_table("ods.orders")
            self.orders.apply(initial)
            self.shops = cat.load_table("ods.shops")
            self.shops.upsert(shop.shops_table(30))
            self.rng = random.Random(5)

    def change(self) -> None:
        changes = self.workload.changes(150)
        if self.flow == "dws_shop_minute":
            self.orders.apply(dwd_changes(changes))
            return
        self.orders.apply(changes)
        shops = shop.shops_table(30, seed=self.rng.randrange(1000)).slice(self.rng.randrange(28), 2)
        self.shops.upsert(shops)


@pytest.mark.parametrize(
    ("flow", "output", "chunked_step", "state_mb"),
    [
        ("dws_shop_minute", "dws.shop_gmv_minute", None, None),
        ("dws_shop_minute", "dws.shop_gmv_minute", None, "0.002"),  # a few groups in memory
        ("dwd_orders", "dwd.orders_enriched", "enrich_with_shop", None),
    ],
)
def test_kill_9_and_rescale_with_chunked_snapshots(
    tmp_path: Path, flow: str, output: str, chunked_step: str | None, state_mb: str | None
) -> None:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    shop.ensure_tables(cat)
    inputs = Inputs(cat, flow)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    chunks = recovery / "state"  # the runner's default beside the recovery partitions
    env = {
        **{k: v for k, v in os.environ.items() if k != "FLOWLAKE_STATE_DIR"},
        "FLOWLAKE_CATALOG": cat.catalog_url,
        "FLOWLAKE_WAREHOUSE": cat.storage.uri,
        "FLOWLAKE_FLOW_MAX_VERSIONS": "2",
        "FLOWLAKE_FLOW_POLL": "0.05",
        "FLOWLAKE_HORIZON": "100d",
        "FLOWLAKE_STATE_INLINE_BYTES": "0",  # these states are small: chunk them anyway
        **({"FLOWLAKE_AGG_STATE_MB": state_mb} if state_mb else {}),
    }

    def command(workers: int) -> list[str]:
        return [sys.executable, "-m", "flowlake.flow.runner", f"dataflows/{flow}.py:flow",
                "-r", str(recovery), "-s", "1", "-b", "0", "-w", str(workers)]  # fmt: skip

    rng = random.Random(9)
    for workers in (1, 2):
        proc = subprocess.Popen(command(workers), cwd=ROOT, env=env, stderr=subprocess.PIPE)
        before = flow_commits(cat, output)
        deadline = time.monotonic() + 120  # only bounds a failure: a loaded machine starts flows slowly
        while flow_commits(cat, output) < before + 2 and time.monotonic() < deadline and proc.poll() is None:
            inputs.change()
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:] if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for _ in range(3):
            inputs.change()
    final = subprocess.run(
        command(1), cwd=ROOT, env={**env, "FLOWLAKE_FLOW_STOP": "head"}, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr[-3000:]
    assert any(chunks.rglob("*.chunk")), "the flow did not snapshot into chunks"
    if chunked_step is not None:
        step = [d for d in chunks.iterdir() if d.name.endswith(f".{chunked_step}")]  # flow.step
        assert any(c for d in step for c in d.rglob("*.chunk")), f"{chunked_step} wrote no chunks"
    out = cat.load_table(output)
    assert out.source_position(f"table:{inputs.orders.name}") == inputs.orders.refresh().version
    reports = verify_history(cat, output)
    assert len(reports) >= 4
    for report in reports:
        assert report.ok, f"{output}@{report.version}: {[str(d) for d in report.differences[:3]]}"
    tokens = [c.token for c in out.history() if c.token]
    assert len(tokens) == len(set(tokens))
