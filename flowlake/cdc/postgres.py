"""PostgreSQL logical replication source: pgoutput streaming with a chunked, lock-free snapshot.

Streaming. A thread holds a walsender connection (psycopg 3 with ``replication=database``; the COPY
BOTH sub-protocol is spoken over its libpq connection, see :mod:`flowlake.cdc.pgoutput`) and runs
``START_REPLICATION SLOT s LOGICAL lsn (proto_version '1', publication_names 'p', messages 'true')``.
Each transaction (Begin … Commit) becomes one :class:`ChangeGroup` whose position is the commit's
end LSN (``{"lsn", "commit", "xid"}``). The slot's flush position is confirmed to the server only
when the ingester says the ODS commits holding everything up to it have landed
(:meth:`PostgresSource.acknowledge`), so the server keeps all WAL a restart may need; on restart
streaming resumes at the oldest stored position (the server starts at the slot's confirmed flush
LSN if that is later), and the ingester skips the transactions a table already holds.

Snapshot: DBLog-style chunks in fresh transactions, reconciled exactly by transaction ids. The
slot's exported snapshot (``EXPORT_SNAPSHOT``) was not used: it lives only while the replication
connection stays idle in its creating transaction, so streaming cannot start until the whole
snapshot is read, one snapshot is held for as long as the largest table takes to read (holding back
vacuum on the whole server), and a crash loses it, so a restart must begin the snapshot again. Here
each table is read in primary-key order, ``chunk_size`` rows per short ``REPEATABLE READ`` read-only
transaction, while the stream runs. A chunk records its snapshot (``pg_current_snapshot()``: which
transactions it sees) and, after its SELECT, emits a *watermark*, a non-transactional logical
message (``pg_logical_emit_message``) whose place in the stream is exact. The chunk goes out when
the stream reaches its watermark: after every transaction committed before the watermark and before
every later one. A transaction that committed before the watermark but that the chunk's snapshot did
not see (it committed after the snapshot was taken, or is the rare one whose commit record was
written but which was still running when the snapshot was taken) removes the keys it touched from
the chunk, whether the stream carried it before the chunk was read (remembered until a chunk
snapshot sees it) or between the read and the watermark: the stream holds their newer state. What a
chunk keeps is therefore each key's state at the watermark. Transactions that committed before the
source started (so their changes may not be in the stream) and that a chunk's snapshot still shows
running make the chunk be read again, so nothing relies on timing. Tables resume their snapshot
after the last key committed; an altered table (a Relation message with a new shape) is
snapshotted again, since ``ADD COLUMN … DEFAULT`` fills rows without row changes.

Values: see :mod:`flowlake.cdc.postgres_schema`. Updates and deletes under ``REPLICA IDENTITY
DEFAULT`` carry only the key (or nothing, for an update that keeps its key); the ODS table computes
the exact before-image. An update whose key changed becomes a delete and an insert. An update whose
unchanged TOASTed value the server did not send (``REPLICA IDENTITY DEFAULT``), a value the ODS
column cannot hold, and ``TRUNCATE`` become dead letters naming table, LSN and column.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from psycopg.adapt import Loader

from flowlake.cdc.batch import ChangeBatch, Rows, UndecodedRow
from flowlake.cdc.handoff import Handoff
from flowlake.cdc.mysql_binlog import CdcSourceError
from flowlake.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Delete,
    Insert,
    Relation,
    Truncate,
    Update,
    format_lsn,
    parse_lsn,
)
from flowlake.cdc.postgres_schema import (
    BadValueError,
    Column,
    PgTable,
    PgUrl,
    ValueLoader,
    base_types,
    describe_tables,
    list_tables,
    load_row,
    qualified,
    quote,
)
from flowlake.cdc.postgres_stream import WATERMARK_PREFIX, WalReader, WalReaderSettings, WalTx, Watermark
from flowlake.cdc.record_json import dump_record
from flowlake.cdc.source import (
    ChangeGroup,
    DeadLetter,
    Order,
    ProgressCallback,
    SnapshotProgress,
    TableFilter,
    TableSpec,
)

log = logging.getLogger(__name__)

SnapshotMode = Literal["initial", "never"]
"""``initial``: snapshot tables that have no finished snapshot; ``never``: stream only."""

_CHUNK_RETRIES: Final = 500
_BPCHAR: Final = 1042
_BUILTIN_OIDS: Final = 10_000
"""OIDs below this are built-in types (never domains)."""


def _precedes(a: int, b: int) -> bool:
    """32-bit transaction id ``a`` is older than ``b`` (modulo wraparound, as PostgreSQL compares)."""
    return ((a - b) & 0xFFFFFFFF) >= 0x80000000


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What a chunk's transaction saw: ``pg_current_snapshot()`` as 32-bit ids."""

    xmin: int
    xmax: int
    running: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> _Snapshot:
        xmin, xmax, xip = text.split(":")
        return cls(
            int(xmin) & 0xFFFFFFFF,
            int(xmax) & 0xFFFFFFFF,
            frozenset(int(x) & 0xFFFFFFFF for x in xip.split(",") if x),
        )

    def sees(self, xid: int) -> bool:
        """Whether a committed transaction ``xid`` is visible in this snapshot."""
        return _precedes(xid, self.xmax) and xid not in self.running


