"""A live file list kept up with the commits is the catalog's list at every version: across writes,
compactions (files removed) and cleans (the records it would need forgotten)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.catalog.base import DataFile
from flowlake.table.livefiles import LiveFiles

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64())])


@pytest.fixture
def table(tmp_path: Path) -> fl.LakeTable:
    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    return cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2)


def listed(table: fl.LakeTable) -> list[str]:
    t = table.refresh()
    return [f.path for f in t._store.live_files(t._record.id, t.version)]


def write(table: fl.LakeTable, first: int) -> None:
    table.upsert(pa.table({"id": [first, first + 1, 1], "v": [first, first, first]}, schema=SCHEMA))


def test_the_kept_list_is_the_catalogs_across_writes_compactions_and_cleans(table: fl.LakeTable) -> None:
    live = LiveFiles(table._store, table._record.id, "ods.t")
    asked = []
    for step in range(12):
        write(table, 10 * step)
        if step % 4 == 3:
            table.compact()
        if step == 9:
            table.clean(retain_last=1, orphan_grace_seconds=0.0)  # forgets the records a move would need
        assert [f.path for f in live.at(table.refresh().version)] == listed(table), f"step {step}"
        asked.append(table.version)
    assert len(set(asked)) == len(asked)


def test_a_move_lists_only_what_changed(table: fl.LakeTable, monkeypatch: pytest.MonkeyPatch) -> None:
    write(table, 0)
    live = LiveFiles(table._store, table._record.id, "ods.t")
    live.at(table.refresh().version)
    write(table, 10)
    table.compact()
    write(table, 20)
    calls: list[int] = []
    real = table._store.live_files

    def counted(table_id: int, version: int) -> list[DataFile]:
        calls.append(version)
        return real(table_id, version)

    monkeypatch.setattr(table._store, "live_files", counted)
    moved = [f.path for f in live.at(table.refresh().version)]
    assert calls == [], "a move forward lists only the files that changed"
    assert moved == [f.path for f in real(table._record.id, table.version)]
    old = table.version - 2
    assert [f.path for f in live.at(old)] == [f.path for f in real(table._record.id, old)]
    assert calls == [old], "a move back lists the files"
