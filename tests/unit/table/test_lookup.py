"""Point lookups: exact rows across base and log files, only the files that hold the keys, clear errors."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.errors import InvalidArgumentError
from flowlake.table.lookup import KeyIndexCache, lookup

SCHEMA = pa.schema([("shop", pa.int32()), ("day", pa.string()), ("n", pa.int64())])


@pytest.fixture
def table() -> fl.LakeTable:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://lookup-{uuid.uuid4().hex}")
    t = cat.create_table("dws.t", SCHEMA, primary_key=["shop", "day"], buckets=2)
    t.upsert(pa.table({"shop": [1, 1, 2], "day": ["mon", "tue", "mon"], "n": [1, 2, 3]}, schema=SCHEMA))
    t.compact()
    t.upsert(pa.table({"shop": [2], "day": ["mon"], "n": [30]}, schema=SCHEMA))
    t.delete(pa.table({"shop": [1], "day": ["tue"]}, schema=SCHEMA.remove(2)))
    return t


def test_newest_image_wins_and_deleted_keys_are_absent(table: fl.LakeTable) -> None:
    got = table.get([(2, "mon"), (1, "tue"), (1, "mon"), (9, "sun")])
    assert got.to_pylist() == [{"shop": 2, "day": "mon", "n": 30}, {"shop": 1, "day": "mon", "n": 1}]


def test_time_travel_and_columns(table: fl.LakeTable) -> None:
    compacted = table.version - 2
    assert table.get(
        {"shop": [1, 2], "day": ["tue", "mon"]}, version=compacted, columns=["n"]
    ).to_pylist() == [
        {"n": 2},
        {"n": 3},
    ]


def test_only_files_with_a_hit_are_read(table: fl.LakeTable) -> None:
    cache = KeyIndexCache()
    table.refresh()
    files = table._store.live_files(table._record.id, table.version)
    wanted = pa.table({"shop": pa.array([1], pa.int32()), "day": ["mon"]})
    assert lookup(table._storage, files, table.schema, table.primary_key, wanted, cache=cache).num_rows == 1
    assert len(cache) == len(files)  # every file's key index was consulted once ...
    tiny = KeyIndexCache(max_bytes=1)
    lookup(table._storage, files, table.schema, table.primary_key, wanted, cache=tiny)
    assert len(tiny) == 1  # ... and the cache stays within its bound (the newest index is kept)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([1, 2], "composite key ['shop', 'day']: give each key as a tuple of 2 values"),
        ([("x", "mon")], "key column 'shop' (int32) cannot hold the keys given"),
        ({"shop": [1]}, "the keys lack key column 'day'"),
        ([(None, "mon")], "key column 'shop' got a null key"),
    ],
)
def test_bad_keys_get_a_clear_error(table: fl.LakeTable, keys: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=r"dws\.t") as info:
        table.get(keys)
    assert message in str(info.value)


def test_unknown_columns_are_refused(table: fl.LakeTable) -> None:
    with pytest.raises(InvalidArgumentError, match=r"has no column\(s\) \['nope'\]"):
        table.get([(1, "mon")], columns=["nope"])


def test_the_hash_filter_never_rules_out_a_held_hash_and_rules_out_most_others() -> None:
    from flowlake.table.lookup import hash_filter, may_hold

    rng = np.random.default_rng(5)
    for n in (0, 1, 100, 10_000):
        held = np.sort(rng.integers(0, 2**64, n, dtype=np.uint64))
        bitmap = hash_filter(held)
        assert may_hold(bitmap, held).all()
        others = rng.integers(0, 2**64, 20_000, dtype=np.uint64)
        assert may_hold(bitmap, others).mean() < 0.15
