"""The replication-stream reader thread of the PostgreSQL source.

:class:`WalReader` speaks the walsender's COPY BOTH sub-protocol over psycopg's libpq connection
(frames and pgoutput messages decoded by :mod:`flowlake.cdc.pgoutput`) and queues, in LSN order, one
:class:`WalTx` per committed transaction, a :class:`Watermark` per watermark message the source emitted,
and, last, the exception that stopped it. It reports the acknowledged LSN (what ODS holds) to the server
as standby status, so the slot keeps the WAL a restart still needs. The source
(:mod:`flowlake.cdc.postgres`) turns the queue into change groups.
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from flowlake.cdc.handoff import Handoff, ReaderThread
from flowlake.cdc.mysql_binlog import CdcSourceError
from flowlake.cdc.pgoutput import (
    Begin,
    Commit,
    Keepalive,
    LogicalMessage,
    PgMessage,
    decode_frame,
    decode_message,
    format_lsn,
    status_update,
)
from flowlake.cdc.postgres_schema import quote

_log = logging.getLogger(__name__)

SLOT_BUSY_WAIT_S = 75.0
"""How long a reader waits for its replication slot to be released by an earlier connection's
walsender: one that just closed is gone within a moment, one of a killed process once the server's
``wal_sender_timeout`` (60 s by default) notices (as Debezium's ``slot.max.retries`` does)."""
_OBJECT_IN_USE = b"55006"

WATERMARK_PREFIX: Final = "flowlake.watermark"
"""The prefix of the logical messages that mark chunk and idle-check watermarks."""


@dataclass(frozen=True, slots=True)
class WalReaderSettings:
    """What the reader needs of its source: where to connect, the slot and the publication."""

    name: str
    key: str  # the source's key, for messages
    connection: dict[str, Any]
    slot: str
    publication: str
    status_interval: float


@dataclass(slots=True)
class WalTx:
    """One transaction as the reader thread received it: its messages in order."""

    xid: int
    final_lsn: int
    time: int
    messages: list[PgMessage] = field(default_factory=list)
    end_lsn: int = 0


@dataclass(frozen=True, slots=True)
class Watermark:
    """A watermark message reached in the stream."""

    lsn: int
    token: str


class WalReader(ReaderThread):
    """Reads the replication stream into the source's queue: whole transactions and watermarks."""

    def __init__(
        self,
        settings: WalReaderSettings,
        handoff: Handoff,
        start: int,
        acknowledged: Callable[[], int],
    ) -> None:
        super().__init__(settings.name, handoff)  # transactions (WalTx), watermarks, the exception
        self.settings = settings
        self.acknowledged = acknowledged  # the LSN the source's ODS commits hold: confirmed to the server
        self.start_at = start
        self._conn: Any = None
        self._sent = -1
        self._last_status = 0.0

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=10)

    def _put(self, item: Any, *, wake: bool = True) -> None:
        # while the ingester is behind, status updates keep the walsender alive
        self.handoff.put(item, self._stopping.is_set, while_full=self._status, wake=wake)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._status(force=True)
            with contextlib.suppress(Exception):
                self._conn.close()

    def _start_replication(self, pgconn: Any, command: bytes) -> None:
        """Send ``START_REPLICATION``; while the slot is still held by an earlier connection's
        walsender (SQLSTATE 55006), try again for up to :data:`SLOT_BUSY_WAIT_S`."""
        from psycopg import pq

        src = self.settings
        deadline, delay = time.monotonic() + SLOT_BUSY_WAIT_S, 0.1
        while True:
            result = pgconn.exec_(command)
            if result.status == pq.ExecStatus.COPY_BOTH:
                return
            message = result.error_message.decode(errors="replace").strip()
            busy = result.error_field(pq.DiagnosticField.SQLSTATE) == _OBJECT_IN_USE
            if not busy or time.monotonic() > deadline or self._stopping.is_set():
                waited = f" (waited {SLOT_BUSY_WAIT_S:.0f} s for the slot)" if busy else ""
                raise CdcSourceError(f"START_REPLICATION on {src.key} failed{waited}: {message}")
            _log.info(
                "%s: slot %s is held by an earlier connection (%s); retrying", src.key, src.slot, message
            )
            self._stopping.wait(delay)
            delay = min(2.0, delay * 2)

    def _read(self) -> None:
        import psycopg

        src = self.settings
        self._conn = psycopg.connect(**src.connection, autocommit=True)
        pgconn = self._conn.pgconn
        publication = src.publication.replace("'", "''")
        sql = (
            f"START_REPLICATION SLOT {quote(src.slot)} LOGICAL {format_lsn(self.start_at)} "
            f"(proto_version '1', publication_names '{quote(publication)}', messages 'true')"
        )
        self._start_replication(pgconn, sql.encode())
        pgconn.nonblocking = 1
        tx: WalTx | None = None
        while not self._stopping.is_set():
            self._status()
            size, data = pgconn.get_copy_data(1)
            if size == 0:
                select.select([pgconn.socket], [], [], 0.05)
                pgconn.consume_input()
                continue
            if size < 0:
                error = pgconn.get_result()
                detail = error.error_message.decode(errors="replace") if error is not None else ""
                raise CdcSourceError(f"the replication stream of {src.key} ended: {detail}")
            frame = decode_frame(bytes(data))
            if isinstance(frame, Keepalive):
                if frame.reply:
                    self._status(force=True)
                continue
            message = decode_message(frame.payload)
            if isinstance(message, Begin):
                tx = WalTx(message.xid, message.final_lsn, message.commit_time)
            elif isinstance(message, Commit):
                if tx is not None:
                    tx.end_lsn = message.end_lsn
                    self._put(tx)
                tx = None
            elif isinstance(message, LogicalMessage):
                if not message.transactional and message.prefix == WATERMARK_PREFIX:
                    self._put(Watermark(message.lsn, message.content.decode()))
            elif tx is not None:
                tx.messages.append(message)

    def _status(self, *, force: bool = False) -> None:
        """Report the acknowledged LSN when it moved, every ``status_interval`` s, or when asked."""
        ack = self.acknowledged()
        now = time.monotonic()
        if not force and ack == self._sent and now - self._last_status < self.settings.status_interval:
            return
        micros = int((time.time() - 946_684_800) * 1_000_000)
        pgconn = self._conn.pgconn
        pgconn.put_copy_data(status_update(ack, ack, ack, now_micros=micros))
        pgconn.flush()
        self._sent, self._last_status = ack, now
