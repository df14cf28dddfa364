"""The shop DWD join (``ods.orders`` LEFT JOIN ``ods.shops`` on ``shop_id``) over an exact changelog.

Orders: ``--initial`` inserts, then ``--batches`` batches of ``--size`` changes (60% new orders, 30%
updates of live ones as ``-U``/``+U`` pairs, 10% deletes of live ones, each with the row it retracts);
shops: ``--shops`` inserts, then 5 shop updates (a new city) per batch. Everything goes through
``flowlake.flow.join`` (4 key partitions, as in ``dataflows/dwd_orders.py``) in one bytewax worker,
from memory (no lake source or sink, so the figure is the join's). Prints changes/s, changes out and
the process's peak RSS; ``--check`` also prints a digest of the joined result (the net multiset of
output rows), to compare two versions of the join.

    python benchmarks/join.py [--initial 200000] [--batches 30] [--size 10000] [--check]

``--snapshots`` measures instead what bytewax's per-epoch snapshot of one join key partition costs
(its deep copy, pickled) with ``--initial`` orders and ``--shops`` shops held and ``--size`` order
changes an epoch, whole pickle against chunked (only the changed join keys' rows, see
``flowlake.flow._joinlog``), each mode in its own process: per-epoch snapshot time and bytes, the
resume time, peak RSS. Prints a table; ``--json PATH`` writes it.

    python benchmarks/join.py --snapshots --initial 1000000 --shops 100000 --size 1000 --batches 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from _measure import proc_status_kb, snapshot
from _report import report
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.demo.flows import SHOPS_SCHEMA, shops_table
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload
from flowlake.flow import ChangeBatch
from flowlake.flow._relational import JoinState
from flowlake.flow._snapshot import thaw
from flowlake.flow.operators import join


def with_kind(rows: pa.Table, kind: int) -> pa.Table:
    """``rows`` as changes of one kind."""
    return rows.append_column(KIND_COLUMN, pa.array(np.full(rows.num_rows, kind, np.int8)))


def updates(before: pa.Table, after: pa.Table) -> pa.Table:
    """``-U``/``+U`` pairs, each old row right before its new one."""
    both = pa.concat_tables(
        [with_kind(before, RowKind.UPDATE_BEFORE), with_kind(after, RowKind.UPDATE_AFTER)]
    )
    n = before.num_rows
    order = np.empty(2 * n, np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n, 2 * n)
    return both.take(pa.array(order))


def replaced(current: pa.Table, ids: np.ndarray, rows: pa.Table) -> pa.Table:
    """``current`` (row i holds id i) with rows ``ids`` replaced by ``rows``."""
    slot = np.full(current.num_rows, -1, np.int64)
    slot[ids] = np.arange(len(ids))
    index = np.where(slot >= 0, current.num_rows + slot, np.arange(current.num_rows))
    return pa.concat_tables([current, rows]).take(pa.array(index))


def order_changes(initial: int, batches: int, size: int, shops: int) -> list[pa.Table]:
    """The orders changelog, in batches."""
    workload = OrdersWorkload(seed=3, shops=shops)
    rng = np.random.default_rng(5)
    current = workload.initial(initial)
    out = [with_kind(current.slice(start, size), RowKind.INSERT) for start in range(0, initial, size)]
    live = np.ones(initial, dtype=bool)
    for _ in range(batches):
        picks = rng.choice(np.flatnonzero(live), int(size * 0.4), replace=False)
        upd, gone = picks[: int(size * 0.3)], picks[int(size * 0.3) :]
        new = workload.rows(np.arange(len(live), len(live) + int(size * 0.6)))
        changed = workload.rows(upd).set_column(1, "shop_id", current.column("shop_id").take(pa.array(upd)))
        old = current.take(pa.array(upd))
        out.append(pa.concat_tables([
            with_kind(new, RowKind.INSERT), updates(old, changed),
            with_kind(current.take(pa.array(gone)), RowKind.DELETE),
        ]))  # fmt: skip
        current = replaced(pa.concat_tables([current, new]), upd, changed)
        live = np.concatenate([live, np.ones(new.num_rows, dtype=bool)])
        live[gone] = False
    return out


def shop_changes(batches: int, shops: int) -> list[pa.Table]:
    """The shops changelog: every shop, then 5 shops moving to another city per batch."""
    rng = np.random.default_rng(5)
    current = shops_table(shops)
    out = [with_kind(current, RowKind.INSERT)]
    for b in range(batches):
        pick = rng.choice(shops, 5, replace=False)
        old = current.take(pa.array(pick))
        new = old.set_column(2, "city", pa.array([f"city {b}"] * 5))
        out.append(updates(old, new))
        current = replaced(current, pick, new)
    return out


def digest(outputs: list[pa.Table]) -> str:
    """A digest of the net multiset of joined rows."""
    table = pa.concat_tables(outputs)
    kinds = table.column(KIND_COLUMN).to_numpy()
    weight = np.where((kinds == RowKind.UPDATE_BEFORE) | (kinds == RowKind.DELETE), -1, 1)
    table = table.drop_columns([KIND_COLUMN]).append_column("w", pa.array(weight))
    columns = [c for c in table.column_names if c != "w"]
    net = table.group_by(columns, use_threads=False).aggregate([("w", "sum")])
    net = net.filter(pc.not_equal(net.column("w_sum"), 0)).sort_by([(c, "ascending") for c in columns])
    return f"{net.num_rows} rows, sha1 {hashlib.sha1(str(net.to_pylist()).encode()).hexdigest()}"  # noqa: S324


def state_bytes(state: JoinState) -> int:
    """Bytes the join state holds: its rows (Arrow) and per-row arrays and indexes (numpy)."""
    total = 0
    for side in state.sides.values():
        total += sum(chunk.nbytes for chunk in side.chunks)
        arrays: dict[str, np.ndarray] = {
            "count": side.count, "key_hash": side.key_hash, "keyed": side.keyed, "row_hash": side.row_hash,
        }  # fmt: skip
        arrays.update(side._buffers)  # (their buffers, where they grow in one)
        total += sum(a.nbytes for a in arrays.values())
        total += sum(0 if index is None else index.nbytes for index in (side._row_index, side._key_index))
    return total


def snapshot_costs(args: argparse.Namespace, chunked: bool) -> dict[str, Any]:
    """One key partition's join state: per-epoch snapshot cost, whole pickle or chunked."""
    orders = order_changes(args.initial, args.batches, args.size, args.shops)
    shops = shop_changes(args.batches, args.shops)
    loads = args.initial // args.size + (1 if args.initial % args.size else 0)
    kw: dict[str, Any] = {"on": ["shop_id"], "how": "left", "left_schema": ORDERS_SCHEMA,
                          "right_schema": SHOPS_SCHEMA}  # fmt: skip
    state = JoinState()
    folder = Path(tempfile.mkdtemp(prefix="flowlake-join-chunks-"))
    try:
        if chunked:
            state.keep_chunks(folder)
        state.apply("right", shops[0], **kw)
        initial = pa.concat_tables(orders[:loads])
        for start in range(0, initial.num_rows, 200_000):  # as a lake source reads a large first version
            state.apply("left", initial.slice(start, 200_000), **kw)
        blob, first_s, _ = snapshot(state)
        times, sizes, folds = [], [], []
        for orders_batch, shops_batch in zip(orders[loads:], shops[1:], strict=True):
            t = time.perf_counter()
            state.apply("left", orders_batch, **kw)
            state.apply("right", shops_batch, **kw)
            folds.append(time.perf_counter() - t)
            blob, seconds, size = snapshot(state)
            times.append(seconds)
            sizes.append(size)
        peak = (proc_status_kb("VmHWM") or 0) / 1024
        t = time.perf_counter()
        back = thaw(pickle.loads(blob))  # noqa: S301 - our own bytes
        resume_ms = (time.perf_counter() - t) * 1000
        assert isinstance(back, JoinState) and len(back) == len(state)
        ms = np.array(times) * 1000
        return {
            "rows_held": len(state),
            "state_mb": round(state_bytes(state) / 2**20, 1),
            "first_snapshot_ms": round(first_s * 1000, 1),
            "snapshot_ms_median": round(float(np.median(ms)), 2),
            "snapshot_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "snapshot_bytes_median": int(np.median(sizes)),
            "fold_ms_median": round(float(np.median(folds)) * 1000, 2),
            "resume_ms": round(resume_ms, 1),
            "peak_rss_mb": round(peak, 1),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot_section(args: argparse.Namespace) -> None:
    """Both modes, each in a subprocess (so peak RSS is its own); print and save the figures."""
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "orders_held": args.initial, "shops_held": args.shops, "order_changes_per_epoch": args.size,
        "epochs": args.batches,
    }  # fmt: skip
    for mode in ("whole_pickle", "chunked"):
        sizes = ["--initial", str(args.initial), "--shops", str(args.shops), "--size", str(args.size)]
        argv = [sys.executable, __file__, "--snapshot-mode", mode, *sizes, "--batches", str(args.batches)]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603 - this script
        for key, value in json.loads(done.stdout).items():
            figures[f"{mode}_{key}"] = value
    figures["snapshot_median_whole_over_chunked"] = round(
        figures["whole_pickle_snapshot_ms_median"] / max(figures["chunked_snapshot_ms_median"], 1e-3), 1
    )
    report(figures, args.json)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--initial", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--shops", type=int, default=500)
    parser.add_argument("--check", action="store_true", help="print a digest of the joined result")
    parser.add_argument("--snapshots", action="store_true", help="measure per-epoch snapshot costs instead")
    parser.add_argument("--snapshot-mode", choices=["whole_pickle", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the --snapshots figures to this path")
    args = parser.parse_args()
    if args.snapshot_mode:
        print(json.dumps(snapshot_costs(args, args.snapshot_mode == "chunked")))
        return
    if args.snapshots:
        snapshot_section(args)
        return
    orders = order_changes(args.initial, args.batches, args.size, args.shops)
    shops = shop_changes(args.batches, args.shops)
    changes = sum(t.num_rows for t in [*orders, *shops])
    flow = Dataflow("join_bench")
    left = op.input("orders", flow, TestingSource([ChangeBatch(t) for t in orders]))
    right = op.input("shops", flow, TestingSource([ChangeBatch(t) for t in shops]))
    joined = join("enrich", left, right, ["shop_id"], ORDERS_SCHEMA, SHOPS_SCHEMA, how="left", partitions=4)
    out: list[pa.Table] = []
    op.output("out", op.map("data", joined, lambda batch: batch.data), TestingSink(out))
    start = time.perf_counter()
    run_main(flow)  # type: ignore[no-untyped-call]
    seconds = time.perf_counter() - start
    rss = proc_status_kb("VmHWM") or 0
    print(
        f"shop DWD join: {changes:,} changes in {seconds:.3f} s = {changes / seconds:,.0f} changes/s, "
        f"{sum(t.num_rows for t in out):,} changes out, peak RSS {rss / 1024:,.0f} MB"
    )
    if args.check:
        print("result:", digest(out))


if __name__ == "__main__":
    main()
