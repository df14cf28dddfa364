"""PostgreSQL table shapes and values: catalog → Arrow schema and primary key; text values → Python.

Both paths of the PostgreSQL source — snapshot chunks (columns selected ``::text``) and the pgoutput
stream (text tuples) — hand the server's *text* output of each value to :class:`ValueLoader`, which
parses it with psycopg's own loaders, so a value is the same in both. The sessions run with
``TimeZone=UTC``, ``DateStyle=ISO``, ``IntervalStyle=postgres``, ``extra_float_digits=3`` and
``bytea_output=hex``, so the text is unambiguous.

Types (by the column's type OID and modifier; a domain is its base type):

================================  ==========================================================
PostgreSQL                        Arrow
================================  ==========================================================
smallint, integer, bigint, oid    int16, int32, int64, int64
real, double precision            float32, float64
numeric(p, s), p ≤ 38             decimal128(p, s); ``NaN``/``±Infinity`` are dead letters
numeric without p, or p > 38      string (the exact digits; Arrow decimals need a fixed scale)
boolean                           bool
text, varchar, char, name         string
date                              date32 (``±infinity`` is a dead letter)
time                              duration[us] since midnight (flowlake tables have no time64;
                                  MySQL ``TIME`` is a duration too)
timestamp                         timestamp[us] (``±infinity`` is a dead letter)
timestamptz                       timestamp[us, UTC]
uuid                              string (canonical lowercase text, as Debezium's ``Uuid``)
json, jsonb                       string (the server's text; jsonb's is normalized)
bytea                             binary
interval, timetz, money, enums,   string (the server's text)
inet, anything else
one-dimensional arrays of these   string: the array as JSON (``[1,null,3]``; numeric, date/time
                                  and bytea elements as JSON strings, bytea in ``\\x`` hex);
                                  a multi-dimensional value or a NaN numeric is a dead letter
================================  ==========================================================

Arrays would be Arrow lists, but flowlake tables do not store list columns yet
(``flowlake.table.schema.is_supported``); :func:`element_type` gives the list's element type for the
day they do, and the JSON text is exact meanwhile.
"""

from __future__ import annotations

import datetime as dt
import decimal
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa

from flowlake.cdc.source import TableSpec
from flowlake.errors import InvalidArgumentError, short_repr

SYSTEM_SCHEMAS: Final = frozenset({"pg_catalog", "information_schema", "pg_toast"})

SESSION_OPTIONS: Final = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=3 -c bytea_output=hex"
)
"""Settings of every source session (the walsender's too): they fix the text form of values."""

_SCALARS: Final[dict[int, pa.DataType]] = {
    16: pa.bool_(),
    17: pa.binary(),
    18: pa.string(),
    19: pa.string(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    26: pa.int64(),
    114: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1083: pa.duration("us"),
    1114: pa.timestamp("us"),
    1184: pa.timestamp("us", tz="UTC"),
    2950: pa.string(),
    3802: pa.string(),
}
NUMERIC_OID: Final = 1700
_ARRAYS: Final[dict[int, int]] = {
    1000: 16,
    1001: 17,
    1002: 18,
    1003: 19,
    1016: 20,
    1005: 21,
    1007: 23,
    1009: 25,
    1028: 26,
    199: 114,
    1021: 700,
    1022: 701,
    1014: 1042,
    1015: 1043,
    1182: 1082,
    1183: 1083,
    1115: 1114,
    1185: 1184,
    2951: 2950,
    3807: 3802,
    1231: NUMERIC_OID,
}
"""Array type OID → element type OID, for the element types above."""


@dataclass(frozen=True, slots=True)
class PgUrl:
    """The parts of ``postgresql://user:password@host:port/database?slot=…&publication=…``."""

    host: str
    port: int
    user: str
    password: str
    database: str
    slot: str
    publication: str

    @classmethod
    def parse(cls, url: str) -> PgUrl:
        """Parse a ``postgresql://`` (or ``postgres://``) URL.

        ``slot`` and ``publication`` default to ``flowlake_<database>``.

        >>> PgUrl.parse("postgresql://app@db:5433/shop?slot=s1").key
        'postgresql://db:5433/shop'
        >>> PgUrl.parse("postgresql://app@db/shop").publication
        'flowlake_shop'
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise InvalidArgumentError(
                f"expected a source URL like postgresql://user:password@host:5432/db, got {url!r}"
            )
        database = urllib.parse.unquote(parts.path.strip("/")) or "postgres"
        query = dict(urllib.parse.parse_qsl(parts.query))
        unknown = set(query) - {"slot", "publication"}
        if unknown:
            raise InvalidArgumentError(
                f"unknown parameter(s) {sorted(unknown)} in {url!r}: only slot= and publication= are known"
            )
        default = "flowlake_" + "".join(c if c.isalnum() else "_" for c in database.lower())
        return cls(
            host=parts.hostname,
            port=parts.port or 5432,
            user=urllib.parse.unquote(parts.username or "postgres"),
            password=urllib.parse.unquote(parts.password or ""),
            database=database,
            slot=query.get("slot", default)[:63],
            publication=query.get("publication", default)[:63],
        )

    @property
    def key(self) -> str:
        """The source key positions are stored under: ``postgresql://host:port/database``."""
        return f"postgresql://{self.host}:{self.port}/{self.database}"

    def settings(self, *, replication: bool = False) -> dict[str, Any]:
        """Connection keywords for psycopg (a walsender for logical replication if ``replication``)."""
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "options": SESSION_OPTIONS,
            "application_name": "flowlake-cdc",
        }
        if self.password:
            out["password"] = self.password
        if replication:
            out["replication"] = "database"
        return out


