"""Chunked snapshots of the aggregate: a resume from any snapshot equals the uninterrupted run."""

from __future__ import annotations

import copy
import datetime as dt
import pickle
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import RowKind
from flowlake.errors import InvalidArgumentError, StorageError
from flowlake.flow import aggs
from flowlake.flow._aggstate import AggregateState, restore_chunked
from flowlake.flow._keyindex import gather
from flowlake.flow._snapshot import ChunkLog, Frozen, Manifest, thaw
from flowlake.flow._stateform import from_state
from flowlake.flow.aggs import Window
from flowlake.flow.batch import WEIGHT_COLUMN, from_rows

SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("g", pa.string()),
        ("v", pa.decimal128(12, 2)),
        ("f", pa.float64()),
        ("u", pa.int64()),
        ("t", pa.timestamp("us", tz="UTC")),
    ]
)
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
SPEC = {
    "n": aggs.count(),
    "nv": aggs.count("v"),
    "total": aggs.sum("v"),
    "paid": aggs.sum("v", where=("u", "<", 3), default=0),
    "fsum": aggs.sum("f"),
    "mean": aggs.avg("v"),
    "lo": aggs.min("v"),
    "hi": aggs.max("v"),
    "users": aggs.count_distinct("u"),
    "first_u": aggs.first("u", order_by="t"),
    "last_u": aggs.last("u", order_by="t"),
}
ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "delete"]),
        st.integers(0, 5),
        st.sampled_from(["a", "b", "c", "d", "e", "f", None]),
        st.one_of(st.none(), st.integers(-500, 500)),
        st.integers(0, 4),
        st.integers(0, 50),
    ),
    max_size=80,
)
WINDOW = Window(on="t", size_us=10_000_000, column="minute", horizon_us=15_000_000)


INT_GROUPS = {"a": 0, "b": 1, "c": -1, "d": -2, "e": 2**61 - 1, "f": 2**62, None: None}
"""Integer group keys in place of the letters: -1 and -2 share a Python hash, as do 0 and 2**61 - 1."""
INT_SCHEMA = SCHEMA.set(SCHEMA.get_field_index("g"), pa.field("g", pa.int64()))


def batches_of(history: list[tuple[Any, ...]], cuts: list[int], int_keys: bool = False) -> list[pa.Table]:
    """A valid changelog for ``history`` cut into batches of the sizes in ``cuts`` (cycled); with
    ``int_keys`` the group keys are the integers of :data:`INT_GROUPS`."""
    schema = INT_SCHEMA if int_keys else SCHEMA
    live: dict[int, dict[str, Any]] = {}
    pending: list[tuple[int, dict[str, Any]]] = []
    out: list[pa.Table] = []
    sizes = iter(cuts * 60)
    size = next(sizes)
    for step, (op_name, key, g, cents, u, secs) in enumerate(history):
        value = None if cents is None else Decimal(cents) / 100
        fval = None if cents is None else cents / 7
        row = {
            "id": key,
            "g": INT_GROUPS[g] if int_keys else g,
            "v": value,
            "f": fval,
            "u": u,
            "t": T0 + dt.timedelta(seconds=secs + step),
        }
        old = live.get(key)
        if op_name == "insert" and old is None:
            live[key] = row
            pending.append((RowKind.INSERT, row))
        elif op_name == "update" and old is not None:
            live[key] = row
            pending += [(RowKind.UPDATE_BEFORE, old), (RowKind.UPDATE_AFTER, row)]
        elif op_name == "delete" and old is not None:
            del live[key]
            pending.append((RowKind.DELETE, old))
        if len(pending) >= size:
            out.append(from_rows(pending, schema))
            pending, size = [], next(sizes)
    out.append(from_rows(pending, schema))
    return out


def contents(state: AggregateState) -> dict[str, Any]:
    """Everything a state's future outputs depend on, independent of group ids (cold groups read back)."""
    state.load_cold()
    groups = {}
    for key, gid in state.index.items():
        groups[key] = (
            int(state.rows[gid]),
            tuple(sorted((n, a[gid].item()) for n, a in state.sums.items())),
            tuple(sorted((n, int(state.nonnull_of(n)[gid])) for n in state.nonnull)),
            tuple(sorted((n, c.dicts(np.array([gid]))[0] or {}) for n, c in state.values.items())),
        )
    windows = {w: sorted((state.keys[g] for g in gids), key=repr) for w, gids in state.window_groups.items()}
    return {"groups": groups, "windows": windows, "max_event": state.max_event,
            "dropped": state.dropped_retractions, "late": state.late_changes}  # fmt: skip


