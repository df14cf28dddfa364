"""The Top-N state (kept rows, buffer, spill and its read-back) against a brute-force model."""

from __future__ import annotations

import contextlib
import copy
import math
import pickle
import random
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import RowKind
from flowlake.flow._snapshot import Frozen, thaw
from flowlake.flow._topn import SortKey, TopNState
from flowlake.flow.batch import from_rows, rows

SCHEMA = pa.schema([("p", pa.int64()), ("a", pa.int64()), ("b", pa.float64()), ("c", pa.string())])
INS, UB, UA, D = RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE
Row = tuple[Any, ...]

values = st.tuples(
    st.one_of(st.none(), st.integers(0, 2)),
    st.one_of(st.none(), st.integers(0, 4)),
    st.sampled_from([None, 0.5, -1.0, float("nan"), 2.0]),
    st.sampled_from([None, "x", "y"]),
)


def model_key(row: Row, order: list[SortKey]) -> tuple[Any, ...]:
    """Rank order as the docs state it, in plain Python: ORDER BY columns, then the rest ascending."""
    names = SCHEMA.names
    parts: list[Any] = []
    for key in order:
        v = row[names.index(key.column)]
        nan = isnan(v)
        if v is None:
            parts.append((0 if key.nulls_first else 2, 0, 0))
        elif nan:  # NaN above every number
            parts.append((1, 0 if key.descending else 1, 0))
        else:
            parts.append((1, 0.5, -v if key.descending else v))
    for i, name in enumerate(names):
        if name not in {k.column for k in order} and name != "p":
            v = row[i]
            nan = isnan(v)
            parts.append((v is None, nan, 0 if v is None or nan else v))
    return tuple(parts)


def model_top(live: Counter[Row], n: int, order: list[SortKey]) -> dict[Any, list[Row]]:
    by_part: dict[Any, list[Row]] = {}
    for row, count in live.items():
        by_part.setdefault(row[0], []).extend([row] * count)
    return {p: sorted(rs, key=lambda r: model_key(r, order))[:n] for p, rs in by_part.items()}


def isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def same(a: Row, b: Row) -> bool:
    return all(x == y or (isnan(x) and isnan(y)) for x, y in zip(a, b, strict=True))


def canon(row: Row) -> Row:
    return tuple("nan" if isnan(v) else v for v in row)


histories = st.lists(
    st.lists(st.tuples(st.sampled_from(["put", "put", "delete", "update", "ghost"]), values,
                       st.integers(0, 1_000)), min_size=1, max_size=12),
    min_size=1, max_size=10,
)  # fmt: skip
orders = st.sampled_from([
    [SortKey("a", descending=True)],
    [SortKey("a"), SortKey("b", descending=True)],
    [SortKey("b", nulls_first=True)],
    [SortKey("a", descending=True, nulls_first=True), SortKey("c")],
])  # fmt: skip


def changes_of(batch: list[tuple[str, Row, int]], live: Counter[Row]) -> list[tuple[int, Row]]:
    """The changelog of one batch of actions, applied to the model's live rows."""
    changes: list[tuple[int, Row]] = []
    for action, row, pick in batch:
        present = sorted(live.elements(), key=repr)
        if action == "put":
            changes.append((INS, row))
            live[row] += 1
        elif action == "ghost":  # a retraction of a row never inserted (in a partition of its own)
            changes.append((D, (7, *row[1:])))
        elif present:
            old = present[pick % len(present)]
            live[old] -= 1
            live += Counter()
            if action == "delete":
                changes.append((D, old))
            else:
                changes += [(UB, old), (UA, row)]
                live[row] += 1
    return changes


class Shown:
    """The result as a consumer of the output changelog sees it; retractions must name shown rows."""

    def __init__(self, ranked: bool) -> None:
        self.ranked = ranked
        self.slots: dict[tuple[Any, int], Row] = {}
        self.rows: Counter[Row] = Counter()

    def apply(self, out: pa.Table) -> None:
        for change in rows(out):
            body = tuple(change.row[name] for name in SCHEMA.names)
            retract = change.kind in (UB, D)
            if self.ranked:
                slot = (body[0], change.row["rn"])
                if retract:
                    assert slot in self.slots and same(self.slots.pop(slot), body), change
                else:
                    assert slot not in self.slots, change
                    self.slots[slot] = body
            elif retract:
                assert self.rows[canon(body)] > 0, change
                self.rows[canon(body)] -= 1
            else:
                self.rows[canon(body)] += 1

    def check(self, expected: dict[Any, list[Row]]) -> None:
        if not self.ranked:
            assert +self.rows == Counter(canon(r) for rs in expected.values() for r in rs)
            return
        want = {(p, i + 1): canon(r) for p, rs in expected.items() for i, r in enumerate(rs)}
        assert {slot: canon(r) for slot, r in self.slots.items()} == want


