"""MySQL/MariaDB table shapes: information_schema → Arrow schema and primary key; connection URLs."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from flowlake.cdc.source import TableSpec
from flowlake.errors import InvalidArgumentError

SYSTEM_DATABASES: Final = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

_INTS: Final = {
    "tinyint": (pa.int8(), pa.uint8()),
    "smallint": (pa.int16(), pa.uint16()),
    "mediumint": (pa.int32(), pa.uint32()),
    "int": (pa.int32(), pa.uint32()),
    "integer": (pa.int32(), pa.uint32()),
    "bigint": (pa.int64(), pa.uint64()),
}
_STRINGS: Final = frozenset(
    {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json", "uuid", "inet4"}
)
_BINARIES: Final = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


@dataclass(frozen=True, slots=True)
class MySqlUrl:
    """The parts of ``mysql://user:password@host:port/database[?key=...&gtid=auto|off&binlog=fast|library]``.

    ``key`` names where positions are stored (default ``mysql://host:port``): after a failover to
    a server at another address, pass the old key so the ingester finds its positions. ``gtid=off``
    resumes by binlog file/offset even when the server has GTIDs. ``binlog=library`` reads every
    binlog event through mysql-replication instead of flowlake's own reader (the same changes, slower).

    >>> url = MySqlUrl.parse("mysql://root@replica:3307/shop?key=mysql://primary:3306")
    >>> url.key, url.gtid
    ('mysql://primary:3306', 'auto')
    """

    host: str
    port: int
    user: str
    password: str
    database: str | None
    source_key: str | None = None
    gtid: Literal["auto", "off"] = "auto"
    binlog: Literal["fast", "library"] = "fast"

    @classmethod
    def parse(cls, url: str) -> MySqlUrl:
        """Parse a ``mysql://`` (or ``mariadb://``) URL."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise InvalidArgumentError(
                f"expected a source URL like mysql://user:password@host:3306/db, got {url!r}"
            )
        db = parts.path.strip("/") or None
        options = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - {"key", "gtid", "binlog"})
        if unknown:
            raise InvalidArgumentError(
                f"unknown option(s) {unknown} in {url!r}: use key=..., gtid=auto|off or binlog=fast|library"
            )
        gtid = options.get("gtid", "auto").lower()
        if gtid not in ("auto", "off"):
            raise InvalidArgumentError(f"gtid must be 'auto' or 'off' in {url!r}, got {gtid!r}")
        binlog = options.get("binlog", "fast").lower()
        if binlog not in ("fast", "library"):
            raise InvalidArgumentError(f"binlog must be 'fast' or 'library' in {url!r}, got {binlog!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or 3306,
            user=urllib.parse.unquote(parts.username or "root"),
            password=urllib.parse.unquote(parts.password or ""),
            database=db,
            source_key=options.get("key") or None,
            gtid="off" if gtid == "off" else "auto",
            binlog="library" if binlog == "library" else "fast",
        )

    @property
    def key(self) -> str:
        """The source key positions are stored under: ``key=`` if given, else ``mysql://host:port``."""
        return self.source_key or f"mysql://{self.host}:{self.port}"

    def settings(self) -> dict[str, Any]:
        """Connection settings for PyMySQL and mysql-replication."""
        return {"host": self.host, "port": self.port, "user": self.user, "password": self.password}


def arrow_type(column: Mapping[str, Any]) -> pa.DataType:
    """The Arrow type for one ``information_schema.COLUMNS`` row (lowercase keys)."""
    data_type = str(column["data_type"]).lower()
    column_type = str(column["column_type"]).lower()
    unsigned = "unsigned" in column_type
    if data_type in _INTS:
        return _INTS[data_type][1 if unsigned else 0]
    if data_type == "decimal":
        precision = int(column["numeric_precision"] or 10)
        scale = int(column["numeric_scale"] or 0)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    if data_type == "float":
        return pa.float32()
    if data_type in ("double", "real"):
        return pa.float64()
    if data_type == "bit":
        return pa.binary()
    if data_type == "year":
        return pa.int16()
    if data_type == "date":
        return pa.date32()
    if data_type == "datetime":
        return pa.timestamp("us")
    if data_type == "timestamp":
        return pa.timestamp("us", tz="UTC")
    if data_type == "time":
        return pa.duration("us")
    if data_type in _BINARIES:
        return pa.binary()
    if data_type in _STRINGS:
        return pa.string()
    return pa.string()


def describe_tables(cursor: Any, tables: list[str]) -> dict[str, TableSpec]:
    """Arrow schemas and primary keys of ``db.table`` names, read from information_schema.

    Tables without a primary key are left out (an ODS table needs one).
    """
    if not tables:
        return {}
    pairs = [t.split(".", 1) for t in tables]
    where = " OR ".join(["(TABLE_SCHEMA = %s AND TABLE_NAME = %s)"] * len(pairs))
    params = [x for pair in pairs for x in pair]
    cursor.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, "
        "NUMERIC_SCALE, COLUMN_KEY, IS_NULLABLE FROM information_schema.COLUMNS "
        f"WHERE {where} ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        params,
    )
    columns: dict[str, list[pa.Field]] = {}
    for db, name, col, data_type, column_type, precision, scale, _key, _nullable in cursor.fetchall():
        info = {
            "data_type": data_type,
            "column_type": column_type,
            "numeric_precision": precision,
            "numeric_scale": scale,
        }
        columns.setdefault(f"{db}.{name}", []).append(pa.field(str(col), arrow_type(info)))
    cursor.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        f"WHERE CONSTRAINT_NAME = 'PRIMARY' AND ({where}) "
        "ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
        params,
    )
    keys: dict[str, list[str]] = {}
    for db, name, col in cursor.fetchall():
        keys.setdefault(f"{db}.{name}", []).append(str(col))
    specs: dict[str, TableSpec] = {}
    for table, fields in columns.items():
        key = keys.get(table)
        if not key:
            continue
        schema = pa.schema([f.with_nullable(f.name not in key) for f in fields])
        specs[table] = TableSpec(table, schema, tuple(key))
    return specs


def list_tables(cursor: Any, databases: list[str] | None) -> list[str]:
    """``db.table`` of every base table (in ``databases``, if given), system schemas excluded."""
    sql = "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE'"
    params: list[str] = []
    if databases:
        sql += " AND TABLE_SCHEMA IN (" + ", ".join(["%s"] * len(databases)) + ")"
        params = list(databases)
    cursor.execute(sql, params)
    return sorted(f"{db}.{t}" for db, t in cursor.fetchall() if str(db).lower() not in SYSTEM_DATABASES)


def quote(name: str) -> str:
    """A MySQL identifier in backquotes."""
    return "`" + name.replace("`", "``") + "`"
