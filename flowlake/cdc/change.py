"""One decoded change (:class:`Change`) and where it came from (:class:`SourceInfo`).

These are the friendly per-row values; the hot path carries the same information as Arrow
batches (see :func:`flowlake.cdc.debezium.decode_batch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowlake.changelog import RowKind


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
