"""The primary-key lake table: merge-on-read upserts, snapshots, time travel, changelogs, maintenance.

:class:`LakeTable` is the facade; the work is done by one-job modules: :mod:`~flowlake.table.commit`
(the write path's commit pipeline and key state), :mod:`~flowlake.table.versions` (time travel and the
cleaned-version guard), :mod:`~flowlake.table.scan` (reading), :mod:`~flowlake.table.compaction` and
:mod:`~flowlake.table.cleaning` (maintenance).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import random
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from flowlake.catalog.base import Commit, CommitRequest, DataFile, FileContent, MetaStore, TableRecord
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import (
    CommitConflictError,
    InvalidArgumentError,
    InvalidChangelogError,
    SchemaMismatchError,
    VersionCleanedError,
    VersionNotFoundError,
)
from flowlake.io.fs import Storage
from flowlake.runtime.observability import CONFLICTS, record_commit
from flowlake.table import cleaning, compaction, maintenance, versions
from flowlake.table.bucketing import partition_rows
from flowlake.table.bucketmap import BucketMap
from flowlake.table.clustering import ClusterSpec
from flowlake.table.commit import (
    commit_changelog,
    commit_plan,
    current_state,
    learn_missing,
    new_instant,
    with_keys,
    write_files,
)
from flowlake.table.keystate import KeyState, state_budget_rows
from flowlake.table.livefiles import LiveFiles
from flowlake.table.lookup import key_table, lookup
from flowlake.table.pins import Pin, pin_name
from flowlake.table.policy import MaintenancePolicy, validate_updates
from flowlake.table.scan import ScanMetrics, read_changes, read_snapshot, snapshot_dataset
from flowlake.table.schema import evolve_schema, fit_batch
from flowlake.table.stats import Filter, fit_filter
from flowlake.table.writer import POS_COLUMN, PlannedWrite, changelog_to_write, merge_partial, plan_write

__all__ = ["ConflictPolicy", "LakeTable", "new_instant"]

ConflictPolicy = Literal["retry", "fail", "merge-columns"]
"""What a write does when another writer committed the same keys first (disjoint keys always rebase):
``retry`` re-reads and re-applies (last writer wins), ``fail`` raises, ``merge-columns`` re-applies
only when the two commits wrote disjoint columns (a column-level partial update), else raises."""

_MAX_ATTEMPTS = 16


def _to_table(data: pa.Table | pa.RecordBatch | Any) -> pa.Table:
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    return data  # fit_batch rejects anything that is not a Table with a clear error


class LakeTable:
    """A primary-key table of the lake. Get one from ``Catalog.create_table`` or ``load_table``."""

    def __init__(self, store: MetaStore, storage: Storage, record: TableRecord) -> None:
        self._store = store
        self._storage = storage
        self._record = record
        self._state: KeyState | None = None
        self._live_files: LiveFiles | None = None
        """The live file list an incomplete key state's lookups read (kept up per commit)."""
        self._state_schema_id = -1
        self._lock = threading.RLock()
        self.last_scan = ScanMetrics()
        """What the most recent ``read`` did (files read, read for keys only, skipped)."""
        self._files_at: dict[int, tuple[list[DataFile], pa.Schema]] = {}
        self._parsed_map: tuple[str | None, BucketMap] | None = None

    # -- identity -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """``namespace.table``."""
        return self._record.qualified_name

    @property
    def schema(self) -> pa.Schema:
        """The current schema (as of the last refresh)."""
        return self._record.schema

    @property
    def primary_key(self) -> tuple[str, ...]:
        """Primary-key columns."""
        return self._record.primary_key

    @property
    def buckets(self) -> int:
        """Number of hash buckets."""
        return self._record.buckets

    @property
    def version(self) -> int:
        """The current version (as of the last refresh)."""
        return self._record.current_version

    @property
    def properties(self) -> dict[str, str]:
        """The table's properties (as of the last refresh)."""
        return dict(self._record.properties)

    @property
    def oldest_version(self) -> int:
        """The oldest version that can still be read (cleaning moves it forward)."""
        return self._store.current_version(self._record.id)[1]

    @property
    def location(self) -> str:
        """Where the table's files live."""
        return self._storage.path(self._record.location)

    def refresh(self) -> LakeTable:
        """Re-read the table's catalog entry (version, schema)."""
        self._record = self._store.get_table(self._record.namespace, self._record.name)
        return self

    def __repr__(self) -> str:
        return f"LakeTable({self.name!r}, version={self.version}, primary_key={list(self.primary_key)})"

    # -- writes -------------------------------------------------------------------------------------

    def upsert(
        self,
        batch: pa.Table | pa.RecordBatch,
        *,
        token: str | None = None,
        sources: Mapping[str, Any] | None = None,
        on_conflict: ConflictPolicy | None = None,
    ) -> Commit:
        """Insert or replace whole rows by primary key, in one commit.

        Args:
            batch: Rows with every column of the table. If a key repeats, the last row wins.
            token: Idempotency token; committing a token the table already has returns that commit.
            sources: Source positions this write covers (JSON-able, e.g. ``{"mysql://h:3306": {...}}``
                or ``{"table:ods.orders": 17}``), stored atomically with the commit: see
                :meth:`source_position`.
            on_conflict: What to do if another writer committed the same keys meanwhile (see
                :data:`ConflictPolicy`); default: the table's ``conflict_policy`` property, else retry.

        Returns:
            The commit (``version``, ``summary``, ...). A write that changes nothing makes no commit
            (unless it carries a token) and returns the head commit.

        Raises:
            SchemaMismatchError: A column is missing, extra, or of a type that does not fit.
            NullKeyError: A key column holds a null.
            CommitConflictError: Another writer committed first and ``on_conflict="fail"``.
        """
        self._require_primary_key("upsert")
        rows = fit_batch(self.name, _to_table(batch), self.refresh().schema, primary_key=self.primary_key)
        return self._write(
            rows, np.zeros(rows.num_rows, dtype=bool), token=token, sources=sources, on_conflict=on_conflict
        )

    def delete(
        self,
        keys: pa.Table | pa.RecordBatch,
        *,
        token: str | None = None,
        sources: Mapping[str, Any] | None = None,
        on_conflict: ConflictPolicy | None = None,
    ) -> Commit:
        """Delete rows by key; ``keys`` holds the key columns (others are ignored). Absent keys are no-ops."""
        self._require_primary_key("delete")
        table = _to_table(keys)
        if isinstance(table, pa.Table):
            names = table.column_names
            twice = next((c for c in self.primary_key if names.count(c) > 1), None)
            if twice is not None:
                raise SchemaMismatchError(self.name, twice, "named more than once in the keys to delete")
            table = table.select([c for c in names if c in self.primary_key])
        key_rows = fit_batch(
            self.name, table, self.refresh().schema, columns=self.primary_key, primary_key=self.primary_key
        )
        arrays = [
            key_rows.column(f.name) if f.name in self.primary_key else pa.nulls(key_rows.num_rows, f.type)
            for f in self.schema
        ]
        rows = pa.Table.from_arrays(arrays, schema=self.schema)
        return self._write(
            rows, np.ones(rows.num_rows, dtype=bool), token=token, sources=sources, on_conflict=on_conflict
        )

    def apply(
        self,
        changes: pa.Table | pa.RecordBatch,
        *,
        token: str | None = None,
        sources: Mapping[str, Any] | None = None,
        on_conflict: ConflictPolicy | None = None,
        read_version: int | None = None,
    ) -> Commit:
        """Apply a changelog (table columns plus ``_kind``: 0 +I, 1 -U, 2 +U, 3 -D) in one commit.

        The last change of each key decides its final state: ``+I``/``+U`` write the row, ``-D`` and a
        trailing ``-U`` delete it. The commit's own changelog carries exact before-images computed
        from the table, whatever the input's ``-U`` rows said.

        ``read_version``: the version the changes were computed from (a SQL statement's snapshot). A
        commit since then that wrote any of the same keys makes this one fail with
        ``CommitConflictError`` whatever the policy (a retry would write the same stale rows over
        it); commits to other keys do not.
        """
        self._require_primary_key("apply")
        table = _to_table(changes)
        if not isinstance(table, pa.Table) or KIND_COLUMN not in table.column_names:
            raise InvalidChangelogError(
                f"table {self.name!r}: a changelog needs a {KIND_COLUMN!r} column (int8 0..3)"
            )
        kinds = table.column(KIND_COLUMN)
        if not pa.types.is_integer(kinds.type) or kinds.null_count:
            raise InvalidChangelogError(
                f"table {self.name!r}: {KIND_COLUMN!r} must be a non-null integer column"
            )
        if table.num_rows:
            bounds = pc.min_max(kinds)
            if bounds["min"].as_py() < 0 or bounds["max"].as_py() > 3:
                bad = pc.index(pc.or_(pc.less(kinds, 0), pc.greater(kinds, 3)), True).as_py()
                raise InvalidChangelogError(
                    f"table {self.name!r}: row {bad} has {KIND_COLUMN}={kinds[bad].as_py()}; "
                    "use 0 (+I), 1 (-U), 2 (+U) or 3 (-D)"
                )
        body, is_delete = changelog_to_write(table.set_column(
            table.schema.get_field_index(KIND_COLUMN), KIND_COLUMN, pc.cast(kinds, pa.int8())
        ))  # fmt: skip
        schema = self.refresh().schema
        rows = fit_batch(self.name, body, schema, primary_key=self.primary_key)
        return self._write(
            rows, is_delete, token=token, sources=sources, on_conflict=on_conflict, read_version=read_version
        )

    def update_columns(
        self,
        batch: pa.Table | pa.RecordBatch,
        *,
        token: str | None = None,
        sources: Mapping[str, Any] | None = None,
        on_conflict: ConflictPolicy | None = None,
    ) -> Commit:
        """Set some columns of rows by key (a column-level partial update), in one commit.

        ``batch`` holds the key columns plus the columns to set; other columns keep their values
        (new keys get nulls there). Writers of disjoint column groups of the same rows both succeed
        under the ``merge-columns`` policy, and a read shows both.
        """
        self._require_primary_key("update_columns")
        table = _to_table(batch)
        schema = self.refresh().schema
        names = list(table.column_names) if isinstance(table, pa.Table) else []
        columns = [c for c in names if c not in self.primary_key]
        if not columns:
            raise InvalidArgumentError(
                f"table {self.name!r}: update_columns needs at least one non-key column"
            )
        rows = fit_batch(
            self.name, table, schema, columns=[*self.primary_key, *columns], primary_key=self.primary_key
        )
        return self._write(
            rows, np.zeros(rows.num_rows, dtype=bool), token=token, sources=sources,
            on_conflict=on_conflict, columns=columns,
        )  # fmt: skip

    @property
    def is_append_only(self) -> bool:
        """Whether this is an append table (no primary key, no index, no dedupe)."""
        return not self._record.primary_key

    @property
    def partition_by(self) -> tuple[str, ...]:
        """Columns whose values group an append table's rows into files."""
        value = self._record.properties.get("partition_by", "")
        return tuple(c for c in value.split(",") if c)

    def _require_primary_key(self, operation: str) -> None:
        if self.is_append_only:
            raise InvalidArgumentError(
                f"table {self.name!r} is an append table (no primary key): {operation}() needs a key; "
                "use append(), or create the table with primary_key=[...]"
            )

    def append(
        self,
        batch: pa.Table | pa.RecordBatch,
        *,
        token: str | None = None,
        sources: Mapping[str, Any] | None = None,
    ) -> Commit:
        """Add rows to an append table in one commit: no dedupe, no index, no reads of the table.

        Rows are grouped into one file per value of ``partition_by`` (if set). An empty batch makes no
        commit unless it carries a ``token`` or ``sources``.
        """
        if not self.is_append_only:
            raise InvalidArgumentError(
                f"table {self.name!r} has primary key {list(self.primary_key)}: use upsert() or apply()"
            )
        with self._lock:
            earlier = self._earlier_commit(token)
            if earlier is not None:
                return earlier
            record = self.refresh()._record
            rows = fit_batch(self.name, _to_table(batch), record.schema)
            if rows.num_rows == 0 and token is None and not sources:
                return self._head_commit(record)
            changelog = rows.append_column(KIND_COLUMN, pa.array(np.zeros(rows.num_rows, np.int8)))
            changelog = changelog.append_column(
                POS_COLUMN, pa.array(np.arange(rows.num_rows, dtype=np.int32))
            )
            parts = partition_rows(changelog, self.partition_by) if rows.num_rows else {}
            commit, _ = commit_changelog(
                self._store, self._storage, record, parts, {"+I": rows.num_rows, "-U": 0, "+U": 0, "-D": 0},
                token, sources, write_files=self._write_files,
            )  # fmt: skip
            self.refresh()
            return commit

    def source_position(self, source: str) -> Any | None:
        """The position of ``source`` recorded by the newest commit that carried it (or None)."""
        found = self._store.source_position(self._record.id, source)
        return None if found is None else found[0]

    def evolve_schema(self, schema: pa.Schema) -> Commit:
        """Change the schema: add nullable columns, widen int32→int64 or float32→float64.

        Raises:
            SchemaMismatchError: For any other change, naming the column.
        """
        with self._lock:
            record = self.refresh()._record
            evolved = evolve_schema(self.name, record.schema, schema, record.primary_key)
            if evolved.equals(record.schema):
                return self.history()[-1]
            instant = new_instant()
            self._store.begin_commit(record.id, instant, "schema")
            commit = self._store.complete_commit(
                record,
                CommitRequest(
                    instant=instant, read_version=record.current_version, operation="schema",
                    new_schema=evolved, conflicts_with_writes=False,
                    summary={"columns": [f.name for f in evolved if f not in record.schema]},
                ),
            )  # fmt: skip
            self._state = None
            self.refresh()
            return commit

    def _earlier_commit(self, token: str | None) -> Commit | None:
        """The commit that already carried ``token`` (a replayed write is then a no-op)."""
        return None if token is None else self._store.find_token(self._record.id, token)

    def _policy(self, on_conflict: ConflictPolicy | None) -> ConflictPolicy:
        policy = on_conflict or self._record.properties.get("conflict_policy", "retry")
        if policy not in ("retry", "fail", "merge-columns"):
            raise InvalidArgumentError(
                f"table {self.name!r}: unknown conflict policy {policy!r}; use retry, fail or merge-columns"
            )
        return policy  # type: ignore[return-value]

    def _write(
        self,
        rows: pa.Table,
        is_delete: np.ndarray,
        *,
        token: str | None,
        sources: Mapping[str, Any] | None,
        on_conflict: ConflictPolicy | None,
        columns: Sequence[str] = (),
        read_version: int | None = None,
    ) -> Commit:
        """Plan and commit a write; on conflict, apply the policy (rebase over disjoint keys is free).

        With ``read_version`` the catalog checks the keys against every commit since that version
        (see :meth:`apply`), and a conflict is never retried.
        """
        policy = "fail" if read_version is not None else self._policy(on_conflict)
        started = time.perf_counter()
        with self._lock:
            earlier = self._earlier_commit(token)
            if earlier is not None:
                return earlier
            for attempt in range(_MAX_ATTEMPTS):
                record = self._record if attempt == 0 else self.refresh()._record
                try:
                    state = self._current_state(record)
                except VersionCleanedError:  # a clean ran under the catch-up: load the head again
                    if attempt == _MAX_ATTEMPTS - 1:
                        raise
                    self._state = None
                    continue
                if not state.complete:
                    learn_missing(
                        self._store, self._storage, record, self._map(), state, rows, self._files_of(record)
                    )
                full = merge_partial(state, rows, columns, self.name) if columns else rows
                plan = plan_write(state, full, is_delete)
                if plan.empty and token is None and not sources:
                    return self._head_commit(record)
                checked = record  # the version the catalog checks the keys against
                if read_version is not None and read_version < record.current_version:
                    checked = dataclasses.replace(record, current_version=read_version)
                try:
                    commit, landed = self._commit_plan(checked, plan, token, sources, columns)
                except CommitConflictError as conflict:
                    CONFLICTS.labels(self.name, policy).inc()
                    redo = (
                        conflict.reroute
                        or policy == "retry"
                        or (policy == "merge-columns" and conflict.mergeable)
                    )
                    if not redo or attempt == _MAX_ATTEMPTS - 1:
                        raise with_keys(conflict, plan, self.primary_key) from None
                    time.sleep(min(0.5, 0.01 * 2**attempt) * random.random())  # noqa: S311 - jitter
                    continue
                if landed:
                    record_commit(self.name, "write", dict(commit.summary), started)
                    self._apply_backpressure(commit)
                    rebased = commit.version != record.current_version + 1
                    # after a rebase the state is left at the read version: the next write catches up
                    # by replaying the commits in between (its own rows replay as no-ops)
                    version = record.current_version if rebased else commit.version
                    state.apply(plan.upserted, plan.upserted_keys, plan.deleted_keys, version)
                self._record = self._store.get_table(record.namespace, record.name)
                return commit
            raise AssertionError("unreachable")  # pragma: no cover

    def _files_of(self, record: TableRecord) -> LiveFiles:
        """The table's live file list, kept up by this writer (a new one if the table is a new one)."""
        if self._live_files is None or self._live_files.table_id != record.id:
            self._live_files = LiveFiles(self._store, record.id, record.qualified_name)
        return self._live_files

    def _apply_backpressure(self, commit: Commit) -> None:
        """Compact inline when the table's log-file backlog passes ``log_backlog_compact`` (if set).

        Reads merge every log file, so a backlog that compaction does not keep up with slows every
        reader; with this property, writers pay for it instead (like Paimon's write stall).
        """
        limit = self._record.properties.get("log_backlog_compact")
        if limit is not None and int(commit.summary.get("log_backlog", 0)) > int(limit):
            self._compact(target_file_rows=None, rebalance_only=False)

    def _commit_plan(
        self,
        record: TableRecord,
        plan: PlannedWrite,
        token: str | None,
        sources: Mapping[str, Any] | None,
        columns: Sequence[str] = (),
    ) -> tuple[Commit, bool]:
        """Write the plan's log files and commit them; False if an earlier commit had the token."""
        return commit_plan(
            self._store, self._storage, record, plan, token, sources, columns, write_files=self._write_files
        )

    def _write_files(
        self,
        record: TableRecord,
        instant: str,
        content: FileContent,
        parts: Sequence[tuple[int, pa.Table]],
    ) -> list[DataFile]:
        return write_files(self._storage, record, instant, content, parts)

    def _current_state(self, record: TableRecord) -> KeyState:
        """The writer's key state at ``record.current_version``, loaded or caught up as needed."""
        cached = self._state if self._state_schema_id == record.schema_id else None
        state = current_state(self._store, self._storage, record, cached, state_budget_rows(record.schema))
        if state is not cached:
            self._state = state
            self._state_schema_id = record.schema_id
        return state

    def _head_commit(self, record: TableRecord) -> Commit:
        """What a write that changes nothing returns: the head's version, no rows, operation ``none``.

        Not the head commit itself, whose summary describes an earlier write.
        """
        head = self._store.commits(record.id, record.current_version, record.current_version)[0]
        summary = {
            "rows": {"+I": 0, "-U": 0, "+U": 0, "-D": 0},
            "note": f"nothing changed: {self.name} stays at version {head.version}",
        }
        return dataclasses.replace(head, operation="none", summary=summary, token=None)

    # -- reads --------------------------------------------------------------------------------------

    def resolve_version(
        self, version: int | None = None, as_of: dt.datetime | int | str | None = None
    ) -> int:
        """The version to read: ``version``, or the newest at time ``as_of``, or the head.

        ``as_of`` is a datetime or ISO 8601 text (naive means UTC), or epoch milliseconds.
        """
        return versions.resolve_version(self._store, self._record.id, self.name, version, as_of)

    def _schema_at(self, version: int) -> pa.Schema:
        return versions.schema_at(self._store, self._record.id, version, self.schema)

    def read(
        self,
        version: int | None = None,
        as_of: dt.datetime | int | str | None = None,
        columns: Sequence[str] | None = None,
        filter: Filter | None = None,
    ) -> pa.Table:
        """Read a snapshot: the head, a ``version``, or the newest version at time ``as_of``.

        Args:
            version: Version to read (time travel).
            as_of: Read the version that was current at this time (datetime, ISO 8601 text, epoch ms).
            columns: Columns to return (all by default).
            filter: A pyarrow Expression, or DNF filters like ``[("amount", ">", 10)]`` which also
                skip files by their min/max stats (see ``last_scan``).
        """
        v = self.resolve_version(version, as_of)
        schema = self._schema_at(v)
        if columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise InvalidArgumentError(f"table {self.name!r} at version {v} has no column(s) {missing}")
        filter = fit_filter(self.name, filter, schema)
        metrics = ScanMetrics()
        with self._unless_cleaned(v):
            files = self._store.live_files(self._record.id, v)
            result = read_snapshot(
                self._storage,
                files,
                schema,
                self.primary_key,
                columns=columns,
                filter=filter,
                metrics=metrics,
                bucket_map=self._map(),
            )
        self.last_scan = metrics
        return result

    def get(
        self,
        keys: pa.Table | Mapping[str, Sequence[Any]] | Sequence[Any],
        version: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Point lookup: the live rows of ``keys`` at the head (or ``version``), in the order asked.

        ``keys``: values of a one-column key, tuples of a composite key, a mapping of key column to
        values, or a table of the key columns. Keys that are not live are left out. Only the row
        groups that can hold the keys are read (see :mod:`flowlake.table.lookup`).

        >>> import flowlake as fl
        >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://get-doc")
        >>> t = cat.create_table("ods.users", pa.schema([("id", pa.int64()), ("name", pa.string())]),
        ...                      primary_key=["id"])
        >>> _ = t.upsert(pa.table({"id": [1, 2, 3], "name": ["ann", "bob", "cy"]}))
        >>> t.get([3, 9, 1]).to_pylist()
        [{'id': 3, 'name': 'cy'}, {'id': 1, 'name': 'ann'}]
        """
        self._require_primary_key("get")
        v = self.resolve_version(version)
        files, schema = self._snapshot(v)
        if columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise InvalidArgumentError(f"table {self.name!r} at version {v} has no column(s) {missing}")
        wanted = key_table(self.name, self.primary_key, schema, keys)
        return lookup(
            self._storage, files, schema, self.primary_key, wanted, columns=columns, bucket_map=self._map()
        )

    def _snapshot(self, version: int) -> tuple[list[DataFile], pa.Schema]:
        """The files and schema of ``version`` (a snapshot never changes: cached per version)."""
        cached = self._files_at.get(version)
        if cached is None:
            with self._unless_cleaned(version):
                cached = (self._store.live_files(self._record.id, version), self._schema_at(version))
            self._files_at[version] = cached
            while len(self._files_at) > 8:
                self._files_at.pop(next(iter(self._files_at)))
        return cached

    def _map(self) -> BucketMap:
        """The bucket map of the last refresh, parsed once."""
        text = self._record.bucket_map
        if self._parsed_map is None or self._parsed_map[0] != text:
            self._parsed_map = (text, BucketMap.from_json(text, self._record.buckets))
        return self._parsed_map[1]

    def _unless_cleaned(self, version: int) -> contextlib.AbstractContextManager[None]:
        """Raise ``VersionCleanedError`` if a clean moved past ``version`` while the block read it."""
        return versions.unless_cleaned(self._store, self._record.id, self.name, version)

    def dataset(
        self,
        version: int | None = None,
        *,
        columns: Sequence[str] | None = None,
        filter: Filter | None = None,
    ) -> ds.Dataset:
        """A snapshot as a ``pyarrow.dataset.Dataset`` (DuckDB and Polars can query it).

        Nothing is read until the dataset is scanned: compacted buckets are read from their files,
        and a bucket with log files is merged when the scan reaches it (see
        :func:`~flowlake.table.scan.snapshot_dataset`), so a scan holds a few buckets, not the
        table, and a table larger than memory can be queried. A scanner's filter (pyarrow's, or
        DuckDB's pushed into the scan) skips base files by their catalog min/max and row groups by
        their footer statistics (see :mod:`flowlake.table.clustering`). ``columns`` (plus those a
        DNF ``filter`` reads) restrict the dataset's columns; ``filter`` (as in :meth:`read`) is
        applied to its rows and also prunes the buckets to merge. Keep the version pinned
        (``t.pin()``) while scanning if cleaning may run.
        """
        v = self.resolve_version(version)
        schema = self._schema_at(v)
        if columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise InvalidArgumentError(f"table {self.name!r} at version {v} has no column(s) {missing}")
        filter = fit_filter(self.name, filter, schema)
        with self._unless_cleaned(v):
            files = self._store.live_files(self._record.id, v)
            return snapshot_dataset(
                self._storage, files, schema, self.primary_key, columns=columns, filter=filter,
                bucket_map=self._map(),
            )  # fmt: skip

    def changes(
        self, start: int, end: int | None = None, *, columns: Sequence[str] | None = None
    ) -> pa.Table:
        """The exact changelog of commits ``start+1 .. end`` (head by default), in commit order.

        Rows carry the table's columns (as of ``end``) plus ``_kind`` (0 +I, 1 -U, 2 +U, 3 -D) and
        ``_seq`` (increasing). Updates appear as a ``-U`` (old row) then ``+U`` (new row).
        """
        head, oldest = self._store.current_version(self._record.id)
        end = head if end is None else end
        if not (0 <= start <= end <= head):
            raise VersionNotFoundError(
                f"table {self.name!r}: changes({start}, {end}) needs 0 <= start <= end <= {head} (the head)"
            )
        if start < oldest:
            raise VersionCleanedError(self.name, start, oldest)
        with self._unless_cleaned(start):
            logs = self._store.log_files_between(self._record.id, start, end)
            result = read_changes(self._storage, logs, self._schema_at(end), columns=columns)
        return result

    def change_rows(self, start: int, end: int) -> dict[int, int]:
        """How many changelog rows (``-U`` included) each version in ``(start, end]`` added, from the
        catalog alone (no data read): what a reader of ``changes(start, end)`` is about to hold.

        >>> import flowlake as fl
        >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://change-rows-doc")
        >>> t = cat.create_table("ods.t", pa.schema([("id", pa.int64())]), primary_key=["id"])
        >>> _ = t.upsert(pa.table({"id": [1, 2, 3]})); _ = t.delete(pa.table({"id": [2]}))
        >>> t.change_rows(0, t.version)
        {1: 3, 2: 1}
        """
        counts: dict[int, int] = {}
        for f in self._store.log_files_between(self._record.id, start, end):
            counts[f.added_version] = counts.get(f.added_version, 0) + f.row_count
        return counts

    def history(self) -> list[Commit]:
        """Every commit on the timeline, oldest first, with its summary."""
        return self._store.commits(self._record.id)

    def pin(self, version: int | None = None, *, ttl_seconds: float | None = None) -> Pin:
        """Keep ``version`` (the head by default) readable until the returned pin is released.

        The pin is a consumer registered in the catalog (``pin:<uuid4 hex>``), so ``clean()`` in any
        process keeps every file the version needs, and every later version, until ``release()``
        (or the end of a ``with`` block). Take the pin before reading: a pinned version reads the
        same rows every time, whatever compaction and cleaning do meanwhile.

        Args:
            version: The version to pin; None pins the current head.
            ttl_seconds: If set, ``clean()`` drops the pin once this many seconds have passed (so a
                crashed holder does not keep history forever); without it the pin stays until released
                or dropped with ``Catalog.drop_consumer``.

        Returns:
            The :class:`~flowlake.table.pins.Pin`, with ``version``, ``read()``, ``changes()``,
            ``dataset()`` and ``release()``.

        Raises:
            VersionCleanedError: ``version`` was already cleaned (a clean that moves the oldest
                readable version past it at the same time also makes the pin fail, never half-succeed).
            VersionNotFoundError: The table has no such version.
        """
        name, expires_at = pin_name(ttl_seconds)
        for attempt in range(8):
            v = self.resolve_version(version)
            try:  # the catalog checks v against the oldest readable version under the cleaning lock
                self._store.register_consumer(self._record.id, name, v)
            except VersionCleanedError:
                if version is not None or attempt == 7:
                    raise
                continue  # the head we read was cleaned meanwhile (retain_last=1): pin the new head
            return Pin(self, v, name, expires_at)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- maintenance --------------------------------------------------------------------------------

    @property
    def bucket_map(self) -> BucketMap:
        """The scalable hash index's current map (as of the last refresh)."""
        return BucketMap.from_json(self._record.bucket_map, self._record.buckets)

    def compact(self, *, target_file_rows: int | None = None) -> Commit | None:
        """Fold log files into new base files, splitting buckets that outgrew ``bucket_target_rows`` and
        merging small siblings; returns the commit, or None if there was nothing to do.

        Writers keep committing meanwhile: a plain compaction only replaces the files it read; one that
        splits or merges buckets catches up with the writes made to them meanwhile (up to the
        ``split_catchup_rounds`` property, default 3, then behind a fence of at most
        ``bucket_fence_seconds``, default 3), see :mod:`flowlake.table.rebalance`.
        """
        return self._compact(target_file_rows=target_file_rows, rebalance_only=False)

    def rebalance(self) -> Commit | None:
        """Only split and merge buckets (no folding of other buckets' logs); None if the map fits."""
        return self._compact(target_file_rows=None, rebalance_only=True)

    def _compact(self, *, target_file_rows: int | None, rebalance_only: bool) -> Commit | None:
        for attempt in range(3):
            try:
                return self._compact_once(target_file_rows=target_file_rows, rebalance_only=rebalance_only)
            except (CommitConflictError, VersionCleanedError):  # another compaction (and a clean) won
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _compact_once(self, *, target_file_rows: int | None, rebalance_only: bool) -> Commit | None:
        record = self.refresh()._record
        commit = compaction.compact_once(
            self._store, self._storage, record, target_file_rows=target_file_rows,
            rebalance_only=rebalance_only, write_files=self._write_files,
        )  # fmt: skip
        if commit is not None:
            self.refresh()
        return commit

    def clean(
        self,
        *,
        retain_last: int = 10,
        orphan_grace_seconds: float = 3600.0,
        retain_for_seconds: float = 0.0,
        consumer_max_lag_seconds: float = 0.0,
    ) -> maintenance.CleanResult:
        """Delete files that no version among the last ``retain_last`` needs, and old orphan files.

        Versions before the new oldest readable version can no longer be read (``VersionCleanedError``);
        ``changes(start)`` needs ``start`` at or after it. Registered consumers and pins (:meth:`pin`)
        hold it back: every version from the oldest of them on stays fully readable (snapshots and
        changelogs). Pins whose TTL has passed are dropped first.

        ``orphan_grace_seconds`` must exceed the longest time a writer spends between starting a
        commit and completing it: an inflight commit older than that is aborted (its writer then gets
        a ``CatalogError`` and must retry) and its files deleted. A committed version never loses a
        file either way.

        ``retain_for_seconds`` also keeps every version committed that recently readable (and the
        version current at the start of that window), whatever ``retain_last`` says.

        ``consumer_max_lag_seconds`` (0: no bound; the table services use the table's
        ``maintain.clean.consumer_max_lag``, 7 days by default) drops every consumer and pin at a
        version older than the one current that long ago, so none holds history forever.
        """
        if retain_last < 1:
            raise InvalidArgumentError("clean(retain_last=N) needs N >= 1: the head version is always kept")
        record = self.refresh()._record
        result = cleaning.clean(
            self._store,
            self._storage,
            record,
            retain_last=retain_last,
            orphan_grace_seconds=orphan_grace_seconds,
            retain_for_seconds=retain_for_seconds,
            consumer_max_lag_seconds=consumer_max_lag_seconds,
        )
        self.refresh()
        return result

    @property
    def policy(self) -> MaintenancePolicy:
        """The table's maintenance policy (as of the last refresh), from its properties."""
        return MaintenancePolicy.from_properties(self._record.properties)

    def set_properties(self, updates: Mapping[str, str | int | float | bool | None] | None = None, /,
                       **properties: str | int | float | bool | None) -> dict[str, str]:  # fmt: skip
        """Change table properties (None removes one, so its default applies); return them all.

        Only the properties in :data:`flowlake.table.policy.SPECS` can be set: the ``maintain.*``
        policy of the table services, the stall limit ``log_backlog_compact``, compaction's
        ``target_file_rows`` / ``bucket_target_rows`` / ``split_catchup_rounds`` /
        ``bucket_fence_seconds``, ``conflict_policy`` and the clustering of base files, ``sort_by`` /
        ``cluster_by`` (see :mod:`flowlake.table.clustering`). Needs ``admin`` on the table.

        >>> import flowlake as fl
        >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://props-doc")
        >>> t = cat.create_table("ods.t", pa.schema([("id", pa.int64())]), primary_key=["id"])
        >>> t.set_properties({"maintain.clean.retain_last": 3})["maintain.clean.retain_last"]
        '3'
        >>> t.policy.clean_retain_last
        3

        Raises:
            InvalidArgumentError: An unknown key, or a value it does not accept (both named).
        """
        merged = {**(updates or {}), **properties}
        text = {
            k: None if v is None else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in merged.items()
        }
        checked = validate_updates(text)
        if {"sort_by", "cluster_by"} & set(checked):
            after = {**self.refresh().properties, **checked}
            ClusterSpec.from_properties({k: v for k, v in after.items() if v is not None}).check(
                self.name, self.schema
            )
        if checked:
            self._record = self._store.set_table_properties(self._record.id, checked)
        return self.properties