@settings(max_examples=150, deadline=None)
@given(histories, orders, st.integers(1, 3), st.integers(0, 2), st.booleans(), st.booleans(), st.booleans())
def test_top_n_matches_a_brute_force_model(
    history: list[list[tuple[str, Row, int]]], order: list[SortKey], n: int, buffer: int,
    ranked: bool, snapshot: bool, tight: bool,
) -> None:  # fmt: skip
    """Inserts, updates, deletes, ties, NULLs and NaN; a small buffer so the spill is read back;
    ``tight``: replaced kept rows dropped at once and kept rows combined past two tables (else
    replaced rows stay in the kept table, marked dead, as they do until they are many)."""
    import flowlake.flow._topn as topn

    with _patched(topn, _COMPACT_MIN=0, _MAX_CHUNKS=2) if tight else contextlib.nullcontext():
        _brute_force_run(history, order, n, buffer, ranked, snapshot)


@contextlib.contextmanager
def _patched(module: Any, **values: Any) -> Iterator[None]:
    saved = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def _brute_force_run(
    history: list[list[tuple[str, Row, int]]], order: list[SortKey], n: int, buffer: int,
    ranked: bool, snapshot: bool,
) -> None:  # fmt: skip
    state = TopNState(["p"], order, n, "rn" if ranked else None, buffer=buffer)
    live: Counter[Row] = Counter()
    shown = Shown(ranked)
    for batch in history:
        changes = changes_of(batch, live)
        data = from_rows([(k, dict(zip(SCHEMA.names, r, strict=True))) for k, r in changes], SCHEMA)
        shown.apply(state.apply(data))
        shown.check(model_top(live, n, order))
        if snapshot:
            restored = thaw(copy.deepcopy(state))
            assert isinstance(restored, TopNState)
            state = restored


def test_spill_is_read_back_when_the_buffer_runs_out() -> None:
    state = TopNState(["p"], [SortKey("a", descending=True)], 2, "rn", buffer=1)
    inserts = [(INS, {"p": 1, "a": a, "b": None, "c": None}) for a in range(10)]
    state.apply(from_rows(inserts, SCHEMA))
    assert state.kept is not None and state.kept.num_rows == 3 and len(state) == 10
    deletes = [(D, {"p": 1, "a": a, "b": None, "c": None}) for a in (9, 8, 7)]
    out = state.apply(from_rows(deletes, SCHEMA))
    after = sorted((c.row["rn"], c.row["a"]) for c in rows(out) if c.kind == UA)
    assert after == [(1, 6), (2, 5)]
    assert state.dropped_retractions == 0


def test_retractions_of_spilled_rows_are_netted() -> None:
    state = TopNState([], [SortKey("a")], 1, None, buffer=0)
    rng = random.Random(3)
    values = list(range(200))
    rng.shuffle(values)
    state.apply(from_rows([(INS, {"p": 0, "a": a, "b": None, "c": None}) for a in values], SCHEMA))
    for a in range(199, 100, -1):  # retract spilled rows only: the top (a = 0) never changes
        out = state.apply(from_rows([(D, {"p": 0, "a": a, "b": None, "c": None})], SCHEMA))
        assert out.num_rows == 0
    state._net_spill()
    assert len(state) == 101 and state.dropped_retractions == 0


def test_a_state_saved_by_the_per_row_top_n_resumes() -> None:
    """Recovery stores may hold the former per-row state (live rows as tuples): it is folded in."""
    order = [SortKey("a", descending=True)]
    old_rows = [(1, a, None, None) for a in (3, 9, 5)]
    legacy = TopNState.__new__(TopNState)
    legacy.__setstate__({
        "partition_by": ("p",), "order_by": tuple(order), "n": 2, "rank": "rn",
        "live": {(1,): [((), row) for row in old_rows]}, "emitted": {}, "dropped_retractions": 0,
    })  # fmt: skip
    fresh = TopNState(["p"], order, 2, "rn")
    fresh.apply(from_rows([(INS, dict(zip(SCHEMA.names, r, strict=True))) for r in old_rows], SCHEMA))
    batch = from_rows([(D, {"p": 1, "a": 9, "b": None, "c": None})], SCHEMA)
    assert (
        [str(c) for c in rows(legacy.apply(batch))]
        == [str(c) for c in rows(fresh.apply(batch))]
        == [
            "-U {'p': 1, 'a': 9, 'b': None, 'c': None, 'rn': 1}",
            "+U {'p': 1, 'a': 5, 'b': None, 'c': None, 'rn': 1}",
            "-U {'p': 1, 'a': 5, 'b': None, 'c': None, 'rn': 2}",
            "+U {'p': 1, 'a': 3, 'b': None, 'c': None, 'rn': 2}",
        ]
    )


