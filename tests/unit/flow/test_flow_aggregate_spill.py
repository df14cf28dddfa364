"""An aggregate state bounded in memory: groups shed after a snapshot are read back when touched, and
every result equals that of a state that kept everything in memory."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_flow_aggregate_chunks import (
    SPEC,
    WINDOW,
    batches_of,
    contents,
    ops,
    per_key,
)

from flowlake.changelog import RowKind
from flowlake.flow import _grouplog, aggs
from flowlake.flow._aggstate import AggregateState, state_cache_bytes
from flowlake.flow._grouplog import TABLE, GroupChunkLog, key_identities, sort_records
from flowlake.flow._snapshot import thaw
from flowlake.flow.batch import from_rows

COUNT_SUM = {"n": aggs.count(), "total": aggs.sum("v")}
INT_SCHEMA = pa.schema([("g", pa.int64()), ("v", pa.int64())])


def bounded(root: Path, spec: dict[str, Any], window: Any = None, cache: int = 1) -> AggregateState:
    state = AggregateState(["g"], spec, window)
    state.keep_chunks(root, 0)
    state.keep_in_memory(cache)
    return state


def snapshot(state: AggregateState) -> bytes:
    """What bytewax stores for the state at an epoch's end (the snapshot sheds cold groups)."""
    return pickle.dumps(copy.deepcopy(state))


def resume(
    frozen: bytes, root: Path, spec: dict[str, Any], window: Any = None, cache: int = 1
) -> AggregateState:
    state = thaw(pickle.loads(frozen))  # noqa: S301 - the test's own bytes
    assert isinstance(state, AggregateState)
    state.configure(["g"], spec, window)
    state.keep_chunks(root, 0)
    state.keep_in_memory(cache)
    return state


@settings(max_examples=200, deadline=None)
@given(
    ops,
    st.lists(st.integers(1, 6), min_size=1, max_size=10),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1, 2000]),
    st.sampled_from([3, _grouplog.MERGE_ROWS]),
    st.data(),
)
def test_a_bounded_state_equals_one_that_keeps_everything(
    tmp_path_factory: pytest.TempPathFactory,
    history: list[tuple[Any, ...]],
    cuts: list[int],
    windowed: bool,
    int_keys: bool,
    cache: int,
    merge_rows: int,
    data: st.DataObject,
) -> None:
    """Snapshot after every batch (each one sheds down to the bound: one group, or a few), resume from
    any snapshot: every batch's changes and the final groups equal the unbounded, unsnapshotted run.
    ``merge_rows`` 3 makes every chunk merge go by ranges of three records (chunks of many runs)."""
    with mock.patch.object(_grouplog, "MERGE_ROWS", merge_rows):
        bounded_equals_plain(tmp_path_factory.mktemp("spill"), history, cuts, windowed, int_keys, cache, data)


