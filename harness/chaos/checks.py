"""The changelog auditor that reads every table during a run, and the end-of-run checks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import SEQ_COLUMN
from flowlake.lake import Catalog
from harness.chaos.compare import (
    changelog_by_key,
    check_changelog,
    compare_changes,
    compare_rows,
    expected_changes,
    keyed_rows,
    source_state,
)
from harness.chaos.config import ODS, OUTPUTS, ChaosResult, Check

if TYPE_CHECKING:
    from harness.chaos.run import ChaosRun


class ChangelogAuditor:
    """Read every table's changelog while the pipeline runs, as a registered consumer.

    Cleaning keeps every version from the oldest consumer position on, so the auditor sees each
    table's whole history from version 0 while cleaning keeps deleting what it has read.
    """

    name: Final = "chaos-auditor"

    def __init__(self, catalog: Catalog, tables: Sequence[str]) -> None:
        self.catalog = catalog
        self.position = dict.fromkeys(tables, 0)
        self.parts: dict[str, list[pa.Table]] = {}
        for table in tables:
            t = catalog.load_table(table)
            self.parts[table] = [t.changes(0, 0)]
            catalog.register_consumer(self.name, table, 0)

    def poll(self) -> None:
        """Read what each table committed since the last poll, then move the consumer there."""
        for table, position in self.position.items():
            t = self.catalog.load_table(table)
            if t.version > position:
                self.parts[table].append(t.changes(position, t.version))
                self.position[table] = t.version
                self.catalog.register_consumer(self.name, table, t.version)

    def changes(self, table: str) -> pa.Table:
        """Every change ``table`` committed from version 0 to the last poll."""
        return pa.concat_tables(self.parts[table])


class Checker:
    """The end-of-run checks over a stopped pipeline."""

    def __init__(self, run: ChaosRun, result: ChaosResult) -> None:
        self.run_, self.result = run, result
        self.catalog = run._catalog()
        self.rng = random.Random(run.config.seed + 2)  # noqa: S311 - seeded chaos

    def add(self, name: str, problems: Sequence[str]) -> None:
        self.result.checks.append(Check(name, not problems, "; ".join(problems)))

    def run(self) -> None:
        from flowlake.demo.flows import TABLES

        for name in TABLES:
            t = self.catalog.load_table(name)
            self.result.rows[name] = t.read(columns=list(t.primary_key)).num_rows
            self.result.versions[name] = (t.oldest_version, t.version)
        if self.run_.auditor is not None:
            self.run_.auditor.poll()
        for table, name in ODS.items():
            self._ods(table, name)
        for name in TABLES:
            self._well_formed(name)
            self._audited(name)
        for name in OUTPUTS:
            self._verify(name)
        self._dead_letters()
        self._orphans()

    def _positions(self, name: str) -> tuple[list[tuple[int, int]], list[str]]:
        """``(version, cut)`` of every commit storing a source position, and problems with them.

        ``cut`` is the index of the last source transaction the version holds (-1: none).
        """
        key = f"jsonl:{self.run_.cdc.as_uri()}"
        commits: list[tuple[int, int]] = []
        problems = []
        for commit in self.catalog.load_table(name).history():
            position = commit.summary.get("sources", {}).get(key)
            if not isinstance(position, dict):
                continue
            file = Path(str(position.get("file") or "")).name
            cut = int(file.split(".")[0]) if file else -1
            path = self.run_.cdc / file
            if file and (not path.is_file() or position.get("offset") != path.stat().st_size):
                problems.append(f"version {commit.version} stores a position inside {file}: {position}")
            if commits and cut < commits[-1][1]:
                problems.append(
                    f"version {commit.version} stores a position before version {commits[-1][0]}'s"
                )
            commits.append((commit.version, cut))
        return commits, problems

    def _ods(self, table: str, name: str) -> None:
        t = self.catalog.load_table(name)
        key = list(t.primary_key)
        transactions = self.run_.source.transactions
        final = source_state(transactions, table)
        actual, _ = keyed_rows(t.read(), key)
        problems, lost, extra = compare_rows(final, actual)
        self.result.rows_lost += lost
        self.result.rows_duplicated += extra
        self.add(f"{name} equals the source ({len(final):,} rows)", problems)
        commits, problems = self._positions(name)
        self.add(f"{name}: {len(commits)} commits store whole-transaction positions, in order", problems)
        want = expected_changes(transactions, table, commits)
        count = sum(len(v) for v in want.values())
        if self.run_.auditor is not None:
            audited = changelog_by_key(self.run_.auditor.changes(name), key)
            problems, lost, duplicated = compare_changes(want, audited)
            self.result.rows_lost += lost
            self.result.rows_duplicated += duplicated
            self.add(
                f"{name} whole changelog 0..{t.version} is the source's changes ({count:,}) per commit",
                problems,
            )
        oldest = t.oldest_version
        cut = max([c for v, c in commits if v <= oldest], default=-1)
        snapshot, _ = keyed_rows(t.read(version=oldest), key)
        problems, _, _ = compare_rows(source_state(transactions[: cut + 1], table), snapshot)
        self.add(f"{name}@{oldest} (oldest) equals the source after transaction {cut}", problems)
        retained = {k: [c for c in v if c[0] > oldest] for k, v in want.items()}
        problems, _, _ = compare_changes(
            {k: v for k, v in retained.items() if v}, changelog_by_key(t.changes(oldest), key)
        )
        self.add(
            f"{name} retained changelog {oldest}..{t.version} is the source's changes per commit", problems
        )

    def _well_formed(self, name: str) -> None:
        t = self.catalog.load_table(name)
        oldest = t.oldest_version
        changes = t.changes(oldest)
        problems = check_changelog(t.read(version=oldest), changes, t.primary_key, t.read())
        self.add(
            f"{name} changelog {oldest}..{t.version} well formed ({changes.num_rows:,} changes)", problems
        )

    def _audited(self, name: str) -> None:
        """The whole history read during the run: well formed, and its tail equals the retained log."""
        if self.run_.auditor is None:
            return
        t = self.catalog.load_table(name)
        audited = self.run_.auditor.changes(name)
        empty = t.read(version=t.oldest_version).schema.empty_table()
        problems = check_changelog(empty, audited, t.primary_key, t.read())
        self.add(
            f"{name} whole changelog 0..{t.version} well formed ({audited.num_rows:,} changes)", problems
        )
        versions = pc.shift_right(audited.column(SEQ_COLUMN), 32)
        tail = audited.filter(pc.greater(versions, t.oldest_version)).sort_by(SEQ_COLUMN)
        retained = t.changes(t.oldest_version).sort_by(SEQ_COLUMN)
        same = tail.select(retained.column_names).equals(retained)
        detail = [] if same else [f"{tail.num_rows} changes read during the run, {retained.num_rows} now"]
        self.add(
            f"{name} retained log {t.oldest_version}..{t.version} equals what was read during the run", detail
        )

    def _verify(self, name: str) -> None:
        from flowlake.flow.verify import lineage, verify_table

        t = self.catalog.load_table(name)
        candidates = []
        for commit in t.history():
            if (
                commit.version < t.oldest_version
                or commit.version == t.version
                or not commit.summary.get("sources")
            ):
                continue
            _, inputs = lineage(t, commit.version)
            if all(v >= self.catalog.load_table(i).oldest_version for i, v in inputs.items()):
                candidates.append(commit.version)
        samples = sorted(self.rng.sample(candidates, min(len(candidates), self.run_.config.verify_samples)))
        for version in [*samples, None]:
            report = verify_table(self.catalog, name, version=version)
            detail = [str(d) for d in report.differences[:5]]
            if report.differences:
                detail.append(f"{len(report.differences)} differences")
            self.add(f"verify {name}@{report.version} (inputs {report.inputs}, {report.rows:,} rows)", detail)

    def _dead_letters(self) -> None:
        name = "ods._dead_letter"
        rows = self.catalog.load_table(name).read().num_rows if self.catalog.table_exists(name) else 0
        self.add("no dead letters", [f"{rows} dead letters in {name}"] if rows else [])

    def _orphans(self) -> None:
        from flowlake.demo.flows import TABLES
        from flowlake.table.fileparts import physical_paths

        storage = self.catalog.storage
        problems = []
        orphans = 0
        for name in TABLES:
            t = self.catalog.load_table(name)
            orphans += t.clean(retain_last=t.version + 1, orphan_grace_seconds=0).orphans_deleted
            record = self.catalog.store.get_table(*name.split("."))
            on_disk = {
                storage.relative(i.path) for i in storage.list_files(storage.path(record.location, "data"))
            }
            known = physical_paths(self.catalog.store.all_file_paths(record.id))  # parts name their file
            if on_disk != known:
                problems.append(
                    f"{name}: {len(on_disk - known)} orphan files, {len(known - on_disk)} missing files"
                )
        self.add(
            f"no orphan or missing files after cleaning ({orphans} orphans of killed writers removed)",
            problems,
        )
