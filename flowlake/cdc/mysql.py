"""MySQL/MariaDB binlog source: a lock-free chunked snapshot handed over to streaming without a gap.

Streaming. A thread reads the binlog (mysql-replication, ``binlog_format=ROW``,
``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``) from a position and turns each transaction
(GTID … XID/COMMIT, or one DDL statement) into one :class:`ChangeGroup` whose position is the binlog
file and offset just after it: a transaction boundary, from which reading can resume.

Snapshot (the DBLog / Flink CDC incremental algorithm, no global read lock). Each selected table is
read in primary-key order in chunks of ``chunk_size`` rows, ``WHERE key > last_key ORDER BY key
LIMIT n``, while the binlog keeps streaming. For each chunk the source takes a *low watermark* L
before the SELECT and a *high watermark* H after it. Stream events up to H are emitted as usual;
binlog events in (L, H] for keys of the chunk remove those keys from the chunk (the event is newer
than, or as new as, what the SELECT saw); when the stream reaches H, the remaining chunk rows are
emitted as one group, before any event after H. Every chunk row is therefore the state of its key at
H, and every later change arrives after it. On MariaDB the SELECT runs in ``START TRANSACTION WITH
CONSISTENT SNAPSHOT``, whose ``binlog_snapshot_file/position`` give the exact binlog position of the
snapshot, so L = H and the window is empty; elsewhere ``SHOW MASTER STATUS`` before and after bound it.
Events for keys that no chunk has read yet are emitted too: the ODS table computes exact
before-images, and the later chunk row equals the state the events left (a no-op).

Positions. ``{"file", "pos", "gtid", "gtids", "server"}`` for stream groups: the binlog file and
offset on the server read, the transaction's own GTID, the server's full GTID state just after it
(every domain, or the whole MySQL GTID set) and the server's id; chunk groups add ``"sub"``, a
per-run increasing number, so a chunk sorts after the stream group that ends at the same place. Each
ODS table also stores its snapshot progress (``{"snapshot": {"done", "after", "rows", "chunks"}}``).
On restart streaming resumes at the oldest table position; tables whose snapshot was not done
continue after their last key, and tables without a position are snapshotted from scratch.

Resume by GTID. When the server has GTIDs (MariaDB always; MySQL with ``gtid_mode=ON``) streaming
resumes from the GTID state every stored position holds (their per-domain minimum, or the
intersection of MySQL sets), and a group is skipped for a table whose stored state holds the
group's transaction (:class:`flowlake.cdc.mysql_gtid.ResumeOrder`), so the positions stay right on
any server of the replication topology (a failover to a replica). A position stored without a state
(an older flowlake) is converted with ``BINLOG_GTID_POS(file, pos)`` on MariaDB; on MySQL, or with
``?gtid=off``, reading resumes by file/offset, which is refused on a server other than the one that
wrote the position. A server lacking transactions a table holds is refused too (a lagging replica).

Schema changes. A DDL statement on a selected table re-reads its shape from information_schema and
puts it in the group (``ALTER TABLE … ADD COLUMN`` becomes ODS schema evolution). Because an ALTER can
change existing rows without writing row events (``ADD COLUMN … DEFAULT 7`` fills every row in place),
an altered table is snapshotted again (chunked and lock-free as before; unchanged rows are no-ops in
the ODS table), and the group records that its snapshot is pending, so a crash cannot skip it. A new
table that matches the selection is snapshotted. ``TRUNCATE`` cannot be expressed as row changes and
becomes a dead letter.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa

from flowlake.cdc.batch import ChangeBatch, Rows
from flowlake.cdc.handoff import Handoff
from flowlake.cdc.mysql_binlog import (
    SMALL_TX_CHANGES,
    BinlogReader,
    CdcSourceError,
    ReaderSettings,
    TxItem,
    TxRun,
    optional_module,
)
from flowlake.cdc.mysql_gtid import Flavour, GtidTracker, ResumeOrder, StoredOrders, stored_gtids
from flowlake.cdc.mysql_resume import PositionError, gtid_strict, resume_point, server_identity
from flowlake.cdc.mysql_rows import DecodedEvent
from flowlake.cdc.mysql_schema import MySqlUrl, describe_tables, list_tables, quote
from flowlake.cdc.mysql_snapshot_arrow import (
    ArrowChunkReader,
    ArrowChunkRows,
    ArrowSnapshots,
    connectorx_available,
)
from flowlake.cdc.mysql_values import (
    select_list,
    snapshot_converters,
    text_bound_keys,
)
from flowlake.cdc.record_json import dump_record, from_json_value, to_json_value
from flowlake.cdc.source import (
    ChangeGroup,
    DeadLetter,
    Order,
    ProgressCallback,
    SnapshotProgress,
    TableFilter,
    TableSpec,
)
from flowlake.changelog import KIND_COLUMN

log = logging.getLogger(__name__)

SnapshotMode = Literal["initial", "never"]
"""``initial``: snapshot tables that have no finished snapshot; ``never``: stream only."""


_MAX_RECENT: Final = 500_000
"""Stream changes remembered for reconciling the next snapshot chunk (see ``MySqlSource._recent``)."""

_MIN_BATCH: Final = SMALL_TX_CHANGES
"""A transaction's changes of a table go as an Arrow changelog from this many on (fewer as rows)."""

