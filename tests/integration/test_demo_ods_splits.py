"""The demo's ODS grows from a few buckets to many under its ingester while ``verify`` keeps passing
(issue 20).

The demo's own loop (generated Debezium JSONL → ODS ingester → the SQL views of ``shop.sql`` → DWD/DWS),
with the demo's table services running beside it, as ``flowlake demo`` runs them; only ``ods.orders``
starts with 2 buckets and a small ``bucket_target_rows``, so the services split it round after round
while the ingester keeps committing. After every round ODS equals the generated source and every
DWD/DWS table matches its DuckDB batch recompute.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from pathlib import Path

import pytest

import flowlake as fl
from flowlake.cdc import JsonlSource, OdsIngester
from flowlake.demo.flows import TABLES
from flowlake.demo.mariadb import ORDER_COLUMNS
from flowlake.demo.pipeline import OUTPUTS, ShopCdcGenerator, expected_orders, run_views_to_head
from flowlake.flow.verify import verify_table
from flowlake.table.bucketing import key_hash
from flowlake.testing.tables import data_file_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROUNDS = 6
TRANSACTIONS = 10
"""Source transactions per round (written ~0.05 s apart, while the ingester tails them)."""
CHANGES = 60
INITIAL = 400
TARGET = 100
"""``bucket_target_rows`` of ``ods.orders``: 400 orders at the start, ~1.7k at the end."""


def write_events(folder: Path, round_no: int, events: list[bytes]) -> None:
    final = folder / f"{round_no:05d}.jsonl"
    partial = final.with_suffix(".tmp")
    partial.write_bytes(b"\n".join(events) + b"\n")
    partial.rename(final)  # the ingester only ever sees whole files


def assert_routed(t: fl.LakeTable) -> None:
    """Every row of every live file at the head lives in the bucket the map routes its key to."""
    bmap = t.bucket_map
    for f in t._store.live_files(t._record.id, t.version):
        keys = data_file_rows(t, f, ["order_id"])
        assert set(bmap.route(key_hash(keys, ["order_id"])).tolist()) <= {f.bucket}, f.path


def ods_rows(catalog: fl.Catalog) -> list[tuple[object, ...]]:
    got = catalog.load_table("ods.orders").read().select(list(ORDER_COLUMNS)).to_pylist()
    return sorted(tuple(r.values()) for r in got)


def test_the_demo_ods_splits_from_2_buckets_to_many_while_verify_passes(tmp_path: Path) -> None:
    catalog = fl.connect(catalog=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=(tmp_path / "wh").as_uri())
    schema, key, properties = TABLES["ods.orders"]
    ods = catalog.create_table(
        "ods.orders", schema, primary_key=key, buckets=2,
        properties={**properties, "bucket_target_rows": str(TARGET)},
    )  # fmt: skip
    schema, key, properties = TABLES["ods.shops"]
    catalog.create_table("ods.shops", schema, primary_key=key, properties=properties)
    feed = tmp_path / "cdc"
    feed.mkdir()
    recovery = tmp_path / "recovery"
    stop = threading.Event()
    # the ingester tails the feed and commits every ~0.1 s while the table services split ods.orders
    ingester = OdsIngester(catalog, JsonlSource(feed.as_uri()), namespace="ods", max_latency_ms=100)
    threads = [threading.Thread(target=ingester.run, kwargs={"stop": stop}, daemon=True)]
    services = catalog.services(max_jobs=1, poll_seconds=0.1)  # as the demo runs them, polled faster
    threads.append(threading.Thread(target=services.run, daemon=True))
    for thread in threads:
        thread.start()
    generator = ShopCdcGenerator()
    buckets = [len(ods.bucket_map.buckets)]
    try:
        write_events(feed, 0, generator.snapshot(INITIAL, dt.datetime.now(dt.UTC)))
        for round_no in range(1, ROUNDS + 1):
            for tx in range(TRANSACTIONS):
                lines = generator.transaction(CHANGES, dt.datetime.now(dt.UTC), f"tx-{round_no}-{tx}")
                write_events(feed, round_no * 100 + tx, lines)
                time.sleep(0.05)
            expected = expected_orders(generator)
            deadline = time.monotonic() + 120
            while (got := ods_rows(catalog)) != expected and time.monotonic() < deadline:
                time.sleep(0.1)
            assert got == expected, f"round {round_no}: ODS did not reach the generated source in 120 s"
            run_views_to_head(catalog, recovery)
            for name in OUTPUTS:
                report = verify_table(catalog, name)
                assert report.ok, (round_no, name, [str(d) for d in report.differences[:5]])
            buckets.append(len(ods.refresh().bucket_map.buckets))
    finally:
        stop.set()
        services.stop()
        for thread in threads:
            thread.join()
    failed = [r for r in services.results if r.outcome == "failed"]
    assert not failed, failed[0]
    ods = ods.refresh()
    history = ods.history()
    writes = [c.version for c in history if c.operation == "write"]
    splits = [c for c in history if "buckets_rewritten" in c.summary]
    # the map grew round after round, and splits landed between the ingester's commits
    assert buckets[-1] >= 16, buckets
    assert sum(b > a for a, b in itertools.pairwise(buckets)) >= 3, buckets
    assert sum(1 for s in splits if writes[0] < s.version < writes[-1]) >= 3, [s.version for s in splits]
    # a split changes no row: every split version reads as the version before it
    for s in splits:
        before = ods.read(version=s.version - 1).sort_by("order_id")
        assert ods.read(version=s.version).sort_by("order_id").equals(before), s.version
    assert_routed(ods)
    print(json.dumps({"buckets": buckets, "splits": len(splits), "writes": len(writes),
                      "rounds": [s.summary.get("catchup_rounds") for s in splits],
                      "moved_rows": sum(s.summary.get("moved_rows", 0) for s in splits)}))  # fmt: skip
