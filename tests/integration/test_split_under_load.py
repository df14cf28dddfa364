"""Bucket splits and compactions land while writer processes keep committing (issue 20).

Four writer processes commit a random 1-400 keys every ~50 ms (about 40 commits/s in all; one commit
in ten deletes) on a table that starts with 2 buckets of target 500 rows, while another process calls
``compact()`` every 0.3 s. Splits must land while the writers write, and a ledger proves that every
version reads exactly as the writers' commits say, that the changelog replays into the head, and that
every row at the head lives in the bucket the map routes it to. Run beside CPU hogs (``cpu_load``):
nothing here may depend on a quiet machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from split_worker import SCHEMA, batch

import flowlake as fl
from flowlake.table.bucketing import key_hash
from flowlake.table.rebalance import DEFAULT_FENCE_SECONDS
from flowlake.testing import apply_changelog, rows_by_key
from flowlake.testing.tables import data_file_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("split_worker.py")
WRITERS = 4
SECONDS = 10.0  # the least the writers write; they go on until what a test waits for happened
MAX_SECONDS = 240.0  # bounds a failure only
KEYS = 200_000
FENCE_WAITS: list[float] = []
"""Per writer commit of the last :func:`run`: the longest it waited on a fenced bucket (ms)."""


def spawn(args: list[Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], stderr=subprocess.PIPE)


def run(
    catalog_url: str,
    tmp: Path,
    properties: dict[str, str],
    until: Callable[[fl.LakeTable], bool],
    *,
    seconds: float = SECONDS,
) -> tuple[fl.LakeTable, list[tuple[int, int, int, float]], list[dict[str, Any]]]:
    """Run the writers and the compactor for at least ``seconds`` and until ``until(table)`` holds (so
    the test does not depend on how much a loaded machine gets done in a fixed time); return the table,
    ``(writer, i, version, ms)`` and the compactions."""
    warehouse = (tmp / "wh").as_uri()
    FENCE_WAITS.clear()
    cat = fl.connect(catalog=catalog_url, warehouse=warehouse, principal="owner")
    t = cat.create_table("ods.split", SCHEMA, primary_key=["k"], buckets=2, properties=properties)
    go = tmp / "go"
    common = [catalog_url, warehouse, "write", go]
    procs = [
        (spawn([*common, tmp / f"writer-{w}.ledger", w, KEYS]), tmp / f"writer-{w}.ledger")
        for w in range(WRITERS)
    ]
    ledger = tmp / "compactor.ledger"
    procs.append((spawn([catalog_url, warehouse, "compact", go, ledger, 0.3]), ledger))
    deadline = time.monotonic() + 240
    while not all(Path(f"{path}.ready").exists() for _, path in procs):
        assert all(p.poll() is None for p, _ in procs), "a worker died while starting"
        assert time.monotonic() < deadline, "the workers did not start in 240 s"
        time.sleep(0.05)
    start = time.time() + 0.2
    (tmp / "go.tmp").write_text(f"{start} {start + MAX_SECONDS}")
    (tmp / "go.tmp").rename(go)  # whole, or not there
    time.sleep(max(0.0, start + seconds - time.time()))
    while time.time() < start + MAX_SECONDS and not until(t.refresh()):
        assert all(p.poll() is None for p, _ in procs), "a worker died while writing"
        time.sleep(0.5)
    Path(f"{go}.halt").touch()
    for proc, _ in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-3000:]
    commits = []
    for w, (_, path) in enumerate(procs[:WRITERS]):
        for line in path.read_text().splitlines():
            _, i, version, ms, fence_ms = line.split()
            commits.append((w, int(i), int(version), float(ms)))
            FENCE_WAITS.append(float(fence_ms))
    compactions = [json.loads(line) for line in procs[-1][1].read_text().splitlines()]
    return t.refresh(), commits, compactions


def expected_states(
    commits: Iterable[tuple[int, int, int, float]], versions: Iterable[int]
) -> dict[int, dict[Any, dict[str, Any]]]:
    """The table at each of ``versions``, replayed from the writers' ledgers in version order."""
    state: dict[Any, dict[str, Any]] = {}
    out: dict[int, dict[Any, dict[str, Any]]] = {}
    pending = sorted(set(versions))
    for version, w, i in [*sorted((v, w, i) for w, i, v, _ in commits), (sys.maxsize, 0, 0)]:
        while pending and pending[0] < version:
            out[pending.pop(0)] = dict(state)
        if version == sys.maxsize:
            break
        is_delete, rows = batch(w, i, KEYS)
        for row in rows.to_pylist():
            if is_delete:
                state.pop(row["k"], None)
            else:
                state[row["k"]] = row
    return out