_MAX_JOINED: Final = 1000
"""Changes one group of joined small transactions grows to (see ``MySqlSource._stream_group``)."""

_CHUNK_RETRIES: Final = 50
CHUNK_ROWS: Final = 5000
"""Rows per snapshot chunk read row by row (PyMySQL)."""
ARROW_CHUNK_ROWS: Final = 20_000
"""Rows per snapshot chunk read straight into Arrow: its cost is mostly per chunk (a connection's
round trips, two ``SHOW MASTER STATUS``), so larger chunks pay (a 10M-row table: 197k rows/s at
5,000 rows per chunk, 432k at 20,000)."""
"""Times a chunk is read again, 20 ms apart, when it cannot be reconciled with the stream."""


@dataclass(slots=True)
class _Snap:
    """Snapshot progress of one table."""

    spec: TableSpec
    after: list[Any] | None = None
    done: bool = False
    rows: int = 0
    chunks: int = 0
    estimate: int = 0

    def state(self) -> dict[str, Any]:
        # the last key read, in tagged JSON (bytes, durations, decimals, datetimes come back exact)
        after = None if self.after is None else to_json_value(self.after)
        return {"done": self.done, "after": after, "rows": self.rows, "chunks": self.chunks}


@dataclass(slots=True)
class _Blocks:
    """Rows events of small transactions joined to ``group``'s ``batch`` of ``table`` (``rows``), in
    order, as read by columns: made into the batch once the group is complete (``_flush_blocks``)."""

    group: ChangeGroup
    table: str
    batch: ChangeBatch
    blocks: list[tuple[tuple[str, ...], DecodedEvent]] = field(default_factory=list)


@dataclass(slots=True)
class _Chunk:
    """Rows of a chunk read between watermarks, waiting for the stream to reach ``high``."""

    table: str
    rows: dict[tuple[Any, ...], dict[str, Any]] | ArrowChunkRows
    low: tuple[str, int]
    high: tuple[str, int]
    last_key: list[Any] | None
    done: bool
    read: int


