"""A commit's log rows for many buckets go to one file, a part per bucket (flowlake.table.fileparts):
every read sees exactly the rows of a per-bucket layout, and a file stays until no part is needed."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flowlake as fl
from flowlake.errors import CorruptFileError
from flowlake.table.bucketing import key_hash
from flowlake.table.bucketmap import BucketMap
from flowlake.table.fileparts import layout_of, part_bucket, part_row_groups, physical_path, physical_paths

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.string()), ("n", pa.int64())])


def rows(keys: list[int], n: int) -> pa.Table:
    return pa.table(
        {"k": pa.array(keys, pa.int64()), "v": [f"v{k}-{n}" for k in keys], "n": pa.array([n] * len(keys))}
    )


def on_disk(tmp_path: Path) -> set[str]:
    return {str(p.relative_to(tmp_path / "wh")) for p in (tmp_path / "wh").rglob("*.parquet")}


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    return fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())


def test_a_commit_over_many_buckets_writes_one_file_with_a_part_per_bucket(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["k"], buckets=4)
    t.upsert(rows(list(range(100)), 1))
    t.upsert(rows(list(range(0, 100, 3)), 2))  # updates: -U rows in row groups of their own
    files = t._store.live_files(t._record.id, t.version)
    assert len(files) == 8 and len(physical_paths(f.path for f in files)) == 2
    assert {part_bucket(f.path) for f in files} == {f.bucket for f in files} == {0, 1, 2, 3}
    with t._storage.fs.open_input_file(t._storage.path(physical_path(files[-1].path))) as handle:
        metadata = pq.ParquetFile(handle).metadata
    spans = layout_of(metadata)
    assert sorted(spans) == [0, 1, 2, 3] and spans[0][0] == 0 and spans[3][1] == metadata.num_row_groups
    assert sorted(t.read()["n"].to_pylist()) == sorted(2 if k % 3 == 0 else 1 for k in range(100))


def test_reads_lookups_and_changes_over_parts_match_a_model(cat: fl.Catalog) -> None:
    rng = random.Random(7)
    t = cat.create_table("ods.t", SCHEMA, primary_key=["k"], buckets=4)
    model: dict[int, int] = {}
    changes = 0
    for step in range(30):
        keys = sorted(rng.sample(range(300), rng.randint(1, 60)))
        if rng.random() < 0.25 and model:
            gone = sorted(rng.sample(sorted(model), min(len(model), rng.randint(1, 10))))
            t.delete(pa.table({"k": pa.array(gone, pa.int64())}))
            for k in gone:
                del model[k]
            changes += len(gone)
        else:
            t.upsert(rows(keys, step))
            changes += sum(2 if k in model else 1 for k in keys)  # -U/+U or +I
            model.update(dict.fromkeys(keys, step))
        if step % 11 == 10:
            t.compact()
        got = {r["k"]: r["n"] for r in t.read().to_pylist()}
        assert got == model, f"step {step}"
        probe = rng.sample(range(300), 20)
        assert {r["k"]: r["n"] for r in t.get(probe).to_pylist()} == {
            k: model[k] for k in probe if k in model
        }
        filtered = t.read(filter=[("k", "in", probe)])
        assert sorted(filtered["k"].to_pylist()) == sorted(k for k in probe if k in model)
        assert t.dataset().count_rows() == len(model)
    assert t.changes(0).num_rows == changes


def test_a_shared_file_stays_until_no_part_is_needed(cat: fl.Catalog, tmp_path: Path) -> None:
    t = cat.create_table(
        "ods.t", SCHEMA, primary_key=["k"], buckets=2, properties={"bucket_target_rows": "40"}
    )
    route = BucketMap.initial(2).route
    keys = np.arange(1000)
    buckets = route(key_hash(pa.table({"k": pa.array(keys, pa.int64())}), ["k"]))
    zeros, ones = keys[buckets == 0].tolist(), keys[buckets == 1].tolist()
    t.upsert(rows(zeros[:30] + ones[:10], 1))  # one file, two parts
    t.upsert(rows(zeros[30:60] + ones[10:20], 2))  # bucket 0 now holds 60 > 40 rows
    shared = physical_paths(f.path for f in t._store.live_files(t._record.id, t.version))
    assert len(shared) == 2
    assert t.rebalance() is not None  # splits bucket 0 only: its parts are retired, bucket 1's stay
    live = t._store.live_files(t._record.id, t.version)
    assert {physical_path(f.path) for f in live if f.bucket == 1} == shared
    t.clean(retain_last=1, orphan_grace_seconds=0)
    assert shared <= on_disk(tmp_path)  # still named by bucket 1's parts
    expected = sorted(zeros[:60] + ones[:20])
    assert sorted(t.read()["k"].to_pylist()) == expected
    t.compact()  # folds bucket 1's logs: no part of the files is live any more
    result = t.clean(retain_last=1, orphan_grace_seconds=0)
    assert not shared & on_disk(tmp_path)
    assert result.files_deleted >= 2
    assert sorted(t.read()["k"].to_pylist()) == expected
    assert on_disk(tmp_path) == physical_paths(t._store.all_file_paths(t._record.id))


def test_a_part_its_file_does_not_list_is_refused_clearly(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["k"], buckets=4)
    t.upsert(rows(list(range(100)), 1))
    part = t._store.live_files(t._record.id, t.version)[0]
    with t._storage.fs.open_input_file(t._storage.path(physical_path(part.path))) as handle:
        metadata = pq.ParquetFile(handle).metadata
    assert part_row_groups(part.path, metadata) is not None
    with pytest.raises(CorruptFileError, match=r"no row groups for the part .*#bucket=7"):
        part_row_groups(physical_path(part.path) + "#bucket=7", metadata)
    assert part_row_groups(physical_path(part.path), metadata) is None  # the whole file
