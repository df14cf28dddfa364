"""Filters that pin the primary key read only the buckets the keys hash to, with unchanged results."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import flowlake as fl
from flowlake.table.bucketmap import BucketMap
from flowlake.table.scan import pinned_buckets

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.string()), ("n", pa.int64())])


def _table(primary_key: list[str], **properties: str) -> fl.LakeTable:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://prune-{uuid.uuid4().hex}")
    t = cat.create_table("ods.t", SCHEMA, primary_key=primary_key, buckets=8, properties=properties)
    ids = list(range(400))
    t.upsert(pa.table({"id": ids, "day": ["mon", "tue"] * 200, "n": ids}, schema=SCHEMA))
    t.compact()
    t.upsert(pa.table({"id": [5, 6, 500], "day": ["tue", "mon", "mon"], "n": [50, 60, 5000]}, schema=SCHEMA))
    t.delete(pa.table({"id": [7], "day": ["tue"]}))
    return t


def _oracle(t: fl.LakeTable, expression: pc.Expression) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = t.read().filter(expression).sort_by("id").to_pylist()
    return rows


@pytest.mark.parametrize(
    ("filter", "expression", "at_most"),
    [
        ([("id", "=", 5)], pc.field("id") == 5, 1),
        ([("id", "in", [5, 7, 500, 9999])], pc.field("id").isin([5, 7, 500, 9999]), 4),
        (
            [[("id", "=", 6)], [("id", "==", 300), ("n", ">", 0)]],
            (pc.field("id") == 6) | (pc.field("id") == 300),
            2,
        ),
        ([("id", "=", 5), ("id", "in", [5, 6])], pc.field("id") == 5, 1),
    ],
    ids=["equal", "in-list", "or-of-keys", "intersection"],
)
def test_key_filters_read_only_their_buckets(
    filter: list[object], expression: pc.Expression, at_most: int
) -> None:
    t = _table(["id"])
    got = t.read(filter=filter).sort_by("id").to_pylist()
    metrics = t.last_scan
    assert got == _oracle(t, expression)
    assert metrics.buckets_pruned >= 8 - at_most


def test_filters_that_do_not_pin_the_key_prune_nothing() -> None:
    t = _table(["id"])
    for filter in ([("id", ">", 5)], [[("id", "=", 5)], [("n", "=", 9)]], [("id", "!=", 5)]):
        t.read(filter=filter)
        assert t.last_scan.buckets_pruned == 0, filter
    assert pinned_buckets(pc.field("id") == 5, SCHEMA, ["id"], BucketMap.initial(8)) is None


def test_a_composite_key_prunes_only_when_every_key_column_is_pinned() -> None:
    t = _table(["id", "day"])
    both = [("id", "in", [5, 6]), ("day", "=", "tue")]
    expected = _oracle(t, pc.field("id").isin([5, 6]) & (pc.field("day") == "tue"))
    got = t.read(filter=both).sort_by("id").to_pylist()
    assert t.last_scan.buckets_pruned >= 6
    assert got == expected
    t.read(filter=[("id", "=", 5)])
    assert t.last_scan.buckets_pruned == 0


def test_pruning_after_bucket_splits_and_at_older_versions() -> None:
    t = _table(["id"], bucket_target_rows="40")
    before = t.version
    t.compact()  # splits the 8 buckets (about 50 rows each) into smaller ones
    t.refresh()
    assert len(t.bucket_map.buckets) > 8
    for key in (5, 6, 7, 500, 123):
        for version in (before, t.version):
            got = t.read(version=version, filter=[("id", "=", key)]).to_pylist()
            pruned = t.last_scan.buckets_pruned
            want = t.read(version=version).filter(pc.field("id") == key).to_pylist()
            assert got == want
            assert t.get([key], version=version).to_pylist() == want
        # at the head every bucket is in the map: all but the key's are left out
        assert pruned == len(t.bucket_map.buckets) - 1


def test_dataset_filter_on_the_key_leaves_out_other_buckets() -> None:
    t = _table(["id"])
    t.compact()
    t.refresh()
    dataset = t.dataset(filter=[("id", "in", [5, 300])])
    assert isinstance(dataset, ds.FileSystemDataset)
    files = {t._storage.path(f.path): f.bucket for f in t._store.live_files(t._record.id, t.version)}
    assert len({files[p] for p in dataset.files}) <= 2 < len(set(files.values()))
    got = dataset.to_table().sort_by("id").to_pylist()
    assert got == _oracle(t, pc.field("id").isin([5, 300]))
    # a bucket with log files is merged in memory: only the pinned ones
    t.upsert(pa.table({"id": [300], "day": ["x"], "n": [3]}, schema=SCHEMA))
    assert t.dataset(filter=[("id", "=", 300)]).to_table().to_pylist() == [{"id": 300, "day": "x", "n": 3}]
