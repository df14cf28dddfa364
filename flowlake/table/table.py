"""The primary-key lake table: merge-on-read upserts, snapshots, time travel, changelogs, maintenance."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from flowlake.catalog.base import Commit, CommitRequest, DataFile, MetaStore, TableRecord
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import (
    CommitConflictError,
    InvalidArgumentError,
    InvalidChangelogError,
    SchemaMismatchError,
    StorageError,
    VersionCleanedError,
    VersionNotFoundError,
)
from flowlake.io.fs import Storage
from flowlake.io.parquet import parallel, write_parquet
from flowlake.runtime.observability import CONFLICTS, record_commit
from flowlake.table import maintenance
from flowlake.table.bucketing import key_hash, partition_rows, split_by_bucket
from flowlake.table.bucketmap import BucketMap
from flowlake.table.keystate import KeyState, key_list
from flowlake.table.pins import Pin, pin_expired, pin_name
from flowlake.table.scan import ScanMetrics, read_changes, read_snapshot
from flowlake.table.schema import evolve_schema, fit_batch
from flowlake.table.stats import Filter, compute_stats
from flowlake.table.writer import POS_COLUMN, PlannedWrite, changelog_to_write, merge_partial, plan_write

ConflictPolicy = Literal["retry", "fail", "merge-columns"]
"""What a write does when another writer committed the same keys first (disjoint keys always rebase):
``retry`` re-reads and re-applies (last writer wins), ``fail`` raises, ``merge-columns`` re-applies
only when the two commits wrote disjoint columns (a column-level partial update), else raises."""

_MAX_ATTEMPTS = 16


def new_instant() -> str:
    """A sortable, unique commit instant: microseconds since the epoch and a random suffix."""
    return f"{time.time_ns() // 1000:017d}-{uuid.uuid4().hex[:8]}"


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
        self._state_schema_id = -1
        self._lock = threading.RLock()
        self.last_scan = ScanMetrics()
        """What the most recent ``read`` did (files read, read for keys only, skipped)."""

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
    ) -> Commit:
        """Apply a changelog (table columns plus ``_kind``: 0 +I, 1 -U, 2 +U, 3 -D) in one commit.

        The last change of each key decides its final state: ``+I``/``+U`` write the row, ``-D`` and a
        trailing ``-U`` delete it. The commit's own changelog carries exact before-images computed
        from the table, whatever the input's ``-U`` rows said.
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
        return self._write(rows, is_delete, token=token, sources=sources, on_conflict=on_conflict)

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
            commit, _ = self._commit_changelog(
                record, parts, {"+I": rows.num_rows, "-U": 0, "+U": 0, "-D": 0}, token, sources
            )
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
    ) -> Commit:
        """Plan and commit a write; on conflict, apply the policy (rebase over disjoint keys is free)."""
        policy = self._policy(on_conflict)
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
                full = merge_partial(state, rows, columns, self.name) if columns else rows
                plan = plan_write(state, full, is_delete)
                if plan.empty and token is None and not sources:
                    return self._head_commit(record)
                try:
                    commit, landed = self._commit_plan(record, plan, token, sources, columns)
                except CommitConflictError as conflict:
                    CONFLICTS.labels(self.name, policy).inc()
                    redo = (
                        conflict.reroute
                        or policy == "retry"
                        or (policy == "merge-columns" and conflict.mergeable)
                    )
                    if not redo or attempt == _MAX_ATTEMPTS - 1:
                        raise self._with_keys(conflict, plan) from None
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

    def _apply_backpressure(self, commit: Commit) -> None:
        """Compact inline when the table's log-file backlog passes ``log_backlog_compact`` (if set).

        Reads merge every log file, so a backlog that compaction does not keep up with slows every
        reader; with this property, writers pay for it instead (like Paimon's write stall).
        """
        limit = self._record.properties.get("log_backlog_compact")
        if limit is not None and int(commit.summary.get("log_backlog", 0)) > int(limit):
            self._compact(target_file_rows=None, rebalance_only=False)

    def _with_keys(self, conflict: CommitConflictError, plan: PlannedWrite) -> CommitConflictError:
        """The conflict with the catalog's key hashes turned back into this batch's keys."""
        if not conflict.conflicting_hashes:
            return conflict
        hashes = key_hash(plan.changelog, self.primary_key)
        wanted = set(conflict.conflicting_hashes)
        keys = key_list(plan.changelog, self.primary_key)
        sample = list(dict.fromkeys(k for k, h in zip(keys, hashes.tolist(), strict=True) if h in wanted))
        return CommitConflictError(
            conflict.table, conflict.expected, conflict.found, reason=conflict.reason, sample_keys=sample,
            mergeable=conflict.mergeable, conflicting_hashes=conflict.conflicting_hashes,
            reroute=conflict.reroute,
        )  # fmt: skip

    def _commit_plan(
        self,
        record: TableRecord,
        plan: PlannedWrite,
        token: str | None,
        sources: Mapping[str, Any] | None,
        columns: Sequence[str] = (),
    ) -> tuple[Commit, bool]:
        """Write the plan's log files and commit them; False if an earlier commit had the token."""
        hashes = (
            key_hash(plan.changelog, record.primary_key)
            if plan.changelog.num_rows
            else np.empty(0, np.uint64)
        )
        bmap = BucketMap.from_json(record.bucket_map, record.buckets)
        return self._commit_changelog(
            record, split_by_bucket(plan.changelog, bmap.route(hashes)), plan.counts, token, sources,
            key_hashes=np.unique(hashes).tobytes(), columns=tuple(columns), map_version=bmap.version,
        )  # fmt: skip

    def _commit_changelog(
        self,
        record: TableRecord,
        parts: Mapping[int, pa.Table],
        counts: Mapping[str, int],
        token: str | None,
        sources: Mapping[str, Any] | None,
        *,
        key_hashes: bytes | None = None,
        columns: tuple[str, ...] = (),
        map_version: int | None = None,
    ) -> tuple[Commit, bool]:
        instant = new_instant()
        self._store.begin_commit(record.id, instant, "write")
        written: list[DataFile] = []
        try:
            written = self._write_files(record, instant, "log", sorted(parts.items()))
            request = CommitRequest(
                instant=instant,
                read_version=record.current_version,
                operation="write",
                added=written,
                summary={
                    "rows": dict(counts),
                    "files_added": len(written),
                    "buckets": sorted(parts),
                    "columns": list(columns) or record.schema.names,
                    "bytes_added": sum(f.size for f in written),
                    **({"sources": dict(sources)} if sources else {}),
                },
                token=token,
                sources=dict(sources or {}),
                key_hashes=key_hashes,
                columns=columns,
                map_version=map_version,
                conflicts_with_writes=bool(record.primary_key),
            )
            commit = self._store.complete_commit(record, request)
        except BaseException:
            self._discard(record, instant, written)
            raise
        if commit.instant != instant:  # the token was committed by an earlier attempt
            self._discard(record, instant, written)
            return commit, False
        return commit, True

    def _discard(self, record: TableRecord, instant: str, files: Sequence[DataFile]) -> None:
        for f in files:
            with contextlib.suppress(OSError):  # else an orphan: cleaning removes it later
                self._storage.fs.delete_file(self._storage.path(f.path))
        with contextlib.suppress(Exception):
            self._store.abort_commit(record.id, instant)

    def _write_files(
        self,
        record: TableRecord,
        instant: str,
        content: Literal["base", "log"],
        parts: Sequence[tuple[int, pa.Table]],
    ) -> list[DataFile]:
        def write_one(item: tuple[int, tuple[int, pa.Table]]) -> DataFile:
            n, (bucket, data) = item
            rel = f"{record.location}/data/bucket-{bucket:05d}/{instant}-{content}-{n}.parquet"
            written = write_parquet(
                self._storage, self._storage.path(rel), data, dictionary=content == "base"
            )
            return DataFile(
                path=rel, bucket=bucket, content=content, row_count=data.num_rows, size=written.size,
                stats=compute_stats(data), checksum=written.checksum,
            )  # fmt: skip

        return parallel(write_one, list(enumerate(parts)))

    def _current_state(self, record: TableRecord) -> KeyState:
        """The writer's key state at ``record.current_version``, loaded or caught up as needed."""
        state = self._state
        if (
            state is not None
            and self._state_schema_id == record.schema_id
            and state.version <= record.current_version
        ):
            if state.version == record.current_version:
                return state
            if state.version >= record.oldest_version:
                with self._unless_cleaned(state.version):
                    logs = self._store.log_files_between(record.id, state.version, record.current_version)
                    changes = read_changes(self._storage, logs, record.schema)
                if changes.num_rows:
                    kinds = changes.column(KIND_COLUMN).to_numpy(zero_copy_only=False)
                    rows, is_delete = changelog_to_write(changes.drop_columns(["_seq"]))
                    keep = kinds != RowKind.UPDATE_BEFORE
                    rows = rows.filter(pa.array(keep))
                    is_delete = is_delete[keep]
                    plan = plan_write(state, rows, is_delete)
                    state.apply(plan.upserted, plan.upserted_keys, plan.deleted_keys, record.current_version)
                state.version = record.current_version
                return state
        with self._unless_cleaned(record.current_version):
            files = self._store.live_files(record.id, record.current_version)
            rows = read_snapshot(self._storage, files, record.schema, record.primary_key)
        self._state = KeyState(rows, record.primary_key, record.current_version)
        self._state_schema_id = record.schema_id
        return self._state

    def _head_commit(self, record: TableRecord) -> Commit:
        return self._store.commits(record.id, record.current_version, record.current_version)[0]

    # -- reads --------------------------------------------------------------------------------------

    def resolve_version(self, version: int | None = None, as_of: dt.datetime | int | None = None) -> int:
        """The version to read: ``version``, or the newest at time ``as_of``, or the head.

        ``as_of`` is a datetime (naive means UTC) or epoch milliseconds.
        """
        head, oldest = self._store.current_version(self._record.id)
        if version is not None and as_of is not None:
            raise InvalidArgumentError("pass either version= or as_of=, not both")
        if as_of is not None:
            if isinstance(as_of, dt.datetime):
                moment = as_of if as_of.tzinfo else as_of.replace(tzinfo=dt.UTC)
                as_of = int(moment.timestamp() * 1000)
            found = self._store.version_at(self._record.id, int(as_of))
            if found is None:
                raise VersionNotFoundError(
                    f"table {self.name!r} has no version committed at or before {as_of} ms; "
                    "its history starts later (see t.history())"
                )
            version = found
        if version is None:
            return head
        if not isinstance(version, int) or version < 0 or version > head:
            raise VersionNotFoundError(
                f"table {self.name!r} has no version {version!r}; versions run from {oldest} to {head}"
            )
        if version < oldest:
            raise VersionCleanedError(self.name, version, oldest)
        return version

    def _schema_at(self, version: int) -> pa.Schema:
        commit = self._store.commits(self._record.id, version, version)
        return self._store.schema(self._record.id, commit[0].schema_id) if commit else self.schema

    def read(
        self,
        version: int | None = None,
        as_of: dt.datetime | int | None = None,
        columns: Sequence[str] | None = None,
        filter: Filter | None = None,
    ) -> pa.Table:
        """Read a snapshot: the head, a ``version``, or the newest version at time ``as_of``.

        Args:
            version: Version to read (time travel).
            as_of: Read the version that was current at this time (datetime or epoch ms).
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
            )
        self.last_scan = metrics
        return result

    @contextlib.contextmanager
    def _unless_cleaned(self, version: int) -> Iterator[None]:
        """Raise ``VersionCleanedError`` if a clean moved past ``version`` while the block read it.

        A clean forgets files in the catalog before deleting them, so a read that raced with it may
        have found a file missing (``StorageError``) or been given an incomplete file list; both show
        as the oldest readable version having moved past ``version`` by the end of the read.
        """
        try:
            yield
        except StorageError as exc:
            _, oldest = self._store.current_version(self._record.id)
            if version < oldest:
                raise VersionCleanedError(self.name, version, oldest) from exc
            raise
        _, oldest = self._store.current_version(self._record.id)
        if version < oldest:
            raise VersionCleanedError(self.name, version, oldest)

    def dataset(self, version: int | None = None) -> ds.Dataset:
        """A snapshot as a ``pyarrow.dataset.Dataset`` (DuckDB and Polars can query it).

        A fully compacted snapshot is a lazy dataset over its base files; otherwise the merged rows
        are materialized in memory.
        """
        v = self.resolve_version(version)
        schema = self._schema_at(v)
        with self._unless_cleaned(v):
            files = self._store.live_files(self._record.id, v)
            if all(f.content == "base" for f in files):
                paths = [self._storage.path(f.path) for f in files]
                return ds.dataset(paths, schema=schema, format="parquet", filesystem=self._storage.fs)
            return ds.dataset(read_snapshot(self._storage, files, schema, self.primary_key))

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
        splits or merges buckets fails (and is retried) if a writer wrote to those buckets meanwhile.
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
        props = record.properties
        rows_per_file = target_file_rows or int(
            props.get("target_file_rows", maintenance.DEFAULT_TARGET_FILE_ROWS)
        )
        bucket_rows = int(props.get("bucket_target_rows", maintenance.DEFAULT_TARGET_BUCKET_ROWS))
        files = self._store.live_files(record.id, record.current_version)
        plan = maintenance.plan_compaction(
            files, append_only=self.is_append_only, target_file_rows=rows_per_file
        )
        bmap = self.bucket_map
        if self.is_append_only:
            groups = [maintenance.RewriteGroup((b,), tuple(fs)) for b, fs in sorted(plan.by_bucket.items())]
        else:
            groups = maintenance.plan_rebalance(files, bmap, plan.by_bucket, target_bucket_rows=bucket_rows)
        outputs: list[tuple[int, pa.Table]] = []
        guarded: list[int] = []
        for group in groups:
            with self._unless_cleaned(record.current_version):
                rows = read_snapshot(self._storage, group.files, record.schema, record.primary_key)
            pieces: dict[int, pa.Table]
            if len(group.buckets) == 2:
                bmap, parent = bmap.merge(group.buckets[0])
                pieces = {parent.id: rows}
            elif not self.is_append_only and rows.num_rows > bucket_rows:
                bmap, pieces = maintenance.split_rows(
                    rows, bmap, group.buckets[0], record.primary_key, target_bucket_rows=bucket_rows
                )
            elif rebalance_only:
                continue
            else:
                pieces = {group.buckets[0]: rows}
            if set(pieces) != set(group.buckets):
                guarded.extend(group.buckets)
            for bucket, piece in sorted(pieces.items()):
                data = (
                    piece.sort_by([(k, "ascending") for k in record.primary_key])
                    if record.primary_key
                    else piece
                )
                outputs += [
                    (bucket, data.slice(s, rows_per_file)) for s in range(0, data.num_rows, rows_per_file)
                ]
        rewritten = [g for g in groups if not rebalance_only or set(g.buckets) <= set(guarded)]
        if not rewritten:
            return None
        removed = [f.path for g in rewritten for f in g.files]
        return self._commit_compaction(record, outputs, removed, bmap, tuple(guarded))

    def _commit_compaction(
        self,
        record: TableRecord,
        outputs: Sequence[tuple[int, pa.Table]],
        removed: Sequence[str],
        bmap: BucketMap,
        guarded: tuple[int, ...],
    ) -> Commit:
        instant = new_instant()
        self._store.begin_commit(record.id, instant, "compact")
        written: list[DataFile] = []
        try:
            written = self._write_files(record, instant, "base", outputs)
            map_changed = bmap.version != self.bucket_map.version
            request = CommitRequest(
                instant=instant,
                read_version=record.current_version,
                operation="compact",
                added=written,
                removed=removed,
                conflicts_with_writes=False,
                new_bucket_map=bmap.to_json() if map_changed else None,
                guarded_buckets=guarded,
                summary={
                    "compacted_version": record.current_version,
                    "buckets": sorted({b for b, _ in outputs}),
                    "files_removed": len(removed),
                    "files_added": len(written),
                    "rows": sum(f.row_count for f in written),
                    **(
                        {"bucket_map_version": bmap.version, "buckets_rewritten": list(guarded)}
                        if map_changed
                        else {}
                    ),
                },
            )
            commit = self._store.complete_commit(record, request)
        except BaseException:
            self._discard(record, instant, written)
            raise
        self.refresh()
        return commit

    def clean(
        self, *, retain_last: int = 10, orphan_grace_seconds: float = 3600.0
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
        """
        if retain_last < 1:
            raise InvalidArgumentError("clean(retain_last=N) needs N >= 1: the head version is always kept")
        record = self.refresh()._record
        now = time.time()
        listed = self._list_files(record)  # before inflight and referenced are read (see orphan_paths)
        inflight = self._store.inflight_instants(record.id)
        stale = maintenance.stale_instants(inflight, grace_seconds=orphan_grace_seconds, now=now)
        if stale:
            # before the referenced files are read: a stale writer has either completed by then (its
            # files are referenced) or can never complete (its instant is gone), so no committed file
            # is taken for an orphan
            self._store.abort_stale_inflight(record.id, stale)
        for attempt in range(5):
            keep_from = self._clean_horizon(record, retain_last, now)
            referenced = self._store.all_file_paths(record.id)
            needed = {f.path for f in self._store.live_files(record.id, keep_from)}
            obsolete = [f for f in self._store.retired_files(record.id, keep_from) if f.path not in needed]
            try:
                # the catalog first: once forgotten, no reader is directed to a file we then delete; it
                # refuses if a consumer registered below keep_from since we read the consumers
                self._store.forget_files(record.id, [f.path for f in obsolete], keep_from)
            except CommitConflictError:
                if attempt == 4:
                    raise
                continue
            break
        orphans, _ = maintenance.orphan_paths(
            listed, referenced, inflight, grace_seconds=orphan_grace_seconds, now=now
        )
        for path in [f.path for f in obsolete] + orphans:
            with contextlib.suppress(FileNotFoundError):
                self._storage.fs.delete_file(self._storage.path(path))
        self.refresh()
        return maintenance.CleanResult(
            oldest_version=keep_from,
            files_deleted=len(obsolete),
            bytes_deleted=sum(f.size for f in obsolete),
            orphans_deleted=len(orphans),
        )

    def _clean_horizon(self, record: TableRecord, retain_last: int, now: float) -> int:
        """The oldest version a clean keeps: ``head - retain_last + 1``, or the oldest consumer/pin."""
        head, oldest = self._store.current_version(record.id)
        keep_from = max(oldest, head - retain_last + 1)
        consumed = self._store.consumers(record.id)
        for name in [n for n in consumed if pin_expired(n, now=now)]:
            self._store.drop_consumer(record.id, name)
            del consumed[name]
        if consumed:  # a consumer at version v still reads changes(v, ...): keep v readable
            keep_from = max(oldest, min(keep_from, *consumed.values()))
        return keep_from

    def _list_files(self, record: TableRecord) -> list[tuple[str, float]]:
        root = self._storage.path(record.location, "data")
        out = []
        for info in self._storage.list_files(root):
            mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
            out.append((self._storage.relative(info.path), mtime))
        return out
