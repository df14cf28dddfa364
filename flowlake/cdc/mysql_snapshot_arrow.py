"""Snapshot chunks read straight into Arrow (ConnectorX), for tables whose every column it takes exactly.

The chunked snapshot of :mod:`flowlake.cdc.mysql` reads each primary-key chunk through PyMySQL, which
parses every value in Python (~25k rows/s into ODS). ConnectorX (Rust; the reader Polars uses) reads
a result set into Arrow columns without Python objects. This module decides which tables it may read
and turns what it reads into the ODS table's column types; the chunk's watermarks, its reconciliation
with the stream and its place in the changelog stay :class:`~flowlake.cdc.mysql.MySqlSource`'s.

The safe set, each checked against a real MariaDB (``tests/integration/test_cdc_mariadb_snapshot_arrow.py``)
to give what the PyMySQL path gives, value for value:

- ``TINYINT`` … ``BIGINT``, signed and ``UNSIGNED`` (``BIGINT UNSIGNED`` max included): ConnectorX's
  integer of the same width, cast to the ODS integer type (a safe cast, which refuses overflow).
- ``DECIMAL(p, s)``: read as ``CAST(col AS CHAR)`` and cast in Arrow to the ODS decimal, which refuses
  to round. ConnectorX's own decimal is a 96-bit ``rust_decimal`` rescaled to ``decimal128(38, 10)``:
  it rounds a scale above 10 and panics beyond 28 digits.
- ``DOUBLE``: the binary protocol's IEEE bytes.
- ``CHAR``, ``VARCHAR``, ``TINYTEXT`` … ``LONGTEXT`` in ``utf8mb3``/``utf8mb4``, and in ``latin1``
  (MariaDB's default): the server converts the text to the connection's utf8mb4 for both readers, and
  MySQL's latin1 maps every byte to a character (cp1252 with its five holes passed through), so no
  value is lost or differs (checked for all 256 bytes). Other charsets can hold bytes the conversion
  turns into ``?``, which would hide a difference: they take the PyMySQL path.
- ``DATE``, ``DATETIME(n)``; ``TIMESTAMP(n)`` read with the connection's ``time_zone`` set to
  ``+00:00`` (ConnectorX runs ``pre_execution_query`` on the connection of the query), as the PyMySQL
  path does, so the naive values are UTC.

Everything else takes the PyMySQL path for the whole table: ``FLOAT`` (read through ``DOUBLE`` there),
``BIT``, ``SET``, ``ENUM``, ``TIME``, ``YEAR``, ``BINARY``/``BLOB``, ``JSON``, other charsets (utf16,
gbk, ascii, …) and generated columns. A chunk ConnectorX cannot read exactly (a zero date such as
``0000-00-00``, which it cannot represent, a value the ODS column cannot hold) takes the PyMySQL
path for that chunk: :meth:`ArrowChunkReader.read` returns ``None``.

Keys that the stream changed while a chunk waits for its high watermark are removed from the chunk
in one vectorized filter when it is emitted (:class:`ArrowChunkRows`).
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.cdc.batch import ChangeBatch
from flowlake.cdc.mysql_schema import MySqlUrl, quote
from flowlake.cdc.record_json import dump_record
from flowlake.cdc.source import TableSpec
from flowlake.changelog import KIND_COLUMN

log = logging.getLogger(__name__)

_INTEGERS: Final = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
_TEXTS: Final = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext"})
_CHARSETS: Final = frozenset({"utf8", "utf8mb3", "utf8mb4", "latin1"})
"""Text the server converts to the connection's utf8mb4 losslessly (latin1: every byte is a character)."""
_TEMPORAL: Final = frozenset({"date", "datetime", "timestamp"})
_MAX_FAILURES: Final = 3
"""Chunks in a row ConnectorX failed to read before a table keeps to the PyMySQL path."""


def connectorx_available() -> bool:
    """Whether the ``connectorx`` package can be imported."""
    try:
        importlib.import_module("connectorx")
    except ImportError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """What ``information_schema.COLUMNS`` says of one column (lowercased)."""

    name: str
    data_type: str
    column_type: str
    charset: str
    generated: bool


def column_infos(cursor: Any, table: str) -> list[ColumnInfo]:
    """The columns of ``db.table`` in ordinal order, from information_schema."""
    db, name = table.split(".", 1)
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, EXTRA, IS_GENERATED "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY ORDINAL_POSITION",
        (db, name),
    )
    out = []
    for col, data_type, column_type, charset, extra, generated in cursor.fetchall():
        is_generated = str(generated or "").upper() == "ALWAYS" or "GENERATED" in str(extra or "").upper()
        out.append(
            ColumnInfo(
                str(col),
                str(data_type).lower(),
                str(column_type).lower(),
                str(charset or "").lower(),
                is_generated,
            )
        )
    return out


