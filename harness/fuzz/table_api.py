"""The table-API fuzzer: :func:`fuzz_table_api` makes valid and broken calls on tables in a memory
warehouse and checks each one, and the tables' contents, against a dict oracle."""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

from flowlake.errors import FlowlakeError
from harness.fuzz._common import drop_memory_warehouse
from harness.fuzz._table_calls import TableCall, new_table_call
from harness.fuzz._table_oracle import FUZZ_TABLES, TableOracle, same_row
from harness.fuzz.report import FuzzReport, check_error_message, clip

if TYPE_CHECKING:
    from flowlake.table.table import LakeTable


def _resync(oracle: TableOracle, table: LakeTable) -> None:
    """After a violation, start the oracle again from what the table holds, so one bug is reported once."""
    oracle.version = table.version
    try:
        rows = table.read().to_pylist()
    except Exception:
        rows = []
    if oracle.spec.key:
        oracle.rows = {oracle.key(r): r for r in rows}
    else:
        oracle.appended = rows


def _check_contents(report: FuzzReport, index: int, table: LakeTable, oracle: TableOracle, when: str) -> None:
    _check_version(report, index, table, oracle)
    try:
        rows = table.read().to_pylist()
    except Exception as exc:
        report.fail(index, f"reading {table.name} {when} raised {type(exc).__name__}", str(exc), table.name)
        return
    if oracle.spec.key:
        got = {oracle.key(r): r for r in rows}
        wrong = [k for k in got.keys() | oracle.rows.keys() if not same_row(got.get(k), oracle.rows.get(k))]
        if len(got) != len(rows) or wrong:
            first = wrong[0] if wrong else None
            detail = (
                f"{len(rows)} rows, keys differing: {clip(wrong[:5])}; "
                f"e.g. table {clip(got.get(first))} vs oracle {clip(oracle.rows.get(first))}"
            )
            report.fail(index, f"{table.name} {when} differs from the oracle", detail, table.name)
            _resync(oracle, table)
    elif Counter(map(_row_tuple, rows)) != Counter(map(_row_tuple, oracle.appended)):
        report.fail(
            index,
            f"{table.name} {when} differs from the oracle",
            f"{len(rows)} vs {len(oracle.appended)} rows",
            table.name,
        )
        _resync(oracle, table)


def _row_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row.values())


def _run_call(report: FuzzReport, index: int, table: LakeTable, oracle: TableOracle, call: TableCall) -> bool:
    """Make one call and check it; return whether it committed.

    A rejected call must not commit: the next commit must then be the oracle's version + 1, and the
    periodic and final checks refresh the table's version (cheaper than a refresh per rejection).
    """
    try:
        commit = getattr(table, call.op)(call.batch)
    except FlowlakeError as exc:
        report.reject(exc)
        check_error_message(report, index, exc, call.batch)
        if call.expect is None:
            report.fail(index, f"{call.op} rejects {call.label}", f"{type(exc).__name__}: {exc}", call.batch)
        elif not isinstance(exc, call.expect):
            detail = f"expected {call.expect.__name__}, got {type(exc).__name__}: {exc}"
            report.fail(index, f"{call.op} with {call.label}: wrong error", detail, call.batch)
        return False
    except Exception as exc:
        report.fail(index, f"{call.op} with {call.label} raised {type(exc).__name__}", str(exc), call.batch)
        _check_version(report, index, table, oracle)
        return False
    report.accepted += 1
    if call.expect is not None or call.effect is None:
        expected = call.expect.__name__ if call.expect else "an error"
        report.fail(index, f"{call.op} accepts {call.label}", f"expected {expected}", call.batch)
        _resync(oracle, table.refresh())
        return False
    counts = call.effect(oracle)
    changed = any(counts.values())
    version = commit.version if changed else table.version
    if version != oracle.version + changed:
        detail = (
            f"version {version}, not {oracle.version + changed}: a call since #{oracle.checked} committed"
        )
        report.fail(index, f"{table.name} has unexpected commits", detail, call.batch)
        _resync(oracle, table.refresh())
    elif changed and dict(commit.summary.get("rows", {})) != counts:
        detail = f"commit {commit.version} with {commit.summary.get('rows')}, oracle {counts}"
        report.fail(index, f"{call.op} with {call.label} committed the wrong changes", detail, call.batch)
        _resync(oracle, table.refresh())
    oracle.version, oracle.checked = table.version, index
    return changed


def _check_version(report: FuzzReport, index: int, table: LakeTable, oracle: TableOracle) -> None:
    if table.refresh().version != oracle.version:
        detail = (
            f"version {table.version}, expected {oracle.version}: a call since #{oracle.checked} committed"
        )
        report.fail(index, f"{table.name} has unexpected commits", detail, table.name)
        _resync(oracle, table)
    oracle.checked = index


def fuzz_table_api(n: int, seed: int, *, check_every: int = 300) -> FuzzReport:
    """Fuzz ``upsert``/``delete``/``apply``/``update_columns``/``append`` with ``n`` calls.

    Args:
        n: API calls to make.
        seed: Seed of the run.
        check_every: Check, compact, clean and check again a table after this many of its commits.

    Returns:
        The report; ``crashes`` is 0 when every check held.
    """
    from flowlake.lake import connect

    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("table_api", seed)
    warehouse = f"memory://flowlake-fuzz-{seed}-{uuid.uuid4().hex[:8]}"
    catalog = connect(catalog="sqlite://", warehouse=warehouse)
    tables = {
        spec.name: catalog.create_table(
            spec.name, spec.schema, primary_key=list(spec.key) or None, buckets=1,
            partition_by=None if spec.key else ["k"],
        )
        for spec in FUZZ_TABLES
    }  # fmt: skip
    oracles = {spec.name: TableOracle(spec) for spec in FUZZ_TABLES}
    commits = Counter[str]()
    started = time.perf_counter()
    try:
        for index in range(n):
            call = new_table_call(rng)
            table, oracle = tables[call.spec.name], oracles[call.spec.name]
            report.inputs += 1
            if _run_call(report, index, table, oracle, call):
                report.commits += 1
                commits[call.spec.name] += 1
                if commits[call.spec.name] % check_every == 0:
                    _maintain(report, index, table, oracle)
        for name, table in tables.items():
            _check_contents(report, n, table, oracles[name], "at the end")
    finally:
        report.seconds = time.perf_counter() - started
        drop_memory_warehouse(warehouse)
    return report


def _maintain(report: FuzzReport, index: int, table: LakeTable, oracle: TableOracle) -> None:
    """Check a table, compact and clean it (keeps reads and the memory warehouse small), check again."""
    _check_contents(report, index, table, oracle, "before compaction")
    try:
        table.compact()
        table.clean(retain_last=1)
    except Exception as exc:
        report.fail(index, f"compacting {table.name} raised {type(exc).__name__}", str(exc), table.name)
    oracle.version = table.refresh().version  # compaction commits too
    _check_contents(report, index, table, oracle, "after compaction")
