"""The changelog contract shared by every layer: row kinds and the reserved columns.

A change is a row plus a kind, with Flink's ``RowKind`` semantics: ``+I`` insert, ``-U`` the row
before an update, ``+U`` the row after it, ``-D`` delete. An update always travels as a ``-U``/``+U``
pair so that any consumer can retract. In bulk, changes travel as Arrow batches holding the table's
columns plus ``_kind`` (int8, the :class:`RowKind` value) and ``_seq`` (int64, commit order).
"""

from __future__ import annotations

import enum
from typing import Final

KIND_COLUMN: Final = "_kind"
"""Name of the int8 column that holds a change's :class:`RowKind`."""

SEQ_COLUMN: Final = "_seq"
"""Name of the int64 column that orders changes within a table."""

RESERVED_COLUMNS: Final = frozenset({KIND_COLUMN, SEQ_COLUMN})


class RowKind(enum.IntEnum):
    """The kind of one change; the integer is what ``_kind`` stores."""

    INSERT = 0
    UPDATE_BEFORE = 1
    UPDATE_AFTER = 2
    DELETE = 3

    @property
    def symbol(self) -> str:
        """The short form Flink prints: ``+I``, ``-U``, ``+U`` or ``-D``."""
        return _SYMBOLS[self]

    @property
    def is_retraction(self) -> bool:
        """Whether this change takes a row away (``-U`` or ``-D``)."""
        return self in (RowKind.UPDATE_BEFORE, RowKind.DELETE)

    @property
    def weight(self) -> int:
        """``+1`` for rows that are added, ``-1`` for rows that are retracted."""
        return -1 if self.is_retraction else 1

    @classmethod
    def from_symbol(cls, symbol: str) -> RowKind:
        """Parse ``+I``/``-U``/``+U``/``-D``."""
        try:
            return _FROM_SYMBOL[symbol]
        except KeyError:
            raise ValueError(f"unknown row kind {symbol!r}; expected one of +I, -U, +U, -D") from None


_SYMBOLS: Final = {
    RowKind.INSERT: "+I",
    RowKind.UPDATE_BEFORE: "-U",
    RowKind.UPDATE_AFTER: "+U",
    RowKind.DELETE: "-D",
}
_FROM_SYMBOL: Final = {v: k for k, v in _SYMBOLS.items()}