def per_key(changes: pa.Table) -> pa.Table:
    """A batch's changes in key order, each key's in their order (the order between keys is free: a
    resumed state numbers its groups anew, and the changes of a batch follow the group numbers)."""
    keys = [(c, "ascending") for c in ("g", "minute") if c in changes.column_names]
    return changes.take(pc.sort_indices(changes, sort_keys=keys))


def resumed(
    frozen: bytes, window: Window | None, root: Path | None = None, inline: int = 0, cache: int = 0
) -> AggregateState:
    """What the operator gets back after bytewax stored and reloaded a snapshot (and configures)."""
    state = thaw(pickle.loads(frozen))  # noqa: S301 - the test's own bytes
    assert isinstance(state, AggregateState)
    state.configure(["g"], SPEC, window)
    if root is not None:
        state.keep_chunks(root, inline)
        state.keep_in_memory(cache)
    return state


def run(
    state: AggregateState, batches: list[pa.Table], snap_at: set[int], start: int
) -> tuple[list[pa.Table], dict[int, bytes]]:
    """Apply ``batches`` (numbered from ``start``), snapshotting like bytewax after those in ``snap_at``."""
    outs: list[pa.Table] = []
    snaps: dict[int, bytes] = {}
    for i, batch in enumerate(batches, start):
        out, late = state.apply(batch)
        outs.append(out if late is None else pa.concat_tables([out.slice(0, 0), out]))
        if i in snap_at:
            frozen: object = copy.deepcopy(state)  # bytewax snapshots a deep copy: a Frozen
            assert isinstance(frozen, Frozen)
            snaps[i] = pickle.dumps(frozen)
    return outs, snaps


@settings(max_examples=150, deadline=None)
@given(
    ops,
    st.lists(st.integers(1, 6), min_size=1, max_size=10),
    st.data(),
    st.booleans(),
    st.sampled_from([None, 130, 250, 10**9]),
    st.booleans(),
    st.sampled_from([0, 1, 2000]),
)
def test_resume_from_any_snapshot_equals_the_uninterrupted_run(
    history: list[tuple[Any, ...]],
    cuts: list[int],
    data: st.DataObject,
    windowed: bool,
    above: int | None,
    int_keys: bool,
    cache: int,
) -> None:
    """Snapshots stay whole pickles while below ``above`` bytes more than an empty state's pickle
    (None: always chunks; a group adds ~60 bytes, so 130 and 250 switch forms as the state grows
    and a resume may start from an inline snapshot and continue chunked). States bounded to ``cache``
    bytes (0: none; 1: one group, 2000: a few) shed groups after each chunked snapshot and read them
    back when changes touch them."""
    batches = batches_of(history, cuts, int_keys)
    snap_at = data.draw(st.sets(st.integers(0, len(batches) - 1)))
    window = WINDOW if windowed else None
    empty = AggregateState(["g"], SPEC, window)
    empty.apply(batches[0].slice(0, 0))
    inline = 0 if above is None else len(pickle.dumps(empty)) + above
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        whole = AggregateState(["g"], SPEC, window)
        whole.keep_chunks(root, inline)
        whole.keep_in_memory(cache)
        outs, snaps = run(whole, batches, snap_at, 0)
        expected = contents(whole)
        for crash in sorted(snaps):
            # a resume after the uninterrupted run went further (it wrote and merged chunks since)
            state = resumed(snaps[crash], window, root, inline, cache)
            rest = batches[crash + 1 :]
            second = set(data.draw(st.sets(st.integers(crash + 1, crash + 1 + len(rest)), max_size=3)))
            again, snaps2 = run(state, rest, second, crash + 1)
            for got, want in zip(again, outs[crash + 1 :], strict=True):
                assert per_key(got).equals(per_key(want))
            assert contents(state) == expected
            for crash2, frozen in snaps2.items():  # a second crash, after the resumed run went on
                state2 = resumed(frozen, window, root, inline, cache)
                run(state2, batches[crash2 + 1 :], set(), crash2 + 1)
                assert contents(state2) == expected


def test_snapshot_writes_only_the_changed_groups(tmp_path: Path) -> None:
    spec = {"n": aggs.count(), "total": aggs.sum("v")}
    schema = pa.schema([("g", pa.int64()), ("v", pa.int64())])
    state = AggregateState(["g"], spec, None)
    state.keep_chunks(tmp_path)
    first = {"g": np.arange(10_000), "v": np.ones(10_000, np.int64), "_kind": np.zeros(10_000, np.int8)}
    state.apply(pa.table(first, schema=schema.append(pa.field("_kind", pa.int8()))))
    copy.deepcopy(state)
    full = state.snapshot_bytes
    state.apply(from_rows([(RowKind.INSERT, {"g": 3, "v": 5}), (RowKind.DELETE, {"g": 4, "v": 1})], schema))
    frozen = copy.deepcopy(state)
    assert state.snapshot_bytes - full < full / 50
    assert len(pickle.dumps(frozen)) < 2000
    back = resumed(pickle.dumps(frozen), None)
    assert back.groups == 9_999 and int(back.rows[back.index[3]]) == 2 and 4 not in back.index


