"""Restart after kill -9 with a large state: how soon is a change made at the restart visible?

The DWD join flow (``dataflows/dwd_orders.py``: ``ods.orders`` left join ``ods.shops`` →
``dwd.orders_enriched``) runs under flowlake's runner with recovery (chunked snapshots in
``<recovery>/state``) over N initial orders, so its state holds N order rows. Once it has caught up
(and snapshotted), one order is updated and the time until DWD shows it is the *steady* latency; the
worker's peak RSS is read (``VmHWM``, and apart the peaks of its heap, ``RssAnon``, and of its
mapped files, ``RssFile``: libraries and memory-mapped state, which the kernel may drop); then the
worker is killed with SIGKILL, started again, and one order is updated right at the start: process
start → that change visible in DWD is the *restart* latency.
Each size runs beside a small state (the baseline in the same run), so the ratio is what counts on
a shared machine.

    python benchmarks/restart.py [--initial 20000,1000000] [--shops 1000] [--commit-rows 100000]
        [--max-read-rows 1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload

ROOT = Path(__file__).resolve().parents[1]
POLL_S = 0.02


def rss_peak_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class MemorySampler:
    """Peak anonymous memory (heap: RssAnon) and peak mapped file pages (RssFile: libraries and
    memory-mapped state, which the operating system may drop) of a process, sampled every 0.1 s;
    ``VmHWM`` (their sum's peak) is what :func:`rss_peak_mb` reads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peaks = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    name = line.split(":")[0]
                    if name in self.peaks:
                        self.peaks[name] = max(self.peaks[name], int(line.split()[1]) // 1024)
            except OSError:
                return
            self._stop.wait(0.1)

    def stop(self) -> dict[str, int]:
        """The peaks in MB."""
        self._stop.set()
        self._thread.join()
        return dict(self.peaks)


def consumed(cat: fl.Catalog) -> int:
    """The ``ods.orders`` version DWD has consumed (-1 before its first commit)."""
    position = cat.load_table("dwd.orders_enriched").source_position("table:ods.orders")
    return -1 if position is None else int(position)


def wait_until(
    cat: fl.Catalog, version: int, proc: subprocess.Popen[bytes], timeout: float, log: Path
) -> float:
    """Seconds until DWD has consumed ``version`` of the orders (raises if the worker dies or times out)."""
    start = time.perf_counter()
    while consumed(cat) < version:
        if proc.poll() is not None:
            raise RuntimeError(f"the flow exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"DWD did not reach orders version {version} in {timeout:.0f} s")
        time.sleep(POLL_S)
    return time.perf_counter() - start


def one_update(orders: fl.LakeTable, workload: OrdersWorkload) -> int:
    """Update one live order; return the orders version that holds it."""
    change = workload.changes(1, inserts=0.0, updates=1.0)
    return orders.apply(change).version


def run(initial: int, shops: int, tmp: Path, commit_rows: int, read_rows: int) -> dict[str, Any]:
    cat = fl.connect(catalog=f"sqlite:///{tmp / 'c.db'}", warehouse=(tmp / "wh").as_uri())
    shop.ensure_tables(cat)
    workload = OrdersWorkload(shops=shops, seed=3)
    orders = cat.load_table("ods.orders")
    for start in range(0, initial, commit_rows):  # commits as the CDC ingester makes them (--catchup-rows)
        rows = workload.initial(min(commit_rows, initial - start))
        orders.apply(rows.append_column("_kind", pa.array([0] * rows.num_rows, pa.int8())))
    cat.load_table("ods.shops").upsert(shop.shops_table(shops))
    recovery = tmp / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)  # noqa: S603
    # the worker as deployed: compiled modules written on the first start and read on the restart
    dropped = ("FLOWLAKE_STATE_DIR", "PYTHONDONTWRITEBYTECODE")
    env = {
        **{k: v for k, v in os.environ.items() if k not in dropped},
        "FLOWLAKE_CATALOG": cat.catalog_url,
        "FLOWLAKE_WAREHOUSE": cat.storage.uri,
        "FLOWLAKE_FLOW_POLL": "0.05",
        "FLOWLAKE_FLOW_MAX_READ_ROWS": str(read_rows),
    }
    command = [sys.executable, "-m", "flowlake.flow.runner", "dataflows/dwd_orders.py:flow",
               "-r", str(recovery), "-s", "1", "-b", "0"]  # fmt: skip
    figures: dict[str, Any] = {
        "initial_orders": initial, "shops": shops, "commit_rows": commit_rows, "max_read_rows": read_rows,
    }  # fmt: skip
    log_path = tmp / "flow.log"
    log = log_path.open("ab")  # the worker's stderr (a pipe nobody reads could fill up)
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)  # noqa: S603 - our interpreter
    memory = MemorySampler(proc.pid)
    try:
        figures["first_catch_up_s"] = round(
            wait_until(cat, orders.refresh().version, proc, 3600, log_path), 2
        )
        time.sleep(3)  # a few epochs: the state is snapshotted
        steady = []
        for _ in range(3):
            steady.append(wait_until(cat, one_update(orders, workload), proc, 600, log_path))
            time.sleep(0.5)
        figures["steady_visible_s"] = round(sorted(steady)[1], 3)
        figures["worker_peak_rss_mb"] = round(rss_peak_mb(proc.pid), 1)
        peaks = memory.stop()
        figures["worker_peak_anon_mb"], figures["worker_peak_file_mb"] = peaks["RssAnon"], peaks["RssFile"]
        state = recovery / "state"
        figures["state_dir_mb"] = round(
            sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) / 2**20, 1
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)  # noqa: S603 - our interpreter
    memory = MemorySampler(proc.pid)
    try:
        version = one_update(orders, workload)
        wait_until(cat, version, proc, 600, log_path)
        figures["restart_to_visible_s"] = round(time.perf_counter() - started, 2)
        figures["worker_peak_rss_after_restart_mb"] = round(rss_peak_mb(proc.pid), 1)
        figures["worker_peak_anon_after_restart_mb"] = memory.stop()["RssAnon"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--initial", default="20000,1000000", help="initial orders, comma-separated")
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--commit-rows", type=int, default=100_000, help="orders per initial ODS commit")
    parser.add_argument("--max-read-rows", type=int, default=1_000_000, help="the flow's rows per read")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_at_start": round(os.getloadavg()[0], 1),
        "runs": [],
    }
    for initial in (int(x) for x in args.initial.split(",")):
        with tempfile.TemporaryDirectory(prefix="flowlake-restart-") as tmp:
            figures = run(initial, args.shops, Path(tmp), args.commit_rows, args.max_read_rows)
        figures["load"] = round(os.getloadavg()[0], 1)
        results["runs"].append(figures)
        print("  ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    results["load_at_end"] = round(os.getloadavg()[0], 1)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