@dataclass(slots=True)
class _Snap:
    """Snapshot progress of one table (``after``: the last key read, as the server's text)."""

    table: PgTable
    after: list[str] | None = None
    done: bool = False
    rows: int = 0
    chunks: int = 0
    estimate: int = 0

    def state(self) -> dict[str, Any]:
        return {"done": self.done, "after": self.after, "rows": self.rows, "chunks": self.chunks}


@dataclass(slots=True)
class _Chunk:
    """A chunk read in ``snapshot``, waiting for the stream to reach its watermark ``token``."""

    table: str
    rows: dict[tuple[Any, ...], dict[str, Any]]
    snapshot: _Snapshot
    token: str
    last_key: list[str] | None
    done: bool
    read: int
    dead: list[tuple[dict[str, Any], str]]
    """Rows whose values the ODS columns cannot hold (their text, and why)."""


class PostgresSource:
    """Stream a PostgreSQL database's changes (logical replication, pgoutput), after a chunked snapshot.

    Args:
        url: ``postgresql://user:password@host:port/db[?slot=name&publication=name]``; the slot and
            the publication default to ``flowlake_<db>`` and are created when missing.
        tables: ``schema.table`` glob patterns (comma-separated or a list); default ``public.*``.
        chunk_size: Rows per snapshot chunk.
        snapshot: ``"initial"`` (snapshot, then stream) or ``"never"`` (stream only).
        status_interval_s: How often the confirmed position is reported to the server.
        on_progress: Called after every snapshot chunk.

    >>> PostgresSource("postgresql://app@db.internal/shop", tables="public.*").key
    'postgresql://db.internal:5432/shop'
    """

    def __init__(
        self,
        url: str,
        *,
        tables: str | Sequence[str] | None = None,
        chunk_size: int | None = None,
        snapshot: SnapshotMode = "initial",
        status_interval_s: float = 1.0,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.url = PgUrl.parse(url)
        self.filter = TableFilter.parse(tables if tables is not None else "public.*")
        self.chunk_size = chunk_size or 5000
        self.snapshot_mode = snapshot
        self.status_interval = status_interval_s
        self.on_progress = on_progress
        self._ctl: Any = None
        self._loader = ValueLoader()
        self._tables: dict[str, PgTable] = {}
        self._keyless: set[str] = set()
        self._relations: dict[int, tuple[str, tuple[Column, ...]]] = {}
        self._snaps: dict[str, _Snap] = {}
        self._chunk: _Chunk | None = None
        self._queue = Handoff()
        self._reader: WalReader | None = None
        self._pos = 0
        self._sub = itertools.count(time.time_ns())
        self._ack = 0
        # stream transactions (xid, table, key) that touched tables with a pending snapshot and that
        # the newest chunk snapshot did not see; transactions running when the source started
        self._recent: list[tuple[int, str, tuple[Any, ...]]] = []
        self._before_start: frozenset[int] = frozenset()

    # -- protocol -------------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """``postgresql://host:port/db``."""
        return self.url.key

    def order_of(self, position: Mapping[str, Any]) -> Order:
        """``(lsn, sub)``: the commit's end LSN (or a chunk's watermark) and the chunk number."""
        lsn = position.get("lsn")
        return (parse_lsn(str(lsn)) if lsn else 0, int(position.get("sub", 0)))

    def describe(self, source_table: str) -> TableSpec | None:
        """The table's current shape from the catalog."""
        found = describe_tables(self._conn(), [source_table]).get(source_table)
        if found is None:
            return None
        self._tables[source_table] = found
        return found.spec

    def start(
        self, resume: Mapping[str, Mapping[str, Any] | None], *, also: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        """Check the server, make the publication and slot if missing, plan the snapshot, stream."""
        conn = self._conn()
        self._check_server(conn)
        tables = [t for t in list_tables(conn, self.filter.databases) if self.filter(t)]
        self._tables = describe_tables(conn, tables)
        for missing in sorted(set(tables) - set(self._tables)):
            log.warning("skipping %s: it has no primary key", missing)
            self._keyless.add(missing)
        known = [p for p in [*resume.values(), *also] if p is not None and p.get("lsn")]
        self._sub = itertools.count(max([time.time_ns(), *(int(p.get("sub", 0)) for p in known)]) + 1)
        self._ensure_publication(conn)
        start = self._ensure_slot(conn, known)
        (snapshot,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        self._before_start = _Snapshot.parse(str(snapshot)).running
        for table, spec in sorted(self._tables.items()):
            self._plan_snapshot(table, spec, resume.get(table))
        self._pos = self._ack = start
        self._reader = WalReader(self._reader_settings(), self._queue, start, lambda: self._ack)
        self._reader.start()
        return {"lsn": format_lsn(start)}

    def _reader_settings(self) -> WalReaderSettings:
        return WalReaderSettings(
            name=f"pgoutput-{self.key}",
            key=self.key,
            connection=self.url.settings(replication=True),
            slot=self.url.slot,
            publication=self.url.publication,
            status_interval=self.status_interval,
        )

    def poll(self, timeout: float) -> list[ChangeGroup]:
        """Transactions in commit order, each snapshot chunk at its watermark."""
        groups: list[ChangeGroup] = []
        if self._chunk is None:
            self._read_chunk()
        for item in self._queue.drain(timeout):
            if isinstance(item, BaseException):
                raise CdcSourceError(f"replication stream of {self.key} failed: {item}") from item
            if isinstance(item, WalTx):
                groups.append(self._stream_group(item))
                self._pos = max(self._pos, item.end_lsn)
            elif isinstance(item, Watermark):
                self._pos = max(self._pos, item.lsn)
                chunk = self._chunk
                if chunk is not None and item.token == chunk.token:
                    groups.append(self._chunk_group(item.lsn))
        return groups

    def caught_up(self) -> bool:
        """Snapshot done and every transaction committed before this call handed out by :meth:`poll`.

        It emits a watermark and waits (up to 30 s) for the stream to reach it: ``True`` only if
        nothing came before it.
        """
        if self._snaps or self._chunk is not None or self._queue:
            return False
        token = self._emit_watermark("idle")
        deadline = time.monotonic() + 30
        while not self._queue and time.monotonic() < deadline:
            self._queue.wait(0.05)
        if not self._queue:
            return False
        first = self._queue.items[0]
        if isinstance(first, Watermark) and first.token == token:
            self._queue.pop_first()
            self._pos = max(self._pos, first.lsn)
            return True
        return False

    def acknowledge(self, order: Order) -> None:
        """Everything up to ``order`` is durable in ODS: the slot may release the WAL before it.

        Called by the ingester after its commits land; the reader thread reports it to the server.
        """
        self._ack = max(self._ack, int(order[0]))

    def close(self) -> None:
        """Report the confirmed position, stop the reader thread and close connections."""
        if self._reader is not None:
            self._reader.stop()
            self._reader = None
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                self._ctl.close()
            self._ctl = None

    @property
    def snapshot_pending(self) -> list[str]:
        """Tables whose snapshot has not finished."""
        return sorted(self._snaps)

    # -- server ---------------------------------------------------------------------------------------

    def _conn(self) -> Any:
        if self._ctl is None:
            import psycopg

            try:
                self._ctl = psycopg.connect(**self.url.settings(), autocommit=True)
            except psycopg.Error as exc:
                raise CdcSourceError(f"cannot connect to {self.key}: {exc}") from exc
        return self._ctl

    def _check_server(self, conn: Any) -> None:
        (level,) = conn.execute("SHOW wal_level").fetchone()
        if level != "logical":
            raise CdcSourceError(
                f"{self.key} cannot be a CDC source: wal_level is {level!r}; set wal_level = logical "
                "(postgresql.conf or ALTER SYSTEM) and restart the server"
            )

    def _ensure_publication(self, conn: Any) -> None:
        import psycopg

        name = self.url.publication
        if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", [name]).fetchone():
            return
        schemas = self.filter.databases
        scope = "TABLES IN SCHEMA " + ", ".join(quote(s) for s in schemas) if schemas else "ALL TABLES"
        try:
            conn.execute(f"CREATE PUBLICATION {quote(name)} FOR {scope}")
        except psycopg.errors.InsufficientPrivilege:
            if not self._tables:
                raise
            listed = ", ".join(qualified(t) for t in sorted(self._tables))
            conn.execute(f"CREATE PUBLICATION {quote(name)} FOR TABLE {listed}")
            log.warning("publication %s lists today's tables only (no right to publish a schema)", name)

    def _ensure_slot(self, conn: Any, known: Sequence[Mapping[str, Any]]) -> int:
        """The LSN to stream from: the oldest stored position, or a new slot's start."""
        found = conn.execute(
            "SELECT confirmed_flush_lsn::text, database, plugin FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [self.url.slot],
        ).fetchone()
        if found is not None:
            confirmed, database, plugin = found
            if database != self.url.database or plugin != "pgoutput":
                raise CdcSourceError(
                    f"replication slot {self.url.slot!r} on {self.key} belongs to database {database!r} "
                    f"with plugin {plugin!r}; pass another ?slot= name"
                )
            stored = [self.order_of(p)[0] for p in known]
            return min(stored) if stored else parse_lsn(str(confirmed))
        if known:
            raise CdcSourceError(
                f"replication slot {self.url.slot!r} is missing on {self.key}, but ODS tables hold "
                "positions of it: the changes since then are gone from the server. Drop the ODS tables "
                "of this source (and their dead letters) to snapshot again, or pass the right ?slot="
            )
        import psycopg

        with psycopg.connect(**self.url.settings(replication=True), autocommit=True) as repl:
            sql = f"CREATE_REPLICATION_SLOT {quote(self.url.slot)} LOGICAL pgoutput NOEXPORT_SNAPSHOT"
            result = repl.pgconn.exec_(sql.encode())
            if result.error_message:
                raise CdcSourceError(
                    f"cannot create replication slot {self.url.slot!r} on {self.key}: "
                    f"{result.error_message.decode(errors='replace')}"
                )
            return parse_lsn(bytes(result.get_value(0, 1) or b"").decode())

    def _plan_snapshot(self, table: str, spec: PgTable, stored: Mapping[str, Any] | None) -> None:
        if self.snapshot_mode == "never":
            return
        state = stored.get("snapshot") if stored is not None else None
        seen = stored.get("columns") if stored is not None else None
        if seen is not None and seen != _shape(spec):
            # altered while we were away (the WAL has no DDL): ADD COLUMN ... DEFAULT filled rows
            # without row changes, so the table is read again in its new shape
            self._snaps[table] = _Snap(spec, estimate=self._estimate(table))
            return
        if isinstance(state, dict) and state.get("done"):
            return
        snap = _Snap(spec, estimate=self._estimate(table))
        if isinstance(state, dict):
            after = state.get("after")
            snap.after = [str(v) for v in after] if isinstance(after, list) else None
            snap.rows, snap.chunks = int(state.get("rows", 0)), int(state.get("chunks", 0))
        self._snaps[table] = snap

    def _estimate(self, table: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
                [qualified(table)],
            )
            .fetchone()
        )
        return int(row[0]) if row else 0

    def _emit_watermark(self, kind: str) -> str:
        token = f"{kind}:{uuid.uuid4().hex}"
        self._conn().execute("SELECT pg_logical_emit_message(false, %s, %s)", [WATERMARK_PREFIX, token])
        return token

    # -- snapshot chunks ------------------------------------------------------------------------------

    def _read_chunk(self) -> None:
        if not self._snaps:
            return
        table = min(self._snaps)
        snap = self._snaps[table]
        for _ in range(_CHUNK_RETRIES):
            try:
                snapshot, fetched = self._select_chunk(table, snap)
            except Exception as exc:
                if self.describe(table) is None:  # dropped meanwhile: nothing left to snapshot
                    del self._snaps[table]
                    return
                raise CdcSourceError(f"snapshot chunk of {table} failed: {exc}") from exc
            if not snapshot.running & self._before_start:
                break
            time.sleep(0.01)  # a transaction from before the start is still ending: read again
        else:
            return  # try again at the next poll
        spec = snap.table
        index = [i for i, c in enumerate(spec.columns) if c.name in spec.primary_key]
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        dead: list[tuple[dict[str, Any], str]] = []
        last: list[str] | None = snap.after
        for values in fetched:
            last = [values[i].decode() for i in index]
            try:
                row = load_row(self._loader, spec.columns, values)
            except BadValueError as exc:
                texts = {
                    c.name: None if v is None else v.decode()
                    for c, v in zip(spec.columns, values, strict=True)
                }
                dead.append((texts, str(exc)))
                continue
            rows[tuple(row[spec.columns[i].name] for i in index)] = row
        self._recent = [entry for entry in self._recent if not snapshot.sees(entry[0])]
        for _xid, changed, key in self._recent:
            if changed == table:
                rows.pop(key, None)  # the stream already carried a newer state of this key
        token = self._emit_watermark("chunk")
        done, read = len(fetched) < self.chunk_size, len(fetched)
        self._chunk = _Chunk(table, rows, snapshot, token, last, done, read, dead)

    def _select_chunk(self, table: str, snap: _Snap) -> tuple[_Snapshot, list[list[bytes]]]:
        spec = snap.table
        # qualified: ORDER BY a bare name would sort by the ::text output column
        # char(n) as is: its cast to text would drop the padding the stream keeps
        cols = ", ".join(
            f"_t.{quote(c.name)}" + ("" if c.type_oid == _BPCHAR else "::text") for c in spec.columns
        )
        key_cols = [c for c in spec.columns if c.name in spec.primary_key]
        keys = ", ".join(f"_t.{quote(c.name)}" for c in key_cols)
        sql = f"SELECT {cols} FROM {qualified(table)} AS _t"
        params: list[Any] = []
        if snap.after is not None:
            casts = ", ".join(f"CAST(%s AS {c.sql_type})" for c in key_cols)
            sql += f" WHERE ({keys}) > ({casts})"
            params = list(snap.after)
        sql += f" ORDER BY {keys} LIMIT {int(self.chunk_size)}"
        conn = self._conn()
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            (text,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
            cur = conn.cursor()
            cur.adapters.register_loader("text", _RawText)
            cur.adapters.register_loader("bpchar", _RawText)
            fetched = cur.execute(sql, params).fetchall()
        finally:
            conn.execute("COMMIT")
        return _Snapshot.parse(str(text)), fetched

    def _chunk_group(self, lsn: int) -> ChangeGroup:
        chunk = self._chunk
        assert chunk is not None
        self._chunk = None
        snap = self._snaps[chunk.table]
        snap.after, snap.done = chunk.last_key, chunk.done
        snap.rows += chunk.read
        snap.chunks += 1
        if snap.done:
            del self._snaps[chunk.table]
        position = {"lsn": format_lsn(lsn), "sub": next(self._sub)}
        group = ChangeGroup(position, self.order_of(position))
        rows: Rows = [(0, row) for row in chunk.rows.values()]
        for image, error in chunk.dead:
            raw = dump_record({"table": chunk.table, "snapshot": image})
            rows.append((0, UndecodedRow({}, raw=raw, error=f"{chunk.table}: {error}")))
        group.batches[chunk.table] = ChangeBatch.of_rows(rows)
        spec = self._tables.get(chunk.table, snap.table)
        group.extras[chunk.table] = {"snapshot": snap.state(), "columns": _shape(spec)}
        if snap.rows == chunk.read:
            group.schemas[chunk.table] = spec.spec  # the first chunk of a (re)snapshot: its shape
        if self.on_progress is not None:
            estimate = max(snap.estimate, snap.rows)
            self.on_progress(SnapshotProgress(chunk.table, snap.rows, estimate, snap.chunks, snap.done))
        return group

    # -- stream ---------------------------------------------------------------------------------------

    def _stream_group(self, tx: WalTx) -> ChangeGroup:
        position = {"lsn": format_lsn(tx.end_lsn), "commit": format_lsn(tx.final_lsn), "xid": tx.xid}
        ts = tx.time // 1000 + 946_684_800_000  # protocol µs since 2000 → ms since 1970
        group = ChangeGroup(position, (tx.end_lsn, 0), source_ts_ms=ts)
        chunk = self._chunk
        tables: dict[str, Rows] = {}
        for message in tx.messages:
            if isinstance(message, Relation):
                self._on_relation(message, group)
            elif isinstance(message, Truncate):
                self._on_truncate(message, group)
            elif isinstance(message, Insert | Update | Delete):
                found = self._relations.get(message.relation)
                if found is None or found[0] not in self._tables:
                    continue
                table, columns = found
                changes = self._changes(table, columns, message, tx)
                tables.setdefault(table, []).extend(changes)
                snap = self._snaps.get(table)
                if snap is None or not changes or isinstance(changes[0][1], UndecodedRow):
                    continue
                for _, row in changes:
                    key = tuple(row.get(k) for k in snap.table.primary_key)
                    if chunk is not None and chunk.table == table and not chunk.snapshot.sees(tx.xid):
                        chunk.rows.pop(key, None)  # newer than the chunk's row, and before its watermark
                    self._recent.append((tx.xid, table, key))
        for table, rows in tables.items():
            group.batches[table] = ChangeBatch.of_rows(rows)
        return group

    def _changes(
        self, table: str, columns: tuple[Column, ...], message: Insert | Update | Delete, tx: WalTx
    ) -> Rows:
        """``(kind, row)`` changes of one row message; an image that cannot be decoded is a dead letter."""
        key = self._tables[table].primary_key
        try:
            if isinstance(message, Insert):
                return [(0, load_row(self._loader, columns, message.new))]
            old = None
            if message.old is not None and message.old_kind == "O":
                old = load_row(self._loader, columns, message.old)
            elif message.old is not None:  # the key only: the ODS table knows the rest
                old = {k: v for k, v in load_row(self._loader, columns, message.old).items() if k in key}
            if isinstance(message, Delete):
                assert old is not None
                return [(3, old)]
            unchanged = {i for i, v in enumerate(message.new) if v is UNCHANGED_TOAST}
            if unchanged and (old is None or message.old_kind != "O"):
                names = [columns[i].name for i in sorted(unchanged)]
                raise BadValueError(
                    f"column(s) {names} hold unchanged TOASTed values the server did not send "
                    f"(REPLICA IDENTITY DEFAULT); run ALTER TABLE {table} REPLICA IDENTITY FULL"
                )
            skip = {i: old[columns[i].name] for i in unchanged} if old is not None else None
            new = load_row(self._loader, columns, message.new, skip)
            if old is None:
                old = {k: new[k] for k in key}
            if any(old.get(k) != new.get(k) for k in key):
                return [(3, old), (0, new)]  # the key changed
            return [(1, old), (2, new)]
        except BadValueError as exc:
            kind = type(message).__name__.lower()
            raw = dump_record(
                {"table": table, "kind": kind, "lsn": format_lsn(tx.end_lsn), **_texts(message)}
            )
            error = f"{table} at LSN {format_lsn(tx.end_lsn)} (xid {tx.xid}): {exc}"
            if isinstance(message, Update):
                return [
                    (1, UndecodedRow({}, raw=raw, error=error)),
                    (2, UndecodedRow({}, raw=raw, error=error)),
                ]
            return [(3 if isinstance(message, Delete) else 0, UndecodedRow({}, raw=raw, error=error))]

    def _on_relation(self, message: Relation, group: ChangeGroup) -> None:
        table = f"{message.namespace}.{message.name}"
        oids = [c.type_oid for c in message.columns if c.type_oid >= _BUILTIN_OIDS]
        bases = base_types(self._conn(), oids) if oids else {}
        columns = tuple(
            Column(c.name, *bases.get(c.type_oid, (c.type_oid, c.type_modifier))) for c in message.columns
        )
        self._relations[message.oid] = (table, columns)
        if not self.filter(table):
            return
        known = self._tables.get(table)
        if known is None:
            if table in self._keyless or self.describe(table) is None:
                self._keyless.add(table)
                log.warning("skipping changes of %s: it has no primary key", table)
                return
            known = self._tables[table]
            group.schemas[table] = known.spec
            self._resnapshot(table, group)
            return
        shape = [(c.name, c.type_oid, c.type_modifier) for c in known.columns]
        if shape == [(c.name, c.type_oid, c.type_modifier) for c in columns]:
            return
        current = self.describe(table)
        if current is None:
            return
        named = {c.name: c for c in self._tables[table].columns}
        updated = PgTable(table, tuple(named.get(c.name, c) for c in columns), known.primary_key)
        self._tables[table] = updated
        group.schemas[table] = current
        if self.snapshot_mode == "initial" and set(updated.spec.schema.names) - {c[0] for c in shape}:
            self._resnapshot(table, group)  # ADD COLUMN ... DEFAULT fills rows without row changes
            return
        if table in self._snaps:
            self._snaps[table].table = updated
        group.extras.setdefault(table, {})["columns"] = _shape(updated)

    def _resnapshot(self, table: str, group: ChangeGroup) -> None:
        if self.snapshot_mode == "never":
            return
        if self._chunk is not None and self._chunk.table == table:
            self._chunk = None  # read with the old shape; its watermark will pass unnoticed
        snap = self._snaps[table] = _Snap(self._tables[table], estimate=self._estimate(table))
        group.extras[table] = {"snapshot": snap.state(), "columns": _shape(self._tables[table])}

    def _on_truncate(self, message: Truncate, group: ChangeGroup) -> None:
        for oid in message.relations:
            found = self._relations.get(oid)
            if found is None or found[0] not in self._tables:
                continue
            error = (
                f"TRUNCATE of {found[0]} at LSN {group.position['lsn']} cannot be applied as row changes; "
                "re-snapshot the ODS table"
            )
            raw = dump_record({"table": found[0], "kind": "truncate", "options": message.options})
            group.dead.append(DeadLetter(raw, dict(group.position), found[0], error))


def _shape(table: PgTable) -> list[list[Any]]:
    """A table's columns as ``[name, type OID, modifier]`` (stored in ODS positions, JSON-able)."""
    return [[c.name, c.type_oid, c.type_modifier] for c in table.columns]


def _texts(message: Insert | Update | Delete) -> dict[str, Any]:
    """A row message's tuples as text, for a dead letter."""

    def text(values: Sequence[Any] | None) -> list[str | None] | None:
        if values is None:
            return None
        return [
            None if v is None or v is UNCHANGED_TOAST else bytes(v).decode(errors="replace") for v in values
        ]

    if isinstance(message, Insert):
        return {"new": text(message.new)}
    if isinstance(message, Delete):
        return {"old": text(message.old)}
    return {"old": text(message.old), "new": text(message.new)}


class _RawText(Loader):
    """A psycopg loader that keeps a text column's bytes (chunks select every column ``::text``)."""

    def load(self, data: Any) -> bytes:
        return bytes(data)
