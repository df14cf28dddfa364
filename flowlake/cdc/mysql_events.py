"""Binlog event bytes parsed with ``struct``: the few event kinds the binlog source reads itself.

Each function takes an event's body (the bytes after the 19-byte header, without the checksum) and
returns exactly what mysql-replication's event object would have given for the fields flowlake
uses: a MariaDB or MySQL GTID, a query's schema and text, a rotation's next file and offset, and a
rows event's table id, column count, present-column bitmaps and row images.
Everything else (format descriptions, new table maps, rows events that are not read by columns) is
left to mysql-replication's own classes (see :mod:`flowlake.cdc.mysql_binlog`).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Final

HEADER: Final = struct.Struct("<IBIIIH")
"""timestamp, type, server id, event size, position after the event, flags."""
HEADER_SIZE: Final = 19

ROTATE, QUERY, FORMAT_DESCRIPTION, XID, TABLE_MAP = 4, 2, 15, 16, 19
HEARTBEAT, GTID, MARIADB_GTID, PARTIAL_UPDATE_ROWS = 27, 33, 162, 39
WRITE_V1, UPDATE_V1, DELETE_V1, WRITE_V2, UPDATE_V2, DELETE_V2 = 23, 24, 25, 30, 31, 32
ROWS_KIND: Final = {
    WRITE_V1: "insert",
    WRITE_V2: "insert",
    UPDATE_V1: "update",
    UPDATE_V2: "update",
    DELETE_V1: "delete",
    DELETE_V2: "delete",
}
"""The rows events read here (not MySQL's partial JSON updates, type 39) and their kinds."""
_V2: Final = frozenset({WRITE_V2, UPDATE_V2, DELETE_V2})

MARIADB_GTID_BODY: Final = struct.Struct("<QIB")
"""A MariaDB GTID event's body: seq, domain, flags (its server id is the event header's)."""
_U16: Final = struct.Struct("<H")


def mariadb_gtid(body: bytes, server_id: int) -> str:
    """A MariaDB GTID event's ``domain-server-seq``.

    >>> mariadb_gtid(struct.pack("<QIB", 42, 0, 0), 1)
    '0-1-42'
    """
    seq, domain, _flags = MARIADB_GTID_BODY.unpack_from(body, 0)
    return f"{domain}-{server_id}-{seq}"


def mysql_gtid(body: bytes) -> str:
    """A MySQL GTID event's ``uuid:gno``.

    >>> mysql_gtid(bytes([1]) + bytes(range(16)) + (5).to_bytes(8, "little"))
    '00010203-0405-0607-0809-0a0b0c0d0e0f:5'
    """
    return f"{uuid.UUID(bytes=bytes(body[1:17]))}:{int.from_bytes(body[17:25], 'little')}"


def query_parts(body: bytes, post_header: int) -> tuple[bytes, bytes]:
    """A query event's (schema, statement bytes); ``post_header`` from the format description (13).

    >>> body = struct.pack("<IIBHH", 1, 0, 4, 0, 0) + b"shop\\x00BEGIN"
    >>> query_parts(body, 13)
    (b'shop', b'BEGIN')
    """
    schema_length = body[8]
    (status_length,) = _U16.unpack_from(body, 11)
    at = post_header + status_length
    schema = body[at : at + schema_length]
    return schema, body[at + schema_length + 1 :]


def rotation(body: bytes) -> tuple[str, int]:
    """A rotate event's (next file, offset in it).

    >>> rotation((4).to_bytes(8, "little") + b"mysql-bin.000002")
    ('mysql-bin.000002', 4)
    """
    return body[8:].decode(), int.from_bytes(body[:8], "little")


def table_id(body: bytes) -> int:
    """The table id (6 bytes) a table map or rows event starts with."""
    return int.from_bytes(body[:6], "little")


@dataclass(frozen=True, slots=True)
class RowsBody:
    """A rows event split up: its table, column count, present-column bitmaps and row images."""

    table_id: int
    columns: int
    present: bytes
    present_after: bytes | None
    images: bytes


def rows_body(body: bytes, event_type: int, post_header: int) -> RowsBody:
    """Split a v1 or v2 rows event (``post_header``: its length from the format description).

    Raises:
        ValueError: If the bytes end early.

    >>> body = (7).to_bytes(6, "little") + b"\\x00\\x00" + bytes([2, 0b11]) + b"row"
    >>> rows_body(body, WRITE_V1, 8)
    RowsBody(table_id=7, columns=2, present=b'\\x03', present_after=None, images=b'row')
    """
    at = post_header
    if event_type in _V2:
        (extra,) = _U16.unpack_from(body, 8)
        at += extra - 2  # the extra data's length counts its own two bytes
    first = body[at]
    if first < 251:
        columns, at = first, at + 1
    elif first == 252:
        columns, at = int.from_bytes(body[at + 1 : at + 3], "little"), at + 3
    elif first == 253:
        columns, at = int.from_bytes(body[at + 1 : at + 4], "little"), at + 4
    else:
        raise ValueError(f"unexpected column count prefix {first}")
    size = (columns + 7) // 8
    present = body[at : at + size]
    at += size
    after = None
    if event_type in (UPDATE_V1, UPDATE_V2):
        after = body[at : at + size]
        at += size
    if at > len(body):
        raise ValueError("the rows event ends inside its header")
    return RowsBody(table_id(body), columns, present, after, body[at:])


def full_bitmap(columns: int) -> bytes:
    """The present-column bitmap of a row image with every one of ``columns`` columns.

    >>> full_bitmap(10)
    b'\\xff\\x03'
    """
    return b"\xff" * (columns // 8) + (bytes([(1 << (columns % 8)) - 1]) if columns % 8 else b"")
