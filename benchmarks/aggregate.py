"""Retraction-correct aggregation throughput, state memory, and incremental refresh vs recompute.

(a) flowlake's ``aggregate`` (Arrow batches of 10k changes, 4 key partitions, one bytewax worker) and
(b) a plain bytewax ``stateful_map`` fed per-row items in input batches of 1000 (best of 3 each),
both folding the same 1M changes (60% inserts; updates as a -U/+U pair that may move an order to
another shop) into per-shop count/sum. (c) Peak RSS of a 1M-group state (a subprocess). (d) An
incremental refresh: 10k changes folded into the state of a 10M-row input (and committed to the lake
table), timed against a DuckDB full recompute of the same result from Parquet. (e) What a snapshot
costs per epoch (the time of bytewax's ``deepcopy`` plus its pickle, and the bytes written) for a
1M-group state when 1k changes arrive per epoch: one pickle of the whole state (no state folder)
against chunked snapshots (a state folder: only the changed groups are written), and the resume time.
(f) The same two snapshot forms per state size (1k to 100k groups): where a whole pickle (inline)
stops being cheaper than an fsynced chunk, which sets the inline threshold.
(g) The full ``dws.shop_gmv_minute`` aggregate set of the demo (count, filtered sum, avg, max, count
distinct, updating minute windows with a 2h horizon) over 1M order changes as the DWD changelog carries
them (inserts, -U/+U status and amount updates, deletes), through the same path as (a), and its state
fold alone (``AggregateState.apply`` on the same batches, no bytewax). (h) The same changes handed
over ``--shop-versions`` versions at a time, fresh (as a lake source behind its input does: the
aggregate folds them as one), through bytewax; and in versions of that many 10k-change steps each.

    python benchmarks/aggregate.py [--changes 1000000] [--shops 500] [--rows 10000000] [--json out.json]
    python benchmarks/aggregate.py --snapshots-only [--json out.json]   # just (e) and (f)
    python benchmarks/aggregate.py --threshold-only [--threshold-groups 1000,10000]   # just (f)
    python benchmarks/aggregate.py --throughput-only [--repeat 3]   # just (a), (b), (c), (g) and (h)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import pickle
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from _measure import proc_status_kb, snapshot
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

import flowlake as fl
from flowlake.demo.flows import SHOP_MINUTE_AGGS
from flowlake.demo.workload import STATUSES, cents_to_decimal
from flowlake.flow import aggs
from flowlake.flow._aggstate import AggregateState
from flowlake.flow._snapshot import thaw
from flowlake.flow.batch import ChangeBatch
from flowlake.flow.lake import consolidate
from flowlake.flow.operators import aggregate

BATCH = 10_000
T0_US = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


class _Count(StatelessSinkPartition[Any]):
    def __init__(self, box: list[int], rows: bool) -> None:
        self.box, self.rows = box, rows

    def write_batch(self, items: list[Any]) -> None:
        self.box[0] += sum(item.data.num_rows for item in items) if self.rows else len(items)


class CountSink(DynamicSink[Any]):
    """Counts what reaches it, items or (``rows``) the rows of change batches (the cost of output is
    not what is measured)."""

    def __init__(self, *, rows: bool = False) -> None:
        self.box = [0]
        self.rows = rows

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.box, self.rows)


def changes(total: int, groups: int, seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of (group id, cents, kind): 60% inserts, updates as -U/+U pairs (20% of rows each)."""
    rng = np.random.default_rng(seed)
    live_group = np.empty(0, np.int64)
    live_cents = np.empty(0, np.int64)
    out = []
    made = 0
    while made < total:
        n_ins = int(BATCH * 0.6)
        n_upd = min((BATCH - n_ins) // 2, len(live_group))
        if made + n_ins + 2 * n_upd > total:
            n_ins, n_upd = total - made, 0
        g_new = rng.integers(0, groups, n_ins)
        c_new = rng.integers(100, 100_000, n_ins)
        picks = rng.choice(len(live_group), n_upd, replace=False) if n_upd else np.empty(0, np.int64)
        g_old, c_old = live_group[picks], live_cents[picks]
        g_upd, c_upd = rng.integers(0, groups, n_upd), rng.integers(100, 100_000, n_upd)
        live_group[picks], live_cents[picks] = g_upd, c_upd
        live_group, live_cents = np.concatenate([live_group, g_new]), np.concatenate([live_cents, c_new])
        pair_g = np.stack([g_old, g_upd], axis=1).ravel()
        pair_c = np.stack([c_old, c_upd], axis=1).ravel()
        pair_k = np.tile(np.array([1, 2], np.int8), n_upd)
        out.append(
            (
                np.concatenate([g_new, pair_g]),
                np.concatenate([c_new, pair_c]),
                np.concatenate([np.zeros(n_ins, np.int8), pair_k]),
            )
        )
        made += n_ins + 2 * n_upd
    return out


def to_arrow(batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> pa.Table:
    g, c, k = batch
    return pa.table({"shop_id": pa.array(g, pa.int64()), "amount": cents_to_decimal(c), "_kind": pa.array(k)})


def run_flowlake(batches: list[pa.Table]) -> tuple[float, float, int]:
    """(a): wall and CPU seconds, result batches out."""
    flow = Dataflow("bench_flowlake")
    source = op.input(
        "in", flow, TestingSource([ChangeBatch(b, {"table:x": i}) for i, b in enumerate(batches)])
    )
    result = aggregate("agg", source, by=["shop_id"], aggs={"n": aggs.count(), "gmv": aggs.sum("amount")})
    sink = CountSink()
    op.output("out", result.changes, sink)
    t, c = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    return time.perf_counter() - t, time.process_time() - c, sink.box[0]


def run_bytewax(batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float, int]:
    """(b): wall and CPU seconds, items out."""
    items: list[tuple[str, tuple[int, int]]] = []
    for g, c, k in batches:
        w = np.where((k == 1) | (k == 3), -1, 1)
        items += list(zip(g.astype(str).tolist(), zip(c.tolist(), w.tolist(), strict=True), strict=True))
    flow = Dataflow("bench_bytewax")
    source = op.input("in", flow, TestingSource(items, batch_size=1000))

    def fold(
        state: tuple[int, int] | None, value: tuple[int, int]
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        count, total = state or (0, 0)
        cents, weight = value
        new = (count + weight, total + weight * cents)
        return new, new

    summed = op.stateful_map("sum", source, fold)
    sink = CountSink()
    op.output("out", summed, sink)
    t, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    return time.perf_counter() - t, time.process_time() - cpu, sink.box[0]


SHOP_MINUTE_WINDOW = aggs.minutes(1, on="created_at", horizon="2h")
SHOP_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("shop_id", pa.int32()),
        ("user_id", pa.int64()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("_kind", pa.int8()),
    ]
)


def shop_changes(total: int, shops: int, users: int, seed: int) -> list[pa.Table]:
    """Batches of ``dwd.orders_enriched`` changes: 60% new orders, 30% updates (a -U/+U pair each: a new
    status, one in five also a new amount), 10% deletes of live orders; event time advances a minute per
    batch and a new order's ``created_at`` is up to 5 minutes before it."""
    rng = np.random.default_rng(seed)
    cols = ("order_id", "shop_id", "user_id", "status", "cents", "created")
    live: dict[str, np.ndarray] = {c: np.empty(0, np.int64) for c in cols}
    out: list[pa.Table] = []
    made, next_id, step = 0, 0, 0
    while made < total:
        n_ins = min(int(BATCH * 0.6), total - made)
        n_upd = min(int(BATCH * 0.15), len(live["order_id"]), (total - made - n_ins) // 2)
        n_del = min(
            BATCH - n_ins - 2 * n_upd, len(live["order_id"]) - n_upd, total - made - n_ins - 2 * n_upd
        )
        now = T0_US + step * 60_000_000
        new = {
            "order_id": np.arange(next_id, next_id + n_ins),
            "shop_id": rng.integers(0, shops, n_ins),
            "user_id": rng.integers(0, users, n_ins),
            "status": rng.integers(0, len(STATUSES), n_ins),
            "cents": rng.integers(100, 100_000, n_ins),
            "created": now - rng.integers(0, 300_000_000, n_ins),
        }
        next_id += n_ins
        picks = rng.choice(len(live["order_id"]), n_upd + n_del, replace=False)
        upd, dele = picks[:n_upd], picks[n_upd:]
        old = {c: live[c][upd] for c in cols}
        after = dict(old)
        after["status"] = rng.integers(0, len(STATUSES), n_upd)
        moved = rng.random(n_upd) < 0.2
        after["cents"] = np.where(moved, rng.integers(100, 100_000, n_upd), old["cents"])
        for c in cols:
            live[c][upd] = after[c]
        gone = {c: live[c][dele] for c in cols}
        keep = np.ones(len(live["order_id"]), bool)
        keep[dele] = False
        live = {c: np.concatenate([live[c][keep], new[c]]) for c in cols}
        pairs = {c: np.stack([old[c], after[c]], axis=1).ravel() for c in cols}
        parts = (new, pairs, gone)
        kinds = np.concatenate(
            [np.zeros(n_ins, np.int8), np.tile(np.array([1, 2], np.int8), n_upd), np.full(n_del, 3, np.int8)]
        )
        joined = {c: np.concatenate([p[c] for p in parts]) for c in cols}
        out.append(
            pa.table(
                {
                    "order_id": pa.array(joined["order_id"], pa.int64()),
                    "shop_id": pa.array(joined["shop_id"], pa.int32()),
                    "user_id": pa.array(joined["user_id"], pa.int64()),
                    "status": pa.array(STATUSES[joined["status"]]),
                    "amount": cents_to_decimal(joined["cents"]),
                    "created_at": pa.array(joined["created"], pa.timestamp("us", tz="UTC")),
                    "_kind": pa.array(kinds),
                },
                schema=SHOP_SCHEMA,
            )
        )
        made += len(kinds)
        step += 1
    return out


def run_flowlake_shop(
    batches: list[pa.Table], *, per_poll: int = 1, fresh: bool = False
) -> tuple[float, float, int]:
    """(g) through bytewax: wall and CPU seconds, result changes out; ``per_poll`` versions a poll of
    the source, ``fresh`` ones (see ``ChangeBatch.fresh``: the aggregate folds those arriving
    together as one)."""
    flow = Dataflow("bench_flowlake_shop")
    items = [ChangeBatch(b, {"table:x": i}, fresh) for i, b in enumerate(batches)]
    source = op.input("in", flow, TestingSource(items, batch_size=per_poll))
    result = aggregate("agg", source, by=["shop_id"], aggs=SHOP_MINUTE_AGGS, window=SHOP_MINUTE_WINDOW)
    sink, late = CountSink(rows=True), CountSink(rows=True)
    op.output("out", result.changes, sink)
    op.output("late", result.late, late)
    t, c = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    return time.perf_counter() - t, time.process_time() - c, sink.box[0]


def fold_shop(batches: list[pa.Table]) -> tuple[float, float, int]:
    """(g) the state fold alone: four key partitions' states folding the same sub-batches, no bytewax."""
    from flowlake.flow._aggstate import with_watermarks
    from flowlake.flow.batch import split_by_partition

    parts: list[tuple[str, pa.Table]] = []
    top = None
    for batch in batches:
        stamped, top = with_watermarks(batch, "created_at", top)
        parts += [(k, b.data) for k, b in split_by_partition(ChangeBatch(stamped), ["shop_id"], 4)]
    states = {str(p): AggregateState(["shop_id"], SHOP_MINUTE_AGGS, SHOP_MINUTE_WINDOW) for p in range(4)}
    out = 0
    t, c = time.perf_counter(), time.process_time()
    for key, data in parts:
        out += states[key].apply(data)[0].num_rows
    return time.perf_counter() - t, time.process_time() - c, out


def _proc_mb(field: str) -> float:
    """``VmRSS``/``VmHWM`` of this process in MB (``ru_maxrss`` where /proc has none)."""
    kb = proc_status_kb(field)
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def rss_mode(groups: int) -> dict[str, Any]:
    """Fold one insert per group for ``groups`` groups; report peak RSS (run in a subprocess)."""
    base = _proc_mb("VmRSS")
    rng = np.random.default_rng(3)
    state = AggregateState(["shop_id"], {"n": aggs.count(), "gmv": aggs.sum("amount")}, None)
    elapsed = 0.0
    for start in range(0, groups, BATCH):
        n = min(BATCH, groups - start)
        ids = np.arange(start, start + n)
        batch = to_arrow((ids, rng.integers(100, 100_000, n), np.zeros(n, np.int8)))
        t = time.perf_counter()
        state.apply(batch)
        elapsed += time.perf_counter() - t
    peak, now = _proc_mb("VmHWM"), _proc_mb("VmRSS")
    return {
        "groups_live": state.groups,
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(base, 1),
        "state_mb": round(now - base, 1),
        "changes_per_s": round(groups / elapsed),
    }


def _epoch_changes(rng: np.random.Generator, groups: int, changed: int) -> pa.Table:
    """``changed`` changes: updates (-U/+U pairs) of random orders moving between random groups."""
    pairs = changed // 2
    old, new = rng.integers(0, groups, pairs), rng.integers(0, groups, pairs)
    ids = np.empty(2 * pairs, np.int64)
    ids[0::2], ids[1::2] = old, new
    kinds = np.tile(np.array([1, 2], np.int8), pairs)
    return to_arrow((ids, np.full(2 * pairs, 100, np.int64), kinds))


def snapshot_costs(groups: int, changed: int, epochs: int, chunked: bool) -> dict[str, Any]:
    """Per-epoch snapshot time and bytes of a ``groups``-group count/sum, ``changed`` changes an epoch."""
    rng = np.random.default_rng(11)
    base_mb = _proc_mb("VmRSS")
    state = AggregateState(["shop_id"], {"n": aggs.count(), "gmv": aggs.sum("amount")}, None)
    folder = Path(tempfile.mkdtemp(prefix="flowlake-chunks-"))
    try:
        if chunked:
            state.keep_chunks(folder)
        for start in range(0, groups, BATCH):  # four orders per group, so moves (almost) never empty one
            ids = np.repeat(np.arange(start, min(groups, start + BATCH)), 4)
            state.apply(to_arrow((ids, np.full(len(ids), 100, np.int64), np.zeros(len(ids), np.int8))))
        _, first_s, first_bytes = snapshot(state)
        times, sizes, folds = [], [], []
        for _ in range(epochs):
            batch = _epoch_changes(rng, groups, changed)
            t = time.perf_counter()
            state.apply(batch)
            folds.append(time.perf_counter() - t)
            blob, seconds, size = snapshot(state)
            times.append(seconds)
            sizes.append(size)
        peak_mb = _proc_mb("VmHWM")  # before the resume, which holds a second copy of the state
        t = time.perf_counter()
        back = thaw(pickle.loads(blob))  # noqa: S301 - our own bytes
        resume_s = time.perf_counter() - t
        assert back is not None
        back.configure(["shop_id"], state.aggs, None)
        if chunked:
            back.keep_chunks(folder)
        batch = _epoch_changes(rng, groups, changed)  # the first epoch after the resume: a large
        t = time.perf_counter()  # state reads back what it touches (see EAGER_RESUME_RECORDS)
        back.apply(batch)
        first_fold_s = time.perf_counter() - t
        state.apply(batch)
        back.load_cold()
        assert back.groups == state.groups
        ms = np.array(times) * 1000
        return {
            "groups": groups,
            "changes_per_epoch": changed,
            "epochs": epochs,
            "first_snapshot_ms": round(first_s * 1000, 1),
            "first_snapshot_bytes": first_bytes,
            "snapshot_ms_median": round(float(np.median(ms)), 2),
            "snapshot_ms_p99": round(float(np.percentile(ms, 99)), 2),
            "snapshot_ms_max": round(float(ms.max()), 2),
            "snapshot_bytes_median": int(np.median(sizes)),
            "snapshot_bytes_max": int(max(sizes)),
            "fold_ms_median": round(float(np.median(folds)) * 1000, 2),
            "resume_ms": round(resume_s * 1000, 1),
            "first_fold_after_resume_ms": round(first_fold_s * 1000, 1),
            "chunk_files": len(list(folder.rglob("*.chunk"))),
            "peak_rss_mb": round(peak_mb, 1),
            "rss_before_state_mb": round(base_mb, 1),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def snapshot_section(groups: int, changed: int, epochs: int) -> dict[str, Any]:
    """(e): whole-pickle snapshots (before) against chunked snapshots (after), each in a subprocess."""
    out = {}
    for mode, n in (("whole_pickle", max(20, epochs // 10)), ("chunked", epochs)):
        argv = [sys.executable, __file__, "--snapshot-mode", mode, "--snapshot-groups", str(groups),
                "--snapshot-changes", str(changed), "--snapshot-epochs", str(n)]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603 - this script
        out[mode] = json.loads(done.stdout)
    return out


def threshold_section(sizes: list[int], changed: int, epochs: int) -> list[dict[str, Any]]:
    """(f): where a whole pickle stops being cheaper than an fsynced chunk, per state size.

    For each group count, the median per-epoch snapshot time (bytewax's deepcopy + pickle) and bytes
    of both forms with ``changed`` changes an epoch, and the whole pickle's size (what the inline
    threshold :data:`~flowlake.flow._snapshot.DEFAULT_INLINE_BYTES` compares).
    """
    rows = []
    for groups in sizes:
        row: dict[str, Any] = {"groups": groups}
        for chunked in (False, True):
            rng = np.random.default_rng(5)
            state = AggregateState(["shop_id"], {"n": aggs.count(), "gmv": aggs.sum("amount")}, None)
            folder = Path(tempfile.mkdtemp(prefix="flowlake-threshold-"))
            try:
                if chunked:
                    state.keep_chunks(folder)
                ids = np.repeat(np.arange(groups), 4)
                state.apply(to_arrow((ids, np.full(len(ids), 100, np.int64), np.zeros(len(ids), np.int8))))
                blob, _, _ = snapshot(state)
                if not chunked:
                    row["whole_pickle_bytes"] = len(blob)
                times, written = [], []
                for _ in range(epochs):
                    state.apply(_epoch_changes(rng, groups, changed))
                    blob, seconds, size = snapshot(state)
                    times.append(seconds)
                    written.append(size)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            mode = "chunked" if chunked else "whole"
            row[f"{mode}_ms_median"] = round(float(np.median(times)) * 1000, 3)
            row[f"{mode}_bytes_median"] = int(np.median(written))
        rows.append(row)
    return rows


def print_threshold(rows: list[dict[str, Any]]) -> None:
    """Print section (f)."""
    for r in rows:
        print(
            f"  (f) {r['groups']:>9,} groups (whole pickle {r['whole_pickle_bytes']:>11,} B): median "
            f"whole {r['whole_ms_median']:.3f} ms / {r['whole_bytes_median']:,} B, "
            f"chunked {r['chunked_ms_median']:.3f} ms / {r['chunked_bytes_median']:,} B"
        )


def print_snapshots(snap: dict[str, Any]) -> None:
    """Print section (e)."""
    for mode, r in snap.items():
        print(
            f"  (e) {mode:<12} {r['groups']:,} groups, {r['changes_per_epoch']:,} changes/epoch: snapshot "
            f"median {r['snapshot_ms_median']} ms / {r['snapshot_bytes_median']:,} B, p99 "
            f"{r['snapshot_ms_p99']} ms, max {r['snapshot_ms_max']} ms / {r['snapshot_bytes_max']:,} B; "
            f"first {r['first_snapshot_ms']} ms; resume {r['resume_ms']} ms (+ first fold "
            f"{r['first_fold_after_resume_ms']} ms); fold {r['fold_ms_median']} ms; "
            f"peak RSS {r['peak_rss_mb']} MB"
        )


def incremental(rows: int, shops: int, seed: int) -> dict[str, Any]:
    """10k changes into the state of a ``rows``-row DWS input vs a DuckDB recompute from Parquet."""
    import duckdb  # here only: (c) measures a process that has not loaded it, as a flow worker has not

    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-bench-agg-"))
    statuses = np.array(["created", "paid", "shipped", "done", "cancelled"])
    spec = {
        "orders": aggs.count(),
        "paid_gmv": aggs.sum("amount", where=("status", "==", "paid"), default=0),
        "avg_amount": aggs.avg("amount"),
    }
    window = aggs.minutes(1, on="created_at")
    state = AggregateState(["shop_id"], spec, window)
    parquet = tmp / "dwd.parquet"
    writer: pq.ParquetWriter | None = None
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        table = pa.table(
            {
                "order_id": pa.array(np.arange(start, start + n), pa.int64()),
                "shop_id": pa.array(rng.integers(0, shops, n), pa.int32()),
                "status": pa.array(statuses[rng.integers(0, 5, n)]),
                "amount": cents_to_decimal(rng.integers(100, 100_000, n)),
                "created_at": pa.array(
                    T0_US + rng.integers(0, 86_400_000_000, n), pa.timestamp("us", tz="UTC")
                ),
            }
        )
        writer = writer or pq.ParquetWriter(parquet, table.schema, compression="zstd")
        writer.write_table(table)
        state.apply(table.append_column("_kind", pa.array(np.zeros(n, np.int8))))
        if start == 0:
            sample = table.slice(0, 100_000)
    assert writer is not None
    writer.close()
    # 10k changes: 3,500 updates (as -U/+U) and 3,000 inserts
    picks = rng.choice(100_000, 3_500, replace=False)
    old = sample.take(pa.array(picks))
    new = old.set_column(1, "shop_id", pa.array(rng.integers(0, shops, 3_500), pa.int32()))
    new = new.set_column(3, "amount", cents_to_decimal(rng.integers(100, 100_000, 3_500)))
    inserts = sample.slice(0, 3_000).set_column(
        0, "order_id", pa.array(np.arange(rows, rows + 3_000), pa.int64())
    )
    order = np.stack([np.arange(3_500), np.arange(3_500) + 3_500], axis=1).ravel()
    pairs = pa.concat_tables([old, new]).take(pa.array(order))
    delta = pa.concat_tables([pairs, inserts])
    kinds = np.concatenate([np.tile(np.array([1, 2], np.int8), 3_500), np.zeros(3_000, np.int8)])
    delta = delta.append_column("_kind", pa.array(kinds))
    # the lake table holding the full result, with a warm writer (untimed)
    full, _ = AggregateState(["shop_id"], spec, window).apply(
        pa.Table.from_batches(pq.read_table(parquet).to_batches()).append_column(
            "_kind", pa.array(np.zeros(rows, np.int8))
        )
    )
    cat = fl.connect(catalog=f"sqlite:///{tmp / 'c.db'}", warehouse=(tmp / "wh").as_uri())
    dws = cat.create_table(
        "dws.m", full.drop_columns(["_kind"]).schema, primary_key=["shop_id", "minute"], buckets=8
    )
    dws.upsert(full.drop_columns(["_kind"]))
    t = time.perf_counter()
    out, _ = state.apply(delta)
    fold_s = time.perf_counter() - t
    t = time.perf_counter()
    dws.apply(consolidate(out, ["shop_id", "minute"]), token="bench/1")  # what lake_output does
    commit_s = time.perf_counter() - t
    con = duckdb.connect()
    sql = (
        f"select shop_id, time_bucket(interval '1 minute', created_at) as minute, count(*) as orders, "
        f"coalesce(sum(amount) filter (where status = 'paid'), 0) as paid_gmv, avg(amount) as avg_amount "
        f"from read_parquet('{parquet}') group by all"
    )
    times = []
    for _ in range(3):
        t = time.perf_counter()
        result = con.sql(sql).to_arrow_table()
        times.append(time.perf_counter() - t)
    recompute_s = min(times)
    return {
        "input_rows": rows,
        "groups": result.num_rows,
        "changes": delta.num_rows,
        "changed_groups_emitted": out.num_rows,
        "fold_ms": round(fold_s * 1000, 1),
        "fold_and_commit_ms": round((fold_s + commit_s) * 1000, 1),
        "duckdb_recompute_ms": round(recompute_s * 1000, 1),
        "ratio_fold": round(fold_s / recompute_s, 4),
        "ratio_fold_and_commit": round((fold_s + commit_s) / recompute_s, 4),
    }


def threshold_only(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Section (f); printed (and written) here when it is all that runs."""
    logging.getLogger("flowlake.flow").setLevel(logging.ERROR)  # moves may retract from emptied groups
    sizes = [int(g) for g in args.threshold_groups.split(",") if g]
    run = sizes and not args.throughput_only
    threshold = threshold_section(sizes, args.snapshot_changes, 60) if run else []
    if args.threshold_only:
        print(f"inline threshold on {platform.machine()}, load {os.getloadavg()[0]:.2f}")
        print_threshold(threshold)
        if args.json:
            args.json.write_text(json.dumps({"threshold": threshold}, indent=2))
    return threshold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--shops", type=int, default=500)
    parser.add_argument("--rows", type=int, default=10_000_000, help="DWS input rows for the refresh test")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for (a) and (b)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rss-groups", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--snapshots-only", action="store_true", help="run only (e), the snapshot costs")
    parser.add_argument("--snapshot-groups", type=int, default=1_000_000)
    parser.add_argument("--snapshot-changes", type=int, default=1000, help="changes per epoch in (e)")
    parser.add_argument("--snapshot-epochs", type=int, default=300)
    parser.add_argument("--snapshot-mode", choices=["whole_pickle", "chunked"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--threshold-groups", default="1000,3000,10000,30000,100000", help="state sizes (groups) for (f)"
    )
    parser.add_argument("--threshold-only", action="store_true", help="run only (f), the inline threshold")
    parser.add_argument("--throughput-only", action="store_true", help="run only (a), (b), (c), (g), (h)")
    parser.add_argument("--users", type=int, default=200_000, help="distinct users in (g)")
    parser.add_argument(
        "--shop-versions",
        default="2,5,10",
        help="(h): (g) again, this many versions a poll, and in versions of this many 10k-change steps",
    )
    args = parser.parse_args()
    if args.snapshot_mode:
        chunked = args.snapshot_mode == "chunked"
        costs = snapshot_costs(args.snapshot_groups, args.snapshot_changes, args.snapshot_epochs, chunked)
        print(json.dumps(costs))
        return
    if args.rss_groups:
        print(json.dumps(rss_mode(args.rss_groups)))
        return
    threshold = threshold_only(args)
    if args.threshold_only:
        return
    snap = (
        {}
        if args.throughput_only
        else snapshot_section(args.snapshot_groups, args.snapshot_changes, args.snapshot_epochs)
    )
    if args.snapshots_only:
        print(
            f"snapshot costs on {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
        )
        print_snapshots(snap)
        print_threshold(threshold)
        if args.json:
            args.json.write_text(json.dumps({"snapshots": snap, "threshold": threshold}, indent=2))
        return
    figures = throughput(args)
    if not args.throughput_only:
        figures["incremental"] = incremental(args.rows, args.shops, args.seed)
        figures["snapshots"], figures["threshold"] = snap, threshold
    print_figures(figures)
    print_snapshots(snap)
    print_threshold(threshold)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def _best(runs: list[tuple[float, float, int]], changes: int) -> dict[str, Any]:
    wall, cpu, out = min(runs)
    return {"changes_per_s": round(changes / wall), "cpu_changes_per_s": round(changes / cpu),
            "wall_s": [round(r[0], 3) for r in runs], "outputs": out}  # fmt: skip


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """(a), (b) and (g), alternating run by run so that they share the machine's load, then (c)."""
    logging.getLogger("flowlake.flow").setLevel(logging.ERROR)
    raw = changes(args.changes, args.shops, args.seed)
    arrow = [to_arrow(b) for b in raw]
    shop = shop_changes(args.changes, args.shops, args.users, args.seed)
    shop_changes_n = sum(b.num_rows for b in shop)
    fl_runs, bw_runs, shop_runs, fold_runs, loads = [], [], [], [], []
    for _ in range(args.repeat):
        loads.append(os.getloadavg()[0])
        fl_runs.append(run_flowlake(arrow))
        bw_runs.append(run_bytewax(raw))
        shop_runs.append(run_flowlake_shop(shop))
        fold_runs.append(fold_shop(shop))
    by_size = [_by_version_size(shop, int(k), args.repeat) for k in args.shop_versions.split(",") if k]
    loads.append(os.getloadavg()[0])
    rss = json.loads(
        subprocess.run(  # noqa: S603 - this script, our interpreter
            [sys.executable, __file__, "--rss-groups", str(args.changes)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    fl, bw = _best(fl_runs, args.changes), _best(bw_runs, args.changes)
    sh, fo = _best(shop_runs, shop_changes_n), _best(fold_runs, shop_changes_n)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_average": [round(x, 2) for x in loads],
        "changes": args.changes,
        "shops": args.shops,
        "flowlake_changes_per_s": fl["changes_per_s"],
        "flowlake": fl,
        "bytewax_stateful_map_changes_per_s": bw["changes_per_s"],
        "bytewax": bw,
        "speedup": round(fl["changes_per_s"] / bw["changes_per_s"], 2),
        "shop_gmv_minute": sh,
        "shop_gmv_minute_fold": fo,
        "shop_gmv_minute_vs_bytewax": round(sh["changes_per_s"] / bw["changes_per_s"], 2),
        "shop_gmv_minute_by_version_size": [
            {"changes_per_version": BATCH, "through_bytewax": sh, "fold": fo},
            *by_size,
        ],
        "state_1m_groups": rss,
    }


def _by_version_size(steps: list[pa.Table], k: int, repeat: int) -> dict[str, Any]:
    """(h) the changes of (g) ``k`` 10k-change versions at a time: as a lake source behind its input
    hands them over (up to 64 versions a poll), fresh (committed after the source started, so the
    aggregate folds a key partition's together as one), through bytewax; and the same changes in
    versions of ``k`` steps each (event time still advancing a minute a step), as an input
    committing larger versions gives them (0.5 s epochs at 1M changes/s: 500k-change versions,
    sliced to the source's ``max_rows``, 100k), through bytewax and fold alone. A batch folds once
    per key partition, so its fixed cost is shared by more changes; results are the same (the
    state's property test cuts batches anywhere), the changes out fewer (a group changed several
    times in a fold is emitted once)."""
    versions = [pa.concat_tables(steps[i : i + k]) for i in range(0, len(steps), k)]
    total = sum(v.num_rows for v in versions)
    polled, through, fold = [], [], []
    for _ in range(repeat):
        polled.append(run_flowlake_shop(steps, per_poll=k, fresh=True))
        through.append(run_flowlake_shop(versions))
        fold.append(fold_shop(versions))
    return {"changes_per_version": k * BATCH, "fresh_versions_per_poll": k,
            "fresh_polled_through_bytewax": _best(polled, total),
            "through_bytewax": _best(through, total), "fold": _best(fold, total)}  # fmt: skip


def print_figures(figures: dict[str, Any]) -> None:
    """Print (a)-(d) and (g)."""
    fl, bw, sh, fo = (figures[k] for k in ("flowlake", "bytewax", "shop_gmv_minute", "shop_gmv_minute_fold"))
    rss = figures["state_1m_groups"]
    rows = [
        ("(a) flowlake aggregate, 10k-row Arrow batches",
         f"{fl['changes_per_s']:,} changes/s (CPU {fl['cpu_changes_per_s']:,}/s)"),
        ("(b) bytewax stateful_map, input batches of 1000",
         f"{bw['changes_per_s']:,} changes/s (CPU {bw['cpu_changes_per_s']:,}/s)"),
        ("(a) / (b)", f"{figures['speedup']}x"),
        ("(g) shop_gmv_minute set, same path as (a)",
         f"{sh['changes_per_s']:,} changes/s (CPU {sh['cpu_changes_per_s']:,}/s, {sh['outputs']:,} out)"),
        ("(g) / (b)", f"{figures['shop_gmv_minute_vs_bytewax']}x"),
        ("(g) shop_gmv_minute state fold alone",
         f"{fo['changes_per_s']:,} changes/s (CPU {fo['cpu_changes_per_s']:,}/s)"),
        *[
            (f"(h) the same, {r['changes_per_version'] // 1000}k-change input versions",
             f"{r['through_bytewax']['changes_per_s']:,} changes/s through bytewax, fold alone "
             f"{r['fold']['changes_per_s']:,}/s ({r['fold']['outputs']:,} out)")
            for r in figures["shop_gmv_minute_by_version_size"]
        ],
        *[
            (f"(h) 10k-change versions, {r['fresh_versions_per_poll']} fresh a poll",
             f"{r['fresh_polled_through_bytewax']['changes_per_s']:,} changes/s through bytewax "
             f"({r['fresh_polled_through_bytewax']['outputs']:,} out)")
            for r in figures["shop_gmv_minute_by_version_size"] if "fresh_versions_per_poll" in r
        ],
        ("(c) 1M-group state: peak RSS",
         f"{rss['peak_rss_mb']} MB (state {rss['state_mb']} MB, {rss['groups_live']:,} groups, "
         f"{rss['changes_per_s']:,} changes/s)"),
    ]  # fmt: skip
    inc = figures.get("incremental")
    if inc is not None:
        rows += [
            ("(d) 10k changes into 10M-row input: fold",
             f"{inc['fold_ms']} ms ({inc['changed_groups_emitted']:,} changes out)"),
            ("(d) fold + lake commit", f"{inc['fold_and_commit_ms']} ms"),
            ("(d) DuckDB full recompute from Parquet",
             f"{inc['duckdb_recompute_ms']} ms ({inc['groups']:,} groups)"),
            ("(d) incremental / recompute",
             f"{inc['ratio_fold']} (fold), {inc['ratio_fold_and_commit']} (with commit)"),
        ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    loads = ", ".join(f"{x:.1f}" for x in figures["load_average"])
    print(f"aggregate benchmark on {figures['machine']}, load average {loads}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
