"""Several writer processes on one table, on SQLite and PostgreSQL catalogs: nothing is lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.changelog import RowKind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("occ_worker.py")
SCHEMA = pa.schema(
    [("k", pa.int64()), ("writer", pa.int64()), ("seq", pa.int64()), ("a", pa.int64()), ("b", pa.int64())]
)


def run_writers(
    catalog_url: str, warehouse: str, mode: str, writers: int, commits: int, tmp: Path
) -> list[list[str]]:
    procs = []
    for w in range(writers):
        ledger = tmp / f"{mode}-{w}.ledger"
        args = [sys.executable, str(WORKER), catalog_url, warehouse, mode, str(w), str(commits), str(ledger)]
        procs.append((subprocess.Popen(args, stderr=subprocess.PIPE, text=True), ledger))
    ledgers = []
    for proc, ledger in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        ledgers.append(ledger.read_text().split("\n")[:-1])
    return ledgers


def make_table(catalog_url: str, tmp: Path, policy: str = "retry") -> tuple[fl.LakeTable, str]:
    warehouse = (tmp / "wh").as_uri()
    cat = fl.connect(catalog=catalog_url, warehouse=warehouse, principal="owner")
    t = cat.create_table(
        "ods.occ", SCHEMA, primary_key=["k"], buckets=4, properties={"conflict_policy": policy}
    )
    return t, warehouse


def test_disjoint_writers_all_land(catalog_url: str, tmp_path: Path) -> None:
    t, wh = make_table(catalog_url, tmp_path)
    ledgers = run_writers(catalog_url, wh, "disjoint", 8, 100, tmp_path)
    assert all(line.startswith("ok") for ledger in ledgers for line in ledger)
    assert sum(len(ledger) for ledger in ledgers) == 800
    rows = t.read()
    assert rows.num_rows == 8 * 100 * 10
    assert len(set(rows["k"].to_pylist())) == 8000


def test_overlapping_writers_land_or_conflict_and_lose_nothing(catalog_url: str, tmp_path: Path) -> None:
    t, wh = make_table(catalog_url, tmp_path, policy="fail")
    ledgers = run_writers(catalog_url, wh, "overlap", 8, 40, tmp_path)
    landed = {
        (w, int(line.split()[1])): int(line.split()[2])
        for w, ledger in enumerate(ledgers)
        for line in ledger
        if line.startswith("ok")
    }
    conflicts = sum(1 for ledger in ledgers for line in ledger if line.startswith("conflict"))
    assert len(landed) + conflicts == 8 * 40
    assert landed, "no commit landed"
    # every landed commit's rows are in the changelog at its version: no update was lost
    changes = t.changes(0).to_pylist()
    by_version: dict[int, list[dict[str, int]]] = {}
    for change in changes:
        by_version.setdefault(change["_seq"] >> 32, []).append(change)
    for (w, i), version in landed.items():
        written = {
            (c["k"], c["a"]) for c in by_version.get(version, []) if c["_kind"] != RowKind.UPDATE_BEFORE
        }
        expected = {((i + w) % 7, w * 1000 + i), ((i * 3 + w) % 7, w * 1000 + i)}
        assert expected <= written, (w, i, version)
    # the final table holds, per key, the value of the last landed commit that wrote it
    last: dict[int, tuple[int, int]] = {}
    for (w, i), version in sorted(landed.items(), key=lambda kv: kv[1]):
        for k in {(i + w) % 7, (i * 3 + w) % 7}:
            last[k] = (version, w * 1000 + i)
    final = {r["k"]: r["a"] for r in t.read().to_pylist()}
    assert final == {k: v for k, (_, v) in last.items()}


def test_column_group_writers_merge(catalog_url: str, tmp_path: Path) -> None:
    t, wh = make_table(catalog_url, tmp_path, policy="merge-columns")
    t.upsert(
        pa.table(
            {"k": list(range(20)), "writer": [0] * 20, "seq": [0] * 20, "a": [-1] * 20, "b": [-1] * 20},
            schema=SCHEMA,
        )
    )
    ledgers = run_writers(catalog_url, wh, "columns", 2, 30, tmp_path)
    assert all(line.startswith("ok") for ledger in ledgers for line in ledger), ledgers
    rows = t.read().to_pylist()
    assert {(r["a"], r["b"]) for r in rows} == {(29, 29)}  # both column groups present
