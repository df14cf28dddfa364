"""Decode PostgreSQL's logical replication stream: the CopyBoth frames and the pgoutput messages.

A walsender in logical mode sends, inside the COPY BOTH sub-protocol, *XLogData* frames (``w``: WAL
start, WAL end, send time and one pgoutput message) and *primary keepalives* (``k``: WAL end, send
time, whether a reply is wanted); the client answers with *standby status updates* (``r``: written,
flushed and applied LSN). The pgoutput plugin (protocol version 1, with ``messages 'true'``) sends
Begin/Commit around each transaction, Relation (and Type) messages describing a table before its
first change and after its shape changes, Insert/Update/Delete with tuples of text values,
Truncate, Origin and logical messages (``pg_logical_emit_message``). The formats are those of the
PostgreSQL documentation, "Logical Replication Message Formats" and "Streaming Replication
Protocol"; every message is a frozen dataclass, and :func:`decode_message` never returns a partial
one: a short or unknown message raises :class:`PgOutputError`.

>>> frame = decode_frame(b"k" + (0x1516A00).to_bytes(8, "big") + bytes(8) + b"\\x01")
>>> frame.wal_end == 0x1516A00, frame.reply
(True, True)
>>> format_lsn(0x1516A00), parse_lsn("0/1516A00")
('0/1516A00', 22112768)
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final, Literal

from flowlake.errors import FlowlakeError

PG_EPOCH: Final = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
"""Timestamps in the protocol count microseconds from here."""

_I8: Final = struct.Struct("!b")
_U8: Final = struct.Struct("!B")
_I16: Final = struct.Struct("!h")
_I32: Final = struct.Struct("!i")
_U32: Final = struct.Struct("!I")
_I64: Final = struct.Struct("!q")
_U64: Final = struct.Struct("!Q")
_XLOG: Final = struct.Struct("!QQq")
_KEEPALIVE: Final = struct.Struct("!QqB")
_STATUS: Final = struct.Struct("!cQQQqB")

UNCHANGED_TOAST: Final = object()
"""A tuple value the server did not send: an unchanged TOASTed value (``u`` in TupleData)."""


class PgOutputError(FlowlakeError):
    """A replication message is truncated or of a kind this decoder does not know."""


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` → the 64-bit LSN.

    >>> parse_lsn("16/B374D848")
    97500059720
    """
    high, sep, low = text.partition("/")
    if not sep:
        raise PgOutputError(f"not an LSN: {text!r} (expected the form 16/B374D848)")
    try:
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError as exc:
        raise PgOutputError(f"not an LSN: {text!r} (expected the form 16/B374D848)") from exc


def format_lsn(lsn: int) -> str:
    """The 64-bit LSN as PostgreSQL prints it.

    >>> format_lsn(97500059720)
    '16/B374D848'
    """
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def pg_time(micros: int) -> dt.datetime:
    """A protocol timestamp (microseconds since 2000-01-01 UTC) as a datetime.

    >>> pg_time(0).isoformat()
    '2000-01-01T00:00:00+00:00'
    """
    return PG_EPOCH + dt.timedelta(microseconds=micros)


# --- CopyBoth frames -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class XLogData:
    """A ``w`` frame: one pgoutput message that starts at ``wal_start``."""

    wal_start: int
    wal_end: int
    send_time: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Keepalive:
    """A ``k`` frame: the server's WAL end; ``reply`` asks for a status update now."""

    wal_end: int
    send_time: int
    reply: bool


def decode_frame(data: bytes) -> XLogData | Keepalive:
    """Decode one CopyData payload of the replication stream.

    Raises:
        PgOutputError: If it is truncated or neither ``w`` nor ``k``.
    """
    kind = data[:1]
    try:
        if kind == b"w":
            start, end, sent = _XLOG.unpack_from(data, 1)
            return XLogData(start, end, sent, bytes(data[1 + _XLOG.size :]))
        if kind == b"k":
            end, sent, reply = _KEEPALIVE.unpack_from(data, 1)
            return Keepalive(end, sent, bool(reply))
    except struct.error as exc:
        raise PgOutputError(f"truncated replication frame {kind!r} ({len(data)} bytes)") from exc
    raise PgOutputError(f"unknown replication frame {bytes(data[:16])!r}")


def status_update(write: int, flush: int, apply: int, *, now_micros: int, reply: bool = False) -> bytes:
    """A standby status update (``r``): the LSNs written, flushed (durable: the slot may advance past
    what precedes it) and applied, and the client's clock.

    >>> len(status_update(1, 1, 1, now_micros=0))
    34
    """
    return _STATUS.pack(b"r", write, flush, apply, now_micros, 1 if reply else 0)


# --- pgoutput messages -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """A transaction starts; ``final_lsn`` is its commit record's LSN, ``xid`` its top-level id."""

    final_lsn: int
    commit_time: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    """A transaction ends: its commit record spans ``commit_lsn`` … ``end_lsn``."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(frozen=True, slots=True)
class Origin:
    """The transaction was replicated from elsewhere (origin name, its LSN there)."""

    lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    """One column of a Relation message: ``key`` if part of the replica identity."""

    name: str
    type_oid: int
    type_modifier: int
    key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    """A table's shape as of this point in the stream; ``replica_identity`` is ``d``/``f``/``i``/``n``."""

    oid: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """A Type message: the name of a non-built-in type a Relation refers to."""

    oid: int
    namespace: str
    name: str


TupleValue = bytes | None | object
"""One value of a tuple: the text bytes, ``None`` (SQL NULL) or :data:`UNCHANGED_TOAST`."""


