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


SMALL_TX_CHANGES: Final = 32
"""A transaction of fewer row images than this may travel in a :class:`TxRun` (and the source joins
it to others' rows; from this many on it gets an Arrow changelog of its own)."""

RUN_MAX: Final = 128
"""Transactions one :class:`TxRun` holds at most."""


@dataclass(slots=True)
class TxRun:
    """Consecutive small transactions as the fast path reads them: each a MariaDB GTID of one
    domain and server and one rows event of one table read by columns (fewer than
    :data:`SMALL_TX_CHANGES` images), in one binlog file. One object for them all, their values in
    one :class:`DecodedEvent` and their GTIDs, positions and timestamps as lists of integers:
    :meth:`items` gives the :class:`TxItem` of each, as the reader would have queued them.
    """

    file: str
    table: str
    names: tuple[str, ...]
    domain: int
    server: int
    rows: DecodedEvent
    entry: Any = None  # the table map entry its rows were read with
    ends: list[int] = field(default_factory=list)  # per transaction: where its rows end in ``rows``
    seqs: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # the position after each transaction
    stamps: list[int] = field(default_factory=list)  # each transaction's timestamp (seconds)

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def handoff_weight(self) -> int:
        """What it weighs in the hand-off (:func:`flowlake.cdc.handoff.weight_of`): its transactions."""
        return len(self.ends)

    def gtid(self, index: int) -> str:
        """Transaction ``index``'s GTID (``domain-server-seq``)."""
        return f"{self.domain}-{self.server}-{self.seqs[index]}"

    def take(self, start: int) -> DecodedEvent:
        """Remove the rows from ``start`` on (those of a transaction not finished) and return them."""
        rows = self.rows
        out = DecodedEvent(rows.kinds[start:], [column[start:] for column in rows.columns])
        cut(rows, start)
        return out

    def items(self) -> list[TxItem]:
        """Each transaction as a :class:`TxItem`, in order."""
        out: list[TxItem] = []
        kinds, columns, start = self.rows.kinds, self.rows.columns, 0
        for i, end in enumerate(self.ends):
            event = DecodedEvent(kinds[start:end], [column[start:end] for column in columns])
            changes: list[tuple[str, int, Any]] = [(self.table, -1, (self.names, event))]
            out.append(TxItem(self.file, self.positions[i], self.gtid(i), changes, ts=self.stamps[i]))
            start = end
        return out


