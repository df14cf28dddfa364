"""Top-N kept rows under a memory bound: partitions shed after a snapshot and read back when touched."""

from __future__ import annotations

import copy
import pickle
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from _builders import benchmark_figures
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flow_topn import (
    INS,
    SCHEMA,
    UA,
    D,
    Row,
    canon,
    changes_of,
    histories,
    orders,
    resumed_topn,
    state_contents,
)

from flowlake.flow._snapshot import ROWS, Manifest, save_chunk
from flowlake.flow._topn import _PH, _W, _WHERE, SortKey, TopNChunkLog, TopNState
from flowlake.flow.batch import from_rows, rows


def same_changes(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert [canon(tuple(r.values())) for r in got.to_pylist()] == [
        canon(tuple(r.values())) for r in want.to_pylist()
    ]


def bounded(root: Path, order: list[SortKey], n: int, ranked: bool, buffer: int, bound: int) -> TopNState:
    state = TopNState(["p"], order, n, "rn" if ranked else None, buffer=buffer)
    state.keep_chunks(root, 0)
    state.keep_in_memory(bound)
    state.spill_map_rows = 3
    state.net_spill_min = 0
    return state


@settings(max_examples=150, deadline=None)
@given(
    histories, orders, st.integers(1, 3), st.integers(0, 2), st.booleans(), st.sampled_from([1, 100, 400]),
    st.data(),
)  # fmt: skip
def test_a_bounded_state_gives_the_unbounded_results_and_resumes_from_any_snapshot(
    history: list[list[tuple[str, Row, int]]], order: list[SortKey], n: int, buffer: int,
    ranked: bool, bound: int, data: st.DataObject,
) -> None:  # fmt: skip
    """Kept rows bounded to a row or a few (snapshots after some batches shed down to the bound):
    every output equals an unbounded state's without a folder, the state read back whole equals it,
    and a resume from any snapshot continues with the same outputs."""
    live: Counter[Row] = Counter()
    batches = []
    for batch in history:
        changes = changes_of(batch, live)
        batches.append(from_rows([(k, dict(zip(SCHEMA.names, r, strict=True))) for k, r in changes], SCHEMA))
    free = TopNState(["p"], order, n, "rn" if ranked else None, buffer=buffer)
    free.net_spill_min = 0
    want = [free.apply(b) for b in batches]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = bounded(root, order, n, ranked, buffer, bound)
        snap_at = data.draw(st.sets(st.integers(0, len(batches) - 1)))
        snaps = {}
        for i, (batch, expected) in enumerate(zip(batches, want, strict=True)):
            same_changes(state.apply(batch), expected)
            if i in snap_at:
                snaps[i] = pickle.dumps(copy.deepcopy(state))
        if len(snap_at) > 1 and max(snap_at) == len(batches) - 1:  # (sheds from the second snapshot on)
            assert state._held() <= max(1, bound // state._item_bytes())
        state.load_cold()
        assert state_contents(state) == state_contents(free)
        for crash in sorted(snaps):
            back = resumed_topn(snaps[crash], root, 0, 0, 3)
            back.keep_in_memory(bound)
            for i, (batch, expected) in enumerate(zip(batches, want, strict=True)):
                if i > crash:
                    same_changes(back.apply(batch), expected)
                    if i in snap_at:
                        copy.deepcopy(back)
            back.load_cold()
            assert state_contents(back) == state_contents(free)


def change(kind: int, p: int, a: int) -> tuple[int, dict[str, Any]]:
    return (kind, {"p": p, "a": a, "b": None, "c": None})


def test_shed_partitions_leave_memory_and_come_back_ranked(tmp_path: Path) -> None:
    """2,000 partitions of 3 kept rows over a bound of ~100 rows: after a snapshot at most the bound
    stays in memory, the least recently changed partitions go first, and a change to a shed one ranks
    against its kept rows read back from the chunks."""
    state = TopNState(["p"], [SortKey("a", descending=True)], 2, "rn", buffer=1)
    state.keep_chunks(tmp_path, 0)
    state.apply(from_rows([change(INS, p, a) for p in range(2000) for a in range(5)], SCHEMA))
    copy.deepcopy(state)
    state.apply(from_rows([change(INS, 7, 100)], SCHEMA))  # partition 7 is now the most recent
    state.keep_in_memory(100 * state._item_bytes())
    copy.deepcopy(state)
    assert state.kept is not None
    held = set(state.kept.column("p").to_pylist())
    assert state.kept.num_rows <= 100 and 7 in held and 0 not in held
    out = state.apply(from_rows([change(D, 0, 4)], SCHEMA))  # partition 0's best, shed
    assert sorted((c.kind, c.row["rn"], c.row["a"]) for c in rows(out) if c.kind == UA) == [
        (UA, 1, 3),
        (UA, 2, 2),
    ]
    assert pickle.loads(pickle.dumps(copy.deepcopy(state)))  # noqa: S301 - the test's own bytes


def test_a_large_resume_reads_no_kept_rows_until_touched(tmp_path: Path) -> None:
    """A state whose chunks hold more than EAGER_RESUME_RECORDS rows resumes with its kept rows on
    disk and its spilled rows in memory-mapped files (written range by range), and folds right."""
    state = TopNState(["p"], [SortKey("a")], 1, None, buffer=1)
    state.keep_chunks(tmp_path, 0)
    state.apply(from_rows([change(INS, p, a) for p in range(40_000) for a in (1, 2, 3)], SCHEMA))
    frozen = pickle.dumps(copy.deepcopy(state))
    back = resumed_topn(frozen, tmp_path, 0)
    assert back.kept is not None and back.kept.num_rows == 0 and back._cold
    assert sum(t.num_rows for t in back.spill) == 40_000 and all(back._on_disk)  # (mapped files)
    out = back.apply(from_rows([change(D, 5, 1)], SCHEMA))
    assert [str(c) for c in rows(out)] == [
        "-D {'p': 5, 'a': 1, 'b': None, 'c': None}",
        "+I {'p': 5, 'a': 2, 'b': None, 'c': None}",
    ]
    back.load_cold()
    state.apply(from_rows([change(D, 5, 1)], SCHEMA))
    assert state_contents(back) == state_contents(state)


def test_chunks_of_the_pickled_form_are_read_as_tables(tmp_path: Path) -> None:
    """Snapshots written before the Arrow chunk files (pickled records) resume and continue."""
    kept = pa.table({"p": [1, 1], _PH: pa.array([9, 9], pa.uint64())})
    weighted = kept.append_column(_W, pa.array([1, 1], pa.int64()))
    rows_ = weighted.append_column(_WHERE, pa.array([0, 0], pa.int8()))
    save_chunk(tmp_path / "old.chunk", {"keys": np.array([4, 9], np.uint64), ROWS: rows_})
    log = TopNChunkLog(Manifest(str(tmp_path), (("old.chunk", 3),), (), 1))
    found = log.find_kept(np.array([4, 9], np.uint64))
    assert found is not None and found.column(_PH).to_pylist() == [9, 9]
    merged = log.load()["table"]
    assert merged is not None and merged.column(_PH).to_pylist() == [9, 9]


@pytest.mark.parametrize("bound", [0, 1])
def test_no_bound_or_no_folder_sheds_nothing(tmp_path: Path, bound: int) -> None:
    state = TopNState(["p"], [SortKey("a")], 1, None)
    state.keep_in_memory(bound)  # without a folder (keep_chunks) a bound does nothing
    state.apply(from_rows([change(INS, p, 1) for p in range(100)], SCHEMA))
    copy.deepcopy(state)
    assert state.kept is not None and state.kept.num_rows == 100


def shed_everything(tmp_path: Path, n: int = 1, buffer: int = 0) -> tuple[TopNState, TopNState]:
    """A bounded state with a chunk log and every partition shed, and an unbounded twin."""
    state = TopNState(["p"], [SortKey("a")], n, None, buffer=buffer)
    state.keep_chunks(tmp_path, 0)
    free = TopNState(["p"], [SortKey("a")], n, None, buffer=buffer)
    return state, free


def both_apply(states: tuple[TopNState, TopNState], changes: list[tuple[int, dict[str, Any]]]) -> None:
    got, want = (s.apply(from_rows(changes, SCHEMA)) for s in states)
    same_changes(got, want)


def test_a_shed_partition_emptied_since_the_snapshot_is_not_read_back(tmp_path: Path) -> None:
    """Shed, then every row deleted, then touched again before the next snapshot: its chunk still holds
    the old kept rows, which must not come back (the partition changed since that snapshot)."""
    states = shed_everything(tmp_path)
    state, _ = states
    both_apply(states, [change(INS, 1, 5), change(INS, 2, 5)])
    copy.deepcopy(state)  # the log starts
    state.keep_in_memory(1)
    copy.deepcopy(state)  # partition 1 shed (the bound keeps one row: partition 2's)
    assert state.kept is not None and state.kept.column("p").to_pylist() == [2]
    both_apply(states, [change(D, 1, 5)])  # read back, then emptied
    both_apply(states, [change(INS, 1, 7)])  # not read back again: +I 7 alone
    state.load_cold()
    assert state_contents(state) == state_contents(states[1])


def test_netting_the_spill_reads_shed_partitions_back_first(tmp_path: Path) -> None:
    """A shed partition whose spilled row was retracted changes when the spill is netted: its next
    snapshot record must still hold its kept rows (read back before the netting marks it)."""
    states = shed_everything(tmp_path)
    state, free = states
    for s in states:
        s.net_spill_min = 0
    both_apply(states, [change(INS, p, a) for p in (1, 2) for a in range(1, 6)])
    both_apply(states, [change(D, 1, 5)])  # a retraction of A's spilled row waits in the spill
    both_apply(states, [change(INS, 3, 1)])  # C: the most recent partition
    copy.deepcopy(state)
    state.keep_in_memory(1)
    copy.deepcopy(state)  # A and B shed (the bound keeps one row: C's)
    assert state.kept is not None and state.kept.column("p").to_pylist() == [3]
    both_apply(states, [change(D, 2, 5), change(D, 2, 4)])  # B's retractions: the spill is netted
    assert state.spill_retractions == 0
    back = resumed_topn(pickle.dumps(copy.deepcopy(state)), tmp_path, 0, 0)
    back.load_cold()
    assert state_contents(back) == state_contents(free)


def test_kept_and_spilled_rows_in_many_small_tables_are_combined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch adds a small table of evicted rows and of kept rows; past a few they are combined
    into one (every Arrow call pays per table): the same outputs and rows as a state that never
    combines them, with a folder (some spill mapped) and without."""
    import flowlake.flow._topn as topn

    rng = np.random.default_rng(5)
    batches = []
    live: Counter[Row] = Counter()
    for _ in range(80):
        history = [
            ("put", (int(rng.integers(0, 3)), int(rng.integers(0, 5)), None, None), 0) for _ in range(6)
        ]
        history += [("delete", (0, 0, None, None), int(rng.integers(0, 50))) for _ in range(2)]
        changes = changes_of(history, live)
        batches.append(from_rows([(k, dict(zip(SCHEMA.names, r, strict=True))) for k, r in changes], SCHEMA))
    for folder in (None, tmp_path):
        results = []
        for most in (10**9, 2):
            monkeypatch.setattr(topn, "_MAX_CHUNKS", most)
            state = TopNState(["p"], [SortKey("a")], 1, "rn", buffer=1)
            if folder is not None:
                state.keep_chunks(folder / str(most), 10**9)
                state.spill_map_rows = 7
            outs = [state.apply(b) for b in batches]
            assert state.kept is not None
            results.append((outs, state_contents(state), len(state.spill)))
        (want, contents, many), (got, combined, few) = results
        for g, w in zip(got, want, strict=True):
            same_changes(g, w)
        assert combined == contents
        assert few < many or folder is not None  # (with a folder the spill is mapped as one file anyway)


def test_the_top_n_benchmark_agrees_with_duckdb(tmp_path: Path) -> None:
    """A short run of ``benchmarks/topn.py``: the batches' output changes turn DuckDB's Top-3 before
    them into DuckDB's Top-3 after them."""
    args = ["--partitions", "2000", "--batch", "500", "--batches", "3"]
    figures = benchmark_figures("topn.py", args, tmp_path / "figures.json")
    assert figures["same_result_as_duckdb"] is True and figures["kept_rows"] == 2000 * 6
