"""The binlog dump connection read off the wire: PyMySQL logs in, flowlake frames the packets.

mysql-replication reads every binlog event through PyMySQL's packet objects and a
``BinLogPacketWrapper``, a dozen Python calls and several objects per event; for small transactions
(GTID, BEGIN, table map, rows, XID: five events) that was most of the binlog source's cost.
:class:`DumpConnection` lets PyMySQL connect and authenticate, asks for the dump the way
mysql-replication does (the same ``SET`` statements, ``COM_BINLOG_DUMP`` by file/offset or by
MariaDB's ``@slave_connect_state``, ``COM_BINLOG_DUMP_GTID`` for a MySQL GTID set), then reads the
socket in large blocks and hands out the events' bytes (:meth:`DumpConnection.events`).
:class:`PacketFramer` is the framing alone, so that it can be tested on bytes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

from flowlake.errors import FlowlakeError

COM_BINLOG_DUMP: Final = 0x12
COM_BINLOG_DUMP_GTID: Final = 0x1E
_MAX_PACKET: Final = 0xFFFFFF
_READ_SIZE: Final = 1 << 20


class BinlogWireError(FlowlakeError):
    """The binlog dump connection failed: the server sent an error, or the connection ended."""


class PacketFramer:
    """Splits a byte stream into MySQL packet payloads (3-byte length, sequence id, payload); a
    payload of 16 MiB - 1 continues in the next packet.

    >>> framer = PacketFramer()
    >>> framer.feed(b"\\x02\\x00\\x00\\x01\\x00a\\x01\\x00")
    [b'\\x00a']
    >>> framer.feed(b"\\x00\\x02b")
    [b'b']
    """

    def __init__(self) -> None:
        self._data = b""
        self._partial: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Add bytes read; return the payloads now complete, in order."""
        data = self._data + chunk if self._data else chunk
        out: list[bytes] = []
        at, end = 0, len(data)
        while end - at >= 4:
            length = data[at] | data[at + 1] << 8 | data[at + 2] << 16
            stop = at + 4 + length
            if stop > end:
                break
            payload = data[at + 4 : stop]
            at = stop
            if length == _MAX_PACKET:
                self._partial.append(payload)
                continue
            if self._partial:
                payload = b"".join([*self._partial, payload])
                self._partial.clear()
            out.append(payload)
        self._data = data[at:]
        return out


def error_text(payload: bytes) -> str:
    """The code and message of an ERR packet (``0xff`` code[2] ``#`` sqlstate[5] message).

    >>> error_text(b"\\xff\\x4c\\x05#HY000Could not find first log file name")
    '1356 (HY000): Could not find first log file name'
    """
    code = int.from_bytes(payload[1:3], "little")
    rest = payload[3:]
    state = ""
    if rest[:1] == b"#":
        state, rest = rest[1:6].decode("ascii", "replace"), rest[6:]
    message = rest.decode("utf-8", "replace")
    return f"{code} ({state}): {message}" if state else f"{code}: {message}"


def dump_command(server_id: int, *, file: str | None, pos: int, gtid_set: bytes | None = None) -> bytes:
    """The dump request packet (header included): ``COM_BINLOG_DUMP`` from ``file``/``pos`` (an
    empty file name for MariaDB's ``@slave_connect_state``), or ``COM_BINLOG_DUMP_GTID`` with an
    encoded MySQL GTID set.

    >>> dump_command(7, file="mysql-bin.000001", pos=4).hex()
    '1b00000012040000000000070000006d7973716c2d62696e2e303030303031'
    """
    if gtid_set is not None:
        # flags BINLOG_THROUGH_GTID; an empty file name (3 bytes "\0\0\0" as mysql-replication sends)
        body = (
            bytes([COM_BINLOG_DUMP_GTID])
            + struct.pack("<HII", 0x04, server_id, 3)
            + b"\0\0\0"
            + struct.pack("<QI", 4, len(gtid_set))
            + gtid_set
        )
    else:
        body = bytes([COM_BINLOG_DUMP]) + struct.pack("<IHI", pos, 0, server_id) + (file or "").encode()
    return struct.pack("<I", len(body))[:3] + b"\x00" + body


