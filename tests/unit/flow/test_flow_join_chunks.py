"""Chunked snapshots of the join's state: a resume from any snapshot equals the uninterrupted run.

With a state folder a join's key partition snapshots, once large, only the live rows of the join
keys a batch changed (per side; see :mod:`flowlake.flow._joinlog`). Random histories of both sides
(identical rows, stray retractions, NULL keys) run uninterrupted, snapshotting like bytewax (a deep
copy, pickled); then from every snapshot a resumed state gets the rest of the history and must emit
the same changes and end with the same rows and counts, also after a second crash. With
``spill_rows`` the sides keep their chunks of that many rows on disk, memory-mapped, as large
states do (:data:`~flowlake.flow._joinside.SPILL_ROWS`), and a resume maps the snapshot's chunks.
"""

from __future__ import annotations

import copy
import pickle
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from _builders import benchmark_figures
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flow_join_state import (
    CITY_PARITY,
    INS,
    LEFT,
    RIGHT,
    Batch,
    _out_key,
    _table,
    batches,
)

from flowlake.changelog import RowKind
from flowlake.flow import _joinside
from flowlake.flow._grouplog import EAGER_RESUME_RECORDS
from flowlake.flow._relational import DedupState, JoinHow, JoinState, PairCondition
from flowlake.flow._snapshot import Frozen, thaw
from flowlake.flow.batch import from_rows, rows

Row = tuple[Any, ...]


def contents(state: JoinState) -> dict[str, Counter[Row]]:
    """Each side's live rows with their counts."""
    out: dict[str, Counter[Row]] = {}
    for name, side in state.sides.items():
        counts: Counter[Row] = Counter()
        ids = np.flatnonzero(side.count)
        for row, n in zip(side.take(ids).to_pylist(), side.count[ids].tolist(), strict=True):
            counts[_out_key(tuple(row.values()))] += n
        out[name] = +counts
    return {name: c for name, c in out.items() if c}


def emitted(out: Any) -> Counter[tuple[int, Row]]:
    """A batch's output changes. A resumed state's rows may be stored in another order (each key's
    rows come from the chunk that last named it), so a right batch may list its joined rows of
    different left rows in another order: what a batch emits is compared as a multiset (the
    changes of one output row never come from two stored rows with different kinds)."""
    return Counter((int(change.kind), _out_key(tuple(change.row.values()))) for change in rows(out))


def run(
    state: JoinState,
    history: list[Batch],
    how: JoinHow,
    condition: PairCondition | None,
    snap_at: set[int],
    start: int,
) -> tuple[list[Counter[tuple[int, Row]]], dict[int, bytes]]:
    """Apply ``history`` (numbered from ``start``), snapshotting like bytewax after those in ``snap_at``."""
    outs, snaps = [], {}
    for i, (side, changes, _) in enumerate(history, start):
        out = state.apply(
            side, _table(side, changes), on=["k"], how=how, left_schema=LEFT, right_schema=RIGHT,
            condition=condition,
        )  # fmt: skip
        outs.append(emitted(out))
        if i in snap_at:
            frozen: object = copy.deepcopy(state)  # bytewax snapshots a deep copy: a Frozen
            assert isinstance(frozen, Frozen)
            snaps[i] = pickle.dumps(frozen)
    return outs, snaps


def resumed(frozen: bytes, root: Path, inline: int) -> JoinState:
    """What the operator gets back after bytewax stored and reloaded a snapshot (and configures)."""
    state = thaw(pickle.loads(frozen))  # noqa: S301 - the test's own bytes
    assert isinstance(state, JoinState)
    state.keep_chunks(root, inline)
    return state


def check_resumes(
    history: list[Batch],
    how: JoinHow,
    condition: PairCondition | None,
    inline: int,
    data: st.DataObject,
    make: type[JoinState] = JoinState,
) -> None:
    snap_at = data.draw(st.sets(st.integers(0, max(0, len(history) - 1))))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whole = make()
        whole.keep_chunks(root, inline)
        outs, snaps = run(whole, history, how, condition, snap_at, 0)
        expected = contents(whole)
        for crash in sorted(snaps):
            state = resumed(snaps[crash], root, inline)
            rest = history[crash + 1 :]
            second = set(data.draw(st.sets(st.integers(crash + 1, crash + 1 + len(rest)), max_size=3)))
            again, snaps2 = run(state, rest, how, condition, second, crash + 1)
            assert again == outs[crash + 1 :]
            assert contents(state) == expected
            assert state.dropped_retractions == whole.dropped_retractions
            for crash2, frozen in snaps2.items():
                state2 = resumed(frozen, root, inline)
                run(state2, history[crash2 + 1 :], how, condition, set(), crash2 + 1)
                assert contents(state2) == expected


