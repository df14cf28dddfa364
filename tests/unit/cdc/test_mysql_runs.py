"""Runs of small transactions (``TxRun``) through the binlog source, without a server.

The reader hands consecutive one-rows-event MariaDB transactions over as one ``TxRun``; the source
must make of it exactly the groups it makes of the same transactions one by one (``TxRun.items``):
the same changes in the same groups, each ending on a transaction boundary with that transaction's
file, offset, GTID and GTID state. Where they fit the ODS columns, the joined rows travel as one
Arrow changelog per group instead of a dict per row.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from flowlake.cdc.handoff import WAKE_BATCH, Handoff
from flowlake.cdc.mysql import MySqlSource
from flowlake.cdc.mysql_binlog import TxRun
from flowlake.cdc.mysql_gtid import GtidTracker, MariaDbGtids, ResumeOrder, StoredOrders
from flowlake.cdc.mysql_rows import DecodedEvent
from flowlake.cdc.source import ChangeGroup, TableSpec

SPEC = TableSpec("db.t", pa.schema([pa.field("id", pa.int64(), nullable=False), ("v", pa.string())]), ("id",))


def source(*, limit: int, stored: str | None = None) -> MySqlSource:
    src = MySqlSource("mysql://root@127.0.0.1:1/db")
    src._flavour, src._server, src._gtids = "mariadb", "2", GtidTracker(MariaDbGtids.parse("0-1-10,1-1-3"))
    src._by_gtid = True
    src._specs = {"db.t": SPEC}
    src.target("db.t", SPEC)
    src.limit_groups(limit)
    if stored is not None:
        src._stored_orders = StoredOrders([(ResumeOrder(MariaDbGtids.parse(stored), "f", 1),)])
    return src


def run_of(rng: random.Random, transactions: int, *, first_seq: int = 11, bad: int | None = None) -> TxRun:
    """One-row inserts and two-image updates of ``db.t``; transaction ``bad`` holds a value the
    ODS column cannot (an integer for the string column)."""
    run = TxRun("f", "db.t", ("id", "v"), 0, 1, DecodedEvent([], [[], []]))
    kinds, ids, values = run.rows.kinds, run.rows.columns[0], run.rows.columns[1]
    for i in range(transactions):
        images = (1, 2) if rng.random() < 0.3 else (0,)
        for kind in images:
            kinds.append(kind)
            ids.append(i)
            values.append(7 if i == bad else f"v{i}-{kind}")
        run.ends.append(len(kinds))
        run.seqs.append(first_seq + i)
        run.positions.append(1000 + 100 * i)
        run.stamps.append(1_700_000_000 + i)
    return run


def changes(group: ChangeGroup) -> list[tuple[int, dict[str, Any]]]:
    batch = group.batches["db.t"]
    if batch.rows is not None:
        return [(kind, dict(row)) for kind, row in batch.rows]
    table = batch.changelog()
    kinds = table.column("_kind").to_pylist()
    return [(k, row) for k, row in zip(kinds, table.drop_columns(["_kind"]).to_pylist(), strict=True)]


def summary(groups: list[ChangeGroup]) -> list[Any]:
    return [(g.position, str(g.order[0]), g.source_ts_ms, changes(g)) for g in groups]


def poll_all(src: MySqlSource, items: list[Any]) -> list[ChangeGroup]:
    for item in items:
        src._queue.put(item, lambda: False)
    groups: list[ChangeGroup] = []
    while src._queue:
        groups += src.poll(0.0)
    return groups


@pytest.mark.parametrize("limit", [1, 7, 100, 1000])
def test_a_run_makes_the_groups_its_transactions_make_one_by_one(limit: int) -> None:
    rng = random.Random(limit)
    runs = [run_of(rng, 150), run_of(rng, 60, first_seq=161)]
    by_run = poll_all(source(limit=limit), runs)
    one_by_one = poll_all(source(limit=limit), [tx for run in runs for tx in run.items()])
    assert summary(by_run) == summary(one_by_one)
    assert by_run[-1].position == {
        "file": "f",
        "pos": 6900,
        "gtid": "0-1-220",
        "gtids": "0-1-220,1-1-3",
        "server": "2",
    }
    if limit >= 100:  # joined groups of 32 changes or more: one Arrow changelog each
        assert all(g.batches["db.t"].rows is None for g in by_run[:-1])
        assert any(g.batches["db.t"].rows is not None for g in one_by_one)


def test_rows_that_do_not_fit_the_ods_columns_stay_rows() -> None:
    rng = random.Random(3)
    run = run_of(rng, 100, bad=40)
    by_run = poll_all(source(limit=1000), [run])
    assert summary(by_run) == summary(poll_all(source(limit=1000), run.items()))
    assert by_run[0].batches["db.t"].rows is not None  # the per-row path dead-letters the bad one


def test_a_run_partly_held_by_a_stored_position_goes_transaction_by_transaction() -> None:
    rng = random.Random(5)
    run = run_of(rng, 50)
    by_run = poll_all(source(limit=1000, stored="0-1-30"), [run])
    one_by_one = poll_all(source(limit=1000, stored="0-1-30"), run.items())
    assert summary(by_run) == summary(one_by_one)
    assert len(by_run) > 20  # held transactions are not joined: the ingester may skip each


def test_runs_weigh_their_transactions_in_the_hand_off() -> None:
    run = run_of(random.Random(1), WAKE_BATCH)
    handoff = Handoff(limit=10 * WAKE_BATCH)
    handoff.put(run, lambda: False, wake=False)
    assert handoff.weight == WAKE_BATCH and handoff.ready.is_set()  # a batch's worth: the poller wakes
    assert handoff.drain(0.0) == [run] and handoff.weight == 0
    full = Handoff(limit=WAKE_BATCH)
    full.put(run, lambda: False, wake=False)
    stopping = iter([False, True])
    full.put("next", lambda: next(stopping))  # full by weight: it waits (until told to stop)
    assert full.weight == WAKE_BATCH + 1
