"""What every CDC source hands the ingester per source table and group: one :class:`ChangeBatch`.

A batch is the changes of one source table in one group, in source order, on their way to one Arrow
changelog in the ODS table's columns plus ``_kind``. Sources make it in one of three forms, by what
they have in hand:

- ``changelog``: already Arrow, decoded by the source into the ODS columns the ingester told it of
  (:meth:`~flowlake.cdc.source.TargetAwareSource.target`): the JSONL bulk parser, large binlog
  transactions. The ingester only casts it to the table's current columns.
- ``rows``: decoded ``(kind, row)`` pairs (:meth:`ChangeBatch.of_rows`): PostgreSQL and MySQL
  snapshot chunks and stream transactions. A row image the source could not decode is an
  :class:`UndecodedRow`: its change (an update's two images once) becomes a dead letter.
- ``messages``: Debezium messages as ``(raw, parsed)`` (:meth:`ChangeBatch.of_messages`): JSONL lines
  of tables whose ODS table is not known yet, and groups the bulk parser declined.

Rows and messages are built into Arrow when the ingester fits them to the ODS table at its flush
(:mod:`flowlake.cdc.pending`), against the columns and types the table has then, and all buffered
batches of one form at once: building a value straight into its column type is exact (a cast would
turn what building refuses, such as ``"12"`` for an integer column, into a value), inferred column
types see every buffered change, and a transaction of one row costs no Arrow table of its own.

Every batch gives each change's source record (:meth:`ChangeBatch.raws`, ``raw``), so that any
change can become a dead letter as the source read it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa

from flowlake.cdc.record_json import dump_record
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import InvalidArgumentError, short_repr

Rows = list[tuple[int, dict[str, Any]]]
"""Decoded changes as ``(kind, row)`` (kind: 0 +I, 1 -U, 2 +U, 3 -D)."""

Messages = list[tuple[bytes, Any]]
"""Debezium messages as ``(raw bytes, parsed object)``."""

BatchForm = Literal["changelog", "rows", "messages"]
"""How a :class:`ChangeBatch` holds its changes (see the module doc)."""

_BUILD_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, ArithmeticError, OverflowError)


class UndecodedRow(dict[str, Any]):
    """A row image (or a whole source record) that could not be decoded: its change becomes a dead letter.

    A source puts it among a ``rows`` batch's changes like any image, so the change keeps its
    place; the ingester moves it to the dead letters, with the other image of an update (both images
    of an undecodable update are ``UndecodedRow`` values sharing one ``raw``), so no update lands in
    half.

    Attributes:
        raw: The record to keep: tagged JSON (see :mod:`flowlake.cdc.record_json`).
        error: Why it could not be decoded.
    """

    raw: bytes
    error: str

    def __init__(self, values: Mapping[str, Any], *, raw: bytes, error: str) -> None:
        super().__init__(values)
        self.raw, self.error = raw, error


class ChangeBatch:
    """Changes of one source table in one group, in source order (see the module doc for the forms).

    ``ChangeBatch(changes, records, raw)`` is the ``changelog`` form; :meth:`of_rows` and
    :meth:`of_messages` make the other two (cheaply: a source makes one per table and transaction).

    Attributes:
        changes: The ``changelog`` form's row columns plus ``_kind`` (int8: 0 +I, 1 -U, 2 +U, 3 -D).
        records: For each change, the number of its source record (an update's two rows may share one).
        raw: A record as the source read it, by number (only called to dead-letter it).
        rows: The ``rows`` form's ``(kind, row)`` pairs.
        messages: The ``messages`` form's ``(raw, parsed)`` Debezium messages (one record each).

    >>> changes = pa.table({"id": [1, 1], "_kind": pa.array([1, 2], pa.int8())})
    >>> batch = ChangeBatch(changes, np.array([7, 7]), lambda i: b'{"line": %d}' % i)
    >>> len(batch), batch.form, batch.raws(), len(batch.lines(0, 7)), len(batch.lines(7, 8))
    (2, 'changelog', [b'{"line": 7}'], 0, 2)
    >>> rows = ChangeBatch.of_rows([(0, {"id": 1}), (3, UndecodedRow({}, raw=b"?", error="bad"))])
    >>> len(rows), rows.form, rows.raws()
    (2, 'rows', [b'{"id":1}', b'?'])
    """

    __slots__ = ("_raw", "_records", "changes", "messages", "rows")

    changes: pa.Table | None
    rows: Rows | None
    messages: Messages | None
    _records: np.ndarray[Any, Any] | None
    _raw: Callable[[int], bytes] | None

    def __init__(self, changes: pa.Table, records: np.ndarray[Any, Any], raw: Callable[[int], bytes]) -> None:
        if KIND_COLUMN not in changes.column_names or len(records) != changes.num_rows:
            raise InvalidArgumentError("a ChangeBatch needs a _kind column and one record number per row")
        self.changes, self.rows, self.messages = changes, None, None
        self._records, self._raw = records, raw

    @classmethod
    def of_rows(cls, rows: Rows) -> ChangeBatch:
        """Decoded ``(kind, row)`` changes; a row's record is the row (or its :class:`UndecodedRow` raw)."""
        return cls._of(rows, None)

    @classmethod
    def of_messages(cls, messages: Messages) -> ChangeBatch:
        """Debezium messages as ``(raw, parsed)``, each its own record."""
        return cls._of(None, messages)

    @classmethod
    def _of(cls, rows: Rows | None, messages: Messages | None) -> ChangeBatch:
        batch = cls.__new__(cls)  # unchecked: a source makes one per table and transaction
        batch.changes, batch.rows, batch.messages = None, rows, messages
        batch._records = batch._raw = None
        return batch

    @property
    def records(self) -> np.ndarray[Any, Any]:
        """For each change, the number of its source record (rows and messages: one each)."""
        if self._records is None:
            return np.arange(len(self))
        return self._records

    def raw(self, record: int) -> bytes:
        """A record as the source read it, by number (only called to dead-letter it)."""
        if self._raw is not None:
            return self._raw(record)
        if self.messages is not None:
            return self.messages[record][0]
        assert self.rows is not None
        row = self.rows[record][1]
        return row.raw if isinstance(row, UndecodedRow) else dump_record(row)

    @property
    def form(self) -> BatchForm:
        """``changelog``, ``rows`` or ``messages``."""
        if self.changes is not None:
            return "changelog"
        return "rows" if self.rows is not None else "messages"

    def __len__(self) -> int:
        """Changes (``changelog``, ``rows``) or messages."""
        if self.rows is not None:
            return len(self.rows)
        if self.messages is not None:
            return len(self.messages)
        return int(self.changelog().num_rows)

    def changelog(self) -> pa.Table:
        """The ``changelog`` form's Arrow changelog."""
        if self.changes is None:
            raise InvalidArgumentError(f"a ChangeBatch of {self.form} is not an Arrow changelog yet")
        return self.changes

    def lines(self, start: int, stop: int) -> ChangeBatch:
        """The changes of records ``[start, stop)`` of a ``changelog`` batch (``records`` ascend)."""
        first, last = np.searchsorted(self.records, [start, stop])
        changes = self.changelog().slice(first, last - first)
        return ChangeBatch(changes, self.records[first:last], self._raw or self.raw)

    def raws(self) -> list[bytes]:
        """Every record of the batch once, in order."""
        return [self.raw(int(i)) for i in dict.fromkeys(self.records.tolist())]


def build_rows(
    rows: Sequence[tuple[int, dict[str, Any]]], schema: pa.Schema
) -> tuple[pa.Table, dict[int, tuple[str, str]]]:
    """Columns of ``schema`` (all nullable) plus ``_kind`` from decoded ``(kind, row)`` changes.

    Returns:
        The changelog without the rows that cannot be held, and those rows' indexes with the column
        and the reason.

    >>> table, bad = build_rows([(0, {"id": 1}), (0, {"id": "x"})], pa.schema([("id", pa.int64())]))
    >>> table.column("id").to_pylist(), bad[1][0]
    ([1], 'id')
    """
    bad: dict[int, tuple[str, str]] = {}
    columns: list[pa.Array] = []
    for f in schema:
        values = [row.get(f.name) for _, row in rows]
        try:
            columns.append(pa.array(values, type=f.type))
        except _BUILD_ERRORS:
            _bisect(values, f, 0, len(values), bad)
            columns.append(pa.array([None if i in bad else v for i, v in enumerate(values)], type=f.type))
    kinds = pa.array([k for k, _ in rows], type=pa.int8())
    out_schema = pa.schema([*(f.with_nullable(True) for f in schema), pa.field(KIND_COLUMN, pa.int8())])
    table = pa.Table.from_arrays([*columns, kinds], schema=out_schema)
    if bad:
        keep = pa.array([i not in bad for i in range(len(rows))])
        table = table.filter(keep)
    return table, bad


def _bisect(values: list[Any], f: pa.Field, lo: int, hi: int, bad: dict[int, tuple[str, str]]) -> None:
    if lo >= hi:
        return
    try:
        pa.array(values[lo:hi], type=f.type)
        return
    except _BUILD_ERRORS as exc:
        if hi - lo == 1:
            reason = f"column {f.name!r} ({f.type}) cannot hold {short_repr(values[lo])}: {exc}"
            bad.setdefault(lo, (f.name, reason))
            return
    mid = (lo + hi) // 2
    _bisect(values, f, lo, mid, bad)
    _bisect(values, f, mid, hi, bad)
