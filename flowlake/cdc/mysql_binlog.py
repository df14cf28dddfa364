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
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from flowlake.cdc.handoff import Handoff, ReaderThread
from flowlake.cdc.mysql_gtid import AnyGtids
from flowlake.cdc.mysql_rows import TablePlan, decode_event, plan_table
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
    """Reads the binlog into the source's queue: whole transactions, and bare positions."""

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

    def stop(self) -> None:
        self._stopping.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self.join(timeout=5)

    def _read(self) -> None:
        binlog, events, row_events = (
            optional_module("pymysqlreplication"),
            optional_module("pymysqlreplication.event"),
            optional_module("pymysqlreplication.row_event"),
        )
        BinLogStreamReader = binlog.BinLogStreamReader
        gtid_events = (events.MariadbGtidEvent, events.GtidEvent)
        row_types = (row_events.WriteRowsEvent, row_events.UpdateRowsEvent, row_events.DeleteRowsEvent)
        QueryEvent, XidEvent, TableMapEvent = events.QueryEvent, events.XidEvent, row_events.TableMapEvent
        new_file = (events.FormatDescriptionEvent, events.RotateEvent)
        decoders: dict[int, dict[str, ColumnDecoder]] = {}
        plans: dict[int, TablePlan | None] = {}

        src = self.settings
        self._stream = stream = BinLogStreamReader(
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
        tx: TxItem | None = None
        for event in stream:
            if self._stopping.is_set():
                return
            here = (str(stream.log_file), int(stream.log_pos))
            if isinstance(event, new_file):
                stream.table_map.clear()
                decoders.clear()
                plans.clear()
            elif isinstance(event, TableMapEvent):
                if src.tables(f"{event.schema}.{event.table}"):  # before its rows events are read
                    note_table_map(event, decoders, plans)
            elif isinstance(event, gtid_events):
                tx = TxItem(here[0], here[1], str(getattr(event, "gtid", "")) or None, ts=event.timestamp)
            elif isinstance(event, row_types):
                table = f"{event.schema}.{event.table}"
                if tx is None:
                    tx = TxItem(here[0], here[1], None, ts=event.timestamp)
                if src.tables(table):
                    table_id = int(event.table_id)
                    add_rows(tx, table, event, decoders.get(table_id, {}), plans.get(table_id))
            elif isinstance(event, XidEvent):
                self._finish(tx, here)
                tx = None
            elif isinstance(event, QueryEvent):
                tx = self._query(tx, event, here)
            elif tx is None:
                self._put(here)

    def _start_args(self) -> dict[str, Any]:
        """Where the dump starts: a binlog file/offset, or a GTID state."""
        if self.start_at is not None:
            # its MariaDB mode ignores log_file/log_pos (GTID only): by file/offset it is MySQL mode
            return {"log_file": self.start_at[0], "log_pos": self.start_at[1], "is_mariadb": False}
        # MariaDB: @slave_connect_state (with @slave_gtid_strict_mode); MySQL: COM_BINLOG_DUMP_GTID
        return {"auto_position": str(self.gtids), "is_mariadb": self.settings.mariadb}

    def _query(self, tx: TxItem | None, event: Any, here: tuple[str, int]) -> TxItem | None:
        """``BEGIN`` opens a transaction; ``COMMIT`` or a DDL statement finishes one."""
        query = str(event.query).strip()
        if query.upper() == "BEGIN":
            return tx
        if tx is None:
            tx = TxItem(here[0], here[1], None, ts=event.timestamp)
        if query.upper() != "COMMIT":
            self._ddl(tx, query, event)
        self._finish(tx, here)
        return None

    def _ddl(self, tx: TxItem, query: str, event: Any) -> None:
        match = DDL_TABLE.match(query)
        if match is None:
            return
        verb, name = match.group(1).upper(), match.group(2)
        parts = [p.strip().strip("`") for p in name.split(".")]
        if len(parts) == 1:
            schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
            parts = [schema, parts[0]]
        table = f"{parts[0]}.{parts[1]}"
        if not self.settings.tables(table):
            return
        tx.ddl.append(f"{verb} {table}")

    def _finish(self, tx: TxItem | None, here: tuple[str, int]) -> None:
        if tx is None:
            self._put(here)
            return
        tx.file, tx.pos = here
        self._put(tx)


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