def unsafe_reason(column: ColumnInfo) -> str | None:
    """Why ConnectorX cannot read ``column`` exactly (``None``: it can)."""
    if column.generated:
        return "a generated column"
    kind = column.data_type
    if kind in _INTEGERS or kind in ("decimal", "double") or kind in _TEMPORAL:
        return None
    if kind in _TEXTS:
        return None if column.charset in _CHARSETS else f"charset {column.charset or '?'}"
    return f"type {column.column_type}"


def _select_item(column: ColumnInfo) -> str:
    name = quote(column.name)
    return f"CAST({name} AS CHAR) AS {name}" if column.data_type == "decimal" else name


@dataclass(slots=True)
class ArrowChunkReader:
    """Reads one table's chunks with ConnectorX into the ODS column types.

    Attributes:
        table: ``db.table``.
        url: The ConnectorX connection string (the table's database).
        select_list: The chunk SELECT's column list (decimals as text).
        schema: The ODS types of the source's columns, in the source's order (all nullable).
        primary_key: Key columns.
        failures: Chunks in a row that ConnectorX could not read.
    """

    table: str
    url: str
    select_list: str
    schema: pa.Schema
    primary_key: tuple[str, ...]
    failures: int = 0

    def read(self, sql: str) -> pa.Table | None:
        """Run ``sql`` (a chunk SELECT of :attr:`select_list`, literals inlined) through ConnectorX.

        Returns:
            The rows in :attr:`schema`, or ``None`` if a value cannot be taken exactly (the caller
            reads the chunk through PyMySQL instead).
        """
        cx = importlib.import_module("connectorx")
        try:
            got = cx.read_sql(
                self.url, sql, return_type="arrow", pre_execution_query=["SET time_zone = '+00:00'"]
            )
            table = self._fit(got)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # ConnectorX panics (pyo3's PanicException) on a value it cannot map
            self.failures += 1
            log.warning(
                "snapshot chunk of %s: ConnectorX could not read it exactly (%s: %s); "
                "reading it through PyMySQL%s",
                self.table,
                type(exc).__name__,
                str(exc)[:200],
                "" if self.failures < _MAX_FAILURES else " (and the rest of the table too)",
            )
            return None
        self.failures = 0
        return table

    def _fit(self, got: pa.Table) -> pa.Table:
        if got.column_names != self.schema.names:
            raise ValueError(f"ConnectorX returned columns {got.column_names}, expected {self.schema.names}")
        arrays = []
        for f, column in zip(self.schema, got.columns, strict=True):
            arrays.append(_fit_column(column, f))
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _fit_column(column: pa.ChunkedArray, f: pa.Field) -> pa.ChunkedArray:
    """One ConnectorX column in the ODS type ``f.type``, exactly, or raise.

    Only casts that cannot change a value are taken (a safe cast refuses overflow and rounding): an
    integer to an integer, text to a decimal or to text (binary text is validated as UTF-8), a
    naive timestamp to a zoned one (its values are UTC: the session's time_zone is +00:00), a
    date or a double to itself. Anything else (say a future ConnectorX giving a double for an
    integer) is refused, and the chunk takes the PyMySQL path.
    """
    source, target = column.type, f.type
    types = pa.types
    if types.is_binary(source) or types.is_large_binary(source):
        column = column.cast(pa.large_string())  # validates UTF-8
        source = column.type
    text = types.is_string(source) or types.is_large_string(source)
    if (
        (types.is_integer(target) and types.is_integer(source))
        or ((types.is_decimal(target) or types.is_string(target)) and text)
        or (types.is_timestamp(target) and types.is_timestamp(source) and source.tz in (None, target.tz))
        or source == target
    ):
        return column if source == target else column.cast(target, safe=True)
    raise TypeError(f"column {f.name!r}: ConnectorX gave {source}, the ODS column is {target}")


