"""Crash-anywhere chaos on the whole running pipeline (JSONL source → ODS → DWD → DWS), CI-sized.

``FLOWLAKE_CHAOS_SEED=N pytest tests/chaos`` replays a seed; the seed is printed on every run and
named in every failure. ``benchmarks/chaos.py`` runs the long version (100+ kills).
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.changelog import RowKind
from flowlake.testing.load import hog_count
from harness.chaos import (
    COMPONENTS,
    ChaosConfig,
    ChaosRun,
    SourceChange,
    changelog_by_key,
    check_changelog,
    compare_changes,
    expected_changes,
    kill_plan,
)

DEFAULT_SEED = 20261125
SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string())])


def changelog(*changes: tuple[int, RowKind, int, str]) -> pa.Table:
    """``(version, kind, k, v)`` tuples as a changelog with ``_kind`` and ``_seq``."""
    return pa.table(
        {
            "k": [c[2] for c in changes],
            "v": [c[3] for c in changes],
            "_kind": pa.array([int(c[1]) for c in changes], pa.int8()),
            "_seq": pa.array([(c[0] << 32) + i for i, c in enumerate(changes)], pa.int64()),
        }
    )


def rows(**values: str) -> pa.Table:
    return pa.table({"k": [int(k[1:]) for k in values], "v": list(values.values())}, schema=SCHEMA)


INS, UB, UA, DEL = RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE
SNAPSHOT = rows(k1="a", k2="b")
GOOD = [
    (2, INS, 3, "c"),
    (2, UB, 1, "a"),
    (2, UA, 1, "a2"),
    (3, DEL, 2, "b"),
    (4, UB, 3, "c"),
    (4, UA, 3, "c2"),
]
HEAD = rows(k1="a2", k3="c2")


def test_well_formed_changelog_passes() -> None:
    assert check_changelog(SNAPSHOT, changelog(*GOOD), ["k"], HEAD) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ([*GOOD[:3], (3, INS, 3, "c"), *GOOD[3:]], "already present"),  # an insert delivered twice
        ([*GOOD, (5, UB, 1, "a"), (5, UA, 1, "a2")], "is not the current row"),  # an update replayed
        ([*GOOD, (5, DEL, 2, "b")], "the key is absent"),  # a delete replayed
        ([(2, INS, 3, "c"), (3, DEL, 2, "b"), *GOOD[4:]], "the head has"),  # the update of key 1 lost
        ([*GOOD[:3], *GOOD[4:]], "the head has"),  # the delete of key 2 lost
        ([GOOD[1], GOOD[2], *GOOD[3:]], "the key is absent"),  # the insert of key 3 lost
        ([*GOOD[:4], (4, UB, 3, "c")], "has no +U"),  # an update torn in half
    ],
)
def test_checker_catches_duplicated_and_missing_changes(
    changes: list[tuple[int, RowKind, int, str]], expected: str
) -> None:
    problems = check_changelog(SNAPSHOT, changelog(*changes), ["k"], HEAD)
    assert any(expected in p for p in problems), problems


def test_source_comparison_counts_missing_and_duplicated_changes() -> None:
    expected = changelog_by_key(changelog(*GOOD), ["k"])
    assert compare_changes(expected, changelog_by_key(changelog(*GOOD), ["k"])) == ([], 0, 0)
    doubled = changelog_by_key(changelog(*GOOD, (5, UB, 3, "c2"), (5, UA, 3, "c2")), ["k"])
    problems, missing, duplicated = compare_changes(expected, doubled)
    assert (missing, duplicated) == (0, 2) and "key (3,)" in problems[0]
    problems, missing, duplicated = compare_changes(expected, changelog_by_key(changelog(*GOOD[1:]), ["k"]))
    assert (missing, duplicated) == (1, 0) and "key (3,)" in problems[0]


def test_expected_ods_changes_follow_the_commits_positions() -> None:
    row1, row2 = {"order_id": 1, "status": "created"}, {"order_id": 1, "status": "paid"}
    transactions = [
        [SourceChange("orders", (1,), "c", None, row1)],
        [SourceChange("orders", (1,), "u", row1, row2)],
        [SourceChange("orders", (1,), "d", row2, None)],
    ]
    one_each = expected_changes(transactions, "orders", [(1, 0), (2, 1), (3, 2)])
    assert [(v, RowKind(k).symbol) for v, k, _ in one_each[(1,)]] == [
        (1, "+I"),
        (2, "-U"),
        (2, "+U"),
        (3, "-D"),
    ]
    # an ingester catching up puts the insert and the update into one commit: one +I of the new row
    caught_up = expected_changes(transactions, "orders", [(1, 1), (2, 2)])
    assert caught_up[(1,)] == [(1, int(RowKind.INSERT), row2), (2, int(RowKind.DELETE), row2)]
    assert expected_changes(transactions, "orders", [(1, 2)]) == {}


def test_kill_plan_is_seeded_and_hits_every_component() -> None:
    plan = kill_plan(ChaosConfig(seed=3, kills=12))
    assert plan == kill_plan(ChaosConfig(seed=3, kills=12))
    assert plan != kill_plan(ChaosConfig(seed=4, kills=12))
    assert {p.component for p in plan[: len(COMPONENTS)]} == set(COMPONENTS)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("chaos")
def test_sigkill_random_components_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("FLOWLAKE_CHAOS_SEED", DEFAULT_SEED))
    replay = f"FLOWLAKE_CHAOS_SEED={seed} pytest tests/chaos"
    print(f"chaos seed {seed}; replay: {replay}")
    chaos = ChaosRun(tmp_path, ChaosConfig(seed=seed, kills=12, cpu_hogs=hog_count(1)), say=print)
    result = chaos.run()
    print(result.summary())
    assert result.ok, f"{result.summary()}\nreplay: {replay}"
    assert len(result.kills) >= 10, result.summary()
    assert min(result.kills_by_component.values()) >= 1, result.summary()
    assert (result.rows_lost, result.rows_duplicated) == (0, 0)
    assert result.source_changes > 1000 and result.rows["dws.city_day"] > 0

    # the same checks fail on a lake that lost or duplicated something
    cat = fl.connect(catalog=chaos.catalog_url, warehouse=chaos.warehouse)
    orders, dwd = cat.load_table("ods.orders"), cat.load_table("dwd.orders_enriched")
    victim = orders.read().sort_by("order_id").slice(0, 1)
    orders.upsert(victim.set_column(4, "amount", pa.array([Decimal("0.01")], pa.decimal128(12, 2))))
    dwd.delete(victim.select(["order_id"]))
    failed = [c.name for c in chaos.check() if not c.ok]
    assert any(name.startswith("ods.orders equals the source") for name in failed), failed
    assert any(name.startswith("ods.orders whole changelog") for name in failed), failed
    assert any(name.startswith("ods.orders retained changelog") for name in failed), failed
    assert any(name.startswith(f"verify dwd.orders_enriched@{dwd.version} ") for name in failed), failed