def test_state_without_chunks_pickles_whole_as_before() -> None:
    state = AggregateState(["g"], SPEC, None)
    frozen = copy.deepcopy(state)
    assert isinstance(thaw(frozen), AggregateState)


def test_a_missing_chunk_is_named_in_the_error(tmp_path: Path) -> None:
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    state.keep_chunks(tmp_path)
    state.apply(
        from_rows([(RowKind.INSERT, {"g": 1, "v": 2})], pa.schema([("g", pa.int64()), ("v", pa.int64())]))
    )
    frozen = pickle.dumps(copy.deepcopy(state))
    for chunk in tmp_path.rglob("*.chunk"):
        chunk.unlink()
    with pytest.raises(StorageError, match="named by a bytewax snapshot is missing"):
        resumed(frozen, None)


def _count_batch(groups: range) -> pa.Table:
    schema = pa.schema([("g", pa.int64()), ("v", pa.int64())])
    return from_rows([(RowKind.INSERT, {"g": g, "v": 1}) for g in groups], schema)


def is_chunked(state: AggregateState) -> bool:
    """Whether ``state`` snapshots chunks now (a call: it changes as the state is snapshotted)."""
    return state.chunked


def test_a_small_state_snapshots_inline_until_it_grows(tmp_path: Path) -> None:
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    state.keep_chunks(tmp_path, 20_000)
    state.apply(_count_batch(range(10)))
    small: object = copy.deepcopy(state)
    assert isinstance(small, Frozen) and isinstance(small.thaw(), AggregateState)
    assert not is_chunked(state) and not any(tmp_path.rglob("*.chunk"))
    state.apply(_count_batch(range(10, 5000)))
    grown = pickle.dumps(copy.deepcopy(state))
    assert is_chunked(state) and any(tmp_path.rglob("*.chunk")) and len(grown) < 2000
    state.apply(_count_batch(range(3)))
    copy.deepcopy(state)  # chunked from now on, even though the next chunk is small
    assert state.chunked
    # both forms resume: the inline one keeps snapshotting inline while small, the chunked one chunked
    inline = thaw(pickle.loads(pickle.dumps(small)))  # noqa: S301 - the test's own bytes
    chunked = thaw(pickle.loads(grown))  # noqa: S301 - the test's own bytes
    assert isinstance(inline, AggregateState) and isinstance(chunked, AggregateState)
    assert inline.groups == 10 and not inline.chunked
    assert chunked.groups == 5000 and chunked.chunked


def test_a_state_pickled_before_chunked_snapshots_resumes(tmp_path: Path) -> None:
    """A state pickled by a version without the snapshot bookkeeping attributes (old recovery stores)."""
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    state.apply(_count_batch(range(5)))
    old = state.__getstate__()
    for name in ("_log", "_chunk_root", "_inline_bytes", "_dirty", "_gone"):
        old.pop(name, None)
    back = AggregateState.__new__(AggregateState)
    back.__setstate__(old)
    back.configure(["g"], {"n": aggs.count()}, None)
    back.keep_chunks(tmp_path, 0)
    back.apply(_count_batch(range(5, 8)))
    again = resumed(pickle.dumps(copy.deepcopy(back)), None)
    assert again.groups == 8 and again.chunked


def test_a_group_with_a_null_key_is_in_the_chunks(tmp_path: Path) -> None:
    """A NULL group key is the Python key None, which is not a free slot (chunks once dropped it)."""
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    state.keep_chunks(tmp_path)
    schema = pa.schema([("g", pa.string()), ("v", pa.int64())])
    state.apply(
        from_rows([(RowKind.INSERT, {"g": None, "v": 1}), (RowKind.INSERT, {"g": "a", "v": 1})], schema)
    )
    back = thaw(pickle.loads(pickle.dumps(copy.deepcopy(state))))  # noqa: S301 - the test's own bytes
    assert isinstance(back, AggregateState)
    assert set(dict(back.index.items())) == set(dict(state.index.items())) and None in back.index