def cut(rows: DecodedEvent, start: int) -> None:
    """Cut ``rows``' lists back to their first ``start`` images."""
    del rows.kinds[start:]
    for column in rows.columns:
        del column[start:]


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
        self._run: TxRun | None = None  # small transactions read, not yet queued (the fast path)

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

    def _put(self, item: Any, *, wake: bool = True) -> None:
        """Queue the small transactions read before ``item`` (:attr:`_run`), then ``item``."""
        if self._run is not None:
            self._flush_run()
        super()._put(item, wake=wake)

    def _flush_run(self) -> None:
        """Queue :attr:`_run`'s finished transactions (rows of one not finished are dropped: this
        is only called between transactions, or when the reader ends)."""
        run, self._run = self._run, None
        if run is None or not run.ends:
            return
        if len(run.rows.kinds) > run.ends[-1]:
            cut(run.rows, run.ends[-1])
        super()._put(run, wake=self._wake)

    def _before_wait(self) -> None:
        """Before the reader blocks on its connection: queue the run unless a transaction of it is
        unfinished (its end is on the way), and wake the poller."""
        run = self._run
        if run is not None and len(run.rows.kinds) == (run.ends[-1] if run.ends else 0):
            self._flush_run()
        self.handoff.wake()

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
        # A MariaDB transaction is read "light" (no TxItem) while it may go into a TxRun:
        # (domain, server, seq, ts, file, pos after its GTID); ``mark``: where its rows start in the run.
        light: tuple[int, int, int, int, str, int] | None = None
        mark, gtid_body = -1, ev.MARIADB_GTID_BODY.unpack_from
        for packet in wire.events(self._before_wait):
            if stopping():
                return
            ts, kind, server_id, _size, log_pos, _flags = unpack_header(packet, 1)
            if light is not None and kind != ev.TABLE_MAP:
                if kind == ev.XID and mark >= 0:
                    pos = log_pos or pos
                    self._commit_light(light, pos)
                    light, mark = None, -1
                    continue
                if kind in rows_kind and mark < 0:
                    entry = known.get(int.from_bytes(packet[20:26], "little"))
                    pos = log_pos or pos
                    if entry is None or not entry.wanted:
                        continue  # (as below)
                    header = rows_v1_header if kind < ev.WRITE_V2 else rows_v2_header
                    mark = self._light_rows(light, entry, packet[20 : len(packet) - trim], kind, header, file)
                    if mark >= 0:
                        if self._run_rows() - mark >= SMALL_TX_CHANGES:  # a larger one: its own TxItem
                            self._tx = self._materialize(light, mark)
                            light, mark = None, -1
                        continue
                elif kind == ev.QUERY:
                    _, query = ev.query_parts(packet[20 : len(packet) - trim], query_header)
                    if query == b"BEGIN":
                        pos = log_pos or pos
                        continue
                self._tx = self._materialize(light, mark)  # any other event: an ordinary transaction
                light, mark = None, -1
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
                seq, domain, _ = gtid_body(packet, 20)
                self._tx, light, mark = None, (domain, server_id, seq, ts, file, pos), -1
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

    def _light_rows(
        self, light: tuple[int, int, int, int, str, int], entry: _FastTable, body: bytes, kind: int,
        header: int, file: str,
    ) -> int:  # fmt: skip
        """Read a light transaction's rows event into the run (a new one if the open one is of
        another table, domain, server or file); where its rows start there, or -1 if not read."""
        if entry.plan is None or entry.plan.read_into is None:
            return -1
        run = self._run
        if run is None or run.entry is not entry or run.file != file or (run.domain, run.server) != light[:2]:
            if run is not None:
                self._flush_run()
            rows = DecodedEvent([], [[] for _ in entry.names])
            run = self._run = TxRun(file, entry.name, entry.names, light[0], light[1], rows, entry)
        start = len(run.rows.kinds)
        return start if entry.decode_into(body, kind, header, run.rows) else -1

    def _run_rows(self) -> int:
        """Row images in the open run (0: none open)."""
        return 0 if self._run is None else len(self._run.rows.kinds)

    def _commit_light(self, light: tuple[int, int, int, int, str, int], pos: int) -> None:
        """A light transaction's XID: it is one more of the run's (queued when the run is full)."""
        run = self._run
        assert run is not None
        run.ends.append(len(run.rows.kinds))
        run.seqs.append(light[2])
        run.positions.append(pos)
        run.stamps.append(light[3])
        if len(run.ends) >= RUN_MAX:
            self._flush_run()

    def _materialize(self, light: tuple[int, int, int, int, str, int], mark: int) -> TxItem:
        """The :class:`TxItem` of a light transaction that turns out not to fit a run, with the
        rows it has in the run (from ``mark``, unless -1) taken out of it."""
        domain, server, seq, ts, file, pos = light
        tx = TxItem(file, pos, f"{domain}-{server}-{seq}", ts=ts)
        run = self._run
        if mark >= 0 and run is not None:
            tx.changes.append((run.table, -1, (run.names, run.take(mark))))
        return tx

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
            images = self._images(body, event_type, header)
            return None if images is None else plan.read(images, _IMAGE_KINDS[event_type])
        except (ValueError, struct.error, LookupError, IndexError):  # as decode_event
            return None

    def decode_into(self, body: bytes, event_type: int, header: int, out: DecodedEvent) -> bool:
        """:meth:`decode` appending to ``out``; ``False`` (``out`` as it was) where it returns ``None``."""
        plan = self.plan
        if plan is None or plan.read_into is None:
            return False
        start = len(out.kinds)
        try:
            images = self._images(body, event_type, header)
            if images is None:
                return False
            plan.read_into(images, _IMAGE_KINDS[event_type], out)
            return True
        except (ValueError, struct.error, LookupError, IndexError):  # as decode_event
            cut(out, start)
            return False

    def _images(self, body: bytes, event_type: int, header: int) -> bytes | None:
        """The row images of a rows event with every column present, else ``None``.

        Raises:
            ValueError: If the bytes end early.
        """
        full = self.full
        if event_type < ev.WRITE_V2 and body[header] < 251:  # v1, under 251 columns: inline
            start = header + 1 + len(full)
            if body[header] != len(self.names) or body[header + 1 : start] != full:
                return None
            if event_type == ev.UPDATE_V1:  # an update's second bitmap
                if body[start : start + len(full)] != full:
                    return None
                start += len(full)
            return body[start:]
        rows = ev.rows_body(body, event_type, header)
        if rows.columns != len(self.names) or rows.present != full:
            return None
        if rows.present_after is not None and rows.present_after != full:
            return None
        return rows.images


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
