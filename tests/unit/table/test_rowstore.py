"""The local row store of point lookups: copies are shared, rebuilt when torn, bounded on disk."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.io.parquet import parallel
from flowlake.table.lookup import KeyIndexCache, lookup
from flowlake.table.rowstore import RowStore

SCHEMA = pa.schema([("id", pa.int64()), ("s", pa.string())])


def _rows(n: int, tag: str = "x") -> pa.Table:
    return pa.table({"id": list(range(n)), "s": [f"{tag}{i}" for i in range(n)]}, schema=SCHEMA)


def test_a_copy_round_trips_and_is_shared_by_name(tmp_path: Path) -> None:
    store = RowStore(tmp_path, max_bytes=1 << 20)
    name = store.name("/wh/t/f.parquet", 123, 456, "LocalFileSystem")
    assert name == RowStore(tmp_path / "other").name("/wh/t/f.parquet", 123, 456, "LocalFileSystem")
    assert name != store.name("/wh/t/f.parquet", 123, 457, "LocalFileSystem")  # other bytes
    assert store.open(name) is None
    written = store.put(name, _rows(100))
    assert written is not None and written.equals(_rows(100))
    opened = RowStore(tmp_path, max_bytes=1 << 20).open(name)  # another process finds it
    assert opened is not None and opened.take([7]).to_pylist() == [{"id": 7, "s": "x7"}]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_writers_of_one_copy_agree(tmp_path: Path) -> None:
    store = RowStore(tmp_path, max_bytes=1 << 20)
    results = parallel(lambda _: store.put("same.arrow", _rows(500)), list(range(6)))
    assert all(r is not None and r.equals(_rows(500)) for r in results)
    assert [p.name for p in tmp_path.iterdir()] == ["same.arrow"]


def test_a_torn_copy_is_dropped_and_a_full_disk_budget_evicts_the_oldest(tmp_path: Path) -> None:
    store = RowStore(tmp_path, max_bytes=1 << 20)
    store.put("a.arrow", _rows(10))
    (tmp_path / "a.arrow").write_bytes(b"ARROW1 torn")
    assert store.open("a.arrow") is None
    assert not (tmp_path / "a.arrow").exists()
    size = _rows(2000).nbytes
    small = RowStore(tmp_path, max_bytes=int(size * 2.5))
    for i, name in enumerate(["1.arrow", "2.arrow", "3.arrow"]):
        assert small.put(name, _rows(2000, tag=str(i))) is not None
        os.utime(tmp_path / name, (1_000_000 + i, 1_000_000 + i))
    small.put("4.arrow", _rows(2000, tag="4"))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "1.arrow" not in left and "4.arrow" in left
    assert small.nbytes() <= small.max_bytes
    assert RowStore(tmp_path, max_bytes=10).put("big.arrow", _rows(2000)) is None  # larger than all


def test_a_full_directory_is_listed_only_when_the_budget_or_the_rescan_time_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing costs a stat per copy (thousands in a full store: it was most of a 10M-order
    ingester's time), so puts keep a running total and list the directory only past the budget."""
    from flowlake.table import rowstore

    listings: list[str] = []
    real_scandir = os.scandir

    def scandir(path: str | Path) -> Any:
        listings.append(str(path))
        return real_scandir(path)

    probe = RowStore(tmp_path / "probe", max_bytes=1 << 30)
    probe.put("p.arrow", _rows(2000))
    size = (tmp_path / "probe" / "p.arrow").stat().st_size  # a copy's bytes on disk
    monkeypatch.setattr(os, "scandir", scandir)
    store = RowStore(tmp_path / "store", max_bytes=int(size * 10.5))
    for i in range(10):
        assert store.put(f"{i}.arrow", _rows(2000, tag=str(i))) is not None
    assert len(listings) == 1  # the first put learns the directory; the next nine add to its total
    store.put("10.arrow", _rows(2000, tag="10"))  # past the budget: listed, evicted to 90% of it
    assert len(listings) == 2
    on_disk = sum(p.stat().st_size for p in (tmp_path / "store").iterdir())  # (iterdir: not a scandir)
    assert on_disk <= store.max_bytes * rowstore.LOW_WATER
    store.put("11.arrow", _rows(2000, tag="11"))
    assert len(listings) == 2
    monkeypatch.setattr(rowstore, "RESCAN_S", 0.0)  # (another process may have written meanwhile)
    store.put("12.arrow", _rows(2000, tag="12"))
    assert len(listings) == 3


@pytest.fixture
def table() -> fl.LakeTable:
    cat = fl.connect(catalog="sqlite://", warehouse=f"memory://rowstore-{uuid.uuid4().hex}")
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2)
    t.upsert(_rows(300))
    t.compact()
    t.upsert(pa.table({"id": [3, 400], "s": ["new", "n400"]}, schema=SCHEMA))
    t.delete(pa.table({"id": [4]}))
    return t.refresh()


def _get(t: fl.LakeTable, cache: KeyIndexCache, keys: list[int]) -> list[dict[str, object]]:
    files = t._store.live_files(t._record.id, t.version)
    rows: list[dict[str, object]] = lookup(
        t._storage, files, t.schema, t.primary_key, pa.table({"id": keys}), cache=cache
    ).to_pylist()
    return rows


def test_lookups_through_the_store_and_without_it_agree(table: fl.LakeTable, tmp_path: Path) -> None:
    keys = [400, 3, 4, 5, 999, 3]
    want = [{"id": 400, "s": "n400"}, {"id": 3, "s": "new"}, {"id": 5, "s": "x5"}, {"id": 3, "s": "new"}]
    on = KeyIndexCache(store=RowStore(tmp_path / "on", max_bytes=1 << 30))
    assert _get(table, on, keys) == want
    assert len(list((tmp_path / "on").iterdir())) == len(on)  # one copy per file of the snapshot
    off = KeyIndexCache(store=RowStore(tmp_path / "off", max_bytes=0))
    assert _get(table, off, keys) == want
    assert not (tmp_path / "off").exists()


def test_a_store_that_cannot_be_written_falls_back_to_parquet(table: fl.LakeTable, tmp_path: Path) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("a file where the directory should be")
    cache = KeyIndexCache(store=RowStore(blocked, max_bytes=1 << 30))
    assert _get(table, cache, [3, 7]) == [{"id": 3, "s": "new"}, {"id": 7, "s": "x7"}]
    indexes = list(cache._items.values())
    assert indexes and all(ix.stored is None and ix.metadata is not None for ix in indexes)