@dataclass(slots=True)
class ArrowSnapshots:
    """Per source: which tables' chunks ConnectorX reads, and their readers (planned once per shape)."""

    url: MySqlUrl
    enabled: bool
    _plans: dict[str, tuple[pa.Schema, pa.Schema, ArrowChunkReader | None]] = field(default_factory=dict)

    def reader(
        self, cursor: Callable[[], Any], table: str, spec: TableSpec, target: TableSpec | None
    ) -> ArrowChunkReader | None:
        """A reader for ``table``'s chunks, or ``None`` for the PyMySQL path.

        ``target`` is the ODS table's shape as the ingester announced it; without it (before the ODS
        table is created or loaded) or when it lacks a source column (it is evolved from rows), the
        chunk goes through PyMySQL.
        """
        if not self.enabled or target is None:
            return None
        if any(name not in target.schema.names for name in spec.schema.names):
            return None
        cached = self._plans.get(table)
        if cached is not None and cached[0] == spec.schema and cached[1] == target.schema:
            plan = cached[2]
        else:
            plan = self._plan(cursor(), table, spec, target)
            self._plans[table] = (spec.schema, target.schema, plan)
        if plan is not None and plan.failures >= _MAX_FAILURES:
            return None
        return plan

    def _plan(self, cursor: Any, table: str, spec: TableSpec, target: TableSpec) -> ArrowChunkReader | None:
        columns = column_infos(cursor, table)
        if [c.name for c in columns] != spec.schema.names:
            return None  # the table changed since it was described; the next plan sees it
        for column in columns:
            reason = unsafe_reason(column)
            if reason is not None:
                log.info("snapshot of %s reads through PyMySQL: column %r is %s", table, column.name, reason)
                return None
        log.info("snapshot of %s reads its chunks straight into Arrow (ConnectorX)", table)
        schema = pa.schema([target.schema.field(name).with_nullable(True) for name in spec.schema.names])
        db = table.split(".", 1)[0]
        user = urllib.parse.quote(self.url.user, safe="")
        password = ":" + urllib.parse.quote(self.url.password, safe="") if self.url.password else ""
        host = f"[{self.url.host}]" if ":" in self.url.host else self.url.host
        url = f"mysql://{user}{password}@{host}:{self.url.port}/{urllib.parse.quote(db, safe='')}"
        select = ", ".join(_select_item(c) for c in columns)
        return ArrowChunkReader(table, url, select, schema, spec.primary_key)


class ArrowChunkRows:
    """A chunk read into Arrow, with the keys the stream removed from it since (see ``MySqlSource``).

    ``pop`` notes a key (as the PyMySQL path's ``dict.pop`` removes one); :meth:`batch` drops all
    noted keys in one filter and makes the chunk's ``+I`` changes.
    """

    __slots__ = ("_removed", "primary_key", "table")

    def __init__(self, table: pa.Table, primary_key: Sequence[str]) -> None:
        self.table = table
        self.primary_key = tuple(primary_key)
        self._removed: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def pop(self, key: tuple[Any, ...], default: None = None) -> None:
        """Remove the row of ``key`` (a tuple of the stream's values) when the chunk is emitted."""
        self._removed.append(key)

    def last_key(self) -> list[Any] | None:
        """Where the next chunk starts (``None`` for an empty chunk): the last row's key, as the
        PyMySQL path bounds chunks (``text_bound_keys``): a date or time as its text, which the server
        compares as the same value (UTC for a ``TIMESTAMP``: the session's time_zone is +00:00)."""
        if not self.table.num_rows:
            return None
        last = self.table.slice(self.table.num_rows - 1, 1)
        return [_bound(last.column(k)[0].as_py()) for k in self.primary_key]

    def kept(self) -> pa.Table:
        """The chunk's rows without the removed keys."""
        if not self._removed or not self.table.num_rows:
            return self.table
        return self.table.filter(pc.invert(self._removed_mask()))

    def batch(self) -> ChangeBatch:
        """The kept rows as ``+I`` changes, a ``changelog`` :class:`ChangeBatch` in the ODS types."""
        rows = self.kept()
        kinds = pa.array(np.zeros(rows.num_rows, dtype=np.int8))
        changes = rows.append_column(pa.field(KIND_COLUMN, pa.int8()), kinds)

        def raw(index: int) -> bytes:  # only for a dead letter
            return dump_record(rows.slice(index, 1).to_pylist()[0])

        return ChangeBatch(changes, np.arange(rows.num_rows), raw)

    def _removed_mask(self) -> pa.ChunkedArray | pa.Array:
        key = self.primary_key
        try:
            columns = [
                pa.array([k[i] for k in self._removed], type=self.table.schema.field(name).type)
                for i, name in enumerate(key)
            ]
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return self._removed_mask_by_value()
        if len(key) == 1:
            return pc.fill_null(pc.is_in(self.table.column(key[0]), value_set=columns[0]), False)
        removed = pa.table(columns, names=list(key))
        index = pa.table(
            {**{k: self.table.column(k) for k in key}, "_row": pa.array(np.arange(self.table.num_rows))}
        )
        hit = index.join(removed.group_by(list(key)).aggregate([]), keys=list(key), join_type="left semi")
        mask = np.zeros(self.table.num_rows, dtype=bool)
        mask[hit.column("_row").to_numpy()] = True
        return pa.array(mask)

    def _removed_mask_by_value(self) -> pa.Array:
        """The same mask by Python equality (a stream key that the key column type cannot hold)."""
        removed = set(self._removed)
        columns = [self.table.column(k).to_pylist() for k in self.primary_key]
        return pa.array([tuple(_as_pymysql(v) for v in key) in removed for key in zip(*columns, strict=True)])


def _bound(value: Any) -> Any:
    value = _as_pymysql(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value.isoformat() if isinstance(value, dt.date) else value


def _as_pymysql(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)  # the session's time_zone is +00:00
    return value