def bounded_equals_plain(
    root: Path,
    history: list[tuple[Any, ...]],
    cuts: list[int],
    windowed: bool,
    int_keys: bool,
    cache: int,
    data: st.DataObject,
) -> None:
    window = WINDOW if windowed else None
    batches = batches_of(history, cuts, int_keys)
    plain = AggregateState(["g"], SPEC, window)
    state = bounded(root, SPEC, window, cache)
    snaps = []
    for i, batch in enumerate(batches):
        want, _ = plain.apply(batch)
        got, _ = state.apply(batch)
        assert per_key(got).equals(per_key(want))
        snaps.append(snapshot(state))
        if i:  # (the first snapshot starts the chunks; from the second on, a snapshot sheds)
            assert state.groups <= max(1, cache // state.bytes_per_group())
    crash = data.draw(st.integers(0, len(batches) - 1))
    again = resume(snaps[crash], root, SPEC, window, cache)
    for batch in batches[crash + 1 :]:
        again.apply(batch)
        snapshot(again)
    assert contents(again) == contents(state) == contents(plain)


def count_batch(
    groups: range | list[int] | np.ndarray, kind: RowKind = RowKind.INSERT, value: int = 1
) -> pa.Table:
    g = np.asarray(groups, np.int64)
    return pa.table(
        {"g": g, "v": np.full(len(g), value, np.int64), "_kind": np.full(len(g), int(kind), np.int8)},
        schema=INT_SCHEMA.append(pa.field("_kind", pa.int8())),
    )


def test_groups_past_the_bound_leave_memory_and_come_back_with_their_values(tmp_path: Path) -> None:
    state = bounded(tmp_path, COUNT_SUM, cache=0)
    state.apply(count_batch(range(10_000), value=3))
    snapshot(state)
    per = state.bytes_per_group()
    state.keep_in_memory(1000 * per)
    state.apply(count_batch(range(9_000, 10_000), value=1))  # the last thousand: most recently used
    snapshot(state)
    assert state.groups == 875  # shed to 7/8 of the bound, the least recently changed first
    hot = {key for key, _ in state.index.items()}
    assert hot <= set(range(9_000, 10_000))
    out, _ = state.apply(count_batch([5, 9_999], value=4))  # a cold group and a hot one: updates
    columns = [out.column(c).to_pylist() for c in ("g", "_kind", "n", "total")]
    changes = sorted(zip(*columns, strict=True))
    assert changes == [
        (5, RowKind.UPDATE_BEFORE, 1, 3), (5, RowKind.UPDATE_AFTER, 2, 7),
        (9_999, RowKind.UPDATE_BEFORE, 2, 4), (9_999, RowKind.UPDATE_AFTER, 3, 8),
    ]  # fmt: skip


def test_a_cold_group_deleted_since_the_snapshot_does_not_come_back(tmp_path: Path) -> None:
    state = bounded(tmp_path, COUNT_SUM, cache=0)
    state.apply(count_batch(range(100)))
    snapshot(state)
    state.keep_in_memory(10 * state.bytes_per_group())
    state.apply(count_batch(range(90, 100)))
    snapshot(state)
    assert 7 not in state.index
    state.apply(count_batch([7], RowKind.DELETE))  # read back, then deleted (its tombstone: unwritten)
    out, _ = state.apply(count_batch([7]))
    assert out.column("_kind").to_pylist() == [RowKind.INSERT] and out.column("n").to_pylist() == [1]


def test_a_resumed_state_with_cold_groups_reads_only_what_changes_touch(tmp_path: Path) -> None:
    state = bounded(tmp_path, COUNT_SUM, cache=0)
    state.apply(count_batch(range(50_000)))
    snapshot(state)
    state.keep_in_memory(1000 * state.bytes_per_group())
    state.apply(count_batch(range(10)))
    frozen = snapshot(state)
    back = resume(frozen, tmp_path, COUNT_SUM, cache=1000 * state.bytes_per_group())
    assert back.groups == 0
    out, _ = back.apply(count_batch([3, 40_000, 60_000]))
    assert back.groups == 3
    assert sorted(zip(out.column("g").to_pylist(), out.column("n").to_pylist(), strict=True)) == [
        (3, 2), (3, 3), (40_000, 1), (40_000, 2), (60_000, 1)
    ]  # fmt: skip


def test_a_small_state_that_never_shed_resumes_whole(tmp_path: Path) -> None:
    state = bounded(tmp_path, COUNT_SUM, cache=0)
    state.apply(count_batch(range(1000)))
    back = resume(snapshot(state), tmp_path, COUNT_SUM, cache=0)
    assert back.groups == 1000


def test_a_large_state_resumes_with_its_groups_on_disk(tmp_path: Path) -> None:
    """Past EAGER_RESUME_RECORDS a resume reads nothing back: the first batches read what they touch."""
    state = bounded(tmp_path, COUNT_SUM, cache=0)
    state.apply(count_batch(range(_grouplog.EAGER_RESUME_RECORDS + 10), value=2))
    back = resume(snapshot(state), tmp_path, COUNT_SUM, cache=0)
    assert back.groups == 0
    out, _ = back.apply(count_batch([5, 10**9], value=1))
    assert sorted(zip(out.column("g").to_pylist(), out.column("total").to_pylist(), strict=True)) == [
        (5, 2), (5, 3), (10**9, 1)
    ]  # fmt: skip
    back.load_cold()
    assert back.groups == _grouplog.EAGER_RESUME_RECORDS + 11


def test_closed_windows_leave_the_chunks_of_a_bounded_state(tmp_path: Path) -> None:
    """Cold groups of closed windows are never read back; merges drop their records, so the chunks
    hold about the open windows, not every window ever seen."""
    schema = pa.schema([("g", pa.int64()), ("v", pa.int64()), ("t", pa.timestamp("us", tz="UTC"))])
    state = AggregateState(["g"], COUNT_SUM, WINDOW)
    state.keep_chunks(tmp_path, 0)
    state.keep_in_memory(1)
    size = WINDOW.size_us
    for step in range(60):
        rows = [(RowKind.INSERT, {"g": g, "v": 1, "t": step * size // 3}) for g in range(200)]
        state.apply(from_rows([(k, {**r, "t": pa.scalar(r["t"], pa.timestamp("us", tz="UTC")).as_py()})
                               for k, r in rows], schema))  # fmt: skip
        snapshot(state)
    log = state._log
    assert isinstance(log, GroupChunkLog)
    held = sum(size for _, size in log.chunks)
    assert held < 200 * 12  # ~20 windows seen; the horizon keeps two or three open


def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWLAKE_AGG_STATE_MB", "2")
    assert state_cache_bytes() == 2 * 2**20
    monkeypatch.setenv("FLOWLAKE_AGG_STATE_MB", "lots")
    with pytest.raises(Exception, match="FLOWLAKE_AGG_STATE_MB must be a number of MiB"):
        state_cache_bytes()


def test_a_merged_chunk_is_written_and_found_range_by_range(tmp_path: Path) -> None:
    """Merges write one run per range of hashes; every key is found in its run, newest record first,
    tombstones hide older records until the base merge drops them."""
    log = GroupChunkLog.create(tmp_path)
    assert isinstance(log, GroupChunkLog)
    rng = np.random.default_rng(5)
    model: dict[int, int | None] = {}

    def records(keys: list[int], rows: list[int], live: bool) -> dict[str, Any]:
        idents, hashes = key_identities(keys)
        table = pa.table({"hash": hashes, "ident": idents, "live": [live] * len(keys), "rows": rows})
        return {TABLE: sort_records(table)}

    with mock.patch.object(_grouplog, "MERGE_ROWS", 50):
        for step in range(40):
            keys = sorted({int(k) for k in rng.integers(0, 3000, 200)})
            dead = keys[: len(keys) // 5] if step % 3 == 2 else []
            live = keys[len(dead) :]
            if dead:
                log.append(records(dead, [0] * len(dead), False))
            log.append(records(live, [step] * len(live), True))
            model.update(dict.fromkeys(dead))
            model.update(dict.fromkeys(live, step))
    base = log._table(log.chunks[0][0])
    assert len(base.to_batches()) > 5  # a merged chunk of many runs
    probe = list(range(3100))
    idents, hashes = key_identities(probe)
    found, table = log.find(idents.to_pylist(), hashes)
    assert table is not None
    got = dict(zip(found.tolist(), table.column("rows").to_pylist(), strict=True))
    assert got == {k: v for k, v in model.items() if v is not None}
