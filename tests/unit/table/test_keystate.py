"""The writer's key state: lookups, takes across chunks, updates and rebuilds."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from flowlake.table.keystate import KeyState, key_list


def table(keys: list[int], tag: str) -> pa.Table:
    return pa.table({"k": pa.array(keys, pa.int64()), "v": [f"{tag}{k}" for k in keys]})


def test_lookup_take_and_apply_across_many_chunks() -> None:
    state = KeyState(table(list(range(100)), "a"), ["k"], version=1)
    expected = {k: f"a{k}" for k in range(100)}
    for step in range(40):
        keys = [step * 3 % 150, (step * 7 + 1) % 150]
        rows = table(keys, f"s{step}-")
        state.apply(rows, key_list(rows, ["k"]), [step % 10 + 200], version=step + 2)
        expected.update({k: f"s{step}-{k}" for k in keys})
    probe = [5, 149, 120, 1000, 0]
    positions = state.lookup(probe)
    assert (positions[[3]] == -1).all()
    found = state.take(positions[positions >= 0])
    assert found["v"].to_pylist() == [expected[k] for k in probe if k in expected]
    assert len(state) == len(expected)
    assert state.version == 41
    assert sorted(state.rows()["k"].to_pylist()) == sorted(expected)


def test_deletes_and_rebuild_keep_contents() -> None:
    state = KeyState(table(list(range(70_000)), "a"), ["k"], version=1)
    state.apply(table([], "x"), [], list(range(0, 70_000, 2)), version=2)
    rows = table(list(range(1, 70_000, 2)), "b")
    state.apply(rows, key_list(rows, ["k"]), [], version=3)  # garbage now exceeds live rows: rebuilt
    assert state.garbage == 0
    assert len(state) == 35_000
    got = state.take(state.lookup([1, 3, 69_999]))
    assert got["v"].to_pylist() == ["b1", "b3", "b69999"]
    assert (state.lookup([0, 2]) == -1).all()


def test_composite_keys() -> None:
    rows = pa.table({"a": [1, 1], "b": ["x", "y"], "v": [1, 2]})
    state = KeyState(rows, ["a", "b"], version=0)
    positions = state.lookup([(1, "y"), (1, "z")])
    assert positions.tolist()[1] == -1
    assert state.take(np.array([positions[0]]))["v"].to_pylist() == [2]


def test_a_bounded_state_keeps_the_newest_rows_and_knows_it_is_incomplete() -> None:
    state = KeyState(table(list(range(10)), "a"), ["k"], version=1, max_rows=20)
    assert (state.complete, len(state)) == (True, 10)
    rows = table(list(range(10, 25)), "b")
    state.apply(rows, key_list(rows, ["k"]), [], version=2)  # 25 live rows > 20: keep the newest 10-20
    assert not state.complete
    kept = sorted(state.rows()["k"].to_pylist())
    assert 10 <= len(kept) <= 20 and kept == list(range(25 - len(kept), 25)), kept
    assert (state.lookup([0, 24 - len(kept)]) == -1).all()
    assert state.take(state.lookup([24]))["v"].to_pylist() == ["b24"]


@pytest.mark.parametrize("int_key", [True, False], ids=["int-key", "tuple-key"])
def test_a_bounded_state_forgets_its_oldest_chunks_without_copying_the_rest(int_key: bool) -> None:
    columns = ["k"] if int_key else ["k", "v"]
    state = KeyState(table([0], "a").slice(0, 0), columns, version=1, max_rows=800)
    for start in range(0, 2000, 50):  # 50-row writes: chunks of at most 100 rows (an eighth of 800)
        rows = table(list(range(start, start + 50)), "w")
        state.apply(rows, state.keys_of(rows) if int_key else key_list(rows, columns), [], version=2)
        assert len(state) <= 800
        assert max(c.num_rows for c in state._chunks) <= 100
    newest = state._chunks[-1]
    rows = table(list(range(2000, 2050)), "w")
    state.apply(rows, state.keys_of(rows) if int_key else key_list(rows, columns), [], version=3)
    kept = sorted(state.rows()["k"].to_pylist())
    assert 400 <= len(kept) <= 800 and kept == list(range(2050 - len(kept), 2050))
    assert any(c is newest for c in state._chunks) or len(kept) < 450, "kept chunks are not copied"
    keys = [[k] if int_key else (k, f"w{k}") for k in (0, 1999, 2049)]
    found = state.lookup(np.asarray([k[0] for k in keys]) if int_key else keys)
    assert found[0] == -1 and found[2] >= 0
    assert state.take(found[2:])["k"].to_pylist() == [2049]


def test_missing_names_each_absent_key_once_and_only_when_incomplete() -> None:
    complete = KeyState(table([1, 2], "a"), ["k"], version=1)
    assert complete.missing(table([7, 7, 1], "x")).num_rows == 0
    partial = KeyState(table([1, 2], "a"), ["k"], version=1, complete=False)
    assert sorted(partial.missing(table([7, 1, 7, 8], "x"))["k"].to_pylist()) == [7, 8]
    partial.learn(table([7], "t"))
    assert partial.missing(table([7, 1], "x")).num_rows == 0
    assert partial.take(partial.lookup([7]))["v"].to_pylist() == ["t7"]


def test_a_bounded_state_with_composite_keys() -> None:
    rows = pa.table({"a": [1, 1, 2, 2], "b": ["x", "y", "x", "y"], "v": [1, 2, 3, 4]})
    state = KeyState(rows, ["a", "b"], version=0, max_rows=3)
    assert not state.complete
    assert state.lookup([(2, "y"), (1, "x")]).tolist()[1] == -1
    assert state.missing(pa.table({"a": [1, 2], "b": ["x", "y"]})).to_pylist() == [{"a": 1, "b": "x"}]
