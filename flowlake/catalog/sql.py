"""The catalog on a SQL database through SQLAlchemy Core: SQLite (embedded default) or PostgreSQL.

Every statement is built with SQLAlchemy Core and bound parameters, never by formatting values into
SQL. A commit is one transaction that (1) locks the table's row by writing it, (2) checks what was
committed since the writer's read version, (3) records the new files and retires removed ones, and
(4) moves ``current_version`` forward. A crash before the transaction ends leaves only orphan data
files, which cleaning removes; readers never see a partial commit.
"""

from __future__ import annotations

import datetime as dt
import getpass
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from flowlake.catalog import conflicts
from flowlake.catalog.access import Privilege
from flowlake.catalog.base import (
    Commit,
    CommitRequest,
    DataFile,
    Operation,
    TableRecord,
)
from flowlake.catalog.consumers import ConsumerRegistry
from flowlake.catalog.engine import begin_write, insert_if_missing, redact, run_with_retries
from flowlake.catalog.leases import LeaseRegistry
from flowlake.catalog.migrations import ensure_schema
from flowlake.catalog.sqltables import (
    commit_keys,
    commits,
    files,
    namespaces,
    schemas,
    table_jobs,
    tables,
)
from flowlake.catalog.sqltables import consumers as consumers_table
from flowlake.catalog.sqltables import positions as positions_table
from flowlake.errors import (
    CatalogError,
    CommitConflictError,
    TableExistsError,
    TableNotFoundError,
)


class _TokenSeen(Exception):
    def __init__(self, commit: Commit) -> None:
        super().__init__(commit.version)
        self.commit = commit


def schema_to_bytes(schema: pa.Schema) -> bytes:
    """Serialize an Arrow schema for the catalog."""
    return bytes(schema.serialize())


def schema_from_bytes(data: bytes) -> pa.Schema:
    """Inverse of :func:`schema_to_bytes`."""
    return pa.ipc.read_schema(pa.py_buffer(data))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _from_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


