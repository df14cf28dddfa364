"""Pinned versions: readable until released, whatever compaction and cleaning (in any process) do;
and the races between cleaning and readers, pins and in-flight writers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.table.fileparts import physical_paths
from flowlake.table.pins import Pin
from flowlake.testing import free_port
from flowlake.testing.services import wait_for_port

pytestmark = pytest.mark.integration

SCHEMA = pa.schema([("k", pa.int64()), ("v", pa.int64())])


def rows(keys: list[int], value: int) -> pa.Table:
    return pa.table({"k": keys, "v": [value] * len(keys)}, schema=SCHEMA)


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["k"])


def connect(catalog_url: str, tmp: Path) -> fl.Catalog:
    return fl.connect(catalog=catalog_url, warehouse=(tmp / "wh").as_uri(), principal="owner")


def rewrite_everything(t: fl.LakeTable, rounds: int) -> None:
    """Overwrite every key, delete some and compact, so no file of earlier versions stays live."""
    for r in range(rounds):
        t.upsert(rows(list(range(20)), 100 + r))
        t.delete(pa.table({"k": [r]}))
        t.compact()


def files_on_disk(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp / "wh")) for p in (tmp / "wh").rglob("*.parquet")}


@pytest.fixture
def table(catalog_url: str, tmp_path: Path) -> fl.LakeTable:
    t = connect(catalog_url, tmp_path).create_table("ods.p", SCHEMA, primary_key=["k"], buckets=2)
    t.upsert(rows(list(range(10)), 1))
    t.compact()  # base files
    t.upsert(rows([3, 4, 30], 2))  # and log files on top
    t.delete(pa.table({"k": [5]}))
    return t


def test_pinned_version_stays_readable_through_compaction_and_clean(
    table: fl.LakeTable, tmp_path: Path
) -> None:
    with table.pin() as pin:
        assert pin.version == table.version
        first = sorted_rows(pin.read())
        assert {r["k"] for r in first} == set(range(10)) - {5} | {30}
        needed = physical_paths(f.path for f in table._store.live_files(table._record.id, pin.version))
        assert {f for f in needed if "-base-" in f} and {f for f in needed if "-log" in f}
        rewrite_everything(table, 3)
        result = table.clean(retain_last=1, orphan_grace_seconds=0)
        assert result.oldest_version == pin.version
        assert needed <= files_on_disk(tmp_path)  # base and log files of the pinned snapshot
        assert sorted_rows(pin.read()) == first
        assert sorted_rows(table.read(version=pin.version)) == first
        assert pin.changes().num_rows > 0  # the changelog from the pinned version on, too
        assert pin.dataset().count_rows() == len(first)
        assert any(n.startswith("pin:") for n in table._store.consumers(table._record.id))
    assert pin.released
    assert not any(n.startswith("pin:") for n in table._store.consumers(table._record.id))
    # released: the same clean now removes the version (so the pin is what kept it)
    result = table.clean(retain_last=1, orphan_grace_seconds=0)
    assert result.oldest_version == table.version and result.files_deleted > 0
    assert not needed & files_on_disk(tmp_path)
    with pytest.raises(fl.VersionCleanedError, match="was cleaned"):
        table.read(version=pin.version)
    with pytest.raises(fl.InvalidArgumentError, match="released"):
        pin.read()
    assert pin.release() is False


def test_pin_of_a_cleaned_version_is_refused(table: fl.LakeTable) -> None:
    old = table.version
    rewrite_everything(table, 2)
    table.clean(retain_last=1)
    with pytest.raises(fl.VersionCleanedError, match=rf"version {old} of 'ods.p' was cleaned"):
        table.pin(old)
    with pytest.raises(fl.VersionNotFoundError):
        table.pin(table.version + 1)
    assert table._store.consumers(table._record.id) == {}  # nothing half-registered
    with table.pin(table.version) as pin:
        assert sorted_rows(pin.read()) == sorted_rows(table.read())


def test_pin_is_respected_by_a_clean_in_another_process(
    catalog_url: str, table: fl.LakeTable, tmp_path: Path
) -> None:
    holder = textwrap.dedent(
        """
        import sys
        import flowlake as fl
        t = fl.connect(catalog=sys.argv[1], warehouse=sys.argv[2], principal="owner").load_table("ods.p")
        pin = t.pin()
        print(pin.version, pin.name, flush=True)
        sys.stdin.readline()
        print(pin.release(), flush=True)
        """
    )
    warehouse = (tmp_path / "wh").as_uri()
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, catalog_url, warehouse],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        version_text, name = proc.stdout.readline().split()
        version = int(version_text)
        expected = sorted_rows(table.read(version=version))
        other = connect(catalog_url, tmp_path).load_table("ods.p")  # a second catalog connection
        assert other._store.consumers(other._record.id) == {name: version}
        rewrite_everything(other, 2)
        assert other.clean(retain_last=1, orphan_grace_seconds=0).oldest_version == version
        assert sorted_rows(other.read(version=version)) == expected
        proc.stdin.write("release\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "True"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert other.clean(retain_last=1).oldest_version == other.version
    with pytest.raises(fl.VersionCleanedError):
        other.read(version=version)


def test_pin_registered_while_a_clean_runs_is_never_lost(
    catalog_url: str, table: fl.LakeTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pin that lands after the clean read the consumers makes the clean start over."""
    version = table.version
    expected = sorted_rows(table.read())
    rewrite_everything(table, 2)
    reader = connect(catalog_url, tmp_path).load_table("ods.p")
    pins: list[Pin] = []
    real = table._store.consumers

    def consumers_then_pin(table_id: int) -> dict[str, int]:
        found = real(table_id)
        if not pins:
            pins.append(reader.pin(version))  # the old version is still readable: the pin lands
        return found

    monkeypatch.setattr(table._store, "consumers", consumers_then_pin)
    result = table.clean(retain_last=1, orphan_grace_seconds=0)
    assert pins and result.oldest_version == version
    assert sorted_rows(pins[0].read()) == expected
    pins[0].release()