class MySqlSource:
    """Stream a MySQL/MariaDB binlog, with an initial chunked snapshot, into change groups.

    Args:
        url: ``mysql://user:password@host:port/db``; ``db`` is the default table pattern ``db.*``.
        tables: ``db.table`` glob patterns (comma-separated or a list); default ``<db>.*``.
        chunk_size: Rows per snapshot chunk (default :data:`CHUNK_ROWS`, or :data:`ARROW_CHUNK_ROWS` for a
            table read straight into Arrow).
        snapshot: ``"initial"`` (snapshot, then stream) or ``"never"`` (stream from the current end).
        server_id: Replica id to register with (random by default).
        heartbeat_s: Heartbeat period asked of the server; lets an idle stream see its end position.
        consistent_snapshot: Read chunks in ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` and take
            both watermarks from ``binlog_snapshot_position`` (MariaDB); ``False`` brackets each chunk
            with ``SHOW MASTER STATUS`` instead. ``None`` picks by server.
        on_progress: Called after every snapshot chunk.
        arrow_snapshot: Read the chunks of tables whose columns ConnectorX maps exactly straight into
            Arrow (:mod:`flowlake.cdc.mysql_snapshot_arrow`; watermarks from ``SHOW MASTER STATUS``
            before and after its SELECT). ``None``: when ``connectorx`` is installed.
        fast_binlog: Read the binlog events off the wire and the row images of plain tables by
            columns (:class:`~flowlake.cdc.mysql_binlog.BinlogReader`); ``False`` reads every event
            through mysql-replication (the same changes, slower). ``None``: the URL's ``binlog=``
            option (``fast`` unless ``binlog=library``).
    """

    def __init__(
        self,
        url: str,
        *,
        tables: str | Sequence[str] | None = None,
        chunk_size: int | None = None,
        snapshot: SnapshotMode = "initial",
        server_id: int | None = None,
        heartbeat_s: float = 0.2,
        consistent_snapshot: bool | None = None,
        on_progress: ProgressCallback | None = None,
        arrow_snapshot: bool | None = None,
        fast_binlog: bool | None = None,
    ) -> None:
        self.url = MySqlUrl.parse(url)
        default = f"{self.url.database}.*" if self.url.database else None
        self.filter = TableFilter.parse(tables if tables is not None else default)
        self.chunk_size = chunk_size
        self.snapshot_mode = snapshot
        self.server_id = server_id or random.randint(10_000, 2**31 - 1)  # noqa: S311 - not security
        self.heartbeat_s = heartbeat_s
        self.on_progress = on_progress
        self.fast_binlog = self.url.binlog == "fast" if fast_binlog is None else fast_binlog
        self.consistent_snapshot = consistent_snapshot
        self._ctl: Any = None
        self._specs: dict[str, TableSpec] = {}
        self._keyless: set[str] = set()
        self._snaps: dict[str, _Snap] = {}
        self._chunk: _Chunk | None = None
        self._queue = Handoff()
        self._reader: BinlogReader | None = None
        self._pos: tuple[str, int] = ("", 0)
        self._sub = itertools.count(time.time_ns())
        self._mariadb = True
        self._flavour: Flavour | None = None  # the server's GTIDs, if positions are compared by them
        self._gtids: GtidTracker | None = None  # the server's GTID state after the last group read
        self._by_gtid = False  # whether groups are ordered by GTID (see ``ResumeOrder``)
        self._server = ""
        # Keys that stream groups already emitted changed in tables with a pending snapshot, after
        # ``_recent_floor``. A server sends a transaction to replicas once it is in the binlog, before
        # its storage engine commits it, so the stream can be ahead of what a chunk's SELECT sees: a
        # chunk must not carry rows for these keys (see ``_reconcile``).
        self._recent: collections.deque[tuple[tuple[str, int], str, tuple[Any, ...]]] = collections.deque()
        self._recent_floor: tuple[str, int] = ("", 0)
        self._targets: dict[str, TableSpec] = {}
        self._stored_orders = StoredOrders([])
        self._join_limit = _MAX_JOINED
        self._last_beyond: tuple[Order, bool] | None = None  # (the same order is asked twice in a row)
        self._joined = 0  # changes in the group transactions may join
        # the group small transactions last joined, and the last one's file, pos, GTID, state, point
        self._tail: tuple[ChangeGroup, str, int, str, str, tuple[int, int]] | None = None  # see _settle
        self._blocks: _Blocks | None = None  # rows _take_run joined to the last group, not in it yet
        enabled = connectorx_available() if arrow_snapshot is None else arrow_snapshot
        if enabled and not connectorx_available():
            raise CdcSourceError("arrow_snapshot=True needs the connectorx package: pip install connectorx")
        self._arrow = ArrowSnapshots(self.url, enabled)

    # -- protocol -------------------------------------------------------------------------------------

    @property
    def key(self) -> str:
        """``mysql://host:port``."""
        return self.url.key

    def order_of(self, position: Mapping[str, Any]) -> Order:
        """A :class:`ResumeOrder`: by the stored GTID state where there is one, else ``(file, pos, sub)``."""
        gtids = None if self.url.gtid == "off" else stored_gtids(position)
        file, pos, sub = (
            str(position.get("file", "")),
            int(position.get("pos", 0)),
            int(position.get("sub", 0)),
        )
        return (ResumeOrder(gtids, file, pos, sub),)

    def describe(self, source_table: str) -> TableSpec | None:
        """The table's current shape from information_schema."""
        found = describe_tables(self._cursor(), [source_table]).get(source_table)
        if found is not None:
            self._specs[source_table] = found
        return found

    def target(self, source_table: str, spec: TableSpec) -> None:
        """Stream changes of ``source_table`` as Arrow changelogs in these ODS columns where they fit."""
        self._targets[source_table] = spec

    def start(
        self, resume: Mapping[str, Mapping[str, Any] | None], *, also: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        """Plan the snapshot from the stored positions, then start streaming from the oldest one."""
        cur = self._cursor()
        self._check_server(cur)
        tables = [t for t in list_tables(cur, self.filter.databases) if self.filter(t)]
        self._specs = describe_tables(cur, tables)
        for missing in sorted(set(tables) - set(self._specs)):
            log.warning("skipping %s: it has no primary key", missing)
            self._keyless.add(missing)
        stored = {t: p for t, p in resume.items() if p is not None and (p.get("file") or "gtids" in p)}
        known = [*stored.values(), *(p for p in also if p.get("file") or "gtids" in p)]
        # what the ingester compares groups with to skip them (each ODS table's and the dead letters')
        self._stored_orders = StoredOrders(
            [self.order_of(p) for p in [*resume.values(), *also] if p is not None]
        )
        subs = [int(p.get("sub", 0)) for p in known]
        self._sub = itertools.count(max([time.time_ns(), *subs]) + 1)
        for table, spec in sorted(self._specs.items()):
            self._plan_snapshot(table, spec, resume.get(table))
        self._flavour, self._server = server_identity(cur, mariadb=self._mariadb)
        if self._flavour == "mariadb" and self.url.gtid != "off" and not gtid_strict(cur):
            log.warning(
                "%s: gtid_strict_mode is OFF; resuming by GTID assumes each domain's seqs only grow "
                "(one primary per domain): set gtid_strict_mode=ON to have the server enforce it",
                self.key,
            )
        try:
            start, gtids = resume_point(
                cur, flavour=self._flavour, server=self._server, by_gtid=self.url.gtid != "off",
                stored=stored, known=known,
            )  # fmt: skip
        except PositionError as exc:
            raise CdcSourceError(f"{self.key}: {exc}") from exc
        self._gtids = None if gtids is None else GtidTracker(gtids)
        self._by_gtid = self._flavour is not None and self.url.gtid != "off"
        self._pos = self._recent_floor = start or ("", 0)
        self._reader = BinlogReader(
            self._reader_settings(), self._queue, start, gtids if start is None else None
        )
        self._reader.start()
        position: dict[str, Any] = {"file": start[0], "pos": start[1]} if start else {"file": "", "pos": 0}
        if gtids is not None:
            position["gtids"] = str(gtids)
        return position

    def _plan_snapshot(self, table: str, spec: TableSpec, stored: Mapping[str, Any] | None) -> None:
        if self.snapshot_mode == "never":
            return
        state = stored.get("snapshot") if stored is not None else None
        if isinstance(state, dict) and state.get("done"):
            return
        snap = _Snap(spec)
        if isinstance(state, dict):
            after = state.get("after")
            snap.after = list(from_json_value(after)) if isinstance(after, list) else None
            snap.rows, snap.chunks = int(state.get("rows", 0)), int(state.get("chunks", 0))
        snap.estimate = self._estimate(table)
        self._snaps[table] = snap

    def _reader_settings(self) -> ReaderSettings:
        return ReaderSettings(
            name=f"binlog-{self.key}",
            connection=self.url.settings(),
            server_id=self.server_id,
            heartbeat_s=self.heartbeat_s,
            tables=self.filter,
            mariadb=self._flavour == "mariadb",
            fast=self.fast_binlog,
        )

    def poll(self, timeout: float) -> list[ChangeGroup]:
        """Stream groups in binlog order, with each finished snapshot chunk in its place.

        A chunk is the state of its rows at its high watermark H: it goes out after every stream
        group up to H and before the first one after H, whatever order the reader thread and the
        chunk SELECT happened to run in.
        """
        groups: list[ChangeGroup] = []
        if self._chunk is None:
            self._read_chunk()
        items = self._queue.drain(0.0 if self._chunk_ready() else timeout)
        joining: ChangeGroup | None = None  # the last group, while the next transaction may join it
        for item in items:
            if isinstance(item, BaseException):
                raise CdcSourceError(f"binlog reader of {self.key} failed: {item}") from item
            if not isinstance(item, TxRun):
                joining = self._take(item, joining, groups)
            elif self._run_joins(item):
                joining = self._take_run(item, joining, groups)
            else:
                for tx in item.items():
                    joining = self._take(tx, joining, groups)
        self._flush_blocks()
        self._settle()
        if self._chunk_ready():
            groups.append(self._chunk_group())
        return groups

    def _take(
        self, item: TxItem | tuple[str, int], joining: ChangeGroup | None, groups: list[ChangeGroup]
    ) -> ChangeGroup | None:
        """Take one transaction or bare position into ``groups``; the group the next may join."""
        if self._blocks is not None:
            self._flush_blocks()
        here = (item.file, item.pos) if isinstance(item, TxItem) else item
        if self._chunk is not None and here > self._chunk.high:
            groups.append(self._chunk_group())  # the chunk is older than this transaction
            joining = None
        if isinstance(item, TxItem) and not (joining is not None and self._join_small(item, joining)):
            self._settle()
            group = self._stream_group(item, joining)
            if group is not joining:
                groups.append(group)
            joining = group if self._joinable(group) else None
            self._joined = group.size if joining is not None else 0
        self._pos = max(self._pos, here)
        if self._chunk_ready():
            self._settle()
            groups.append(self._chunk_group())
            joining = None
        return joining

    def _run_joins(self, run: TxRun) -> bool:
        """Whether every transaction of ``run`` may join a group as ``_join_small`` would let it (no
        snapshot pending, ordered by GTID, none held by a stored position): then ``_take_run``."""
        tracker = self._gtids
        if self._snaps or self._chunk is not None or not self._by_gtid or tracker is None or not run.ends:
            return False
        if tracker.peek(run.gtid(0)) is None:
            return False  # not a MariaDB GTID state
        return self._stored_orders.holds_point((run.domain, min(run.seqs))) is False

    def _take_run(
        self, run: TxRun, joining: ChangeGroup | None, groups: list[ChangeGroup]
    ) -> ChangeGroup | None:
        """``_take`` for each transaction of ``run`` (see ``_run_joins``), joining as many as fit at
        once: their rows appended to the group's, the group's position the last one's."""
        tracker, table, ends, count = self._gtids, run.table, run.ends, len(run.ends)
        assert tracker is not None
        kinds, columns, names = run.rows.kinds, run.rows.columns, run.names
        first, start = 0, 0  # the next transaction, where its rows start
        while first < count:
            batch = joining.batches.get(table) if joining is not None else None
            last = first - 1
            if batch is not None and batch.rows is not None:  # those that fit join it (_join_small)
                last = bisect.bisect_right(ends, start + self._join_limit - self._joined, first, count) - 1
            if last < first:  # the next one alone, as any transaction
                tx = TxItem(run.file, run.positions[first], run.gtid(first), ts=run.stamps[first])
                event = DecodedEvent(kinds[start : ends[first]], [c[start : ends[first]] for c in columns])
                tx.changes.append((table, -1, (names, event)))
                joining = self._take(tx, joining, groups)
                first, start = first + 1, ends[first]
                continue
            assert batch is not None and joining is not None
            stop = ends[last]
            blocks = self._blocks
            if blocks is None or blocks.batch is not batch:
                self._flush_blocks()
                blocks = self._blocks = _Blocks(joining, table, batch)
            blocks.blocks.append((names, DecodedEvent(kinds[start:stop], [c[start:stop] for c in columns])))
            self._joined += stop - start
            gtid = run.gtid(last)
            point = tracker.advance(gtid)
            assert point is not None and isinstance(point[0], int)
            self._tail = (joining, run.file, run.positions[last], gtid, tracker.text, point)
            self._pos = max(self._pos, (run.file, run.positions[last]))
            first, start = last + 1, stop
        return joining

    def _flush_blocks(self) -> None:
        """Put the rows ``_take_run`` joined to a group's batch (:attr:`_blocks`) into it: the batch
        and they as one Arrow changelog where ``_batch`` makes one of them (every row decoded by
        columns, the values fit the ODS columns), else as ``(kind, row)`` rows after the batch's."""
        pending, self._blocks = self._blocks, None
        if pending is None:
            return
        rows, entries = pending.batch.rows, [(-1, block) for block in pending.blocks]
        assert rows is not None
        head = _decoded_blocks(rows)
        made = self._batch(pending.table, head + entries) if head is not None else None
        if made is not None:
            pending.group.batches[pending.table] = made
            return
        for names, event in pending.blocks:
            values = zip(*event.columns, strict=True)
            rows += [
                (k, dict(zip(names, row, strict=True))) for k, row in zip(event.kinds, values, strict=True)
            ]

    def _join_small(self, item: TxItem, joining: ChangeGroup) -> bool:
        """The common case of ``_stream_group`` joining ``item`` to ``joining`` (one rows event of a
        table the group already has, a MariaDB GTID no stored position holds), at a fraction of its
        cost: the group's position and order become the transaction's when it is settled (its last
        transaction's, ``_settle``). ``False``, touching nothing, where ``_stream_group`` must decide.
        """
        changes, tracker, gtid = item.changes, self._gtids, item.gtid
        if item.ddl or len(changes) != 1 or changes[0][1] != -1 or not gtid or tracker is None:
            return False
        if self._snaps or self._chunk is not None or not self._by_gtid:
            return False
        table, _, (names, event) = changes[0]
        batch = joining.batches.get(table)
        count = len(event.kinds)
        if (
            batch is None
            or batch.rows is None
            or count >= _MIN_BATCH
            or self._joined + count > self._join_limit
        ):
            return False
        point = tracker.peek(gtid)
        if point is None or self._stored_orders.holds_point(point) is not False:
            return False
        tracker.advance(gtid)
        columns = event.columns
        batch.rows.extend(
            (kind, {name: column[i] for name, column in zip(names, columns, strict=True)})
            for i, kind in enumerate(event.kinds)
        )
        self._joined += count
        self._tail = (joining, item.file, item.pos, gtid, tracker.text, point)
        return True

    def _settle(self) -> None:
        """Give the group small transactions last joined (``_join_small``) the position and order of
        the last of them, as ``_stream_group`` would have."""
        tail = self._tail
        if tail is None:
            return
        self._tail = None
        group, file, pos, gtid, text, point = tail
        group.position = {"file": file, "pos": pos, "gtid": gtid, "gtids": text, "server": self._server}
        group.order = (ResumeOrder(None, file, pos, point=point, label=gtid),)

    def limit_groups(self, changes: int) -> None:
        """Join small transactions into groups of at most ``changes`` changes (and at most 1000);
        the ingester passes its ``max_rows`` (see :class:`~flowlake.cdc.source.GroupingSource`)."""
        self._join_limit = max(1, min(changes, _MAX_JOINED))

    def _joinable(self, group: ChangeGroup) -> bool:
        """Whether the next transaction may join ``group`` (see ``_stream_group``)."""
        if self._snaps or self._chunk is not None or group.dead or group.schemas or group.extras:
            return False
        if any(batch.rows is None for batch in group.batches.values()) or group.size >= self._join_limit:
            return False
        return self._beyond_stored(group.order)

    def _beyond_stored(self, order: Order) -> bool:
        """Whether no stored position (of any ODS table, or the dead letters) holds ``order``: then
        the ingester skips nothing of it for any table, and it may share a group with others."""
        last = self._last_beyond
        if last is not None and last[0] is order:
            return last[1]
        beyond = not self._stored_orders.holds(order)
        self._last_beyond = (order, beyond)
        return beyond

    def caught_up(self) -> bool:
        """Snapshot finished and the stream at the server's binlog end, read now.

        Every transaction committed before this call ends at or before that end, so ``True`` means
        each of them has been handed out by :meth:`poll`.
        """
        if self._snaps or self._chunk is not None or self._queue:
            return False
        return self._pos >= self._master_status(self._cursor())

    def close(self) -> None:
        """Stop the reader thread and close connections."""
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

    def _cursor(self) -> Any:
        pymysql = optional_module("pymysql")
        if self._ctl is None:
            try:
                self._ctl = pymysql.connect(
                    **self.url.settings(),
                    autocommit=True,
                    init_command="SET time_zone = '+00:00'",
                    conv=snapshot_converters(pymysql.converters.conversions),
                )
            except pymysql.MySQLError as exc:
                raise CdcSourceError(f"cannot connect to {self.key}: {exc}") from exc
            self._mariadb = "mariadb" in str(self._ctl.get_server_info()).lower()
            if self.consistent_snapshot is None:
                self.consistent_snapshot = self._mariadb
        return self._ctl.cursor()

    def _check_server(self, cur: Any) -> None:
        cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
        log_bin, fmt, image = cur.fetchone()
        problems = []
        if str(log_bin) not in ("1", "ON"):
            problems.append("the binlog is off (start the server with --log-bin)")
        if str(fmt).upper() != "ROW":
            problems.append(f"binlog_format is {fmt} (needs ROW)")
        if str(image).upper() != "FULL":
            problems.append(f"binlog_row_image is {image} (needs FULL)")
        with contextlib.suppress(Exception):
            cur.execute("SELECT @@binlog_row_metadata")
            (meta,) = cur.fetchone()
            if str(meta).upper() != "FULL":
                problems.append(f"binlog_row_metadata is {meta} (needs FULL, for column names)")
        if problems:
            raise CdcSourceError(f"{self.key} cannot be a CDC source: " + "; ".join(problems))

    def _master_status(self, cur: Any) -> tuple[str, int]:
        cur.execute("SHOW MASTER STATUS")
        row = cur.fetchone()
        if row is None:
            raise CdcSourceError(f"{self.key}: SHOW MASTER STATUS is empty; is the binlog on?")
        return str(row[0]), int(row[1])

    def _estimate(self, table: str) -> int:
        db, name = table.split(".", 1)
        cur = self._cursor()
        cur.execute(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, name),
        )
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    # -- snapshot chunks ------------------------------------------------------------------------------

    def _read_chunk(self) -> None:
        if not self._snaps:
            return
        table = next(iter(sorted(self._snaps)))
        snap = self._snaps[table]
        spec = snap.spec
        key = spec.primary_key
        text_keys = text_bound_keys(spec.schema, key)
        cols = ", ".join([select_list(spec.schema), *(f"CAST({quote(k)} AS CHAR)" for k in text_keys)])
        keys = ", ".join(quote(c) for c in key)
        db, name = table.split(".", 1)
        sql = f" FROM {quote(db)}.{quote(name)}"
        params: list[Any] = []
        if snap.after is not None:
            sql += f" WHERE ({keys}) > ({', '.join(['%s'] * len(key))})"
            params = list(snap.after)
        arrow = self._arrow.reader(self._cursor, table, spec, self._targets.get(table))
        limit = self.chunk_size or (ARROW_CHUNK_ROWS if arrow is not None else CHUNK_ROWS)
        sql += f" ORDER BY {keys} LIMIT {int(limit)}"
        for attempt in range(_CHUNK_RETRIES):
            try:
                got = self._select_arrow_chunk(arrow, sql, params) if arrow is not None else None
                low, high, fetched = got or self._select_chunk(f"SELECT {cols}{sql}", params)
            except optional_module("pymysql").MySQLError as exc:
                with contextlib.suppress(Exception):
                    self._cursor().execute("ROLLBACK")
                if self.describe(table) is None:  # dropped meanwhile: nothing left to snapshot
                    del self._snaps[table]
                    return
                raise CdcSourceError(f"snapshot chunk of {table} failed: {exc}") from exc
            if self._recent_floor <= low:
                break
            log.debug("chunk of %s at %s predates the remembered stream (attempt %d)", table, high, attempt)
            time.sleep(0.02)
        else:
            return  # the stream is far ahead of what the server shows; read it again next poll
        names = spec.schema.names
        by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
        rows: dict[tuple[Any, ...], dict[str, Any]] | ArrowChunkRows = by_key
        index = [names.index(k) for k in key]
        # where the next chunk starts: a key column's value as read (a BINARY key as bytes, a TIME key
        # as a duration), or a date/time key's text read beside the row (see text_bound_keys)
        bound_at = [len(names) + text_keys.index(k) if k in text_keys else names.index(k) for k in key]
        last: list[Any] | None = snap.after
        if isinstance(fetched, pa.Table):  # read into Arrow: stream keys are dropped when it is emitted
            rows = ArrowChunkRows(fetched, key)
            last = rows.last_key() or snap.after
        for values in fetched if rows is by_key else ():
            row = dict(zip(names, values[: len(names)], strict=True))
            pk = tuple(values[i] for i in index)
            by_key[pk] = row
            last = [values[i] for i in bound_at]
        read = len(fetched)
        for _, changed_table, changed_key in self._recent:
            if changed_table == table:
                rows.pop(changed_key, None)  # the stream already carries this key's newer state
        # Stream changes in (floor, H] still to come drop their keys too (``_stream_group``): the
        # wider window also covers a server whose SELECT misses transactions already in its binlog.
        self._chunk = _Chunk(table, rows, self._recent_floor, high, last, read < limit, read)

    def _select_arrow_chunk(
        self, arrow: ArrowChunkReader, tail: str, params: list[Any]
    ) -> tuple[tuple[str, int], tuple[str, int], pa.Table] | None:
        """Read a chunk with ConnectorX, on a connection of its own, so between ``SHOW MASTER STATUS``
        watermarks: (low, high, rows), or ``None`` if it cannot be read exactly."""
        cur = self._cursor()
        low = self._master_status(cur)
        fetched = arrow.read(cur.mogrify(f"SELECT {arrow.select_list}{tail}", params))
        return None if fetched is None else (low, self._master_status(cur), fetched)

    def _select_chunk(self, sql: str, params: list[Any]) -> tuple[tuple[str, int], tuple[str, int], Any]:
        """Run a chunk's SELECT between its watermarks: (low, high, rows)."""
        cur = self._cursor()
        if self.consistent_snapshot:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            low = high = (status["binlog_snapshot_file"], int(status["binlog_snapshot_position"]))
            cur.execute(sql, params)
            fetched = cur.fetchall()
            cur.execute("COMMIT")
        else:
            low = self._master_status(cur)
            cur.execute(sql, params)
            fetched = cur.fetchall()
            high = self._master_status(cur)
        return low, high, fetched

    def _chunk_ready(self) -> bool:
        return self._chunk is not None and self._pos >= self._chunk.high

    def _chunk_group(self) -> ChangeGroup:
        chunk = self._chunk
        assert chunk is not None
        self._chunk = None
        self._forget_until(chunk.high)  # later chunks are read at or after this high watermark
        snap = self._snaps[chunk.table]
        snap.after, snap.done = chunk.last_key, chunk.done
        snap.rows += chunk.read
        snap.chunks += 1
        if snap.done:
            del self._snaps[chunk.table]
        sub = next(self._sub)
        position: dict[str, Any] = {"file": chunk.high[0], "pos": chunk.high[1], "sub": sub}
        state = None
        if self._gtids is not None:
            position["gtids"], position["server"] = self._gtids.text, self._server
            state = self._gtids.state if self._by_gtid else None
        group = ChangeGroup(position, (ResumeOrder(state, chunk.high[0], chunk.high[1], sub),))
        rows = chunk.rows
        group.batches[chunk.table] = (
            rows.batch()
            if isinstance(rows, ArrowChunkRows)
            else ChangeBatch.of_rows([(0, r) for r in rows.values()])
        )
        group.extras[chunk.table] = {"snapshot": snap.state()}
        if self.on_progress is not None:
            estimate = max(snap.estimate, snap.rows)
            self.on_progress(SnapshotProgress(chunk.table, snap.rows, estimate, snap.chunks, snap.done))
        return group

    # -- stream ---------------------------------------------------------------------------------------

    def _stream_group(self, item: TxItem, joining: ChangeGroup | None = None) -> ChangeGroup:
        """The group of one transaction; or, when ``joining`` is given (a group of plain row
        changes, past every stored position, with no snapshot pending) and this transaction is of
        that kind too, ``joining`` extended by it: its changes appended and its position and order
        now this transaction's. A joined group still ends on a transaction boundary and carries the
        position after it; no stored position lies inside it, so the ingester never needs to skip
        part of one, whatever transactions a restart reads together."""
        here = (item.file, item.pos)
        position: dict[str, Any] = {"file": item.file, "pos": item.pos}
        if item.gtid:
            position["gtid"] = item.gtid
        point, gtid, tracker = None, item.gtid or "", self._gtids
        if tracker is not None:
            point = tracker.advance(gtid) if gtid else None
            position["gtids"], position["server"] = tracker.text, self._server
        if not self._by_gtid:
            point = None
        order = (ResumeOrder(None, item.file, item.pos, point=point, label=gtid),)  # by its own transaction
        chunk = self._chunk
        window = chunk is not None and chunk.low < here <= chunk.high
        batches: dict[str, ChangeBatch] = {}
        for table, entries in _by_table(item.changes).items():
            if table not in self._specs and not self._known(table):
                continue
            batch = self._batch(table, entries)
            rows = _rows(entries) if batch is None else None
            batches[table] = batch if batch is not None else ChangeBatch.of_rows(rows or [])
            snap = self._snaps.get(table)
            if rows is None or snap is None:
                continue  # (a changelog batch is never made while the table's snapshot is pending)
            for _, row in rows:
                key = tuple(row.get(k) for k in snap.spec.primary_key)
                self._remember(here, table, key)
                if window and chunk is not None and table == chunk.table:
                    chunk.rows.pop(key, None)  # the event is at least as new as the chunk's row
        if (
            joining is not None
            and not item.ddl
            and all(batch.rows is not None for batch in batches.values())
            and joining.size + sum(len(batch) for batch in batches.values()) <= self._join_limit
            and self._beyond_stored(order)
        ):
            return _join(joining, position, order, batches)
        group = ChangeGroup(position, order, batches, source_ts_ms=item.ts * 1000 or None)
        for entry in item.ddl:
            self._on_ddl(entry, group)
        return group

    def _batch(self, table: str, entries: list[tuple[int, Any]]) -> ChangeBatch | None:
        """A transaction's changes of ``table`` as an Arrow changelog in its ODS columns, when every
        rows event was read by columns, no snapshot of the table is pending (chunks need the keys) and
        every value fits its ODS column as the per-row path would build it (else ``None``)."""
        spec = self._targets.get(table)
        if spec is None or table in self._snaps or any(kind != -1 for kind, _ in entries):
            return None
        blocks: list[tuple[tuple[str, ...], DecodedEvent]] = [block for _, block in entries]
        if sum(len(event.kinds) for _, event in blocks) < _MIN_BATCH:
            return None  # building Arrow costs more than the rows of a small transaction
        wanted = set(spec.schema.names)
        if any(not wanted.issuperset(names) for names, _ in blocks):
            return None  # a column the ODS table lacks: the per-row path evolves it
        kinds = [k for _, event in blocks for k in event.kinds]
        arrays: list[pa.Array] = []
        for f in spec.schema:
            values: list[Any] = []
            for names, event in blocks:
                values += event.columns[names.index(f.name)] if f.name in names else [None] * len(event.kinds)
            try:
                array = pa.array(values, type=f.type)
            except (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError):
                return None  # the per-row path names the change that does not fit
            if f.name in spec.primary_key and array.null_count:
                return None  # the per-row path dead-letters it
            arrays.append(array)
        out = pa.schema([*(f.with_nullable(True) for f in spec.schema), pa.field(KIND_COLUMN, pa.int8())])
        changes = pa.Table.from_arrays([*arrays, pa.array(kinds, type=pa.int8())], schema=out)

        def raw(index: int) -> bytes:  # only for a dead letter
            return dump_record(changes.drop_columns([KIND_COLUMN]).slice(index, 1).to_pylist()[0])

        return ChangeBatch(changes, np.arange(len(kinds)), raw)

    def _remember(self, here: tuple[str, int], table: str, key: tuple[Any, ...]) -> None:
        """Note a key a stream group changed, for chunks read later (``_read_chunk`` drops it)."""
        recent = self._recent
        recent.append((here, table, key))
        if len(recent) > _MAX_RECENT:
            self._recent_floor = max(self._recent_floor, recent.popleft()[0])

    def _forget_until(self, position: tuple[str, int]) -> None:
        """Forget stream keys at or before ``position``: no later chunk is read before it."""
        recent = self._recent
        while recent and recent[0][0] <= position:
            recent.popleft()
        self._recent_floor = max(self._recent_floor, position)

    def _known(self, table: str) -> bool:
        """Whether ``table`` can be ingested (has a primary key); asks the server once per table."""
        if table in self._keyless:
            return False
        if self.describe(table) is not None:
            return True
        log.warning("skipping changes of %s: it has no primary key", table)
        self._keyless.add(table)
        return False

    def _on_ddl(self, entry: str, group: ChangeGroup) -> None:
        verb, _, table = entry.partition(" ")
        if verb == "TRUNCATE":
            error = "TRUNCATE TABLE cannot be applied as row changes; re-snapshot the ODS table"
            group.dead.append(DeadLetter(entry.encode(), dict(group.position), table, error))
        self._keyless.discard(table)
        spec = self.describe(table)
        if spec is None:
            return
        group.schemas[table] = spec
        if self.snapshot_mode == "never" or verb not in ("ALTER", "CREATE"):
            if table in self._snaps:
                self._snaps[table].spec = spec
            return
        # A new table is snapshotted; an altered one is snapshotted again, because ALTER can change
        # existing rows without row events (ADD COLUMN ... DEFAULT fills them in place).
        if self._chunk is not None and self._chunk.table == table:
            self._chunk = None  # read with the old shape; the new snapshot reads those rows again
        snap = self._snaps[table] = _Snap(spec, estimate=self._estimate(table))
        group.extras[table] = {"snapshot": snap.state()}