def arrow_type(type_oid: int, type_modifier: int) -> pa.DataType:
    """The Arrow type of a column of type ``type_oid`` (a base type, not a domain) and modifier.

    >>> arrow_type(1700, ((12 << 16) | 2) + 4)
    Decimal128Type(decimal128(12, 2))
    >>> arrow_type(1007, -1)  # an int[]: JSON text (see the module docstring)
    DataType(string)
    """
    if type_oid == NUMERIC_OID:
        return _numeric(type_modifier)
    return _SCALARS.get(type_oid, pa.string())


def element_type(type_oid: int, type_modifier: int) -> pa.DataType | None:
    """The element type of an array column (``None`` if it is not an array of a known type).

    >>> element_type(1231, ((12 << 16) | 2) + 4)
    Decimal128Type(decimal128(12, 2))
    """
    element = _ARRAYS.get(type_oid)
    if element is None:
        return None
    return _numeric(type_modifier) if element == NUMERIC_OID else _SCALARS[element]


def _numeric(type_modifier: int) -> pa.DataType:
    if type_modifier < 4:
        return pa.string()  # unconstrained numeric: any scale, so no fixed Arrow decimal holds it
    precision, scale = ((type_modifier - 4) >> 16) & 0xFFFF, (type_modifier - 4) & 0xFFFF
    if not 0 < precision <= 38 or scale > precision:
        return pa.string()  # also PostgreSQL 15's negative scales and scales beyond the precision
    return pa.decimal128(precision, scale)


@dataclass(frozen=True, slots=True)
class Column:
    """A column as the source decodes it: name, base type OID and modifier, Arrow type."""

    name: str
    type_oid: int
    type_modifier: int
    sql_type: str = "text"
    """The type as SQL spells it (``format_type``), for casting key values in chunk queries."""

    @property
    def arrow(self) -> pa.DataType:
        """Its Arrow type."""
        return arrow_type(self.type_oid, self.type_modifier)

    @property
    def element(self) -> pa.DataType | None:
        """The element type, for an array column."""
        return element_type(self.type_oid, self.type_modifier)


@dataclass(frozen=True, slots=True)
class PgTable:
    """A source table's columns and key, with the spec its ODS table is made from."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]

    @property
    def spec(self) -> TableSpec:
        """The :class:`TableSpec` (key columns not nullable)."""
        fields = [pa.field(c.name, c.arrow, nullable=c.name not in self.primary_key) for c in self.columns]
        return TableSpec(self.name, pa.schema(fields), self.primary_key)


_COLUMNS_SQL: Final = """
SELECT n.nspname, c.relname, a.attname,
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       format_type(a.atttypid, a.atttypmod)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND c.relkind IN ('r', 'p')
  AND n.nspname || '.' || c.relname = ANY(%s)
ORDER BY n.nspname, c.relname, a.attnum
"""

_KEYS_SQL: Final = """
SELECT n.nspname, c.relname, a.attname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND n.nspname || '.' || c.relname = ANY(%s)
ORDER BY n.nspname, c.relname, array_position(i.indkey::int2[], a.attnum)
"""


def describe_tables(conn: Any, tables: Sequence[str]) -> dict[str, PgTable]:
    """Columns and primary keys of ``schema.table`` names; tables without a primary key are left out."""
    if not tables:
        return {}
    names = list(tables)
    columns: dict[str, list[Column]] = {}
    for schema, table, name, oid, modifier, sql_type in conn.execute(_COLUMNS_SQL, [names]).fetchall():
        column = Column(str(name), int(oid), int(modifier), str(sql_type))
        columns.setdefault(f"{schema}.{table}", []).append(column)
    keys: dict[str, list[str]] = {}
    for schema, table, name in conn.execute(_KEYS_SQL, [names]).fetchall():
        keys.setdefault(f"{schema}.{table}", []).append(str(name))
    return {
        table: PgTable(table, tuple(cols), tuple(keys[table]))
        for table, cols in columns.items()
        if keys.get(table)
    }


def list_tables(conn: Any, schemas: Sequence[str] | None) -> list[str]:
    """``schema.table`` of every ordinary or partitioned table (in ``schemas``, if given)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT LIKE 'pg\\_temp%%' "
        "AND (%s::text[] IS NULL OR n.nspname = ANY(%s::text[]))",
        [list(schemas) if schemas else None, list(schemas) if schemas else None],
    ).fetchall()
    return sorted(f"{s}.{t}" for s, t in rows if str(s) not in SYSTEM_SCHEMAS)