class SqlMetaStore(ConsumerRegistry, LeaseRegistry):
    """The catalog backend on SQLite or PostgreSQL; every call is checked against the grants."""

    def __init__(self, engine: Engine, *, principal: str | None = None) -> None:
        self.engine = engine
        self.principal = principal or getpass.getuser()
        self._schema_cache: dict[tuple[int, int], pa.Schema] = {}
        self._names: dict[int, str] = {}
        self._migrate()
        self._init_access()

    def as_principal(self, principal: str) -> SqlMetaStore:
        """The same catalog acting as another principal (the REST server uses one per token)."""
        other = object.__new__(SqlMetaStore)
        other.__dict__.update(self.__dict__)
        other.principal = principal
        other._may_bootstrap = False  # a token's principal never becomes admin by writing first
        return other

    def _forget_cached(self, table_id: int) -> None:
        self._names.pop(table_id, None)
        for key in [k for k in self._schema_cache if k[0] == table_id]:
            del self._schema_cache[key]

    def _table_name(self, table_id: int) -> str:
        name = self._names.get(table_id)
        if name is None:
            with self.engine.connect() as conn:
                row = conn.execute(
                    sa.select(tables.c.namespace, tables.c.name).where(tables.c.id == table_id)
                ).first()
            if row is None:
                raise CatalogError(f"table id {table_id} is not in the catalog (dropped concurrently?)")
            name = self._names[table_id] = f"{row[0]}.{row[1]}"
        return name

    def _allow(self, privilege: Privilege, table_id: int) -> None:
        self.authorize(privilege, self._table_name(table_id))

    # -- set-up -----------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create or upgrade the catalog's tables; safe when many processes open it at once."""
        url = redact(str(self.engine.url))
        try:
            run_with_retries(
                lambda: ensure_schema(self.engine), what="create or upgrade the catalog", catalog=url
            )
        except sa.exc.DBAPIError as exc:
            raise CatalogError(f"cannot open catalog {url!r}: {exc.orig}") from exc

    # -- tables -----------------------------------------------------------------------------------

    def _record(self, conn: Connection, row: sa.Row[Any]) -> TableRecord:
        m = row._mapping
        return TableRecord(
            id=m["id"],
            namespace=m["namespace"],
            name=m["name"],
            location=m["location"],
            primary_key=tuple(orjson.loads(m["primary_key"])),
            buckets=m["buckets"],
            properties=orjson.loads(m["properties"]),
            current_version=m["current_version"],
            oldest_version=m["oldest_version"],
            schema_id=m["schema_id"],
            schema=self._schema(conn, m["id"], m["schema_id"]),
            created_at=_from_ms(m["created_at"]),
            bucket_map=m["bucket_map"],
        )

    def _schema(self, conn: Connection, table_id: int, schema_id: int) -> pa.Schema:
        key = (table_id, schema_id)
        if key not in self._schema_cache:
            blob = conn.execute(
                sa.select(schemas.c.arrow_schema).where(
                    schemas.c.table_id == table_id, schemas.c.schema_id == schema_id
                )
            ).scalar_one()
            self._schema_cache[key] = schema_from_bytes(blob)
        return self._schema_cache[key]

    def schema(self, table_id: int, schema_id: int) -> pa.Schema:
        """The schema with id ``schema_id`` of a table."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            return self._schema(conn, table_id, schema_id)

    def get_table(self, namespace: str, name: str) -> TableRecord:
        """The catalog entry of ``namespace.name``."""
        self.authorize("read", f"{namespace}.{name}")
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tables).where(tables.c.namespace == namespace, tables.c.name == name)
            ).first()
            if row is None:
                raise TableNotFoundError(f"{namespace}.{name}")
            return self._record(conn, row)

    def create_table(
        self,
        namespace: str,
        name: str,
        schema: pa.Schema,
        primary_key: Sequence[str],
        buckets: int,
        properties: Mapping[str, str],
    ) -> TableRecord:
        """Register a new table at version 0 (and its namespace, if that is new).

        Safe while other processes create tables, in the same new namespace or of the same name:
        the namespace row is inserted with ``ON CONFLICT DO NOTHING``, a lost race for the table's
        name is reported as ``TableExistsError`` only once the winner's table is visible, and a
        database busy with other writers is retried.

        Raises:
            TableExistsError: If ``namespace.name`` exists (also when another process just created it).
            CatalogBusyError: If the database stayed locked through every retry.
        """
        self.authorize("admin", namespace)
        qualified = f"{namespace}.{name}"
        url = redact(str(self.engine.url))
        failure: sa.exc.IntegrityError | None = None
        for _ in range(3):
            try:
                table_id = run_with_retries(
                    lambda: self._insert_table(namespace, name, schema, primary_key, buckets, properties),
                    what=f"create table {qualified!r}",
                    catalog=url,
                )
            except sa.exc.IntegrityError as exc:
                if self._table_exists(namespace, name):
                    raise TableExistsError(qualified) from exc
                failure = exc  # a unique-constraint race on another row, and the name is free: again
                continue
            self._forget_cached(table_id)  # catalogs from before AUTOINCREMENT may reuse ids
            return self.get_table(namespace, name)
        assert failure is not None
        raise CatalogError(
            f"cannot create table {qualified!r} in catalog {url!r}: {failure.orig}; retry"
        ) from failure

    def _table_exists(self, namespace: str, name: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    sa.select(tables.c.id).where(tables.c.namespace == namespace, tables.c.name == name)
                ).first()
                is not None
            )

    def _insert_table(
        self,
        namespace: str,
        name: str,
        schema: pa.Schema,
        primary_key: Sequence[str],
        buckets: int,
        properties: Mapping[str, str],
    ) -> int:
        """One transaction that creates the namespace if missing and the table; returns its id."""
        now = _now_ms()
        with begin_write(self.engine) as conn:
            insert_if_missing(conn, namespaces, {"name": namespace, "created_at": now})
            inserted = conn.execute(
                sa.insert(tables).values(
                    namespace=namespace,
                    name=name,
                    location=f"{namespace}/{name}",
                    primary_key=orjson.dumps(list(primary_key)).decode(),
                    buckets=buckets,
                    properties=orjson.dumps(dict(properties)).decode(),
                    current_version=0,
                    oldest_version=0,
                    schema_id=0,
                    created_at=now,
                )
            ).inserted_primary_key
            assert inserted is not None
            table_id = int(inserted[0])
            conn.execute(
                sa.insert(schemas).values(
                    table_id=table_id, schema_id=0, arrow_schema=schema_to_bytes(schema)
                )
            )
            conn.execute(
                sa.insert(commits).values(
                    table_id=table_id, instant=f"{now:017d}-create", state="completed", version=0,
                    operation="create", started_at=now, committed_at=now, schema_id=0,
                    summary=orjson.dumps({"primary_key": list(primary_key), "buckets": buckets}).decode(),
                    principal=self.principal,
                )
            )  # fmt: skip
            self._audit(conn, "create_table", f"{namespace}.{name}", {"primary_key": list(primary_key)})
        return table_id

    def drop_table(self, namespace: str, name: str) -> TableRecord:
        """Remove a table's catalog entries and return what it was."""
        self.authorize("admin", f"{namespace}.{name}")
        record = self.get_table(namespace, name)
        with begin_write(self.engine) as conn:
            self._audit(conn, "drop_table", f"{namespace}.{name}", {"version": record.current_version})
            for t in (files, commits, schemas, positions_table, consumers_table, commit_keys, table_jobs):
                conn.execute(sa.delete(t).where(t.c.table_id == record.id))
            conn.execute(sa.delete(tables).where(tables.c.id == record.id))
        self._forget_cached(record.id)
        return record

    def set_table_properties(self, table_id: int, updates: Mapping[str, str | None]) -> TableRecord:
        """Set (or, with None, remove) table properties in one transaction; return the new entry.

        The caller validates names and values (see :mod:`flowlake.table.policy`); the store only
        needs ``admin`` on the table (changing how a table is kept is an ``ALTER TABLE``).
        """
        name = self._table_name(table_id)
        self.authorize("admin", name)
        with begin_write(self.engine) as conn:
            found = conn.execute(sa.select(tables.c.properties).where(tables.c.id == table_id)).first()
            if found is None:
                raise TableNotFoundError(name)
            props = orjson.loads(found[0])
            for key, value in updates.items():
                if value is None:
                    props.pop(key, None)
                else:
                    props[key] = str(value)
            conn.execute(
                sa.update(tables)
                .where(tables.c.id == table_id)
                .values(properties=orjson.dumps(props).decode())
            )
            self._audit(conn, "set_properties", name, {"updates": dict(updates)})
        namespace, table = name.split(".", 1)
        return self.get_table(namespace, table)

    def list_tables(self, namespace: str | None = None) -> list[str]:
        """Qualified names of all tables, or of those in one namespace."""
        query = sa.select(tables.c.namespace, tables.c.name).order_by(tables.c.namespace, tables.c.name)
        if namespace is not None:
            query = query.where(tables.c.namespace == namespace)
        with self.engine.connect() as conn:
            names = [f"{ns}.{n}" for ns, n in conn.execute(query)]
        return [n for n in names if self.has_privilege("read", n)]

    def list_namespaces(self) -> list[str]:
        """All namespaces that hold or held a table."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(namespaces.c.name).order_by(namespaces.c.name))]

    # -- commits ----------------------------------------------------------------------------------

    def begin_commit(self, table_id: int, instant: str, operation: Operation) -> None:
        """Record an inflight instant before its data files are written."""
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            conn.execute(
                sa.insert(commits).values(
                    table_id=table_id, instant=instant, state="inflight", operation=operation,
                    started_at=_now_ms(), principal=self.principal,
                )
            )  # fmt: skip

    def abort_commit(self, table_id: int, instant: str) -> None:
        """Forget an inflight instant that will not complete (its files are orphans now)."""
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            conn.execute(
                sa.delete(commits).where(
                    commits.c.table_id == table_id,
                    commits.c.instant == instant,
                    commits.c.state == "inflight",
                )
            )

    def find_token(self, table_id: int, token: str) -> Commit | None:
        """The completed commit that carried ``token``, if any."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(commits).where(
                    commits.c.table_id == table_id, commits.c.token == token, commits.c.state == "completed"
                )
            ).first()
        return None if row is None else _commit(row)

    def complete_commit(self, table: TableRecord, request: CommitRequest) -> Commit:
        """Atomically make an inflight commit the table's next version.

        Raises:
            CommitConflictError: If a commit since ``request.read_version`` makes this one invalid.
        """
        self._allow("write", table.id)
        try:
            return self._complete(table, request)
        except _TokenSeen as seen:
            self.abort_commit(table.id, request.instant)
            return seen.commit

    def _complete(self, table: TableRecord, request: CommitRequest) -> Commit:
        name = table.qualified_name
        with begin_write(self.engine) as conn:
            # Writing the row first takes the write lock (SQLite) or the row lock (PostgreSQL), so
            # the checks below and the version move are serialized with every other committer.
            locked = conn.execute(
                sa.update(tables)
                .where(tables.c.id == table.id)
                .values(current_version=tables.c.current_version)
            )
            if locked.rowcount != 1:
                raise TableNotFoundError(name)
            head, schema_id, bucket_map = conn.execute(
                sa.select(tables.c.current_version, tables.c.schema_id, tables.c.bucket_map).where(
                    tables.c.id == table.id
                )
            ).one()
            if request.map_version is not None:
                current_map = orjson.loads(bucket_map)["version"] if bucket_map else 0
                conflicts.check_bucket_map(name, request, head, current_map)
            if request.token is not None:
                earlier = conn.execute(
                    sa.select(commits).where(
                        commits.c.table_id == table.id, commits.c.token == request.token,
                        commits.c.state == "completed",
                    )
                ).first()  # fmt: skip
                if earlier is not None:
                    raise _TokenSeen(_commit(earlier))
            if head != request.read_version:
                self._check_intervening(conn, table, request, head)
            version = head + 1
            if request.new_schema is not None:
                schema_id += 1
                conn.execute(
                    sa.insert(schemas).values(
                        table_id=table.id,
                        schema_id=schema_id,
                        arrow_schema=schema_to_bytes(request.new_schema),
                    )
                )
            if request.removed:
                retired = conn.execute(
                    sa.update(files)
                    .where(
                        files.c.table_id == table.id,
                        files.c.path.in_(list(request.removed)),
                        files.c.removed_version.is_(None),
                    )
                    .values(removed_version=version)
                ).rowcount
                conflicts.check_retired(name, request, head, retired)
            if request.added:
                conn.execute(
                    sa.insert(files),
                    [
                        {
                            "table_id": table.id, "path": f.path, "bucket": f.bucket, "content": f.content,
                            "added_version": version, "removed_version": None, "row_count": f.row_count,
                            "size": f.size, "stats": f.stats, "checksum": f.checksum,
                        }
                        for f in request.added
                    ],
                )  # fmt: skip
            backlog = conn.execute(
                sa.select(sa.func.count()).where(
                    files.c.table_id == table.id, files.c.content != "base", files.c.removed_version.is_(None)
                )
            ).scalar_one()
            now = _now_ms()
            done = conn.execute(
                sa.update(commits)
                .where(
                    commits.c.table_id == table.id,
                    commits.c.instant == request.instant,
                    commits.c.state == "inflight",
                )
                .values(
                    state="completed", version=version, committed_at=now, schema_id=schema_id,
                    summary=orjson.dumps({**request.summary, "log_backlog": backlog}).decode(),
                    token=request.token,
                )
            ).rowcount  # fmt: skip
            if done != 1:
                raise CatalogError(
                    f"commit {request.instant} of {name!r} is not inflight (was it aborted or cleaned?); "
                    "retry the write"
                )
            conn.execute(
                sa.update(tables)
                .where(tables.c.id == table.id)
                .values(
                    current_version=version,
                    schema_id=schema_id,
                    bucket_map=request.new_bucket_map if request.new_bucket_map is not None else bucket_map,
                )
            )
            self._record_positions(conn, table.id, request.sources, version)
            if request.key_hashes is not None:
                conn.execute(
                    sa.insert(commit_keys).values(
                        table_id=table.id, version=version, key_hashes=request.key_hashes,
                        columns=orjson.dumps(list(request.columns)).decode(),
                    )
                )  # fmt: skip
            self._audit(
                conn, "commit", table.qualified_name, {"version": version, "operation": request.operation}
            )
            row = conn.execute(
                sa.select(commits).where(commits.c.table_id == table.id, commits.c.instant == request.instant)
            ).one()
            return _commit(row)

    def _record_positions(
        self, conn: Connection, table_id: int, sources: Mapping[str, Any], version: int
    ) -> None:
        for source, position in sources.items():
            encoded = orjson.dumps(position).decode()
            updated = conn.execute(
                sa.update(positions_table)
                .where(positions_table.c.table_id == table_id, positions_table.c.source == source)
                .values(position=encoded, version=version)
            ).rowcount
            if not updated:
                conn.execute(
                    sa.insert(positions_table).values(
                        table_id=table_id, source=source, position=encoded, version=version
                    )
                )

    def source_position(self, table_id: int, source: str) -> tuple[Any, int] | None:
        """The newest recorded position of ``source`` in a table, with the version that recorded it."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(positions_table.c.position, positions_table.c.version).where(
                    positions_table.c.table_id == table_id, positions_table.c.source == source
                )
            ).first()
        return None if row is None else (orjson.loads(row[0]), int(row[1]))

    def positions(self, table_id: int) -> dict[str, tuple[Any, int]]:
        """``{source: (position, version)}``: the newest position of every source of a table."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    positions_table.c.source, positions_table.c.position, positions_table.c.version
                ).where(positions_table.c.table_id == table_id)
            )
            return {r[0]: (orjson.loads(r[1]), int(r[2])) for r in rows}

    def _check_intervening(
        self, conn: Connection, table: TableRecord, request: CommitRequest, head: int
    ) -> None:
        """Read what was committed since ``request.read_version`` and apply :mod:`.conflicts`' rules.

        Summaries and key hashes are read only when a rule needs them.
        """
        name = table.qualified_name
        rows = conn.execute(
            sa.select(commits.c.version, commits.c.operation).where(
                commits.c.table_id == table.id,
                commits.c.version > request.read_version,
                commits.c.version <= head,
            )
        ).all()
        versions = conflicts.data_versions(name, request, head, ((int(v), str(op)) for v, op in rows))
        if conflicts.needs_bucket_check(request, versions):
            summaries = conn.execute(
                sa.select(commits.c.version, commits.c.summary).where(
                    commits.c.table_id == table.id, commits.c.version.in_(versions)
                )
            )
            conflicts.check_guarded_buckets(
                name, request, head, ((int(v), orjson.loads(summary or "{}")) for v, summary in summaries)
            )
        if not conflicts.needs_key_check(request, versions):
            return
        written = {
            int(v): (blob, orjson.loads(cols))
            for v, blob, cols in conn.execute(
                sa.select(commit_keys.c.version, commit_keys.c.key_hashes, commit_keys.c.columns).where(
                    commit_keys.c.table_id == table.id, commit_keys.c.version.in_(versions)
                )
            )
        }
        conflicts.check_keys(name, request, head, versions, written)

    # -- reads ------------------------------------------------------------------------------------

    def current_version(self, table_id: int) -> tuple[int, int]:
        """``(current_version, oldest_version)`` of a table."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(tables.c.current_version, tables.c.oldest_version).where(tables.c.id == table_id)
            ).first()
        if row is None:
            raise CatalogError(f"table id {table_id} vanished from the catalog (dropped concurrently?)")
        return int(row[0]), int(row[1])

    def commits(self, table_id: int, start: int = 0, end: int | None = None) -> list[Commit]:
        """Completed commits with ``start <= version <= end``, oldest first."""
        self._allow("read", table_id)
        query = sa.select(commits).where(
            commits.c.table_id == table_id, commits.c.state == "completed", commits.c.version >= start
        )
        if end is not None:
            query = query.where(commits.c.version <= end)
        with self.engine.connect() as conn:
            return [_commit(r) for r in conn.execute(query.order_by(commits.c.version))]

    def version_at(self, table_id: int, timestamp_ms: int) -> int | None:
        """The newest version committed at or before ``timestamp_ms``."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(sa.func.max(commits.c.version)).where(
                    commits.c.table_id == table_id,
                    commits.c.state == "completed",
                    commits.c.committed_at <= timestamp_ms,
                )
            ).scalar()
        return None if found is None else int(found)

    def live_files(self, table_id: int, version: int) -> list[DataFile]:
        """The files that make up ``version``, in the order they were added."""
        self._allow("read", table_id)
        query = (
            sa.select(files)
            .where(
                files.c.table_id == table_id,
                files.c.added_version <= version,
                sa.or_(files.c.removed_version.is_(None), files.c.removed_version > version),
            )
            .order_by(files.c.added_version, files.c.path)
        )
        with self.engine.connect() as conn:
            return [_file(r) for r in conn.execute(query)]

    def files_changed_between(self, table_id: int, start: int, end: int) -> list[DataFile]:
        """The files the commits ``start+1 .. end`` added or removed (each once), oldest added first:
        ``live_files(end)`` is ``live_files(start)`` without those removed by ``end``, with those
        added and not removed by then."""
        self._allow("read", table_id)
        mine = files.c.table_id == table_id
        added = sa.and_(mine, files.c.added_version > start, files.c.added_version <= end)
        removed = sa.and_(mine, files.c.removed_version > start, files.c.removed_version <= end)
        with self.engine.connect() as conn:
            found = {
                f.path: f
                for where in (added, removed)
                for f in map(_file, conn.execute(sa.select(files).where(where)))
            }
        return sorted(found.values(), key=lambda f: (f.added_version, f.path))

    def log_files_between(self, table_id: int, start: int, end: int) -> list[DataFile]:
        """The log files of the commits ``start+1 .. end``, oldest first."""
        self._allow("read", table_id)
        query = (
            sa.select(files)
            .where(
                files.c.table_id == table_id,
                files.c.content == "log",
                files.c.added_version > start,
                files.c.added_version <= end,
            )
            .order_by(files.c.added_version, files.c.path)
        )
        with self.engine.connect() as conn:
            return [_file(r) for r in conn.execute(query)]

    def inflight_instants(self, table_id: int) -> list[tuple[str, int]]:
        """``(instant, started_at_ms)`` of commits that started but never completed."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(commits.c.instant, commits.c.started_at).where(
                    commits.c.table_id == table_id, commits.c.state == "inflight"
                )
            ).all()
        return [(r[0], int(r[1])) for r in rows]

    def retired_files(self, table_id: int, up_to_version: int) -> list[DataFile]:
        """Files that left the snapshot at or before ``up_to_version``."""
        self._allow("read", table_id)
        query = sa.select(files).where(
            files.c.table_id == table_id,
            files.c.removed_version.is_not(None),
            files.c.removed_version <= up_to_version,
        )
        with self.engine.connect() as conn:
            return [_file(r) for r in conn.execute(query)]

    def all_file_paths(self, table_id: int) -> set[str]:
        """Every file path the catalog still records for a table."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(files.c.path).where(files.c.table_id == table_id))}

    def forget_files(self, table_id: int, paths: Sequence[str], oldest_version: int) -> None:
        """Drop file records (their files are being deleted) and move the oldest readable version.

        Raises:
            CommitConflictError: A consumer (or pin) registered at a version between the current
                oldest readable version and ``oldest_version`` since the caller read the consumers;
                nothing is changed, and the caller should compute what to clean again.
        """
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            current_oldest = self._lock_table(conn, table_id)
            blocking = conn.execute(
                sa.select(consumers_table.c.name, consumers_table.c.version).where(
                    consumers_table.c.table_id == table_id,
                    consumers_table.c.version >= current_oldest,
                    consumers_table.c.version < oldest_version,
                )
            ).first()
            if blocking is not None:
                raise CommitConflictError(
                    self._table_name(table_id), oldest_version, int(blocking[1]),
                    reason=f"consumer {blocking[0]!r} was registered at version {blocking[1]} while "
                    f"cleaning up to version {oldest_version}; clean again",
                )  # fmt: skip
            for start in range(0, len(paths), 500):
                chunk = list(paths[start : start + 500])
                conn.execute(sa.delete(files).where(files.c.table_id == table_id, files.c.path.in_(chunk)))
            conn.execute(
                sa.update(tables)
                .where(tables.c.id == table_id, tables.c.oldest_version < oldest_version)
                .values(oldest_version=oldest_version)
            )

    def abort_stale_inflight(self, table_id: int, instants: Sequence[str]) -> None:
        """Forget inflight instants whose writers are gone."""
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            if instants:
                conn.execute(
                    sa.delete(commits).where(
                        commits.c.table_id == table_id,
                        commits.c.state == "inflight",
                        commits.c.instant.in_(list(instants)),
                    )
                )


def _commit(row: sa.Row[Any]) -> Commit:
    m = row._mapping
    return Commit(
        version=int(m["version"]),
        instant=m["instant"],
        operation=m["operation"],
        committed_at=_from_ms(int(m["committed_at"])),
        summary=orjson.loads(m["summary"]) if m["summary"] else {},
        principal=m["principal"],
        token=m["token"],
        schema_id=int(m["schema_id"] or 0),
    )


def _file(row: sa.Row[Any]) -> DataFile:
    m = row._mapping
    return DataFile(
        path=m["path"],
        bucket=int(m["bucket"]),
        content=m["content"],
        row_count=int(m["row_count"]),
        size=int(m["size"]),
        stats=m["stats"],
        checksum=None if m["checksum"] is None else int(m["checksum"]),
        added_version=int(m["added_version"]),
        removed_version=None if m["removed_version"] is None else int(m["removed_version"]),
    )
