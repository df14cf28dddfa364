"""kill -9 a writer at random moments: every table stays at a committed snapshot, and a restart that
replays its batches with commit tokens ends with each batch applied exactly once."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import flowlake as fl
from flowlake.table.fileparts import physical_paths

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BATCHES = 1000
KEYS_PER_BATCH = 200

WRITER = textwrap.dedent(
    """
    import sys
    import pyarrow as pa
    import flowlake as fl

    catalog, warehouse, batches, per_batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    schema = pa.schema([("k", pa.int64()), ("batch", pa.int64()), ("pad", pa.string())])
    t = cat.create_table("ods.crash", schema, primary_key=["k"], buckets=4, exist_ok=True)
    for b in range(batches):
        # batch b rewrites a sliding window of keys with its own number: a torn batch would show
        # as a window holding two batch numbers
        keys = list(range(b * 50, b * 50 + per_batch))
        batch = pa.table({"k": keys, "batch": [b] * per_batch, "pad": ["x" * 50] * per_batch}, schema=schema)
        t.upsert(batch, token=f"writer/batch-{b}")
        if b % 7 == 6:
            t.compact()
        if b % 11 == 10:
            t.clean(retain_last=3, orphan_grace_seconds=0)
    print("done", flush=True)
    """
)


def expected_after(batches_done: int) -> dict[int, int]:
    state: dict[int, int] = {}
    for b in range(batches_done):
        for k in range(b * 50, b * 50 + KEYS_PER_BATCH):
            state[k] = b
    return state


def check_consistent(table: fl.LakeTable) -> int:
    """The table equals the result of some prefix of batches; return its length."""
    rows = {r["k"]: r["batch"] for r in table.read(columns=["k", "batch"]).to_pylist()}
    done = max(rows.values()) + 1 if rows else 0
    assert rows == expected_after(done), f"table at version {table.version} is not a committed prefix"
    return done


def test_kill_minus_nine_anywhere_then_resume(tmp_path: Path) -> None:
    catalog, warehouse = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    rng = random.Random(1234)
    args = [sys.executable, "-c", WRITER, catalog, warehouse, str(BATCHES), str(KEYS_PER_BATCH)]
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.6, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        cat = fl.connect(catalog=catalog, warehouse=warehouse)
        if cat.table_exists("ods.crash"):
            check_consistent(cat.load_table("ods.crash"))
    finished = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    table = fl.connect(catalog=catalog, warehouse=warehouse).load_table("ods.crash")
    assert check_consistent(table) == BATCHES
    assert kills >= 5
    # exactly once: every batch token committed once, and the changelog has one +I per key
    writes = [c for c in table.history() if c.operation == "write"]
    assert sorted((c.token for c in writes), key=str) == sorted(f"writer/batch-{b}" for b in range(BATCHES))
    table.clean(retain_last=1, orphan_grace_seconds=0)
    data_files = {str(p.relative_to(tmp_path / "wh")) for p in (tmp_path / "wh").rglob("*.parquet")}
    live = physical_paths(f.path for f in table._store.live_files(table._record.id, table.version))
    assert data_files == live, "orphans of killed writers were not cleaned"