def quote(name: str) -> str:
    """A PostgreSQL identifier in double quotes.

    >>> quote('my"table')
    '"my""table"'
    """
    return '"' + name.replace('"', '""') + '"'


def qualified(table: str) -> str:
    """``schema.table`` quoted for SQL."""
    schema, _, name = table.partition(".")
    return f"{quote(schema)}.{quote(name)}"


# --- values ----------------------------------------------------------------------------------------


class BadValueError(ValueError):
    """A value the ODS column cannot hold: its change becomes a dead letter."""


class ValueLoader:
    """Parse PostgreSQL's text output of a value into the Python value its Arrow column takes.

    >>> loader = ValueLoader()
    >>> loader.load(Column("a", 1007, -1), b"{1,NULL,3}")
    '[1,null,3]'
    >>> loader.load(Column("u", 2950, -1), b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'
    >>> loader.load(Column("n", 1700, ((10 << 16) | 2) + 4), b"NaN")
    Traceback (most recent call last):
    ...
    flowlake.cdc.postgres_schema.BadValueError: column 'n' (decimal128(10, 2)) cannot hold 'NaN'
    """

    def __init__(self) -> None:
        from psycopg import adapters
        from psycopg.adapt import AdaptersMap, Transformer
        from psycopg.pq import Format
        from psycopg.types.string import TextLoader

        context = AdaptersMap(adapters)
        for name in ("json", "jsonb", "uuid", "interval", "timetz", "money", "numeric"):
            context.register_loader(name, TextLoader)  # numeric: parsed below, by the column's type
        self._tx = Transformer(context)
        self._format = Format.TEXT
        self._loaders: dict[int, Any] = {}

    def load(self, column: Column, data: bytes | None) -> Any:
        """The value of ``column`` whose text is ``data`` (``None``: SQL NULL).

        Raises:
            BadValueError: If the Arrow column cannot hold the value (reason names the column).
        """
        if data is None:
            return None
        oid = column.type_oid
        loader = self._loaders.get(oid)
        if loader is None:
            loader = self._loaders[oid] = self._tx.get_loader(oid, self._format)
        arrow = column.arrow
        try:
            value = loader.load(data)
        except Exception as exc:  # psycopg's DataError for 'infinity' dates and the like
            text = bytes(data).decode(errors="replace")
            raise BadValueError(
                f"column {column.name!r} ({arrow}) cannot hold {short_repr(text)}: {exc}"
            ) from exc
        element = column.element
        if element is not None:
            return _array_json(column.name, element, value)
        if pa.types.is_decimal(arrow):
            return _decimal(column.name, arrow, value)
        if pa.types.is_duration(arrow):
            return dt.timedelta(
                hours=value.hour, minutes=value.minute, seconds=value.second, microseconds=value.microsecond
            )
        return value


def _array_json(name: str, element: pa.DataType, value: list[Any]) -> str:
    out: list[Any] = []
    for item in value:
        if isinstance(item, list):
            raise BadValueError(
                f"column {name!r} ({element}[]) cannot hold the multi-dimensional array {short_repr(value)}"
            )
        if item is not None and pa.types.is_decimal(element):
            out.append(str(_decimal(name, element, item)))  # numeric elements come as their text
        elif item is None or isinstance(item, bool | int | float | str):
            out.append(item)
        elif isinstance(item, bytes):
            out.append("\\x" + item.hex())
        elif isinstance(item, dt.date | dt.time | dt.datetime):
            out.append(item.isoformat())
        else:
            out.append(str(item))
    return orjson.dumps(out).decode()


def _decimal(name: str, arrow: pa.DataType, value: Any) -> decimal.Decimal:
    number = decimal.Decimal(value)
    if not number.is_finite():
        raise BadValueError(f"column {name!r} ({arrow}) cannot hold {str(value)!r}")
    return number


def base_types(conn: Any, oids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """For the domain types among ``oids``: their base type OID and modifier."""
    rows = conn.execute(
        "SELECT oid, typbasetype, typtypmod FROM pg_type WHERE typtype = 'd' AND oid = ANY(%s)",
        [[int(o) for o in oids]],
    ).fetchall()
    return {int(oid): (int(base), int(mod)) for oid, base, mod in rows}


def load_row(
    loader: ValueLoader,
    columns: Sequence[Column],
    values: Sequence[Any],
    skip: Mapping[int, Any] | None = None,
) -> dict[str, Any]:
    """A row dict from text ``values`` in ``columns`` order (positions in ``skip`` take the given value)."""
    row: dict[str, Any] = {}
    for i, (column, data) in enumerate(zip(columns, values, strict=True)):
        row[column.name] = skip[i] if skip is not None and i in skip else loader.load(column, data)
    return row
