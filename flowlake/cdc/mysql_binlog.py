"""The binlog reader thread of the MySQL/MariaDB source: whole transactions from the server's binlog.

:class:`BinlogReader` reads the binlog through mysql-replication and queues, in binlog order, one
:class:`TxItem` per transaction (its rows, read by columns where :mod:`flowlake.cdc.mysql_rows` has a
plan for the table, else row by row with :mod:`flowlake.cdc.mysql_values`), bare positions between
transactions (heartbeats, rotations) and, last, the exception that stopped it. The source
(:mod:`flowlake.cdc.mysql`) turns these into change groups.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from flowlake.cdc import mysql_events as ev
from flowlake.cdc.binlog_wire import DumpConnection
from flowlake.cdc.handoff import Handoff, ReaderThread
from flowlake.cdc.mysql_gtid import AnyGtids
from flowlake.cdc.mysql_rows import DecodedEvent, TablePlan, decode_event, plan_table
from flowlake.cdc.mysql_values import ColumnDecoder, row_changes, table_decoders
from flowlake.cdc.source import TableFilter
from flowlake.errors import FlowlakeError

DDL_TABLE: Final = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(ALTER|CREATE|DROP|RENAME|TRUNCATE)\s+(?:ONLINE\s+|IGNORE\s+|OR\s+REPLACE\s+|"
    r"TEMPORARY\s+)*TABLE\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?((?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?)",
    re.IGNORECASE | re.DOTALL,
)


class CdcSourceError(FlowlakeError):
    """A CDC source cannot read: the server is unreachable, misconfigured or the position is gone."""


@dataclass(frozen=True, slots=True)
class ReaderSettings:
    """What the reader needs of its source: where to connect and which tables to read."""

    name: str
    connection: dict[str, Any]
    server_id: int
    heartbeat_s: float
    tables: TableFilter
    mariadb: bool  # by GTID: MariaDB's @slave_connect_state, else MySQL's COM_BINLOG_DUMP_GTID
    fast: bool = True  # read events off the wire (see BinlogReader); False: all through mysql-replication


@dataclass(slots=True)
class TxItem:
    """One binlog transaction as the reader thread saw it."""

    file: str
    pos: int
    gtid: str | None
    changes: list[tuple[str, int, Any]] = field(default_factory=list)
    """``(table, kind, row)``, or ``(table, -1, (names, DecodedEvent))`` for a rows event read by columns."""
    ddl: list[str] = field(default_factory=list)
    ts: int = 0


class BinlogReader(ReaderThread):
    """Reads the binlog into the source's queue: whole transactions, and bare positions.

    With ``settings.fast`` (the default) events are read off the dump connection's bytes
    (:mod:`flowlake.cdc.binlog_wire`, :mod:`flowlake.cdc.mysql_events`): GTID, query, XID, rotate
    and heartbeat events, table maps already seen and rows events of tables with a by-columns plan
    cost a few ``struct`` calls each. Any other event (a format description, a new table map, a rows
    event that is not read by columns) is handed to mysql-replication's own event classes, built
    from the same bytes, and goes the library path's way, so values and dead letters are the same.
    """

    def __init__(
        self,
        settings: ReaderSettings,
        handoff: Handoff,
        start: tuple[str, int] | None,
        gtids: AnyGtids | None,
    ) -> None:
        super().__init__(settings.name, handoff)  # transactions (TxItem), bare positions, the exception
        self.settings = settings
        self.start_at = start  # by file/offset; None: by the GTID state ``gtids``
        self.gtids = gtids
        self._stream: Any = None
        self._tx: TxItem | None = None
        self._decoders: dict[int, dict[str, ColumnDecoder]] = {}
        self._plans: dict[int, TablePlan | None] = {}
        self._wake = True  # wake the poller at every item (the fast path wakes it per batch)

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self.join(timeout=5)

    def _read(self) -> None:
        if self.settings.fast:
            self._read_fast()
        else:
            self._read_library()

    def _close(self) -> None:
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()

    # -- the library path: mysql-replication reads every event ---------------------------------------

    def _read_library(self) -> None:
        binlog = optional_module("pymysqlreplication")
        src = self.settings
        self._stream = stream = binlog.BinLogStreamReader(
            connection_settings=src.connection,
            server_id=src.server_id,
            blocking=True,
            resume_stream=True,
            **self._start_args(),
            slave_heartbeat=src.heartbeat_s,
            only_schemas=src.tables.databases,
            enable_logging=False,
            # A table map is parsed once per table id (ids change with every ALTER, so a changed
            # table gets a new map); maps are forgotten at each new binlog file, as a restarted
            # server starts a new file and reuses ids. Parsing every transaction's map was the
            # largest cost of small transactions.
            freeze_schema=True,
        )
        kinds = _LibraryKinds()
        for event in stream:
            if self._stopping.is_set():
                return
            if isinstance(event, kinds.new_file):
                stream.table_map.clear()
            self._on_event(event, (str(stream.log_file), int(stream.log_pos)), kinds)

    def _on_event(self, event: Any, here: tuple[str, int], kinds: _LibraryKinds) -> None:
        """Take one mysql-replication event read at ``here`` (the position after it)."""
        src, tx = self.settings, self._tx
        if isinstance(event, kinds.new_file):
            self._decoders.clear()
            self._plans.clear()
        elif isinstance(event, kinds.table_map):
            if src.tables(f"{event.schema}.{event.table}"):  # before its rows events are read
                note_table_map(event, self._decoders, self._plans)
        elif isinstance(event, kinds.gtid):
            self._tx = TxItem(here[0], here[1], str(getattr(event, "gtid", "")) or None, ts=event.timestamp)
        elif isinstance(event, kinds.rows):
            table = f"{event.schema}.{event.table}"
            if tx is None:
                self._tx = tx = TxItem(here[0], here[1], None, ts=event.timestamp)
            if src.tables(table):
                table_id = int(event.table_id)
                add_rows(tx, table, event, self._decoders.get(table_id, {}), self._plans.get(table_id))
        elif isinstance(event, kinds.xid):
            self._finish(tx, here)
            self._tx = None
        elif isinstance(event, kinds.query):
            self._tx = self._query(tx, str(event.query), event.schema, event.timestamp, here)
        elif tx is None:
            self._put(here, wake=self._wake)

    def _start_args(self) -> dict[str, Any]:
        """Where the dump starts: a binlog file/offset, or a GTID state."""
        if self.start_at is not None:
            # its MariaDB mode ignores log_file/log_pos (GTID only): by file/offset it is MySQL mode
            return {"log_file": self.start_at[0], "log_pos": self.start_at[1], "is_mariadb": False}
        # MariaDB: @slave_connect_state (with @slave_gtid_strict_mode); MySQL: COM_BINLOG_DUMP_GTID
        return {"auto_position": str(self.gtids), "is_mariadb": self.settings.mariadb}

    # -- the fast path: events read off the wire -----------------------------------------------------

    def _read_fast(self) -> None:
        src = self.settings
        pymysql = optional_module("pymysql")
        self._stream = wire = DumpConnection(
            src.connection, src.server_id, heartbeat_s=src.heartbeat_s, start=self.start_at,
            gtids=None if self.gtids is None else str(self.gtids), mariadb=src.mariadb,
        )  # fmt: skip
        try:
            wire.open(pymysql.connect)
        except pymysql.MySQLError as exc:
            raise CdcSourceError(f"cannot start the binlog dump: {exc}") from exc
        library = LibraryEvents(src, wire, pymysql)
        try:
            self._fast_loop(wire, library)
        finally:
            library.close()

    def _fast_loop(self, wire: DumpConnection, library: LibraryEvents) -> None:  # noqa: PLR0912, PLR0915
        stopping, unpack_header = self._stopping.is_set, ev.HEADER.unpack_from
        self._wake = False  # wake the poller per batch (Handoff.put), and before each socket read
        trim = 4 if wire.checksum else 0
        file, pos = self.start_at if self.start_at is not None else ("", 0)
        known: dict[int, _FastTable | None] = {}  # table id -> what its map said (None: not read)
        rows_kind, kinds = _IMAGE_KINDS, library.kinds
        query_header, rows_v1_header, rows_v2_header = 13, 8, 10  # until the format description
        for packet in wire.events(self.handoff.wake):
            if stopping():
                return
            ts, kind, server_id, _size, log_pos, _flags = unpack_header(packet, 1)
            if kind == ev.ROTATE:
                file, pos = ev.rotation(packet[20 : len(packet) - trim])
                known.clear()
                library.table_map.clear()
                self._decoders.clear()
                self._plans.clear()
                continue
            if log_pos:
                pos = log_pos
            tx = self._tx
            if kind == ev.TABLE_MAP:
                table_id = ev.table_id(packet[20:26])
                if table_id not in known:
                    known[table_id] = self._fast_table_map(library, packet, table_id)
            elif kind in rows_kind:
                entry = known.get(ev.table_id(packet[20:26]))
                if entry is None:
                    continue  # no map read for it (a schema left out): the library skips it too
                if tx is None:
                    self._tx = tx = TxItem(file, pos, None, ts=ts)
                if not entry.wanted:
                    continue  # a table the filter leaves out
                body = packet[20 : len(packet) - trim]
                header = rows_v1_header if kind < ev.WRITE_V2 else rows_v2_header
                decoded = entry.decode(body, kind, header)
                if decoded is not None:
                    tx.changes.append((entry.name, -1, (entry.names, decoded)))
                    continue
                event = library.event(packet, self._on_new_file)
                if event is not None:
                    self._on_event(event, (file, pos), kinds)
            elif kind == ev.MARIADB_GTID:
                self._tx = TxItem(file, pos, ev.mariadb_gtid(packet[20:], server_id), ts=ts)
            elif kind == ev.XID:
                self._finish(tx, (file, pos))
                self._tx = None
            elif kind == ev.QUERY:
                schema, query = ev.query_parts(packet[20 : len(packet) - trim], query_header)
                if query != b"BEGIN":
                    text = query.decode("utf-8", errors="backslashreplace")
                    self._tx = self._query(tx, text, schema, ts, (file, pos))
            elif kind == ev.GTID:
                self._tx = TxItem(file, pos, ev.mysql_gtid(packet[20:]), ts=ts)
            elif kind == ev.FORMAT_DESCRIPTION:
                known.clear()
                event = library.event(packet, self._on_new_file)
                headers = library.post_header_lengths
                query_header = _declared(headers, ev.QUERY, 13)
                rows_v1_header = _declared(headers, ev.WRITE_V1, 8)
                rows_v2_header = _declared(headers, ev.WRITE_V2, 10)
                if event is not None:
                    self._on_event(event, (file, pos), kinds)
            elif kind == ev.PARTIAL_UPDATE_ROWS:
                event = library.event(packet, self._on_new_file)
                if event is not None:
                    self._on_event(event, (file, pos), kinds)
            elif tx is None:
                self._put((file, pos), wake=False)

    def _on_new_file(self) -> None:
        self._decoders.clear()
        self._plans.clear()

    def _fast_table_map(self, library: LibraryEvents, packet: bytes, table_id: int) -> _FastTable | None:
        """Read a table map not seen in this file through the library; note how to read its rows."""
        event = library.event(packet, self._on_new_file)
        if event is None:
            return None  # a schema the filter leaves out
        name = f"{event.schema}.{event.table}"
        wanted = self.settings.tables(name)
        if wanted:
            note_table_map(event, self._decoders, self._plans)
        plan = self._plans.get(table_id) if wanted else None
        return _FastTable(name, wanted, plan)

    # -- transactions --------------------------------------------------------------------------------

    def _query(
        self, tx: TxItem | None, query: str, schema: Any, ts: int, here: tuple[str, int]
    ) -> TxItem | None:
        """``BEGIN`` opens a transaction; ``COMMIT`` or a DDL statement finishes one."""
        query = query.strip()
        if query.upper() == "BEGIN":
            return tx
        if tx is None:
            tx = TxItem(here[0], here[1], None, ts=ts)
        if query.upper() != "COMMIT":
            self._ddl(tx, query, schema)
        self._finish(tx, here)
        return None

    def _ddl(self, tx: TxItem, query: str, schema: Any) -> None:
        match = DDL_TABLE.match(query)
        if match is None:
            return
        verb, name = match.group(1).upper(), match.group(2)
        parts = [p.strip().strip("`") for p in name.split(".")]
        if len(parts) == 1:
            default = schema.decode() if isinstance(schema, bytes) else str(schema or "")
            parts = [default, parts[0]]
        table = f"{parts[0]}.{parts[1]}"
        if not self.settings.tables(table):
            return
        tx.ddl.append(f"{verb} {table}")

    def _finish(self, tx: TxItem | None, here: tuple[str, int]) -> None:
        if tx is None:
            self._put(here, wake=self._wake)
            return
        tx.file, tx.pos = here
        self._put(tx, wake=self._wake)


def _declared(lengths: Sequence[int] | None, event_type: int, default: int) -> int:
    """An event type's post-header length as the format description declares it."""
    if not lengths or event_type - 1 >= len(lengths):
        return default
    return max(int(lengths[event_type - 1]), default)


