"""One decoded change (:class:`Change`) and where it came from (:class:`SourceInfo`, :func:`source_info`).

These are the friendly per-row values; the hot path carries the same information as Arrow
batches (see :func:`flowlake.cdc.debezium.decode_batch`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from flowlake.changelog import RowKind
from flowlake.errors import CorruptRecordError, short_repr

_POSITION_KEYS: Final = ("lsn", "commit_lsn", "change_lsn", "scn")
_INTEGER_TEXT: Final = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where and when a change happened, taken from a Debezium envelope.

    Attributes:
        connector: Connector type (``"mysql"``, ``"postgresql"``, …), if the source block names it.
        db: Source database.
        schema: Source schema (Postgres, SQL Server, Oracle); ``None`` for MySQL.
        table: Source table.
        ts_ms: When the change was made in the database (``source.ts_ms``).
        event_ts_ms: When the connector processed it (the envelope's ``ts_ms``).
        position: Log position as text: ``"file:pos"`` for a MySQL binlog, the LSN for Postgres,
            ``commit_lsn``/``change_lsn`` for SQL Server, the SCN for Oracle; ``None`` if absent.
        transaction_id: The ``transaction.id`` block's value when transaction metadata is on.
        snapshot: Whether the change was read by a snapshot (op ``r`` or ``source.snapshot`` set).
    """

    connector: str | None = None
    db: str | None = None
    schema: str | None = None
    table: str | None = None
    ts_ms: int | None = None
    event_ts_ms: int | None = None
    position: str | None = None
    transaction_id: str | None = None
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    """One changelog row: a kind, the row image and its source.

    Attributes:
        kind: ``+I``, ``-U``, ``+U`` or ``-D`` (Flink ``RowKind`` semantics).
        row: Column name to value.
        source: Where the change came from.
        before_complete: ``False`` when the change's before-image is not (fully) known: on a
            ``+U`` it means no ``-U`` was emitted (the update carried no usable ``before``), on a
            ``-D`` it means ``row`` holds only the key columns. A consumer that needs the old row
            must look it up by key. Always ``True`` for ``+I`` and ``-U``.
    """

    kind: RowKind
    row: dict[str, Any]
    source: SourceInfo
    before_complete: bool = True

    @property
    def symbol(self) -> str:
        """The kind in Flink's short form: ``+I``, ``-U``, ``+U`` or ``-D``."""
        return self.kind.symbol


def source_info(payload: Mapping[str, Any]) -> SourceInfo:
    """Read the ``source``, ``ts_ms`` and ``transaction`` blocks of a Debezium payload.

    Raises:
        CorruptRecordError: If a block is not an object or a field has the wrong JSON type.
    """
    src = payload.get("source")
    if src is None:
        src = {}
    elif type(src) is not dict:
        raise CorruptRecordError(f"'source' must be an object, got {short_repr(src)}")
    return SourceInfo(
        connector=_opt_str(src, "connector"),
        db=_opt_str(src, "db"),
        schema=_opt_str(src, "schema"),
        table=_opt_str(src, "table"),
        ts_ms=_opt_int(src, "ts_ms", "source.ts_ms"),
        event_ts_ms=_opt_int(payload, "ts_ms", "ts_ms"),
        position=position_of(src),
        transaction_id=_transaction_id(payload.get("transaction")),
        snapshot=payload.get("op") == "r" or _snapshot_flag(src.get("snapshot")),
    )


def _opt_str(block: Mapping[str, Any], name: str) -> str | None:
    value = block.get(name)
    if value is None or type(value) is str:
        return value
    raise CorruptRecordError(f"'source.{name}' must be a string, got {short_repr(value)}")


def _opt_int(block: Mapping[str, Any], name: str, label: str) -> int | None:
    value = block.get(name)
    if value is None or type(value) is int:
        return value
    if type(value) is str and _INTEGER_TEXT.fullmatch(value):
        return int(value)
    raise CorruptRecordError(f"'{label}' must be an integer (or its decimal text), got {short_repr(value)}")


def position_of(src: Mapping[str, Any]) -> str | None:
    """The log position in a ``source`` block as text (see :attr:`SourceInfo.position`); never raises."""
    file, pos = src.get("file"), src.get("pos")
    if type(file) is str and type(pos) is int:
        return f"{file}:{pos}"
    for name in _POSITION_KEYS:
        value = src.get(name)
        if type(value) is str or type(value) is int:
            return str(value)
    return None


def _transaction_id(block: Any) -> str | None:
    if block is None:
        return None
    if type(block) is not dict:
        raise CorruptRecordError(f"'transaction' must be an object, got {short_repr(block)}")
    value = block.get("id")
    if value is None or type(value) is str:
        return value
    if type(value) is int:
        return str(value)
    raise CorruptRecordError(f"'transaction.id' must be a string, got {short_repr(value)}")


def _snapshot_flag(value: Any) -> bool:
    if value is None or value is False or value == "false":
        return False
    if value is True or type(value) is str:
        return True  # "true", "first", "last", "incremental", …
    raise CorruptRecordError(f"'source.snapshot' must be a boolean or string, got {short_repr(value)}")