def state_contents(state: TopNState) -> dict[str, Any]:
    """Everything a Top-N state's future depends on, independent of row order within the tables."""

    def rows_of(table: pa.Table | None) -> list[str]:
        return sorted(
            repr(canon(tuple(r.values()))) for r in (table.to_pylist() if table is not None else [])
        )

    spill = pa.concat_tables(state.spill) if state.spill else None
    return {
        "kept": rows_of(state.kept), "spill": rows_of(spill), "spilled": sorted(state.spilled.tolist()),
        "spill_retractions": state.spill_retractions, "dropped": state.dropped_retractions,
    }  # fmt: skip


def run_topn(
    state: TopNState, batches: list[pa.Table], snap_at: set[int], start: int
) -> tuple[list[pa.Table], dict[int, bytes]]:
    """Apply ``batches`` (numbered from ``start``), snapshotting like bytewax after those in ``snap_at``."""
    outs: list[pa.Table] = []
    snaps: dict[int, bytes] = {}
    for i, batch in enumerate(batches, start):
        outs.append(state.apply(batch))
        if i in snap_at:
            frozen: object = copy.deepcopy(state)  # bytewax snapshots a deep copy: a Frozen
            assert isinstance(frozen, Frozen)
            snaps[i] = pickle.dumps(frozen)
    return outs, snaps


def resumed_topn(
    frozen: bytes, root: Path, inline: int, net_min: int = TopNState.net_spill_min,
    map_rows: int = TopNState.spill_map_rows,
) -> TopNState:  # fmt: skip
    """What the operator gets back after bytewax stored and reloaded a snapshot (and configures)."""
    state = thaw(pickle.loads(frozen))  # noqa: S301 - the test's own bytes
    assert isinstance(state, TopNState)
    state.keep_chunks(root, inline)
    state.net_spill_min = net_min
    state.spill_map_rows = map_rows
    return state