class _FastTable:
    """What the fast path knows of a table id: its name, whether it is read, and its plan."""

    __slots__ = ("full", "name", "names", "plan", "wanted")

    def __init__(self, name: str, wanted: bool, plan: TablePlan | None) -> None:
        self.name, self.wanted, self.plan = name, wanted, plan
        self.names = plan.names if plan is not None else ()
        self.full = ev.full_bitmap(len(self.names))  # every column present

    def decode(self, body: bytes, event_type: int, header: int) -> DecodedEvent | None:
        """The rows event read by columns, or ``None`` to leave it to the library."""
        plan = self.plan
        if plan is None or plan.read is None:
            return None
        try:
            full, kinds = self.full, _IMAGE_KINDS[event_type]
            if event_type < ev.WRITE_V2 and body[header] < 251:  # v1, under 251 columns: inline
                start = header + 1 + len(full)
                if body[header] != len(self.names) or body[header + 1 : start] != full:
                    return None
                if len(kinds) == 2:  # an update's second bitmap
                    if body[start : start + len(full)] != full:
                        return None
                    start += len(full)
                return plan.read(body[start:], kinds)
            rows = ev.rows_body(body, event_type, header)
            if rows.columns != len(self.names) or rows.present != full:
                return None
            if rows.present_after is not None and rows.present_after != full:
                return None
            return plan.read(rows.images, kinds)
        except (ValueError, struct.error, LookupError, IndexError):  # as decode_event
            return None