@pytest.mark.parametrize("spill_rows", [_joinside.SPILL_ROWS, 3], ids=["in-memory", "spilled"])
@pytest.mark.parametrize("condition", [None, CITY_PARITY], ids=["equi", "condition"])
@pytest.mark.parametrize("how", ["inner", "left"])
@settings(max_examples=40, deadline=None)
@given(history=batches(), inline=st.sampled_from([0, 0, 700, 10**9]), data=st.data())
def test_resume_from_any_chunked_snapshot_equals_the_uninterrupted_run(
    spill_rows: int,
    how: JoinHow,
    condition: PairCondition | None,
    history: list[Batch],
    inline: int,
    data: st.DataObject,
) -> None:
    """``inline`` 0: chunked from the first snapshot; 700 bytes: switches midway; 10**9: never."""
    with mock.patch.object(_joinside, "SPILL_ROWS", spill_rows):
        check_resumes(history, how, condition, inline, data)


@settings(max_examples=60, deadline=None)
@given(history=batches(), how=st.sampled_from(["inner", "left"]))
def test_a_spilled_join_emits_and_holds_what_an_in_memory_one_does(
    history: list[Batch], how: JoinHow
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        in_memory = JoinState()
        outs, _ = run(in_memory, history, how, None, set(), 0)
        spilled = JoinState()
        spilled.keep_chunks(Path(tmp), 10**9)  # a state folder, but whole-pickle snapshots
        with mock.patch.object(_joinside, "SPILL_ROWS", 2):
            outs2, _ = run(spilled, history, how, None, set(), 0)
        assert outs2 == outs
        assert contents(spilled) == contents(in_memory)
        settled = [side._settled for side in spilled.sides.values()]
        if any(len(side.count) >= 4 for side in spilled.sides.values()):
            assert any(settled), "a side of 4 rows or more has chunks on disk"
        assert not list((Path(tmp) / _joinside.SPILL_FOLDER).glob("*")), "spill files are deleted once mapped"


class _ForgetsRetractedKeys(JoinState):
    """Broken on purpose: a batch with retractions does not mark its keys (only appends are marked)."""

    def apply(self, side: Any, data: Any, **kw: Any) -> Any:
        kinds = data.column("_kind").to_pylist()
        out = super().apply(side, data, **kw)
        if any(k in (1, 3) for k in kinds):
            self._marked = {"left": [], "right": []}
        return out


def test_the_resume_check_catches_a_state_that_forgets_marks() -> None:
    @settings(max_examples=300, deadline=None, database=None, report_multiple_bugs=False)
    @given(history=batches(), data=st.data())
    def check(history: list[Batch], data: st.DataObject) -> None:
        check_resumes(history, "left", None, 0, data, _ForgetsRetractedKeys)

    with pytest.raises(AssertionError):
        check()


def test_a_chunked_join_snapshot_holds_only_the_changed_keys(tmp_path: Path) -> None:
    state = JoinState()
    state.keep_chunks(tmp_path)
    kw: dict[str, Any] = {"on": ["k"], "how": "left", "left_schema": LEFT, "right_schema": RIGHT}
    lefts = [(INS, (i, i % 5000, None, float(i))) for i in range(20_000)]
    state.apply("left", _table("left", lefts), **kw)
    state.apply("right", _table("right", [(INS, (k, f"city{k}")) for k in range(5000)]), **kw)
    copy.deepcopy(state)
    full = state.snapshot_bytes
    state.apply("right", _table("right", [(INS, (7, "Oslo"))]), **kw)  # key 7: 4 left rows, 2 right
    frozen = pickle.dumps(copy.deepcopy(state))
    assert state.snapshot_bytes - full < full / 50 and len(frozen) < 3000
    back = resumed(frozen, tmp_path, 0)
    assert contents(back) == contents(state) and len(back) == 25_001


def test_a_schema_change_starts_a_new_chunk_log(tmp_path: Path) -> None:
    """A flow rebuilt with a wider key type hashes every key anew: the old chunks' hashes no longer
    name the same keys, so the next snapshot writes the whole state to a new log."""
    state = JoinState()
    state.keep_chunks(tmp_path)
    kw: dict[str, Any] = {"on": ["k"], "how": "inner", "left_schema": LEFT, "right_schema": RIGHT}
    state.apply("left", _table("left", [(INS, (1, 1, None, 0.5)), (INS, (2, 2, None, 0.5))]), **kw)
    copy.deepcopy(state)
    first_log = state._log
    wider = pa.schema([("oid", pa.int64()), ("k", pa.int64()), ("amount", LEFT.field("amount").type),
                       ("v", pa.float64())])  # fmt: skip
    kw["left_schema"] = wider
    batch = _table("left", [(INS, (3, 1, None, 0.5))]).cast(wider.append(pa.field("_kind", pa.int8())))
    state.apply("left", batch, **kw)
    frozen = pickle.dumps(copy.deepcopy(state))
    assert state._log is not None and state._log is not first_log
    back = resumed(frozen, tmp_path, 0)
    assert contents(back) == contents(state)
    out = back.apply("right", _table("right", [(INS, (1, "Oslo"))]), **kw)
    assert sorted(r["oid"] for r in out.to_pylist()) == [1, 3]


# -- dedup: the same snapshots, keyed by the dedup key ------------------------------------------------

DEDUP = pa.schema([("id", pa.int64()), ("status", pa.string())])
DEDUP_CHANGES = st.lists(
    st.tuples(st.sampled_from([INS, INS, 2, 3]), st.integers(0, 6), st.sampled_from(["new", "paid", None])),
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(
    history=st.lists(DEDUP_CHANGES, max_size=10), keep=st.sampled_from(["first", "last"]),
    inline=st.sampled_from([0, 0, 120, 10**9]), cache=st.sampled_from([0, 1, 700]), data=st.data(),
)  # fmt: skip
def test_dedup_resumes_from_any_chunked_snapshot(
    history: list[list[tuple[int, int, str | None]]], keep: Any, inline: int, cache: int, data: st.DataObject
) -> None:
    """Resumes from any snapshot give the uninterrupted run's changes and rows; with a memory bound of
    ``cache`` bytes (1: one key, 700: a few) every snapshot sheds keys, read back when touched, and the
    changes equal those of a dedup without chunks."""
    batches = [from_rows([(k, {"id": i, "status": v}) for k, i, v in b], DEDUP) for b in history]
    snap_at = data.draw(st.sets(st.integers(0, max(0, len(batches) - 1))))

    def run(state: DedupState, start: int, snap: set[int]) -> tuple[list[list[Any]], dict[int, bytes]]:
        outs, snaps = [], {}
        for i, batch in enumerate(batches[start:], start):
            outs.append(state.apply(batch, ["id"]).to_pylist())
            if i in snap:
                snaps[i] = pickle.dumps(copy.deepcopy(state))
        return outs, snaps

    def all_rows(state: DedupState) -> dict[Any, Any]:
        state.load_cold()
        return state.rows

    plain = DedupState(keep)
    expected, _ = run(plain, 0, set())
    with tempfile.TemporaryDirectory() as tmp:
        whole = DedupState(keep)
        whole.keep_chunks(Path(tmp), inline)
        whole.keep_in_memory(cache)
        outs, snaps = run(whole, 0, snap_at)
        assert outs == expected
        for crash, frozen in sorted(snaps.items()):
            state = thaw(pickle.loads(frozen))  # noqa: S301 - the test's own bytes
            assert isinstance(state, DedupState)
            state.keep_chunks(Path(tmp), inline)
            state.keep_in_memory(cache)
            again, _ = run(state, crash + 1, set(range(len(batches))))
            assert again == outs[crash + 1 :]
            assert all_rows(state) == all_rows(whole) == plain.rows


def test_a_shed_dedup_key_deleted_since_the_snapshot_does_not_come_back(tmp_path: Path) -> None:
    state = DedupState("last")
    state.keep_chunks(tmp_path)
    state.apply(from_rows([(INS, {"id": i, "status": "new"}) for i in range(50)], DEDUP), ["id"])
    copy.deepcopy(state)  # the first chunked snapshot: every key written
    state.keep_in_memory(5 * state.bytes_per_key())
    copy.deepcopy(state)  # sheds all but four keys
    assert len(state.rows) == 4 and 7 not in {k[0] for k in state.rows}
    out = state.apply(from_rows([(3, {"id": 7, "status": "new"})], DEDUP), ["id"])  # read back, deleted
    assert [r["_kind"] for r in out.to_pylist()] == [3]
    again = state.apply(from_rows([(INS, {"id": 7, "status": "paid"})], DEDUP), ["id"])
    assert [(r["_kind"], r["status"]) for r in again.to_pylist()] == [(INS, "paid")]


def test_a_large_dedup_state_resumes_with_its_keys_on_disk(tmp_path: Path) -> None:
    n = EAGER_RESUME_RECORDS + 5
    state = DedupState("last")
    state.keep_chunks(tmp_path)
    batch = pa.table(
        {"id": pa.array(range(n), pa.int64()), "status": ["new"] * n, "_kind": pa.array([INS] * n, pa.int8())}
    )
    state.apply(batch, ["id"])
    back = thaw(pickle.loads(pickle.dumps(copy.deepcopy(state))))  # noqa: S301 - the test's own bytes
    assert isinstance(back, DedupState) and not back.rows
    back.keep_chunks(tmp_path)
    out = back.apply(
        from_rows([(INS, {"id": 3, "status": "paid"}), (INS, {"id": -1, "status": "new"})], DEDUP), ["id"]
    )
    assert [(r["_kind"], r["id"], r["status"]) for r in out.to_pylist()] == [
        (RowKind.UPDATE_BEFORE, 3, "new"), (RowKind.UPDATE_AFTER, 3, "paid"), (INS, -1, "new"),
    ]  # fmt: skip
    back.load_cold()
    assert len(back.rows) == n + 1


def test_the_dedup_benchmark_agrees_with_duckdb(tmp_path: Path) -> None:
    """A short run of ``benchmarks/dedup.py``: the state's latest row per key is DuckDB's."""
    args = ["--keys", "3000", "--batch", "1000", "--batches", "5"]
    assert benchmark_figures("dedup.py", args, tmp_path / "figures.json")["same_rows_as_duckdb"] is True
