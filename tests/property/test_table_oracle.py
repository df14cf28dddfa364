"""Random histories of upsert/delete/apply/compact/clean against a plain dict oracle.

Writes go through two handles of the table at random (each writer's key state catches up with the
other's commits), and with ``state_mb`` the writers' key states are bounded so tightly that they
hold a row or two: they forget rows, start empty, and look keys up in the table's files.

After every step, every retained version reads exactly as the oracle recorded it, point lookups
(``get``) at the head and at a random retained version return the oracle's rows, and for random
pairs of retained versions ``a <= b`` applying ``changes(a, b)`` to the snapshot at ``a`` (strictly:
every retraction must match the current row) gives the snapshot at ``b``.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from unittest import mock

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlake as fl
from flowlake.testing import apply_changelog, rows_by_key

SCHEMA = pa.schema([("k", pa.int64()), ("g", pa.string()), ("v", pa.int32())])
KEYS = st.tuples(st.integers(0, 9), st.sampled_from(["a", "b"]))
ROW = st.fixed_dictionaries({"v": st.one_of(st.none(), st.integers(-3, 3))})

upsert = st.tuples(st.just("upsert"), st.lists(st.tuples(KEYS, ROW), min_size=1, max_size=8))
delete = st.tuples(st.just("delete"), st.lists(KEYS, min_size=1, max_size=4))
apply = st.tuples(
    st.just("apply"), st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), KEYS, ROW), min_size=1, max_size=8)
)
compact = st.tuples(st.just("compact"), st.none())
rebalance = st.tuples(st.just("rebalance"), st.none())
clean = st.tuples(st.just("clean"), st.integers(1, 4))
OPS = st.lists(st.one_of(upsert, upsert, delete, apply, compact, rebalance, clean), min_size=1, max_size=14)

Key = tuple[int, str]


def row(key: Key, values: dict[str, Any]) -> dict[str, Any]:
    return {"k": key[0], "g": key[1], "v": values["v"]}


def apply_to_oracle(state: dict[Key, dict[str, Any]], op: str, arg: Any) -> pa.Table | None:
    """Update the oracle; return the batch to send to the table."""
    if op == "upsert":
        for key, values in arg:
            state[key] = row(key, values)
        return pa.Table.from_pylist([row(k, v) for k, v in arg], schema=SCHEMA)
    if op == "delete":
        for key in arg:
            state.pop(key, None)
        return pa.table({"k": [k[0] for k in arg], "g": [k[1] for k in arg]})
    if op == "apply":
        last: dict[Key, tuple[int, dict[str, Any]]] = {}
        for kind, key, values in arg:
            last[key] = (kind, values)
        for key, (kind, values) in last.items():
            if kind in (0, 2):
                state[key] = row(key, values)
            else:
                state.pop(key, None)
        table = pa.Table.from_pylist([row(k, v) for _, k, v in arg], schema=SCHEMA)
        return table.append_column("_kind", pa.array([kind for kind, _, _ in arg], pa.int8()))
    return None


def single_key(ops: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The same history with every ``g`` set to "a", so that ``k`` alone is a key."""

    def fix(key: Key) -> Key:
        return (key[0], "a")

    out: list[tuple[str, Any]] = []
    for op, arg in ops:
        if op == "upsert":
            out.append((op, [(fix(k), v) for k, v in arg]))
        elif op == "delete":
            out.append((op, [fix(k) for k in arg]))
        elif op == "apply":
            out.append((op, [(kind, fix(k), v) for kind, k, v in arg]))
        else:
            out.append((op, arg))
    return out


def view(snapshot: dict[Key, dict[str, Any]], primary_key: list[str]) -> dict[Any, dict[str, Any]]:
    return snapshot if len(primary_key) == 2 else {k[0]: v for k, v in snapshot.items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("primary_key", "bucket_rows", "state_mb"),
    [
        (["k", "g"], 1_000_000, "0"),
        (["k"], 1_000_000, "0"),
        (["k", "g"], 5, "0"),
        (["k"], 1_000_000, "0.0001"),
        (["k", "g"], 5, "0.0002"),
    ],
    ids=["composite-key", "int-key", "splitting-buckets", "int-key-bounded-state", "splitting-bounded-state"],
)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, data=st.data())
def test_table_matches_dict_oracle(
    primary_key: list[str], bucket_rows: int, state_mb: str, ops: list[tuple[str, Any]], data: st.DataObject
) -> None:
    with mock.patch.dict(os.environ, {"FLOWLAKE_KEY_STATE_MB": state_mb}):
        check_history(primary_key, bucket_rows, ops, data)


def check_history(
    primary_key: list[str], bucket_rows: int, ops: list[tuple[str, Any]], data: st.DataObject
) -> None:
    if len(primary_key) == 1:
        ops = single_key(ops)
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://prop-{uuid.uuid4().hex}")
    t = cat.create_table(
        "ods.t",
        SCHEMA,
        primary_key=primary_key,
        buckets=3,
        properties={"bucket_target_rows": str(bucket_rows)},
    )
    other = cat.load_table("ods.t")
    oracle: dict[Key, dict[str, Any]] = {}
    snapshots: dict[int, dict[Key, dict[str, Any]]] = {0: {}}
    for op, arg in ops:
        batch = apply_to_oracle(oracle, op, arg)
        writer = data.draw(st.sampled_from([t, other]), label="writer")
        if op == "upsert":
            writer.upsert(batch)
        elif op == "delete":
            writer.delete(batch)
        elif op == "apply":
            writer.apply(batch)
        elif op == "compact":
            t.compact()
        elif op == "rebalance":
            t.rebalance()
        else:
            t.clean(retain_last=arg)
        t.refresh()
        snapshots[t.version] = {k: dict(v) for k, v in oracle.items()}
        oldest = t._store.current_version(t._record.id)[1]
        retained = sorted(v for v in snapshots if v >= oldest)
        for version in retained:
            got = rows_by_key(t.read(version=version), primary_key)
            assert got == view(snapshots[version], primary_key), f"version {version}"
        # point lookups agree with the oracle at the head and at an older retained version
        for version in (retained[-1], data.draw(st.sampled_from(retained), label="lookup version")):
            asked = data.draw(st.lists(KEYS, max_size=6), label="lookup keys")
            if len(primary_key) == 1:
                asked = [(k, "a") for k, _ in asked]
                keys: list[Any] = [k for k, _ in asked]
            else:
                keys = list(asked)
            want = [snapshots[version][k] for k in asked if k in snapshots[version]]
            assert t.get(keys, version=version).to_pylist() == want, f"get({keys}) at {version}"
        a = data.draw(st.sampled_from(retained), label="a")
        b = data.draw(st.sampled_from([v for v in retained if v >= a]), label="b")
        replayed = apply_changelog(view(snapshots[a], primary_key), t.changes(a, b), primary_key)
        assert replayed == view(snapshots[b], primary_key), f"changes({a}, {b})"
    # a second writer that starts from storage agrees with the oracle too
    fresh = cat.load_table("ods.t")
    fresh.upsert(pa.Table.from_pylist([row((99, "a"), {"v": 1})], schema=SCHEMA))
    oracle[(99, "a")] = row((99, "a"), {"v": 1})
    assert rows_by_key(t.read(), primary_key) == view(oracle, primary_key)