_IMAGE_KINDS: Final = {
    ev.WRITE_V1: (0,),
    ev.WRITE_V2: (0,),
    ev.UPDATE_V1: (1, 2),
    ev.UPDATE_V2: (1, 2),
    ev.DELETE_V1: (3,),
    ev.DELETE_V2: (3,),
}
"""The kinds of the images of one row of a rows event (0 +I, 1 -U, 2 +U, 3 -D)."""


class _LibraryKinds:
    """mysql-replication's event classes, as the library path tells events apart."""

    def __init__(self) -> None:
        events = optional_module("pymysqlreplication.event")
        row_events = optional_module("pymysqlreplication.row_event")
        self.gtid = (events.MariadbGtidEvent, events.GtidEvent)
        self.rows = (row_events.WriteRowsEvent, row_events.UpdateRowsEvent, row_events.DeleteRowsEvent)
        self.query, self.xid, self.table_map = events.QueryEvent, events.XidEvent, row_events.TableMapEvent
        self.new_file = (events.FormatDescriptionEvent, events.RotateEvent)


class _LazyControl:
    """The control connection mysql-replication's events are given: its charset and server kind at
    hand, connected (to information_schema, as the library does) only if an event asks the server
    for column names, which a binlog with full row metadata never makes it do."""

    def __init__(self, connection: dict[str, Any], pymysql: Any, charset: str, mariadb: bool) -> None:
        self.charset = charset
        self._dbms = "mariadb" if mariadb else "mysql"
        self._settings, self._pymysql = connection, pymysql
        self._conn: Any = None

    def _get_dbms(self) -> str:
        return self._dbms

    def __getattr__(self, name: str) -> Any:
        if self._conn is None:
            pymysql = self._pymysql
            self._conn = pymysql.connect(
                **self._settings, db="information_schema", autocommit=True,
                cursorclass=pymysql.cursors.DictCursor,
            )  # fmt: skip
        return getattr(self._conn, name)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class LibraryEvents:
    """Builds mysql-replication's event objects from the bytes of events the fast path does not read
    itself, with the table maps, server version and post-header lengths the library would hold."""

    def __init__(self, settings: ReaderSettings, wire: DumpConnection, pymysql: Any) -> None:
        packet_module = optional_module("pymysqlreplication.packet")
        self.kinds = _LibraryKinds()
        self._wrapper = packet_module.BinLogPacketWrapper
        self._packet = pymysql.protocol.MysqlPacket
        self._allowed = frozenset(packet_module.BinLogPacketWrapper._BinLogPacketWrapper__event_map.values())
        self.table_map: dict[int, Any] = {}
        self.mysql_version: tuple[int, int, int] = (0, 0, 0)
        self.post_header_lengths: Any = None
        self.checksum = wire.checksum
        self.only_schemas = settings.tables.databases
        self.optional_meta_data = wire.row_metadata_full
        self._ctl = _LazyControl(settings.connection, pymysql, wire.charset, wire.mariadb_server)

    def event(self, packet: bytes, on_new_file: Any) -> Any:
        """The library's event for ``packet`` (status byte, header, body), or ``None`` where the library
        skips it (a table the schema filter leaves out, a rows event without its map)."""
        wrapper = self._wrapper(
            self._packet(packet, "utf8"), self.table_map, self._ctl, self.mysql_version, self.checksum,
            self._allowed, None, None, self.only_schemas, None, True, False, False,
            self.optional_meta_data, False, False, self.post_header_lengths,
        )  # fmt: skip
        event = wrapper.event
        if isinstance(event, self.kinds.new_file):
            self.table_map.clear()
            on_new_file()
            if hasattr(event, "mysql_version"):  # a format description
                self.mysql_version = event.mysql_version
                self.post_header_lengths = event.post_header_len
        return event

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl.close()