def assert_exact(t: fl.LakeTable, commits: list[tuple[int, int, int, float]], versions: set[int]) -> None:
    truth = expected_states(commits, versions)
    for version in sorted(versions):
        got = rows_by_key(t.read(version=version), ["k"])
        if got != truth[version]:
            missing = set(truth[version]) - set(got)
            extra = set(got) - set(truth[version])
            wrong = [k for k in set(got) & set(truth[version]) if got[k] != truth[version][k]]
            raise AssertionError(
                f"version {version}: {len(missing)} rows missing, {len(extra)} extra, {len(wrong)} wrong "
                f"(e.g. {sorted(missing)[:3]}, {sorted(extra)[:3]}, {sorted(wrong)[:3]})"
            )


def assert_routed(t: fl.LakeTable) -> None:
    """Every row of every live file at the head lives in the bucket the map routes its key to."""
    bmap = t.bucket_map
    for f in t._store.live_files(t._record.id, t.version):  # a file, or a bucket's part of one
        keys = data_file_rows(t, f, ["k"])
        assert keys.num_rows == f.row_count, f.path
        routed = set(bmap.route(key_hash(keys, ["k"])).tolist())
        assert routed <= {f.bucket}, (f.path, f.bucket, routed)


def check_timeline(
    t: fl.LakeTable, commits: list[tuple[int, int, int, float]], compactions: list[dict[str, Any]]
) -> list[fl.Commit]:
    """Every version is a ledgered write or a compaction; return the splits that landed."""
    history = t.history()
    writes = {v for _, _, v, _ in commits}
    assert len(writes) == len(commits), "two writes landed at one version"
    assert {c.version for c in history if c.operation == "write"} == writes
    landed = {c["version"] for c in compactions if "version" in c}
    compacts = {c.version for c in history if c.operation == "compact" and "compacted_version" in c.summary}
    assert compacts == landed
    return [c for c in history if "buckets_rewritten" in c.summary]


def followed_by_a_write(t: fl.LakeTable, landed: Callable[[fl.Commit], bool]) -> int:
    """How many commits that ``landed`` selects have a write after them."""
    history = t.history()
    last_write = max((c.version for c in history if c.operation == "write"), default=-1)
    return sum(1 for c in history if landed(c) and c.version < last_write)


