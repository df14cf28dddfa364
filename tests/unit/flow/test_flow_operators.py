"""The bytewax wiring of the operators: a small in-process flow per operator, fed by the real lake
source and read back through the real sink or a testing sink."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main

import flowlake as fl
from flowlake.changelog import RowKind
from flowlake.flow import aggs
from flowlake.flow._topn import SortKey
from flowlake.flow.batch import ChangeBatch, RowChange, from_rows, rows
from flowlake.flow.operators import (
    aggregate,
    dedup,
    filter_rows,
    join,
    lake_input,
    lake_output,
    lookup_join,
    map_rows,
    to_rows,
    top_n,
)

ORDERS = pa.schema(
    [pa.field("oid", pa.int64(), nullable=False), ("shop", pa.int32()), ("amount", pa.int64())]
)
SHOPS = pa.schema([pa.field("shop", pa.int32(), nullable=False), ("city", pa.string())])


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    return fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())


def test_lookup_filter_map_and_rows(cat: fl.Catalog) -> None:
    orders = cat.create_table("ods.o", ORDERS, primary_key=["oid"])
    shops = cat.create_table("ods.s", SHOPS, primary_key=["shop"])
    shops.upsert(pa.table({"shop": pa.array([1, 2], pa.int32()), "city": ["Oslo", "Lima"]}))
    orders.upsert(pa.table({"oid": [1, 2, 3], "shop": pa.array([1, 2, 9], pa.int32()), "amount": [5, 50, 7]}))
    orders.upsert(pa.table({"oid": [2], "shop": pa.array([2], pa.int32()), "amount": [3]}))
    flow = Dataflow("ops")
    stream = lake_input("in", flow, "ods.o", catalog=cat, stop="head")
    stream = lookup_join("city", stream, "ods.s", on=["shop"], columns=["city"], catalog=cat)
    stream = filter_rows("big", stream, ("amount", ">=", 5))
    stream = map_rows(
        "double",
        stream,
        lambda t: t.set_column(2, "amount", pa.array([2 * v for v in t["amount"].to_pylist()])),
    )
    out: list[RowChange] = []
    op.output("out", to_rows("rows", stream), TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    got = [(c.kind, c.row["oid"], c.row["amount"], c.row["city"]) for c in out]
    # order 2 drops below the filter on its update: its -U/+U pair becomes a -D
    assert got == [
        (RowKind.INSERT, 1, 10, "Oslo"),
        (RowKind.INSERT, 2, 100, "Lima"),
        (RowKind.INSERT, 3, 14, None),
        (RowKind.DELETE, 2, 100, "Lima"),
    ]


def test_dedup_and_aggregate_into_lake(cat: fl.Catalog) -> None:
    cat.create_table("dws.by_shop", pa.schema([pa.field("shop", pa.int32(), nullable=False),
                                                ("n", pa.int64()), ("total", pa.int64())]),
                     primary_key=["shop"])  # fmt: skip
    events = [
        (RowKind.INSERT, {"oid": 1, "shop": 1, "amount": 5}),
        (RowKind.INSERT, {"oid": 1, "shop": 1, "amount": 5}),  # a duplicate: dropped
        (RowKind.INSERT, {"oid": 2, "shop": 1, "amount": 7}),
        (RowKind.INSERT, {"oid": 1, "shop": 2, "amount": 6}),  # a new version of order 1: moves shop
    ]
    batches = [ChangeBatch(from_rows([e], ORDERS), {"table:events": i + 1}) for i, e in enumerate(events)]
    flow = Dataflow("agg")
    stream = op.input("in", flow, TestingSource(batches))
    unique = dedup("latest", stream, keys=["oid"], partitions=2)
    totals = aggregate("by_shop", unique, by=["shop"], aggs={"n": aggs.count(), "total": aggs.sum("amount")})
    lake_output("out", totals.changes, "dws.by_shop", catalog=cat)
    run_main(flow, epoch_interval=dt.timedelta(0))  # type: ignore[no-untyped-call]
    table = cat.load_table("dws.by_shop")
    assert sorted(table.read().to_pylist(), key=lambda r: r["shop"]) == [
        {"shop": 1, "n": 1, "total": 7},
        {"shop": 2, "n": 1, "total": 6},
    ]
    assert table.source_position("table:events") == 4


def test_steps_report_records_lag_and_state_size_as_metrics(cat: fl.Catalog) -> None:
    from flowlake.runtime.observability import REGISTRY

    orders = cat.create_table("ods.om", ORDERS, primary_key=["oid"])
    orders.upsert(pa.table({"oid": [1, 2, 3], "shop": pa.array([1, 1, 2], pa.int32()), "amount": [5, 6, 7]}))
    orders.upsert(pa.table({"oid": [3], "shop": pa.array([2], pa.int32()), "amount": [8]}))
    cat.create_table("dws.om", pa.schema([pa.field("shop", pa.int32(), nullable=False), ("n", pa.int64())]),
                     primary_key=["shop"])  # fmt: skip
    flow = Dataflow("metered")
    stream = lake_input("orders_in", flow, "ods.om", catalog=cat, stop="head")
    result = aggregate("per_shop", stream, by=["shop"], aggs={"n": aggs.count()})
    lake_output("out", result.changes, "dws.om", catalog=cat)
    run_main(flow)  # type: ignore[no-untyped-call]

    def sample(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    records = "flowlake_records_total"
    assert sample(records, flow="metered", step="orders_in.source", direction="in") == 5  # 3 +I, -U/+U
    assert sample(records, flow="metered", step="per_shop", direction="in") == 5
    assert sample(records, flow="metered", step="per_shop", direction="out") == 2  # the update kept n
    assert sample(records, flow="metered", step="out.sink", direction="out") == 2
    assert sample("flowlake_state_keys", flow="metered", step="per_shop") == 2
    assert sample("flowlake_lag_versions", consumer="metered.orders_in.source", table="ods.om") == 0
    assert cat.load_table("dws.om").read().num_rows == 2


def test_lookup_join_on_the_dimension_key_looks_rows_up_and_holds_no_snapshot(cat: fl.Catalog) -> None:
    from flowlake.flow.operators import _DimCache

    shops = cat.create_table("ods.s", SHOPS, primary_key=["shop"])
    shops.upsert(pa.table({"shop": pa.array([1, 2], pa.int32()), "city": ["Oslo", "Lima"]}))
    shops.compact()
    shops.upsert(pa.table({"shop": pa.array([2], pa.int32()), "city": ["Pune"]}))
    cache = _DimCache("ods.s", cat, ["shop", "city"], refresh_interval=0.0)
    assert cache.by_key(["shop"]) and not cache.by_key(["city"])
    orders = pa.table({"oid": [1, 2, 3, 4], "shop": pa.array([2, None, 9, 2], pa.int64())})
    rows, version = cache.rows_for(orders, ["shop"])
    assert version == shops.refresh().version and cache._rows is None  # no snapshot held
    assert rows.to_pylist() == [{"shop": 2, "city": "Pune"}]  # NULL and unknown keys are not there
    empty, _ = cache.rows_for(orders.filter(pa.array([False, True, False, False])), ["shop"])
    assert empty.num_rows == 0 and empty.schema.names == ["shop", "city"]


def _order_versions(versions: int, seed: int, *, fresh: bool) -> tuple[list[ChangeBatch], dict[int, Any]]:
    """Versions of order changes (inserts, updates that may move an order, deletes) and the live
    orders after them."""
    rng = random.Random(seed)
    live: dict[int, dict[str, Any]] = {}
    batches, next_id = [], 0
    for v in range(1, versions + 1):
        changes: list[tuple[RowKind, dict[str, Any]]] = []
        for _ in range(rng.randint(0, 6)):
            roll = rng.random()
            if roll < 0.5 or not live:
                row = {"oid": next_id, "shop": rng.randint(0, 4), "amount": rng.randint(1, 9)}
                live[next_id], next_id = row, next_id + 1
                changes.append((RowKind.INSERT, row))
            elif roll < 0.8:
                oid = rng.choice(sorted(live))
                new = {**live[oid], "shop": rng.randint(0, 4), "amount": rng.randint(1, 9)}
                changes += [(RowKind.UPDATE_BEFORE, live[oid]), (RowKind.UPDATE_AFTER, new)]
                live[oid] = new
            else:
                oid = rng.choice(sorted(live))
                changes.append((RowKind.DELETE, live.pop(oid)))
        batches.append(ChangeBatch(from_rows(changes, ORDERS), {"table:orders": v}, fresh))
    return batches, live


def _folded(batches: list[ChangeBatch], per_poll: int) -> tuple[dict[int, dict[str, Any]], int, int]:
    """Run a per-shop aggregate (with per-value counts) over ``batches``, ``per_poll`` versions a
    poll; the table its changes make, its output items and the last position they carry."""
    flow = Dataflow("coalesce")
    up = op.input("in", flow, TestingSource(batches, batch_size=per_poll))
    spec = {"n": aggs.count(), "total": aggs.sum("amount"), "top": aggs.max("amount"),
            "kinds": aggs.count_distinct("amount")}  # fmt: skip
    out: list[ChangeBatch] = []
    op.output("out", aggregate("by_shop", up, by=["shop"], aggs=spec, partitions=2).changes, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    table: dict[int, dict[str, Any]] = {}
    for batch in out:
        for change in rows(batch):
            if change.kind in (RowKind.UPDATE_BEFORE, RowKind.DELETE):
                assert table.pop(change.row["shop"]) == change.row  # retracts exactly what it emitted
            else:
                assert change.row["shop"] not in table
                table[change.row["shop"]] = change.row
    return table, len(out), max(b.positions.get("table:orders", 0) for b in out)


def test_fresh_versions_queued_together_are_folded_as_one() -> None:
    """A source that hands over several fresh versions at once gets them folded as one batch per key
    partition: the same table of results, fewer output batches; batches that are not fresh (a
    replay's) are folded one by one whatever arrives together."""
    for seed in range(4):
        fresh, live = _order_versions(60, seed, fresh=True)
        stale, _ = _order_versions(60, seed, fresh=False)
        want: dict[int, dict[str, Any]] = {}
        for row in live.values():
            shop = want.setdefault(row["shop"], {"shop": row["shop"], "n": 0, "total": 0, "top": 0,
                                                 "kinds": set()})  # fmt: skip
            shop["n"] += 1
            shop["total"] += row["amount"]
            shop["top"] = max(shop["top"], row["amount"])
            shop["kinds"].add(row["amount"])
        for shop in want.values():
            shop["kinds"] = len(shop["kinds"])
        joined, joined_items, joined_at = _folded(fresh, 12)
        alone, alone_items, alone_at = _folded(stale, 12)
        assert joined == alone == want
        assert joined_at == alone_at == 60
        assert joined_items <= 2 * 5 < alone_items  # (two key partitions, five polls)


def _step_ids(step: Any) -> list[str]:
    return [step.step_id, *(i for sub in getattr(step, "substeps", []) for i in _step_ids(sub))]


def test_the_aggregate_fold_keeps_the_step_ids_its_recovery_stores_name() -> None:
    """The fold's state is stored under its step id: it must stay the one ``stateful_flat_map`` gave
    it before the fold took a key's queued batches at once, or a resume would start from nothing."""
    flow = Dataflow("ids")
    up = op.input("in", flow, TestingSource([ChangeBatch(ORDERS.empty_table())]))
    op.inspect("out", aggregate("by_shop", up, by=["shop"], aggs={"n": aggs.count()}).changes)
    ids = [i for step in flow.substeps for i in _step_ids(step)]
    assert "ids.by_shop.fold.stateful.stateful_batch" in ids


def _through(
    step: str, batches: list[ChangeBatch], shops: list[ChangeBatch], per_poll: int
) -> tuple[Counter[tuple[Any, ...]], int]:
    """The rows the changelog of ``step`` (``dedup``, ``top_n`` or ``join``) leaves, and its output
    items, with the order versions ``per_poll`` a poll."""
    flow = Dataflow(f"coalesce_{step}")
    up = op.input("in", flow, TestingSource(batches, batch_size=per_poll))
    if step == "dedup":
        result = dedup("latest", up, keys=["oid"], partitions=2)
    elif step == "top_n":
        result = top_n("best", up, ["shop"], [SortKey("amount", descending=True)], 2, partitions=2)
    else:
        right = op.input("shops", flow, TestingSource(shops))
        result = join("with_city", up, right, ["shop"], ORDERS, SHOPS, partitions=2)
    out: list[ChangeBatch] = []
    op.output("out", result, TestingSink(out))
    run_main(flow)  # type: ignore[no-untyped-call]
    held: Counter[tuple[Any, ...]] = Counter()
    for batch in out:
        for change in rows(batch):
            row = tuple(change.row.values())
            if change.kind in (RowKind.UPDATE_BEFORE, RowKind.DELETE):
                assert held[row] > 0, change  # retracts only what it emitted
                held[row] -= 1
            else:
                held[row] += 1
    return +held, len(out)


@pytest.mark.parametrize("step", ["dedup", "top_n", "join"])
def test_fresh_versions_are_folded_as_one_by_every_stateful_step(step: str) -> None:
    """Dedup, Top-N and the join fold the fresh batches a key partition has queued as one too: the
    same rows come out of their changelogs, from fewer output batches."""
    shop_rows = [(RowKind.INSERT, {"shop": s, "city": f"c{s % 2}"}) for s in range(5)]
    shops = [ChangeBatch(from_rows(shop_rows, SHOPS), {"table:shops": 1})]
    for seed in range(3):
        fresh, live = _order_versions(40, seed, fresh=True)
        stale, _ = _order_versions(40, seed, fresh=False)
        joined, joined_items = _through(step, fresh, shops, 10)
        alone, alone_items = _through(step, stale, shops, 10)
        assert joined == alone
        assert joined_items < alone_items
        if step == "dedup":
            assert joined == Counter(tuple(r.values()) for r in live.values())
        if step == "join":
            assert joined == Counter((*r.values(), f"c{r['shop'] % 2}") for r in live.values())