def test_integer_keys_hash_alike_on_every_path() -> None:
    """Integer keys are indexed by their values where Python hashes them to themselves; a batch with a
    NULL key takes the general path (Python's hash): both must find the same groups (2**61 - 1 hashes
    to 0 in Python, -1 like -2)."""
    schema = pa.schema([("g", pa.int64()), ("v", pa.int64())])
    state = AggregateState(["g"], {"n": aggs.count()}, None)
    big = 2**61 - 1
    state.apply(from_rows([(RowKind.INSERT, {"g": g, "v": 1}) for g in (big, 0, 5)], schema))
    state.apply(from_rows([(RowKind.INSERT, {"g": g, "v": 1}) for g in (big, None, -1, -2, 0)], schema))
    state.apply(from_rows([(RowKind.INSERT, {"g": g, "v": 1}) for g in (big, 5)], schema))
    counts = {key: int(state.rows[gid]) for key, gid in state.index.items()}
    assert counts == {big: 3, 0: 2, 5: 2, None: 1, -1: 1, -2: 1}


def python_records_manifest(state: AggregateState, root: Path) -> tuple[Manifest, dict[str, Any]]:
    """A chunk manifest and scalars of ``state`` as written before chunks were Arrow tables readable by
    key (chunk records of Python keys, per-group dicts of values, group ids)."""
    gids = state._live_ids()
    records: dict[str, Any] = {"keys": gather(state.keys, gids), "live": np.ones(len(gids), bool),
                               "rows": state.rows[gids], "gid": gids}  # fmt: skip
    for name in state.sums:
        records[f"s:{name}"], records[f"n:{name}"] = state.sums[name][gids], state.nonnull_of(name)[gids]
    for name, counts in state.values.items():
        records[f"c:{name}"] = counts.dicts(gids)
    log = ChunkLog.create(root)
    manifest = log.append(records)
    scalars = state._scalars()
    del scalars["log_form"], scalars["cold"]
    scalars.update(slots=len(state.keys), free=list(state.free))
    return manifest, scalars


def _old_form(state: AggregateState) -> dict[str, Any]:
    """``state`` pickled as before ValueCounts: per group id a dict (value → count) or None."""
    old = state.__getstate__()
    every = np.arange(len(state.keys))
    old["counters"] = {name: counts.dicts(every) for name, counts in old.pop("values").items()}
    return old


@pytest.mark.parametrize("chunked", [False, True])
def test_a_state_saved_with_per_group_dicts_resumes(tmp_path: Path, chunked: bool) -> None:
    """States and chunk manifests written before ValueCounts (per-group dicts, no ``value_funcs``)
    resume to the same results: the dicts are loaded once ``configure`` names the aggregates."""
    batches = batches_of(
        [("insert", k, "abc"[k % 3], k * 7 - 20, k % 4, k) for k in range(12)]
        + [("update", k, "abc"[(k + 1) % 3], k - 5, 1, k) for k in range(0, 12, 3)]
        + [("delete", k, "", 0, 0, 0) for k in range(1, 12, 4)],
        [5],
    )
    whole = AggregateState(["g"], SPEC, None)
    for batch in batches[:-1]:
        whole.apply(batch)
    if chunked:
        manifest, scalars = python_records_manifest(whole, tmp_path)
        del scalars["value_funcs"]
        assert any(ChunkLog(manifest).load()["c:hi"])  # chunk records hold per-group dicts, as before
        back = restore_chunked(manifest, scalars)
    else:
        back = AggregateState.__new__(AggregateState)
        back.__setstate__(pickle.loads(pickle.dumps(_old_form(whole))))  # noqa: S301 - our own bytes
    back.configure(["g"], SPEC, None)
    assert contents(back) == contents(whole)
    want, _ = whole.apply(batches[-1])
    got, _ = back.apply(batches[-1])
    assert got.equals(want) and want.num_rows


def _python_keys(state: AggregateState, types: list[pa.DataType | None]) -> None:
    """Turn ``state``'s group keys into the form states held before keys were held in state form
    (temporal and decimal values as ``datetime`` and ``Decimal``), as a state saved then holds them."""
    for gid in range(len(state.keys)):
        key = state.keys[gid]
        if key is not None:
            state.keys[gid] = tuple(
                v if t is None or v is None else from_state([v], t)[0].as_py()
                for v, t in zip(key, types, strict=True)
            )