@dataclass(frozen=True, slots=True)
class Insert:
    """A new row."""

    relation: int
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Update:
    """A changed row; ``old`` is the key (``K``) or the whole old row (``O``, REPLICA IDENTITY FULL),
    or ``None`` when the key did not change under the default replica identity."""

    relation: int
    old_kind: Literal["K", "O"] | None
    old: tuple[TupleValue, ...] | None
    new: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Delete:
    """A deleted row: its key (``K``) or its whole old image (``O``)."""

    relation: int
    old_kind: Literal["K", "O"]
    old: tuple[TupleValue, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    """``TRUNCATE`` of ``relations`` (options: 1 CASCADE, 2 RESTART IDENTITY)."""

    options: int
    relations: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    """``pg_logical_emit_message``: ``transactional`` ones travel inside their transaction."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgMessage = (
    Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | LogicalMessage
)
"""Any pgoutput message."""


class _Reader:
    """Reads big-endian fields from a message, raising :class:`PgOutputError` when it runs short."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 1

    def _unpack(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.data, self.pos)
        except struct.error as exc:
            raise PgOutputError(f"truncated pgoutput message {self.data[:1]!r} at byte {self.pos}") from exc
        self.pos += fmt.size
        return int(value)

    def i8(self) -> int:
        return self._unpack(_I8)

    def u8(self) -> int:
        return self._unpack(_U8)

    def i16(self) -> int:
        return self._unpack(_I16)

    def i32(self) -> int:
        return self._unpack(_I32)

    def u32(self) -> int:
        return self._unpack(_U32)

    def i64(self) -> int:
        return self._unpack(_I64)

    def u64(self) -> int:
        return self._unpack(_U64)

    def byte(self) -> bytes:
        if self.pos >= len(self.data):
            raise PgOutputError(f"truncated pgoutput message {self.data[:1]!r} at byte {self.pos}")
        self.pos += 1
        return self.data[self.pos - 1 : self.pos]

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PgOutputError(f"truncated pgoutput message {self.data[:1]!r}: {n} bytes at {self.pos}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError(f"unterminated string in pgoutput message {self.data[:1]!r}")
        text = self.data[self.pos : end].decode("utf-8", errors="surrogateescape")
        self.pos = end + 1
        return text

    def tuple(self) -> tuple[TupleValue, ...]:
        values: list[TupleValue] = []
        for _ in range(self.i16()):
            kind = self.byte()
            if kind == b"n":
                values.append(None)
            elif kind == b"u":
                values.append(UNCHANGED_TOAST)
            elif kind in (b"t", b"b"):
                values.append(self.take(self.i32()))
            else:
                raise PgOutputError(f"unknown tuple value kind {kind!r}")
        return tuple(values)

    def end(self) -> None:
        if self.pos != len(self.data):
            extra = len(self.data) - self.pos
            raise PgOutputError(f"pgoutput message {self.data[:1]!r} has {extra} unexpected trailing bytes")


def decode_message(data: bytes) -> PgMessage:
    """Decode one pgoutput message (protocol version 1, the payload of an :class:`XLogData`).

    Raises:
        PgOutputError: If it is truncated, has trailing bytes, or is of an unknown kind.

    >>> decode_message(b"B" + (0x10).to_bytes(8, "big") + bytes(8) + (7).to_bytes(4, "big"))
    Begin(final_lsn=16, commit_time=0, xid=7)
    """
    r = _Reader(bytes(data))
    message = _decode(r, r.data[:1])
    r.end()
    return message


def _decode(r: _Reader, kind: bytes) -> PgMessage:
    if kind == b"B":
        return Begin(r.u64(), r.i64(), r.u32())
    if kind == b"C":
        return Commit(r.i8(), r.u64(), r.u64(), r.i64())
    if kind in (b"I", b"U", b"D"):
        return _row(r, kind)
    if kind == b"R":
        oid, namespace, name, identity = r.u32(), r.string(), r.string(), chr(r.u8())
        columns = []
        for _ in range(r.i16()):
            flags = r.i8()
            columns.append(RelationColumn(r.string(), r.u32(), r.i32(), bool(flags & 1)))
        return Relation(oid, namespace, name, identity, tuple(columns))
    if kind == b"T":
        count, options = r.i32(), r.i8()
        return Truncate(options, tuple(r.u32() for _ in range(count)))
    if kind == b"M":
        flags, lsn, prefix = r.i8(), r.u64(), r.string()
        return LogicalMessage(bool(flags & 1), lsn, prefix, r.take(r.i32()))
    if kind == b"Y":
        return TypeInfo(r.u32(), r.string(), r.string())
    if kind == b"O":
        return Origin(r.u64(), r.string())
    raise PgOutputError(f"unknown pgoutput message kind {kind!r} (is proto_version '1' asked for?)")


def _row(r: _Reader, kind: bytes) -> Insert | Update | Delete:
    relation = r.u32()
    marker = r.byte()
    if kind == b"I":
        if marker != b"N":
            raise PgOutputError(f"Insert without a new tuple (got {marker!r})")
        return Insert(relation, r.tuple())
    if kind == b"D":
        if marker not in (b"K", b"O"):
            raise PgOutputError(f"Delete without an old tuple (got {marker!r})")
        return Delete(relation, "K" if marker == b"K" else "O", r.tuple())
    old_kind: Literal["K", "O"] | None = None
    old = None
    if marker in (b"K", b"O"):
        old_kind = "K" if marker == b"K" else "O"
        old = r.tuple()
        marker = r.byte()
    if marker != b"N":
        raise PgOutputError(f"Update without a new tuple (got {marker!r})")
    return Update(relation, old_kind, old, r.tuple())