def test_splits_land_while_four_writers_commit(catalog_url: str, tmp_path: Path, cpu_load: int) -> None:
    def two_splits_amid_writes(t: fl.LakeTable) -> bool:
        splits = followed_by_a_write(t, lambda c: "buckets_rewritten" in c.summary)
        return splits >= 2 and len(t.bucket_map.buckets) >= 8

    t, commits, compactions = run(
        catalog_url, tmp_path, {"bucket_target_rows": "500"}, two_splits_amid_writes
    )
    errors = [c for c in compactions if "error" in c]
    assert not errors, errors[0]
    splits = check_timeline(t, commits, compactions)
    writes = sorted(v for _, _, v, _ in commits)
    # splits landed while the writers wrote, and they caught up with writes made meanwhile
    during = [s for s in splits if writes[0] < s.version < writes[-1]]
    assert len(during) >= 2, [s.summary for s in splits]
    assert any(s.summary["moved_rows"] > 0 for s in splits), [s.summary for s in splits]
    assert len(t.bucket_map.buckets) >= 8, len(t.bucket_map.buckets)
    # every version around each split, a sample of the others and the head read exactly
    versions = {t.version} | set(writes[::7])
    for c in t.history():
        if c.operation == "compact":
            versions |= {c.version - 1, c.version}
    assert_exact(t, commits, versions)
    assert apply_changelog({}, t.changes(0), ["k"]) == rows_by_key(t.read(), ["k"])
    assert_routed(t)
    # writers were held off a fenced bucket for a short, bounded moment: every fenced round landed
    # before its deadline (bucket_fence_seconds, default 3 s), past which a writer lifts the fence
    assert max(FENCE_WAITS) < DEFAULT_FENCE_SECONDS * 1000, sorted(FENCE_WAITS)[-5:]
    print(
        json.dumps(
            {
                "commits": len(commits), "splits": len(splits), "compactions": len(compactions),
                "fence wait ms p99 / max": [
                    sorted(FENCE_WAITS)[int(len(FENCE_WAITS) * 0.99)], max(FENCE_WAITS)
                ],
                "buckets": len(t.bucket_map.buckets),
                "fenced": sum(bool(s.summary.get("fenced")) for s in splits),
                "rounds": [s.summary.get("catchup_rounds") for s in splits],
                "p99 write ms": sorted(ms for *_, ms in commits)[int(len(commits) * 0.99)],
            }
        )
    )  # fmt: skip


def test_compaction_without_splits_lands_under_the_same_load(
    catalog_url: str, tmp_path: Path, cpu_load: int
) -> None:
    def three_compactions_amid_writes(t: fl.LakeTable) -> bool:
        return followed_by_a_write(t, lambda c: "compacted_version" in c.summary) >= 3

    t, commits, compactions = run(catalog_url, tmp_path, {}, three_compactions_amid_writes, seconds=6.0)
    errors = [c for c in compactions if "error" in c]
    assert not errors, errors[0]
    check_timeline(t, commits, compactions)
    # every call landed or found no log file to fold (a loaded machine writes less than 0.3 s apart)
    landed = sum(1 for c in compactions if "version" in c)
    assert landed >= 3, compactions
    assert t.bucket_map.version == 0
    assert_exact(t, commits, {t.version, *(c["version"] for c in compactions if "version" in c)})


def test_a_growing_ods_table_splits_from_a_few_buckets_to_many(catalog: fl.Catalog) -> None:
    """Upserts, updates and deletes from two table objects while a thread compacts in a loop: the index
    grows from 2 buckets to dozens, and every version reads as the writes say."""
    t = catalog.create_table(
        "ods.orders", SCHEMA, primary_key=["k"], buckets=2, properties={"bucket_target_rows": "300"}
    )
    compactor = catalog.load_table("ods.orders")
    other = catalog.load_table("ods.orders")  # a second writer, often on an older map
    stop = threading.Event()
    failures: list[BaseException] = []

    def compact_loop() -> None:
        while not stop.is_set():
            try:
                compactor.compact()
            except BaseException as exc:
                failures.append(exc)
            time.sleep(0.05)

    thread = threading.Thread(target=compact_loop)
    thread.start()
    truth: dict[Any, dict[str, Any]] = {}
    states: dict[int, dict[Any, dict[str, Any]]] = {}
    try:
        for i in range(40):
            is_delete, rows = batch(i % 3, i, 12_000)
            who = other if i % 2 else t
            c = who.delete(rows) if is_delete else who.upsert(rows)
            for row in rows.to_pylist():
                if is_delete:
                    truth.pop(row["k"], None)
                else:
                    truth[row["k"]] = row
            states[c.version] = dict(truth)
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[0]
    t.compact()
    assert len(t.refresh().bucket_map.buckets) >= 12, len(t.bucket_map.buckets)
    assert [c.summary.get("buckets_rewritten") for c in t.history()].count(None) < len(t.history())
    for version, state in list(states.items())[1::3]:
        assert rows_by_key(t.read(version=version), ["k"]) == state, version
    assert rows_by_key(t.read(), ["k"]) == truth
    assert apply_changelog({}, t.changes(0), ["k"]) == truth
    assert_routed(t)