class DumpConnection:
    """A binlog dump stream on a PyMySQL connection (see the module docstring).

    Args:
        settings: PyMySQL connection settings (host, port, user, password).
        server_id: The replica id to dump as.
        heartbeat_s: Heartbeat period asked of the server (0: none).
        start: A binlog file and offset to start at, or ``None`` to start at ``gtids``.
        gtids: The GTID state to start after (MariaDB ``domain-server-seq,...`` or a MySQL set).
        mariadb: Start at ``gtids`` through ``@slave_connect_state`` (else ``COM_BINLOG_DUMP_GTID``).
    """

    def __init__(
        self,
        settings: dict[str, Any],
        server_id: int,
        *,
        heartbeat_s: float,
        start: tuple[str, int] | None,
        gtids: str | None,
        mariadb: bool,
    ) -> None:
        self.settings = settings
        self.server_id = server_id
        self.heartbeat_s = heartbeat_s
        self.start = start
        self.gtids = gtids
        self.mariadb = mariadb
        self.checksum = False
        self.row_metadata_full = False
        self.charset = "utf8mb4"
        self.mariadb_server = False
        self._conn: Any = None
        self._closed = False

    def open(self, connect: Callable[..., Any]) -> None:
        """Connect (``connect`` is ``pymysql.connect``), note what the session needs to know of the
        server (checksums, full row metadata, its charset and kind), prepare it and send the dump request."""
        self._conn = conn = connect(**self.settings)
        self.charset = str(conn.charset)
        self.mariadb_server = "mariadb" in str(conn.get_server_info()).lower()
        cur = conn.cursor()
        cur.execute("SHOW VARIABLES LIKE 'BINLOG_ROW_METADATA'")
        row = cur.fetchone()
        self.row_metadata_full = row is not None and str(row[1]).upper() == "FULL"
        cur.execute("SHOW GLOBAL VARIABLES LIKE 'BINLOG_CHECKSUM'")
        row = cur.fetchone()
        self.checksum = row is not None and str(row[1]).upper() != "NONE"
        if self.checksum:
            cur.execute("SET @master_binlog_checksum= @@global.binlog_checksum")
        if self.heartbeat_s:
            net_timeout = float(self.settings.get("read_timeout", 4294967))
            period = min(net_timeout / 2.0, self.heartbeat_s, 4294967.0)
            cur.execute("SET @master_heartbeat_period = %s", (int(period * 1_000_000_000),))
        cur.execute("SET @mariadb_slave_capability=4")  # GTID events understood (see mysql-replication)
        gtid_set = None
        if self.start is not None:
            command = dump_command(self.server_id, file=self.start[0], pos=self.start[1])
        elif self.mariadb:
            cur.execute("SET @slave_connect_state = %s", (self.gtids or "",))
            cur.execute("SET @slave_gtid_strict_mode=1")
            cur.execute("SET @slave_gtid_ignore_duplicates=0")
            command = dump_command(self.server_id, file=None, pos=4)
        else:
            from pymysqlreplication.gtid import GtidSet

            gtid_set = GtidSet(self.gtids or "").encoded()
            command = dump_command(self.server_id, file=None, pos=4, gtid_set=gtid_set)
        cur.close()
        conn._write_bytes(command)
        conn._next_seq_id = 1

    def events(self, before_wait: Callable[[], None] | None = None) -> Iterator[bytes]:
        """The events' packets in order: the status byte 0, the 19-byte event header, the body and
        the checksum if :attr:`checksum` (as PyMySQL's packet holds them), until the server ends a
        non-blocking dump or the connection is closed by :meth:`close`. ``before_wait`` is called
        each time every event read so far has been handed out, before reading the socket again.

        Raises:
            BinlogWireError: If the server sends an error or the connection drops.
        """
        sock: socket.socket = self._conn._sock
        framer = PacketFramer()
        while True:
            if before_wait is not None:
                before_wait()
            try:
                chunk = sock.recv(_READ_SIZE)
            except OSError as exc:
                if self._closed:
                    return
                raise BinlogWireError(f"the binlog connection failed: {exc}") from exc
            if not chunk:
                if self._closed:
                    return
                raise BinlogWireError("the server closed the binlog connection")
            for payload in framer.feed(chunk):
                status = payload[0] if payload else 0xFE
                if status == 0:
                    yield payload
                elif status == 0xFF:
                    raise BinlogWireError(f"the server ended the binlog dump: {error_text(payload)}")
                elif status == 0xFE and len(payload) < 9:
                    return  # EOF: the end of a non-blocking dump

    def close(self) -> None:
        """Close the connection (from any thread: a blocked :meth:`events` returns)."""
        self._closed = True
        conn = self._conn
        if conn is None:
            return
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            conn.close()