def _join(
    group: ChangeGroup, position: dict[str, Any], order: Order, batches: dict[str, ChangeBatch]
) -> ChangeGroup:
    """Extend ``group`` (rows batches) by a later transaction's rows ``batches``, ending where it ends."""
    group.position, group.order = position, order
    for table, batch in batches.items():
        have = group.batches.get(table)
        if have is None:
            group.batches[table] = batch
        elif have.rows is not None and batch.rows is not None:
            have.rows.extend(batch.rows)
    return group


def _by_table(changes: list[tuple[str, int, Any]]) -> dict[str, list[tuple[int, Any]]]:
    out: dict[str, list[tuple[int, Any]]] = {}
    for table, kind, entry in changes:
        out.setdefault(table, []).append((kind, entry))
    return out


def _decoded_blocks(rows: Rows) -> list[tuple[int, Any]] | None:
    """``(kind, row)`` changes as ``_batch`` entries (one rows event each), or ``None`` if one is not
    a plain decoded row (an :class:`~flowlake.cdc.batch.UndecodedRow` must stay one)."""
    out: list[tuple[int, Any]] = []
    for kind, row in rows:
        if type(row) is not dict:
            return None
        out.append((-1, (tuple(row), DecodedEvent([kind], [[value] for value in row.values()]))))
    return out


def _rows(entries: list[tuple[int, Any]]) -> Rows:
    """A table's changes as ``(kind, row)``, rows events read by columns made into rows, in order."""
    rows: Rows = []
    for kind, entry in entries:
        if kind != -1:
            rows.append((kind, entry))
            continue
        names, event = entry
        for i, k in enumerate(event.kinds):
            rows.append((k, {name: column[i] for name, column in zip(names, event.columns, strict=True)}))
    return rows