@pytest.mark.parametrize("chunked", [False, True])
def test_a_state_saved_with_python_keys_resumes(tmp_path: Path, chunked: bool) -> None:
    """States and chunk manifests whose group keys hold ``datetime``/``Decimal`` values (saved before
    keys were held as ints) resume to the same groups, and a chunked one's next snapshot resumes too."""
    by = ["g", "t", "v"]
    batches = batches_of(
        [("insert", k, "abc"[k % 3], (k % 4) * 100, k % 4, 0) for k in range(12)]
        + [("update", k, "abc"[(k + 1) % 3], (k % 2) * 100, 1, 0) for k in range(0, 12, 3)]
        + [("delete", k, "", 0, 0, 0) for k in range(1, 12, 4)],
        [5],
    )
    types = [None, SCHEMA.field("t").type, SCHEMA.field("v").type]
    whole = AggregateState(by, SPEC, None)
    for batch in batches[:-1]:
        whole.apply(batch)
    old = pickle.loads(pickle.dumps(whole))  # noqa: S301 - our own bytes
    old.configure(by, SPEC, None)
    _python_keys(old, types)
    if chunked:
        manifest, scalars = python_records_manifest(old, tmp_path)
        del scalars["key_form"]
        back = restore_chunked(manifest, scalars)
    else:
        state = old.__getstate__()
        del state["key_form"]
        back = AggregateState.__new__(AggregateState)
        back.__setstate__(pickle.loads(pickle.dumps(state)))  # noqa: S301 - our own bytes
    back.configure(by, SPEC, None)
    assert contents(back) == contents(whole)
    want, _ = whole.apply(batches[-1])
    got, _ = back.apply(batches[-1])
    assert got.equals(want) and want.num_rows
    if chunked:  # the next snapshot starts a new chunk log of the int keys: it resumes alike
        again = restore_chunked_from(copy.deepcopy(back), by)
        assert contents(again) == contents(whole)


def restore_chunked_from(frozen: object, by: list[str]) -> AggregateState:
    state = thaw(pickle.loads(pickle.dumps(frozen)))  # noqa: S301 - our own bytes
    assert isinstance(state, AggregateState)
    state.configure(by, SPEC, None)
    return state


def _weighted(batch: pa.Table) -> pa.Table:
    """``batch`` with equal rows combined: one change each with its net count in ``_weight``."""
    body = [c for c in batch.column_names if c != "_kind"]
    w = pa.array(np.where(np.isin(batch.column("_kind").to_numpy(), [1, 3]), -1, 1), pa.int64())
    summed = (
        batch.select(body)
        .append_column("__w", w)
        .group_by(body, use_threads=False)
        .aggregate([("__w", "sum")])
    )
    net = summed.column("__w_sum").to_numpy()
    kinds = pa.array(np.where(net > 0, 0, 3).astype(np.int8))
    out = (
        summed.select(body).append_column("_kind", kinds).append_column(WEIGHT_COLUMN, pa.array(np.abs(net)))
    )
    return out.filter(pa.array(net != 0))


@settings(max_examples=100, deadline=None)
@given(ops, st.lists(st.integers(1, 6), min_size=1, max_size=10))
def test_weighted_changes_count_as_that_many(history: list[tuple[Any, ...]], cuts: list[int]) -> None:
    """A batch whose equal rows are combined into one change with a ``_weight`` folds to the same
    results as the batch itself (a series' elements reach the aggregate so, see flowlake.sql)."""
    spec = {n: a for n, a in SPEC.items() if a.order_by is None}  # (without the rows' times)
    plain, weighted = AggregateState(["g"], spec, None), AggregateState(["g"], spec, None)
    coarse = [(o, k, g, None if c is None else c % 3 * 100, u % 2, 0) for o, k, g, c, u, _ in history]
    for batch in batches_of(coarse, cuts):  # (few distinct rows: many combine)
        want, _ = plain.apply(batch.drop_columns(["id", "t"]))
        got, _ = weighted.apply(_weighted(batch.drop_columns(["id", "t"])))
        assert sorted(map(repr, _close(got.to_pylist()))) == sorted(map(repr, _close(want.to_pylist())))
    assert _close(contents(weighted)) == _close(contents(plain))


def _close(value: Any) -> Any:
    """``value`` with every float to 12 significant digits: a float sum of ``w`` equal changes and one
    change weighted ``w`` may differ in the last bit (x + x + x is not always 3 * x)."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _close(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_close(v) for v in value)
    return value


def test_a_windowed_aggregate_refuses_weights() -> None:
    row = {"id": 1, "g": "a", "v": Decimal(1), "f": 1.0, "u": 1, "t": T0}
    batch = from_rows([(RowKind.INSERT, row)], SCHEMA).append_column(WEIGHT_COLUMN, pa.array([2], pa.int64()))
    with pytest.raises(InvalidArgumentError, match="_weight"):
        AggregateState(["g"], SPEC, WINDOW).apply(batch)
