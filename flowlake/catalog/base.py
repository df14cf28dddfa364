"""What the catalog stores, and the protocol every catalog backend implements.

The catalog is the single source of truth: a table's current version is one row that a commit moves
with compare-and-set, in the same transaction that records the commit's files. Object stores have no
atomic rename; the catalog gives atomicity everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa

Operation = Literal["create", "write", "compact", "schema", "clean"]
"""What a commit did. ``write`` changes rows; the others leave the rows as they were."""

FileContent = Literal["base", "log", "moved"]
"""``base`` files hold whole rows after compaction; ``log`` files hold one commit's changes; ``moved``
files hold changes of earlier commits that a bucket split or merge re-routed into the new buckets
(read like logs by snapshots, but not part of the changelog: their commits' own log files are)."""

DATA_OPERATIONS: frozenset[str] = frozenset({"write"})


@dataclass(frozen=True, slots=True)
class DataFile:
    """One Parquet file of a table, as recorded in the catalog."""

    path: str
    """Path relative to the warehouse root."""
    bucket: int
    content: FileContent
    row_count: int
    size: int
    stats: bytes | None = None
    checksum: int | None = None
    """CRC-32 of the file's bytes (None for files written before checksums were recorded)."""
    added_version: int = 0
    removed_version: int | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """One completed commit on a table's timeline."""

    version: int
    instant: str
    operation: str
    committed_at: dt.datetime
    summary: Mapping[str, Any] = field(default_factory=dict)
    principal: str = ""
    token: str | None = None
    schema_id: int = 0


@dataclass(frozen=True, slots=True)
class TableRecord:
    """A table's catalog entry at the moment it was read."""

    id: int
    namespace: str
    name: str
    location: str
    primary_key: tuple[str, ...]
    buckets: int
    properties: Mapping[str, str]
    current_version: int
    oldest_version: int
    schema_id: int
    schema: pa.Schema
    created_at: dt.datetime
    bucket_map: str | None = None
    """The scalable hash index's map as JSON (None: the initial ``buckets`` roots)."""

    @property
    def qualified_name(self) -> str:
        """``namespace.table``."""
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Everything a writer hands the catalog to complete an inflight commit."""

    instant: str
    read_version: int
    operation: Operation
    added: Sequence[DataFile] = ()
    removed: Sequence[str] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    new_schema: pa.Schema | None = None
    token: str | None = None
    sources: Mapping[str, Any] = field(default_factory=dict)
    """Source positions this commit covers (JSON-able), e.g. a binlog position or upstream versions;
    stored atomically with the commit, for lineage and for resuming."""
    key_hashes: bytes | None = None
    """Sorted, distinct uint64 hashes of the keys this commit writes (row-level conflict checks)."""
    columns: tuple[str, ...] = ()
    """Non-key columns this commit writes; empty means all (column-level conflict checks)."""
    map_version: int | None = None
    """The bucket-map version the writer routed rows with; a commit after a split/merge must redo."""
    new_bucket_map: str | None = None
    """A compaction that splits or merges buckets installs this map (JSON) atomically."""
    guarded_buckets: tuple[int, ...] = ()
    """Buckets whose rows this commit moves: any intervening write to them is a conflict."""
    conflicts_with_writes: bool = True
    """Whether any intervening ``write`` commit forces this commit to be redone (its before-images
    were computed against ``read_version``). Compaction sets it to False: it only needs the files it
    removes to still be live."""


@dataclass(frozen=True, slots=True)
class JobState:
    """A table service job's lease and last run, as the catalog records them (times in epoch ms).

    ``holder`` is who holds the lease now (None: nobody); ``expires_in_ms`` is how long the lease
    has left by the database's clock when it was read (negative: expired, so anyone may take it).
    """

    table_id: int
    job: str
    holder: str | None = None
    epoch: int = 0
    expires_in_ms: int | None = None
    last_holder: str | None = None
    last_started_at: int | None = None
    last_finished_at: int | None = None
    last_outcome: str | None = None
    """``ok`` (did work), ``idle`` (nothing to do), ``failed`` or ``lost`` (the lease expired first)."""
    last_detail: str | None = None
    runs: int = 0
    failures: int = 0
    now_ms: int = 0
    """The database's clock when this was read (ages of ``last_*`` are relative to it)."""


class MetaStore(Protocol):
    """The operations a lake table needs from its catalog backend."""

    principal: str

    def get_table(self, namespace: str, name: str) -> TableRecord: ...
    def create_table(
        self,
        namespace: str,
        name: str,
        schema: pa.Schema,
        primary_key: Sequence[str],
        buckets: int,
        properties: Mapping[str, str],
    ) -> TableRecord: ...
    def drop_table(self, namespace: str, name: str) -> TableRecord: ...
    def list_tables(self, namespace: str | None = None) -> list[str]: ...
    def list_namespaces(self) -> list[str]: ...
    def begin_commit(self, table_id: int, instant: str, operation: Operation) -> None: ...
    def abort_commit(self, table_id: int, instant: str) -> None: ...
    def complete_commit(self, table: TableRecord, request: CommitRequest) -> Commit: ...
    def find_token(self, table_id: int, token: str) -> Commit | None: ...
    def current_version(self, table_id: int) -> tuple[int, int]: ...
    def commits(self, table_id: int, start: int = 0, end: int | None = None) -> list[Commit]: ...
    def version_at(self, table_id: int, timestamp_ms: int) -> int | None: ...
    def live_files(self, table_id: int, version: int) -> list[DataFile]: ...
    def files_changed_between(self, table_id: int, start: int, end: int) -> list[DataFile]: ...
    def log_files_between(self, table_id: int, start: int, end: int) -> list[DataFile]: ...
    def schema(self, table_id: int, schema_id: int) -> pa.Schema: ...
    def inflight_instants(self, table_id: int) -> list[tuple[str, int]]: ...
    def forget_files(self, table_id: int, paths: Sequence[str], oldest_version: int) -> None: ...
    def all_file_paths(self, table_id: int) -> set[str]: ...
    def retired_files(self, table_id: int, up_to_version: int) -> list[DataFile]: ...
    def abort_stale_inflight(self, table_id: int, instants: Sequence[str]) -> None: ...
    def source_position(self, table_id: int, source: str) -> tuple[Any, int] | None: ...
    def positions(self, table_id: int) -> dict[str, tuple[Any, int]]: ...
    def authorize(self, privilege: Literal["read", "write", "admin"], obj: str) -> None: ...
    def has_privilege(
        self, privilege: Literal["read", "write", "admin"], obj: str, principal: str | None = None
    ) -> bool: ...
    def grant(self, principal: str, privilege: Literal["read", "write", "admin"], obj: str) -> None: ...
    def revoke(self, principal: str, privilege: Literal["read", "write", "admin"], obj: str) -> bool: ...
    def list_grants(self, principal: str | None = None) -> list[tuple[str, str, str]]: ...
    def create_principal(self, name: str, *, kind: Literal["user", "service"] = "service") -> str: ...
    def revoke_token(self, name: str) -> None: ...
    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def register_consumer(self, table_id: int, name: str, version: int) -> None: ...
    def consumers(self, table_id: int) -> dict[str, int]: ...
    def drop_consumer(self, table_id: int, name: str) -> bool: ...
    def set_table_properties(self, table_id: int, updates: Mapping[str, str | None]) -> TableRecord: ...
    def acquire_lease(self, table_id: int, job: str, holder: str, ttl_seconds: float) -> int | None: ...
    def renew_lease(self, table_id: int, job: str, holder: str, epoch: int, ttl_seconds: float) -> bool: ...
    def release_lease(
        self, table_id: int, job: str, holder: str, epoch: int, outcome: str, detail: str
    ) -> bool: ...
    def job_states(self, table_id: int) -> list[JobState]: ...
