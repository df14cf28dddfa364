"""The demo's source database on MariaDB: the generated shop workload as real SQL, read back by binlog CDC.

:class:`ShopDatabase` creates ``shops`` and ``orders`` in a database of a MariaDB/MySQL server and
applies the generator's transactions there (each as one SQL transaction); the ODS ingester then reads
them from the binlog like any production source. :func:`binlog_ready` says whether a server can be
used that way (row-based binlog with full row images) and, if not, why.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from flowlake.cdc.mysql_schema import MySqlUrl, quote
from flowlake.errors import InvalidArgumentError

SHOPS_DDL = (
    "CREATE TABLE {db}.shops (shop_id INT NOT NULL PRIMARY KEY, name VARCHAR(64), city VARCHAR(32), "
    "category VARCHAR(16))"
)
ORDERS_DDL = (
    "CREATE TABLE {db}.orders (order_id BIGINT NOT NULL PRIMARY KEY, shop_id INT, user_id BIGINT, "
    "status VARCHAR(16), amount DECIMAL(12,2), created_at TIMESTAMP(6) NULL, updated_at TIMESTAMP(6) NULL)"
)
ORDER_COLUMNS = ("order_id", "shop_id", "user_id", "status", "amount", "created_at", "updated_at")
SHOP_COLUMNS = ("shop_id", "name", "city", "category")


def connect(url: MySqlUrl, *, timeout: float = 3.0) -> Any:
    """A PyMySQL connection (no autocommit) whose session time zone is UTC, as TIMESTAMP columns need."""
    import pymysql  # type: ignore[import-untyped]

    return pymysql.connect(
        **url.settings(),
        autocommit=False,
        connect_timeout=max(1, round(timeout)),
        init_command="SET time_zone = '+00:00'",
    )


def binlog_ready(url: str, *, timeout: float = 1.0) -> str | None:
    """``None`` if ``url``'s server is reachable with a row-based, full-image binlog; else the reason."""
    try:
        parsed = MySqlUrl.parse(url)
    except InvalidArgumentError as exc:
        return str(exc)
    try:
        conn = connect(parsed, timeout=timeout)
    except Exception as exc:  # any connection failure means "not usable", with its reason
        return f"cannot connect to {parsed.key}: {exc}"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image")
            log_bin, binlog_format, row_image = cur.fetchone()
    finally:
        conn.close()
    if not int(log_bin):
        return f"{parsed.key} has the binlog off (log_bin=0)"
    if str(binlog_format).upper() != "ROW" or str(row_image).upper() != "FULL":
        got = f"binlog_format={binlog_format}, binlog_row_image={row_image}"
        return f"{parsed.key} logs {got} (need ROW and FULL)"
    return None


def _decimal(encoded: str) -> Decimal:
    cents = int.from_bytes(base64.b64decode(encoded), "big", signed=True)
    return Decimal(cents).scaleb(-2)


def _timestamp(micros: int | None) -> dt.datetime | None:
    if micros is None:
        return None
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=micros)


def order_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """An order as generated (Debezium encodings) as SQL parameters in :data:`ORDER_COLUMNS` order."""
    return (
        row["order_id"], row["shop_id"], row["user_id"], row["status"], _decimal(row["amount"]),
        _timestamp(row["created_at"]), _timestamp(row["updated_at"]),
    )  # fmt: skip


@dataclass
class ShopDatabase:
    """The shop tables in database ``database`` of the server at ``url``."""

    url: str
    database: str = "flowlake_demo"

    def __post_init__(self) -> None:
        self._url = MySqlUrl.parse(self.url)
        self._db = quote(self.database)
        self._conn: Any = None

    @property
    def source_url(self) -> str:
        """The CDC source URL: ``mysql://user@host:port/<database>``."""
        auth = self._url.user + (f":{self._url.password}" if self._url.password else "")
        return f"mysql://{auth}@{self._url.host}:{self._url.port}/{self.database}"

    def _cursor(self) -> Any:
        if self._conn is None:
            self._conn = connect(self._url)
        return self._conn.cursor()

    def recreate(self) -> None:
        """Drop and create the database with empty ``shops`` and ``orders`` tables."""
        with self._cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {self._db}")
            cur.execute(f"CREATE DATABASE {self._db}")
            cur.execute(SHOPS_DDL.format(db=self._db))
            cur.execute(ORDERS_DDL.format(db=self._db))
        self._conn.commit()

    def apply(self, events: Iterable[bytes]) -> int:
        """Apply generated change events (the generator's Debezium JSON) as one SQL transaction."""
        inserts: dict[str, list[tuple[Any, ...]]] = {"shops": [], "orders": []}
        updates: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for raw in events:
            event = orjson.loads(raw)
            table, op = event["source"]["table"], event["op"]
            if table == "shops":
                after = event["after"]
                inserts["shops"].append(tuple(after[c] for c in SHOP_COLUMNS))
            elif op in ("c", "r"):
                inserts["orders"].append(order_values(event["after"]))
            elif op == "u":
                values = order_values(event["after"])
                updates.append((*values[1:], values[0]))
            elif op == "d":
                deletes.append((event["before"]["order_id"],))
        with self._cursor() as cur:
            if inserts["shops"]:
                cur.executemany(f"INSERT INTO {self._db}.shops VALUES (%s, %s, %s, %s)", inserts["shops"])
            if inserts["orders"]:
                cur.executemany(
                    f"INSERT INTO {self._db}.orders VALUES (%s, %s, %s, %s, %s, %s, %s)", inserts["orders"]
                )
            if updates:
                assignments = ", ".join(f"{c} = %s" for c in ORDER_COLUMNS[1:])
                cur.executemany(f"UPDATE {self._db}.orders SET {assignments} WHERE order_id = %s", updates)
            if deletes:
                cur.executemany(f"DELETE FROM {self._db}.orders WHERE order_id = %s", deletes)
        self._conn.commit()
        return sum(map(len, inserts.values())) + len(updates) + len(deletes)

    def orders(self) -> list[tuple[Any, ...]]:
        """Every order row, by ``order_id`` (the source truth to compare ODS with)."""
        with self._cursor() as cur:
            cur.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM {self._db}.orders ORDER BY order_id")
            rows: Sequence[tuple[Any, ...]] = cur.fetchall()
        self._conn.commit()
        return list(rows)

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
