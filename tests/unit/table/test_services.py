"""Table services without processes: the policy (typed, validated properties), the decision which
jobs are due, the backlog measured on a real table, and one service pass on a SQLite catalog."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TypedDict

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.table.policy import SPECS, MaintenancePolicy, creation_defaults, parse_duration, parse_size
from flowlake.table.services import Backlog, TableServices, due_jobs, measure_backlog

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.int64())])
QUIET = Backlog(
    files=4, log_files=0, log_bytes=0, max_bucket_log_files=0, max_bucket_log_rows=0,
    oldest_log_age=None, versions=3, rebalance_due=False,
)  # fmt: skip


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    return fl.connect(
        catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri(), principal="ops"
    )


# -- policy ---------------------------------------------------------------------------------------


def test_new_tables_start_with_the_default_policy(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], properties={"maintain.clean.retain_last": "3"})
    props = t.properties
    assert {k: props[k] for k in creation_defaults()} == {
        **creation_defaults(),
        "maintain.clean.retain_last": "3",
    }
    assert t.policy == dataclasses.replace(MaintenancePolicy(), clean_retain_last=3)
    assert cat.load_table("ods.t").policy.clean_retain_last == 3  # stored, not only in this object


def test_bad_properties_are_refused_at_creation(cat: fl.Catalog) -> None:
    with pytest.raises(fl.InvalidArgumentError, match=r"'maintain\.clean\.retain_for' must be a duration"):
        cat.create_table(
            "ods.t", SCHEMA, primary_key=["id"], properties={"maintain.clean.retain_for": "soon"}
        )
    assert not cat.table_exists("ods.t")


def test_set_properties_validates_and_persists(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"])
    t.set_properties({"maintain.compact.log_files": 4}, **{"maintain.rebalance": False})
    again = cat.load_table("ods.t")
    assert (again.policy.compact_log_files, again.policy.rebalance) == (4, False)
    assert again.properties["maintain.rebalance"] == "false"
    t.set_properties({"maintain.compact.log_files": None})  # None: back to the default
    assert cat.load_table("ods.t").policy.compact_log_files == 8
    assert "maintain.compact.log_files" not in cat.load_table("ods.t").properties
    for key, value, expected in (
        ("maintain.compact.log_files", "0", "an integer from 1 to 100000, got '0'"),
        ("maintain.enabled", "yes", "true or false, got 'yes'"),
        ("conflict_policy", "win", "one of retry, fail, merge-columns, got 'win'"),
        ("maintain.compact.log_bytes", "lots", "a size such as 64MB"),
        ("log_backlog_compact", "-1", "an integer from 1 to 10^6"),
    ):
        with pytest.raises(fl.InvalidArgumentError, match=re.escape(f"'{key}' must be {expected}")):
            t.set_properties({key: value})
    with pytest.raises(fl.InvalidArgumentError, match=r"unknown or read-only table property 'partition_by'.*"
                       r"settable properties: bucket_fence_seconds"):  # fmt: skip
        t.set_properties(partition_by="x")
    assert cat.load_table("ods.t").properties == t.properties  # nothing changed by the refusals


def test_durations_and_sizes() -> None:
    assert [parse_duration(x) for x in ("0", "90s", "2m", "1.5h", "1d", "20ms")] == [
        0,
        90,
        120,
        5400,
        86400,
        0.02,
    ]
    assert [parse_size(x) for x in ("10", "2kb", "3MiB", "1GB")] == [10, 2048, 3 * 1024**2, 1024**3]
    for bad in ("", "m", "1y", "-1s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_every_spec_default_parses() -> None:
    for spec in SPECS.values():
        if spec.default is not None:
            spec.value(spec.default)


# -- deciding what is due -------------------------------------------------------------------------


class CompactionTrigger(TypedDict, total=False):
    """The :class:`Backlog` fields one compaction trigger test raises to its limit."""

    max_bucket_log_files: int
    max_bucket_log_rows: int
    log_bytes: int
    oldest_log_age: float


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"max_bucket_log_files": 8}, "a bucket has 8 log files (limit 8)"),
        ({"max_bucket_log_rows": 200_000}, "a bucket has 200,000 log rows (limit 200,000)"),
        ({"log_bytes": 64 * 1024**2}, "log files take 67,108,864 bytes (limit 67,108,864)"),
        ({"oldest_log_age": 600.0}, "the oldest log is 600s old (limit 600s)"),
    ],
)
def test_each_compaction_trigger(change: CompactionTrigger, reason: str) -> None:
    below = dataclasses.replace(QUIET, log_files=1, max_bucket_log_files=1, oldest_log_age=1.0)
    assert due_jobs(MaintenancePolicy(), below, since_clean=1.0) == []
    (job,) = due_jobs(MaintenancePolicy(), dataclasses.replace(below, **change), since_clean=1.0)
    assert (job.job, job.reason) == ("compact", reason)


def test_rebalance_only_when_no_compaction_is_due() -> None:
    over = dataclasses.replace(QUIET, rebalance_due=True)
    assert [j.job for j in due_jobs(MaintenancePolicy(), over, since_clean=1.0)] == ["rebalance"]
    busy = dataclasses.replace(over, log_files=9, max_bucket_log_files=9)
    assert [j.job for j in due_jobs(MaintenancePolicy(), busy, since_clean=1.0)] == ["compact"]
    off = MaintenancePolicy(rebalance=False)
    assert due_jobs(off, over, since_clean=1.0) == []


def test_cleaning_is_due_by_interval_versions_and_orphan_grace() -> None:
    policy = MaintenancePolicy(clean_retain_last=5, clean_interval=60, orphan_grace=3600)
    many = dataclasses.replace(QUIET, versions=6)
    assert [j.job for j in due_jobs(policy, QUIET, since_clean=None)] == ["clean"]  # never cleaned
    assert due_jobs(policy, many, since_clean=59.0) == []  # not again within the interval
    assert [j.reason for j in due_jobs(policy, many, since_clean=60.0)] == ["6 versions kept (retain_last 5)"]
    assert due_jobs(policy, QUIET, since_clean=120.0) == []  # nothing to shed
    assert [j.job for j in due_jobs(policy, QUIET, since_clean=3600.0)] == ["clean"]  # orphans


def test_a_disabled_policy_asks_for_nothing() -> None:
    busy = dataclasses.replace(QUIET, log_files=99, max_bucket_log_files=99, versions=99)
    assert due_jobs(MaintenancePolicy(enabled=False), busy, since_clean=None) == []


# -- measuring and running ------------------------------------------------------------------------


def test_backlog_of_a_real_table(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2)
    for i in range(6):
        t.upsert(pa.table({"id": [i, i + 100, i + 200], "v": [i] * 3}))
    b = measure_backlog(cat.store, t.refresh()._record)
    assert (
        b.log_files == b.files >= 6 and b.max_bucket_log_files == 6
    )  # a commit: a log per bucket it touches
    assert b.max_bucket_log_rows >= 9 and b.log_bytes > 0
    assert b.oldest_log_age is not None and 0 <= b.oldest_log_age < 60
    assert (b.versions, b.rebalance_due) == (7, False)
    t.set_properties({"bucket_target_rows": 1000})
    t.upsert(pa.table({"id": list(range(1000, 3500)), "v": [0] * 2500}))
    assert measure_backlog(cat.store, t.refresh()._record).rebalance_due


def test_one_pass_compacts_cleans_and_records_the_runs(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], buckets=2, properties={
        "maintain.compact.log_files": "4", "maintain.clean.retain_last": "1",
        "maintain.clean.retain_for": "0s", "maintain.clean.interval": "0s",
    })  # fmt: skip
    quiet = cat.create_table(
        "ods.quiet", SCHEMA, primary_key=["id"], properties={"maintain.enabled": "false"}
    )
    for i in range(5):
        t.upsert(pa.table({"id": [i, i + 1], "v": [i, i]}))
        quiet.upsert(pa.table({"id": [i], "v": [i]}))
    expected = t.read().sort_by("id")
    lines: list[str] = []
    service = TableServices(cat.store, cat.storage, max_jobs=1, emit=lines.append)  # most urgent first
    first = service.run_once()
    # maintain.enabled=false is left alone; the clean after the compaction sheds the logs it folded
    assert [(r.table, r.job, r.outcome) for r in first] == [
        ("ods.t", "clean", "ok"),
        ("ods.t", "compact", "ok"),
    ]
    assert service.run_once() == []  # nothing due any more
    t.refresh()
    assert t.read().sort_by("id").equals(expected)
    assert [f.content for f in cat.store.live_files(t._record.id, t.version)] == ["base", "base"]
    assert t.oldest_version == t.version
    states = {s.job: s for s in cat.store.job_states(t._record.id)}
    assert states["compact"].runs == 1 and states["compact"].last_outcome == "ok"
    assert states["clean"].runs == 1 and states["clean"].holder is None
    assert any("ods.t compact ok" in line for line in lines)
    from flowlake.status import table_status

    status = table_status(cat, "ods.t")
    assert status.services["compact"]["last_outcome"] == "ok" and status.services["clean"]["runs"] == 1
    assert status.policy.startswith("compact at 4 logs")
    assert table_status(cat, "ods.quiet").policy == "maintenance off (maintain.enabled=false)"


def test_tables_outside_the_pattern_or_the_grants_are_skipped(tmp_path: Path) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="ops")
    for name in ("ods.a", "dws.b"):
        t = owner.create_table(
            name, SCHEMA, primary_key=["id"], properties={"maintain.compact.log_files": "1"}
        )
        t.upsert(pa.table({"id": [1], "v": [1]}))
    owner.grant("read", "*", "svc")
    owner.grant("write", "dws", "svc")
    lines: list[str] = []
    svc = fl.connect(catalog=url, warehouse=wh, principal="svc")
    service = TableServices(svc.store, svc.storage, tables=["ods.*", "dws.*"], emit=lines.append)
    assert {r.table for r in service.run_once()} == {"dws.b"}
    assert lines[0] == "ods.a: skipped, 'svc' lacks write on it (`flowlake grant write ods.a svc`)"
    only_ods = TableServices(owner.store, owner.storage, tables="ods.*", max_jobs=1)
    assert {r.table for r in only_ods.run_once()} == {"ods.a"}


def test_a_job_whose_lease_is_held_elsewhere_is_not_run(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"], properties={"maintain.compact.log_files": "1"})
    t.upsert(pa.table({"id": [1], "v": [1]}))
    assert cat.store.acquire_lease(t._record.id, "compact", "elsewhere", 30) == 1
    service = TableServices(cat.store, cat.storage)
    assert [j.job for _, j in service.scan()] == ["clean"]
    assert service.run_job(t._record, "compact").outcome == "busy"  # even when asked directly
    assert [f.content for f in cat.store.live_files(t._record.id, t.refresh().version)] == ["log"]


def test_clean_keeps_versions_younger_than_retain_for(cat: fl.Catalog) -> None:
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"])
    for i in range(6):
        t.upsert(pa.table({"id": [i], "v": [i]}))
    t.compact()
    assert t.clean(retain_last=1, retain_for_seconds=3600).oldest_version == 0
    assert t.read(version=1).num_rows == 1
    assert t.clean(retain_last=1).oldest_version == t.version