def test_clean_that_lands_first_makes_the_pin_fail_not_dangle(
    table: fl.LakeTable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clean between the pin's version check and its registration: refused, or the new head."""
    rewrite_everything(table, 2)
    real = table.resolve_version
    cleaned: list[int] = []

    def resolve_then_clean(version: int | None = None, as_of: Any = None) -> int:
        v = real(version, as_of)
        if not cleaned:
            table.upsert(rows([1000 + v], 0))
            cleaned.append(table.clean(retain_last=1).oldest_version)
        return v

    monkeypatch.setattr(table, "resolve_version", resolve_then_clean)
    old = table.version
    with pytest.raises(fl.VersionCleanedError):
        table.pin(old)
    assert cleaned == [old + 1] and table._store.consumers(table._record.id) == {}
    cleaned.clear()
    with table.pin() as pin:  # the head moved under it: the pin takes the new head
        assert pin.version == table.version == old + 2
        assert pin.read().num_rows == table.read().num_rows


def test_pin_with_ttl_is_dropped_by_clean_after_its_deadline(table: fl.LakeTable) -> None:
    version = table.version
    short = table.pin(ttl_seconds=0.2)
    long = table.pin(ttl_seconds=3600)
    assert short.expires_at is not None and short.expires_at < time.time() + 1
    rewrite_everything(table, 2)
    assert table.clean(retain_last=1).oldest_version == version  # both held
    long.release()
    time.sleep(0.3)
    assert table.clean(retain_last=1).oldest_version == table.version  # the short one expired
    assert table._store.consumers(table._record.id) == {}
    with pytest.raises(fl.VersionCleanedError):
        short.read()
    with pytest.raises(fl.InvalidArgumentError, match="ttl_seconds"):
        table.pin(ttl_seconds=0)


@pytest.mark.parametrize("how", ["read", "changes", "dataset"])
def test_unpinned_reader_racing_a_clean_gets_version_cleaned_error(
    table: fl.LakeTable, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file list is read, then a clean deletes the files: a clear error, not a raw I/O error."""
    version = table.version
    rewrite_everything(table, 2)
    store = table._store
    for method in ("live_files", "log_files_between"):
        real: Callable[..., Any] = getattr(store, method)

        def listed_then_cleaned(*args: Any, _real: Callable[..., Any] = real) -> Any:
            found = _real(*args)
            monkeypatch.undo()
            table.clean(retain_last=1)
            return found

        monkeypatch.setattr(store, method, listed_then_cleaned)
    with pytest.raises(fl.VersionCleanedError, match=rf"version {version} of 'ods.p' was cleaned") as err:
        if how == "read":
            table.read(version=version)
        elif how == "changes":
            table.changes(version)
        else:
            table.dataset(version)
    assert isinstance(err.value.__cause__, fl.StorageError | None)


def test_writer_catching_up_while_a_clean_runs_retries(
    catalog_url: str, table: fl.LakeTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = connect(catalog_url, tmp_path).load_table("ods.p")
    writer.upsert(rows([1], 7))  # the writer's key state is at this version now
    for i in range(3):
        table.upsert(rows([50 + i], i))
    real = writer._store.log_files_between

    def logs_then_clean(table_id: int, start: int, end: int) -> Any:
        found = real(table_id, start, end)
        monkeypatch.undo()
        table.compact()
        table.clean(retain_last=1)
        return found

    monkeypatch.setattr(writer._store, "log_files_between", logs_then_clean)
    commit = writer.upsert(rows([1, 51], 8))
    got = {r["k"]: r["v"] for r in writer.read().to_pylist()}
    assert got[1] == 8 and got[51] == 8 and got[52] == 2
    # the writer's changelog has exact before-images (its key state was reloaded, not left short)
    change = writer.changes(commit.version - 1).to_pylist()
    assert sorted((c["k"], c["_kind"], c["v"]) for c in change) == [
        (1, 1, 7),
        (1, 2, 8),
        (51, 1, 1),
        (51, 2, 8),
    ]


def test_clean_never_deletes_files_of_a_stale_writer_that_commits_meanwhile(
    catalog_url: str, table: fl.LakeTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inflight commit older than the grace: either it completes and keeps its files, or it is
    aborted and cannot complete. Here it tries to complete in the middle of the clean."""
    writer = connect(catalog_url, tmp_path).load_table("ods.p")
    real_complete = writer._store.complete_commit
    cleaner = table._store
    real_referenced = cleaner.all_file_paths
    outcome: list[object] = []

    def complete_during_clean(record: Any, request: Any) -> Any:
        def referenced_then_commit(table_id: int) -> set[str]:
            found = real_referenced(table_id)
            try:
                outcome.append(real_complete(record, request))
            except fl.FlowlakeError as exc:
                outcome.append(exc)
            return found

        monkeypatch.setattr(cleaner, "all_file_paths", referenced_then_commit)
        table.clean(retain_last=5, orphan_grace_seconds=0)  # the writer's instant counts as stale
        monkeypatch.setattr(cleaner, "all_file_paths", real_referenced)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(writer._store, "complete_commit", complete_during_clean)
    head = table.refresh().version
    with pytest.raises(fl.CatalogError, match="not inflight"):
        writer.upsert(rows([77], 77))
    assert table.refresh().version == head  # nothing committed ...
    assert 77 not in {r["k"] for r in table.read().to_pylist()}  # ... and every version reads
    live = physical_paths(f.path for f in table._store.live_files(table._record.id, head))
    assert live <= files_on_disk(tmp_path)


def test_pins_through_the_rest_metastore(tmp_path: Path) -> None:
    """A pin taken through ``flowlake serve`` holds back a clean run by an embedded catalog, and a
    refused pin comes back as VersionCleanedError."""
    catalog_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    owner = connect(catalog_url, tmp_path)
    t = owner.create_table("ods.p", SCHEMA, primary_key=["k"], buckets=2)
    t.upsert(rows(list(range(10)), 1))
    token = owner.create_principal("reader")
    owner.grant("read", "ods", "reader")
    port = free_port()
    exe = str(Path(sys.executable).with_name("flowlake"))
    server = subprocess.Popen(
        [exe, "serve", "--catalog", catalog_url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        remote = fl.connect(
            catalog=f"http://127.0.0.1:{port}", warehouse=(tmp_path / "wh").as_uri(), token=token
        )
        reader = remote.load_table("ods.p")
        with reader.pin() as pin:
            expected = sorted_rows(pin.read())
            rewrite_everything(t, 2)
            assert t.clean(retain_last=1, orphan_grace_seconds=0).oldest_version == pin.version
            assert sorted_rows(pin.read()) == expected
        t.clean(retain_last=1)
        with pytest.raises(fl.VersionCleanedError, match="was cleaned"):
            reader.pin(pin.version)
        assert owner.list_consumers("ods.p") == {}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_consumers_further_behind_than_the_max_lag_are_dropped_by_clean(table: fl.LakeTable) -> None:
    store, table_id = table._store, table._record.id
    behind = table.version
    store.register_consumer(table_id, "stalled-flow", behind)
    rewrite_everything(table, 1)
    recent = table.version
    time.sleep(0.6)  # `recent` is now over 0.5 s old, and still the head
    store.register_consumer(table_id, "live-flow", recent)
    assert table.clean(retain_last=1).oldest_version == behind  # no bound: the stalled one holds it
    assert table.policy.clean_consumer_max_lag == 7 * 86_400  # the table services' default
    result = table.clean(retain_last=1, consumer_max_lag_seconds=0.5)
    assert result.oldest_version == recent
    assert store.consumers(table_id) == {"live-flow": recent}  # at the version current 0.5 s ago: kept
    with pytest.raises(fl.VersionCleanedError):
        table.changes(behind, recent)