def add_rows(
    tx: TxItem, table: str, event: Any, decoders: dict[str, ColumnDecoder], plan: TablePlan | None
) -> None:
    """Append a rows event's changes with the server's values (see :mod:`flowlake.cdc.mysql_values`):
    read by columns where the table has a plan (:mod:`flowlake.cdc.mysql_rows`), else row by row."""
    row_events = optional_module("pymysqlreplication.row_event")
    if isinstance(event, row_events.UpdateRowsEvent):
        kind: Literal["insert", "update", "delete"] = "update"
    elif isinstance(event, row_events.DeleteRowsEvent):
        kind = "delete"
    else:
        kind = "insert"
    decoded = decode_event(plan, event, kind) if plan is not None else None
    if decoded is not None:
        tx.changes.append((table, -1, (plan.names if plan is not None else (), decoded)))
        return
    tx.changes += [(table, k, image) for k, image in row_changes(table, event, kind, decoders)]


def note_table_map(
    event: Any, decoders: dict[int, dict[str, ColumnDecoder]], plans: dict[int, TablePlan | None]
) -> None:
    """Note a table map's value decoders and, where its columns allow, its by-columns plan."""
    table_id = int(event.table_id)
    if table_id not in decoders:
        decoders[table_id] = table_decoders(event.columns)
        plans[table_id] = plan_table(event.columns, decoders[table_id])


def optional_module(name: str) -> Any:
    """Import an optional dependency (PyMySQL, mysql-replication) with a clear error if missing."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise CdcSourceError(
            f"the MySQL/MariaDB source needs {name!r}: pip install mysql-replication PyMySQL"
        ) from exc
