"""SQL views as users run them: the CLI (run, explain, verify, dev), SIGKILL under bytewax recovery, and
a two-process cluster that gives what one worker gives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload
from flowlake.errors import InvalidArgumentError
from flowlake.flow.verify import verify_history, verify_table
from flowlake.testing import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHOP_SQL = ROOT / "dataflows" / "shop.sql"
OUTPUTS = ("dwd.orders_enriched", "dws.shop_gmv_minute", "dws.city_day")
FLOWLAKE = str(Path(sys.executable).with_name("flowlake"))


def project(tmp_path: Path, orders: int = 2000, changes: int = 3) -> tuple[fl.Catalog, dict[str, str]]:
    """A project folder with the shop's ODS tables filled; the environment that points at it."""
    catalog, warehouse = f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    for name in ("ods.orders", "ods.shops"):
        schema, key, _ = shop.TABLES[name]
        cat.create_table(name, schema, primary_key=key)
    cat.load_table("ods.shops").upsert(shop.shops_table(30))
    workload = OrdersWorkload(shops=30, seed=3)
    table = cat.load_table("ods.orders")
    table.upsert(workload.initial(orders))
    for _ in range(changes):
        table.apply(workload.changes(300))
    env = {**os.environ, "FLOWLAKE_CATALOG": catalog, "FLOWLAKE_WAREHOUSE": warehouse, "COLUMNS": "150"}
    return cat, env


def cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWLAKE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def running_with(text: str) -> list[int]:
    """Processes whose command line mentions ``text`` (orphans a killed CLI could leave behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_verified(cat: fl.Catalog) -> None:
    for name in OUTPUTS:
        reports = verify_history(cat, name)
        assert reports, f"{name} has no version with lineage"
        bad = [f"{name}@{r.version}: {[str(d) for d in r.differences[:3]]}" for r in reports if not r.ok]
        assert not bad, bad


def test_run_once_explain_verify_and_dev(tmp_path: Path) -> None:
    cat, env = project(tmp_path)
    plan = cli(env, "explain", str(SHOP_SQL))
    assert plan.returncode == 0, plan.stderr
    assert "view dws.shop_gmv_minute  primary key (shop_id, minute)" in plan.stdout
    assert "late changes -> dws.shop_gmv_minute_late" in plan.stdout
    run = cli(env, "run", str(SHOP_SQL), "--once")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        cat.load_table("dwd.orders_enriched").read().num_rows == cat.load_table("ods.orders").read().num_rows
    )
    for name in OUTPUTS:
        check = cli(env, "verify", name)
        assert check.returncode == 0 and ": ok" in check.stdout, check.stdout + check.stderr

    bad = tmp_path / "bad.sql"
    bad.write_text(
        "CREATE MATERIALIZED VIEW dws.x AS\n"
        "SELECT order_id, lag(amount) OVER (ORDER BY order_id) AS p\nFROM ods.orders"
    )
    refused = cli(env, "run", str(bad), "--once")
    assert refused.returncode != 0
    assert "window function LAG" in refused.stderr and "line 2" in refused.stderr
    assert "Traceback" not in refused.stderr

    # flowlake dev supervises a project's view files like its Python dataflows
    folder = tmp_path / "proj"
    (folder / "dataflows").mkdir(parents=True)
    (folder / "dataflows" / "totals.sql").write_text(
        "CREATE MATERIALIZED VIEW dws.shop_totals AS\n"
        "SELECT shop_id, count(*) AS orders, sum(amount) AS gmv FROM ods.orders GROUP BY shop_id;\n"
    )
    # Wait for the result, not for a fixed time: at load 15-30 starting the flow alone can take longer
    # than any window a test would pick. The deadline only bounds a failure.
    dev = subprocess.Popen(
        [FLOWLAKE, "dev", str(folder)],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        report = None
        deadline = time.monotonic() + 280
        while time.monotonic() < deadline and dev.poll() is None:
            if "dws.shop_totals" in cat.list_tables("dws"):
                try:
                    report = verify_table(cat, "dws.shop_totals")
                except InvalidArgumentError:  # created, nothing committed yet
                    report = None
                if report is not None and report.ok and report.rows == 30:
                    break
            time.sleep(0.5)
        dev.send_signal(signal.SIGTERM)  # as Ctrl-C: dev stops its flows after their final commits
        out, err = dev.communicate(timeout=120)
    finally:
        if dev.poll() is None:  # the test failed before dev stopped: stop it as a user would
            dev.send_signal(signal.SIGTERM)
            try:
                dev.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.communicate()
        for pid in running_with(str(folder / ".flowlake")):  # never leave a flow or maintain running
            os.kill(pid, signal.SIGKILL)
    assert dev.returncode == 0, out[-2000:] + err[-2000:]
    assert "totals_sql" in out
    assert running_with(str(folder / ".flowlake")) == []  # dev stopped its flows, none left running
    report = verify_table(cat, "dws.shop_totals")
    assert report.ok and report.rows == 30, (report, out[-2000:], err[-2000:])


def test_sigkill_of_a_multi_view_pipeline_under_recovery_loses_and_duplicates_nothing(
    tmp_path: Path, cpu_load: int
) -> None:
    cat, env = project(tmp_path, orders=1000, changes=1)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    orders = cat.load_table("ods.orders")
    workload = OrdersWorkload(shops=30, seed=11)
    workload.initial(1000)  # the ids the project's orders already use
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            orders.apply(workload.changes(120))
            time.sleep(0.1)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    rng = random.Random(20261206)
    argv = [FLOWLAKE, "run", str(SHOP_SQL), "-r", str(recovery), "-s", "0.3", "-b", "0"]
    try:
        for _ in range(3):
            proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            time.sleep(rng.uniform(4.0, 9.0))
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        stop.set()
        writer.join(30)
    drain = subprocess.run(
        [*argv, "--once"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert drain.returncode == 0, drain.stderr[-3000:]
    dwd = cat.load_table("dwd.orders_enriched")
    assert dwd.source_position("table:ods.orders") == orders.refresh().version
    assert dwd.read().num_rows == orders.read().num_rows
    assert_verified(cat)


@pytest.mark.slow
def test_two_processes_two_workers_equal_one_worker(tmp_path: Path) -> None:
    cat, env = project(tmp_path / "cluster", orders=3000, changes=4)
    ports = [free_port(), free_port()]
    addresses = ";".join(f"127.0.0.1:{p}" for p in ports)
    procs = [
        subprocess.Popen(
            [FLOWLAKE, "run", str(SHOP_SQL), "--once", "-w", "2", "-i", str(i), "-a", addresses],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert_verified(cat)

    single, single_env = project(tmp_path / "single", orders=3000, changes=4)
    one = cli(single_env, "run", str(SHOP_SQL), "--once")
    assert one.returncode == 0, one.stderr[-3000:]
    for name in OUTPUTS:
        table = cat.load_table(name)
        key = [(k, "ascending") for k in table.primary_key]
        rows = table.read().sort_by(key).to_pylist()
        assert rows, name
        assert rows == single.load_table(name).read().sort_by(key).to_pylist(), name


TOP_ORDERS_SQL = (
    "CREATE MATERIALIZED VIEW dws.top_orders_per_user AS\n"
    "SELECT * FROM (SELECT user_id, order_id, amount, row_number() OVER (PARTITION BY user_id\n"
    "  ORDER BY amount DESC NULLS LAST, order_id) AS rn FROM ods.orders) WHERE rn <= 2;\n"
)


@pytest.mark.slow
def test_sigkill_of_a_top_n_view_with_its_kept_rows_mostly_on_disk(tmp_path: Path) -> None:
    """A Top-N view whose memory bound holds a few dozen kept rows (every snapshot sheds partitions,
    every resume starts with them on disk), killed twice while its input changes: every committed
    version equals the batch recompute at the input version it records. (It failed while the
    operator took a resumed state without rows in memory, falsy by its length, for no state.)"""
    cat, env = project(tmp_path, orders=1500, changes=1)
    env = {**env, "FLOWLAKE_TOPN_STATE_MB": "0.002", "FLOWLAKE_STATE_INLINE_BYTES": "0"}
    views = tmp_path / "top.sql"
    views.write_text(TOP_ORDERS_SQL)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    orders = cat.load_table("ods.orders")
    workload = OrdersWorkload(shops=30, seed=12)
    workload.initial(1500)
    argv = [FLOWLAKE, "run", str(views), "-r", str(recovery), "-s", "0.3", "-b", "0"]
    for _ in range(2):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120  # only bounds a failure: a loaded machine starts flows slowly
        exists = cat.table_exists("dws.top_orders_per_user")
        start = len(cat.load_table("dws.top_orders_per_user").history()) if exists else 0
        while time.monotonic() < deadline and proc.poll() is None:
            orders.apply(workload.changes(150))
            time.sleep(0.2)
            name = "dws.top_orders_per_user"
            if cat.table_exists(name) and len(cat.load_table(name).history()) >= start + 3:
                break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        orders.apply(workload.changes(150))
    drain = subprocess.run(
        [*argv, "--once"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert drain.returncode == 0, drain.stderr[-3000:]
    chunks = [p for p in (recovery / "state").rglob("*.chunk") if "top_n" in str(p)]
    assert chunks, "the Top-N step wrote no snapshot chunks"
    out = cat.load_table("dws.top_orders_per_user")
    assert out.source_position("table:ods.orders") == orders.refresh().version
    reports = verify_history(cat, "dws.top_orders_per_user")
    assert len(reports) >= 3
    bad = [f"{r.version}: {[str(d) for d in r.differences[:3]]}" for r in reports if not r.ok]
    assert not bad, bad
