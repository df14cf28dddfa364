"""Point lookups (``get``) against the slow path: ``read()`` filtered to the asked keys.

Random histories of upserts, deletes, changelogs (``apply``), compactions (some splitting buckets)
and a clustering property; after each step, lookups of random keys at the head and at a random
earlier version, with and without a column list, must equal the snapshot read filtered to those
keys (in the order asked, repeats included), both through the local row store and through Parquet
row groups (row store off).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowlake as fl
from flowlake.table import lookup as lookup_module
from flowlake.table.lookup import KeyIndexCache
from flowlake.table.rowstore import RowStore

SCHEMA = pa.schema([("k", pa.int64()), ("g", pa.string()), ("v", pa.int32()), ("w", pa.string())])
KEYS = st.tuples(st.integers(0, 30), st.sampled_from(["a", "b"]))
VALUES = st.tuples(st.one_of(st.none(), st.integers(-5, 5)), st.sampled_from(["x", "y", None]))

upsert = st.tuples(st.just("upsert"), st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=12))
delete = st.tuples(st.just("delete"), st.lists(KEYS, min_size=1, max_size=5))
apply = st.tuples(
    st.just("apply"),
    st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), KEYS, VALUES), min_size=1, max_size=10),
)
compact = st.tuples(st.just("compact"), st.none())
OPS = st.lists(st.one_of(upsert, upsert, delete, apply, compact), min_size=1, max_size=10)


def _rows(items: list[tuple[tuple[int, str], tuple[Any, Any]]]) -> pa.Table:
    return pa.Table.from_pylist([{"k": k, "g": g, "v": v, "w": w} for (k, g), (v, w) in items], schema=SCHEMA)


def _expected(snapshot: pa.Table, primary_key: list[str], asked: list[Any]) -> list[dict[str, Any]]:
    by_key = {
        (row["k"] if len(primary_key) == 1 else tuple(row[c] for c in primary_key)): row
        for row in snapshot.to_pylist()
    }
    return [by_key[k] for k in asked if k in by_key]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("primary_key", "bucket_rows", "sort_by"),
    [(["k", "g"], 1_000_000, None), (["k"], 4, None), (["k", "g"], 6, "v")],
    ids=["composite-key", "int-key-splitting", "clustered-splitting"],
)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, data=st.data())
def test_get_equals_filtered_read(
    primary_key: list[str],
    bucket_rows: int,
    sort_by: str | None,
    ops: list[tuple[str, Any]],
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    store_dir = tmp_path_factory.mktemp("rows")
    with_store = KeyIndexCache(store=RowStore(store_dir, max_bytes=1 << 30))
    without_store = KeyIndexCache(store=RowStore(Path(store_dir) / "off", max_bytes=0))
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://lookup-prop-{uuid.uuid4().hex}")
    properties = {"bucket_target_rows": str(bucket_rows)}
    if sort_by:
        properties["sort_by"] = sort_by
    t = cat.create_table("ods.t", SCHEMA, primary_key=primary_key, buckets=2, properties=properties)
    versions: list[int] = []
    for op, given_arg in ops:
        # k alone is the key: g follows from k
        arg = _single(op, given_arg) if len(primary_key) == 1 and op != "compact" else given_arg
        if op == "upsert":
            t.upsert(_rows(arg))
        elif op == "delete":
            t.delete(pa.table({"k": [k for k, _ in arg], "g": [g for _, g in arg]}))
        elif op == "apply":
            changes = _rows([(key, values) for _, key, values in arg])
            t.apply(changes.append_column("_kind", pa.array([kind for kind, _, _ in arg], pa.int8())))
        else:
            t.compact()
        t.refresh()
        versions.append(t.version)
        version = data.draw(st.sampled_from([None, *versions]), label="version")
        columns = data.draw(st.sampled_from([None, ["v"], ["w", "k"]]), label="columns")
        asked_pairs = data.draw(st.lists(KEYS, max_size=8), label="keys")
        asked: list[Any] = (
            [k for k, _ in asked_pairs] if len(primary_key) == 1 else [tuple(p) for p in asked_pairs]
        )
        snapshot = t.read(version=version)
        want = _expected(snapshot, primary_key, asked)
        if columns is not None:
            want = [{c: row[c] for c in SCHEMA.names if c in columns} for row in want]
        for cache in (with_store, without_store):
            lookup_module.CACHE, saved = cache, lookup_module.CACHE
            try:
                got = t.get(asked, version=version, columns=columns).to_pylist()
            finally:
                lookup_module.CACHE = saved
            assert got == want, f"get({asked}, version={version}, columns={columns})"
    # the row store was used (and only when on): every live key through it once more
    live = t.read(columns=primary_key)
    lookup_module.CACHE, saved = with_store, lookup_module.CACHE
    try:
        assert t.get(live).num_rows == live.num_rows
    finally:
        lookup_module.CACHE = saved
    assert any(p.suffix == ".arrow" for p in Path(store_dir).iterdir()) or not live.num_rows
    assert not (Path(store_dir) / "off").exists()


def _single(op: str, arg: Any) -> Any:
    """The same operation with ``g`` derived from ``k``, so that ``k`` alone is a key."""

    def fix(key: tuple[int, str]) -> tuple[int, str]:
        return (key[0], "ab"[key[0] % 2])

    if op == "upsert":
        return [(fix(k), v) for k, v in arg]
    if op == "delete":
        return [fix(k) for k in arg]
    return [(kind, fix(k), v) for kind, k, v in arg]
