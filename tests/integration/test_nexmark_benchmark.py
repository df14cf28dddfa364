"""A tiny run of ``benchmarks/nexmark.py``: every Nexmark view compiles, runs to the inputs' head and
equals DuckDB's result of the same SELECT; the generator keeps the spec's ids, proportions and times."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def nexmark() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("nexmark")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_generator_follows_the_nexmark_spec(nexmark: ModuleType) -> None:
    gen = importlib.import_module("_nexmark_gen")
    whole = gen.NexmarkGenerator(tps=1000).events(0, 5000)
    assert {k: t.num_rows for k, t in whole.items()} == {"person": 100, "auction": 300, "bid": 4600}
    persons = whole["person"].column("id").to_numpy()
    auctions = whole["auction"].column("id").to_numpy()
    assert (np.diff(persons) == 1).all() and persons[0] == gen.FIRST_PERSON_ID + 1
    assert (np.diff(auctions) == 1).all() and auctions[0] == gen.FIRST_AUCTION_ID + 1
    bids = whole["bid"]
    # 1000 events/s: event n (from 0) is at base + n ms; event ids are n + 2
    times = bids.column("datetime").cast("int64").to_numpy()
    ids = bids.column("event_id").to_numpy()
    assert (times - times[0] == ids - ids[0]).all()
    # bids reference auctions at most 10 ahead of the newest one, and prices are positive
    assert bids.column("auction").to_numpy().max() <= auctions.max() + 10
    assert bids.column("price").to_numpy().min() >= 100
    # a split of the sequence gives the same ids and times
    parts = [gen.NexmarkGenerator(tps=1000).events(s, 1000)["bid"] for s in range(0, 5000, 1000)]
    assert np.concatenate([p.column("event_id").to_numpy() for p in parts]).tolist() == ids.tolist()


def test_every_query_runs_and_equals_duckdb(nexmark: ModuleType, tmp_path: Path) -> None:
    rows = nexmark.prepare(tmp_path, 5000, commit_events=1000, tps=10_000, seed=3)
    assert rows == {"person": 100, "auction": 300, "bid": 4600}
    for query in nexmark.QUERIES:
        figures = nexmark.run_flowlake(tmp_path, query, partitions=2)
        check = figures["duckdb_check"]
        assert check["ok"], (query.name, check)
        assert figures["rows_out"] == check["expected_rows"] > 0, (query.name, figures)
        assert figures["changes_out"] >= figures["rows_out"]
        assert figures["events"] == sum(rows[t] for t in query.tables)
    left_out = nexmark.left_out_errors()
    assert {item["query"] for item in left_out} == {"q6", "q10", "q11", "q12", "q13"}
    assert all("Error" in item["error"] for item in left_out if item["query"] != "q10")


def test_pyflink_side_when_installed(nexmark: ModuleType, tmp_path: Path) -> None:
    python = nexmark.default_flink_python()
    if python is None:
        pytest.skip("PyFlink is not installed (FLOWLAKE_NEXMARK_FLINK_PYTHON or .venv-flink)")
    figures = nexmark.run_benchmark(
        events=5000, queries=["q2"], engines=["flink"], flink_python=python, workdir=tmp_path, timeout=300
    )
    result = figures["queries"]["q2"]["flink"]
    assert "events_per_s" in result, result
    assert result["events"] == figures["rows"]["bid"]