@settings(max_examples=120, deadline=None)
@given(
    histories, orders, st.integers(1, 3), st.integers(0, 2), st.booleans(), st.data(),
    st.sampled_from([0, 0, 2500, 10**9]), st.sampled_from([0, TopNState.net_spill_min]),
    st.sampled_from([1, 3, TopNState.spill_map_rows]),
)  # fmt: skip
def test_resume_from_any_chunked_snapshot_equals_the_uninterrupted_run(
    history: list[list[tuple[str, Row, int]]], order: list[SortKey], n: int, buffer: int,
    ranked: bool, data: st.DataObject, inline: int, net_min: int, map_rows: int,
) -> None:  # fmt: skip
    """Chunked snapshots (only the changed partitions' kept and spilled rows; inline below ``inline``
    bytes, so some runs switch forms midway): a resume from any snapshot, also after the first run
    went on and after a second crash, gives the uninterrupted run's outputs and state. ``net_min``
    0 nets the spill (every partition's) whenever a quarter of it is retractions; ``map_rows`` 1 or 3
    moves the spill to memory-mapped files almost at once (read back, netted and snapshotted from
    there)."""
    live: Counter[Row] = Counter()
    batches = []
    for batch in history:
        changes = changes_of(batch, live)
        batches.append(from_rows([(k, dict(zip(SCHEMA.names, r, strict=True))) for k, r in changes], SCHEMA))
    snap_at = data.draw(st.sets(st.integers(0, len(batches) - 1)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whole = TopNState(["p"], order, n, "rn" if ranked else None, buffer=buffer)
        whole.keep_chunks(root, inline)
        whole.net_spill_min = net_min
        whole.spill_map_rows = map_rows
        outs, snaps = run_topn(whole, batches, snap_at, 0)
        expected = state_contents(whole)
        for crash in sorted(snaps):
            state = resumed_topn(snaps[crash], root, inline, net_min, map_rows)
            rest = batches[crash + 1 :]
            second = set(data.draw(st.sets(st.integers(crash + 1, crash + 1 + len(rest)), max_size=3)))
            again, snaps2 = run_topn(state, rest, second, crash + 1)
            for got, want in zip(again, outs[crash + 1 :], strict=True):  # in order (NaN equal to NaN)
                assert got.schema == want.schema
                assert [canon(tuple(r.values())) for r in got.to_pylist()] == [
                    canon(tuple(r.values())) for r in want.to_pylist()
                ]
            assert state_contents(state) == expected
            for crash2, frozen in snaps2.items():
                state2 = resumed_topn(frozen, root, inline, net_min, map_rows)
                run_topn(state2, batches[crash2 + 1 :], set(), crash2 + 1)
                assert state_contents(state2) == expected


def test_a_chunked_top_n_snapshot_holds_only_the_changed_partitions(tmp_path: Path) -> None:
    state = TopNState(["p"], [SortKey("a", descending=True)], 2, "rn", buffer=1)
    state.keep_chunks(tmp_path)
    many = [(INS, {"p": p, "a": a, "b": None, "c": None}) for p in range(2000) for a in range(5)]
    state.apply(from_rows(many, SCHEMA))
    copy.deepcopy(state)
    full = state.snapshot_bytes
    state.apply(from_rows([(D, {"p": 3, "a": 4, "b": None, "c": None})], SCHEMA))
    frozen = pickle.dumps(copy.deepcopy(state))
    assert state.snapshot_bytes - full < full / 50 and len(frozen) < 3000
    back = resumed_topn(frozen, tmp_path, 0)
    assert state_contents(back) == state_contents(state) and len(back) == 9_999


def test_netting_the_spill_marks_every_partition_it_changed(tmp_path: Path) -> None:
    """Netting the spill also rewrites partitions the batch did not touch (here A's retraction,
    spilled an epoch before B's batch set the netting off): their chunks must be rewritten too."""
    state = TopNState(["p"], [SortKey("a")], 1, None, buffer=0)
    state.keep_chunks(tmp_path)
    state.net_spill_min = 0

    def change(kind: int, p: int, a: int) -> tuple[int, dict[str, Any]]:
        return (kind, {"p": p, "a": a, "b": None, "c": None})

    state.apply(from_rows([change(INS, p, a) for p in (1, 2) for a in range(1, 6)], SCHEMA))
    copy.deepcopy(state)
    state.apply(from_rows([change(D, 1, 5)], SCHEMA))  # a spilled row of A: a retraction in the spill
    copy.deepcopy(state)
    assert state.spill_retractions == 1
    state.apply(from_rows([change(D, 2, 5), change(D, 2, 4)], SCHEMA))  # B's: the spill is netted
    assert state.spill_retractions == 0
    back = resumed_topn(pickle.dumps(copy.deepcopy(state)), tmp_path, 0, 0)
    assert state_contents(back) == state_contents(state)


def test_spilled_rows_leave_memory_for_a_mapped_file(tmp_path: Path) -> None:
    """With a state folder the rows beyond each partition's buffer are memory-mapped, not allocated:
    Arrow's allocations stay below a tenth of the spilled rows' bytes; read back, they rank as before."""
    state = TopNState(["p"], [SortKey("a", descending=True)], 2, "rn", buffer=1)
    state.keep_chunks(tmp_path)
    state.spill_map_rows = 1000
    schema = pa.schema([(f.name, f.type) for f in SCHEMA] + [("_kind", pa.int8())])
    n = 200_000
    batch = pa.table({"p": np.arange(n) % 10, "a": np.arange(n), "b": [None] * n, "c": [None] * n,
                      "_kind": np.zeros(n, np.int8)}, schema=schema)  # fmt: skip
    before = pa.total_allocated_bytes()
    state.apply(batch)
    spilled = sum(t.nbytes for t in state.spill)
    assert sum(t.num_rows for t in state.spill) == n - 30 and all(state._on_disk)
    assert pa.total_allocated_bytes() - before < spilled / 10
    top = [(INS, {"p": 0, "a": a, "b": None, "c": None}) for a in range(n - 10, n - 40, -10)]
    out = state.apply(from_rows([(D, r) for _, r in top], SCHEMA))
    after = sorted((c.row["rn"], c.row["a"]) for c in rows(out) if c.kind in (UA, INS))
    assert after == [(1, n - 40), (2, n - 50)]
