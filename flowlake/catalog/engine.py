"""Opening a catalog database: SQLAlchemy engines for SQLite and PostgreSQL URLs, and redacted URLs.

Write transactions go through :func:`begin_write`. On SQLite it starts them with ``BEGIN
IMMEDIATE``, which takes the database's write lock before the first statement: a transaction that
reads, then writes (create the namespace if it is missing, check a grant, then insert) cannot have
the database change under it, and waits for the lock (``busy_timeout``) instead of failing with
"database is locked" when it upgrades from reading to writing. Reads start with a plain (deferred)
``BEGIN`` and never block writers (WAL). The pysqlite driver's own transaction handling is switched
off for this, as SQLAlchemy's documentation recommends, so that DDL (creating the catalog's tables) is
transactional too. PostgreSQL needs none of this: its transactions begin as usual.

:func:`run_with_retries` retries what another process holding the database can make fail for a
moment (SQLite "database is locked", PostgreSQL serialization failures and deadlocks), with jittered
back-off, and raises :class:`~flowlake.errors.CatalogBusyError` when the retries run out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from flowlake.errors import CatalogBusyError, CatalogError

__all__ = [
    "begin_write",
    "create_engine",
    "insert_if_missing",
    "is_transient",
    "redact",
    "run_with_retries",
]

T = TypeVar("T")
"""What a retried function returns."""

WRITE_OPTION = "flowlake_write"
"""Execution option that marks a connection whose transaction writes (SQLite: ``BEGIN IMMEDIATE``)."""

_PG_TRANSIENT = frozenset({"40001", "40P01", "55P03"})  # serialization failure, deadlock, lock timeout
_SQLITE_TRANSIENT = ("database is locked", "database is busy", "database table is locked")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_begin)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=60000")  # first: switching to WAL may wait for a lock
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def create_engine(url: str) -> Engine:
    """An engine for a catalog URL (``sqlite:///path.db`` or ``postgresql://...``)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            sa.event.listen(engine, "begin", _sqlite_begin)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise CatalogError(f"cannot open catalog {redact(url)!r}: {exc}") from exc


def begin_write(engine: Engine) -> AbstractContextManager[Connection]:
    """A transaction that writes: like ``engine.begin()``, holding SQLite's write lock from the start."""
    return engine.execution_options(**{WRITE_OPTION: True}).begin()


def insert_if_missing(conn: Connection, table: sa.Table, values: dict[str, Any]) -> None:
    """Insert a row unless one with the same primary key exists (``ON CONFLICT DO NOTHING``).

    Two processes that both find a row missing and insert it (a namespace, a principal, a grant) do
    not fail: the second insert waits for the first to commit, then does nothing.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql.insert(table).values(values).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite.insert(table).values(values).on_conflict_do_nothing())
    else:  # pragma: no cover - the catalog runs on SQLite and PostgreSQL only
        key = [table.c[c.name] == values[c.name] for c in table.primary_key.columns]
        if conn.execute(sa.select(*table.primary_key.columns).where(*key)).first() is None:
            conn.execute(sa.insert(table).values(values))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that another process holding the database causes for a moment."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _PG_TRANSIENT:
        return True
    message = str(exc.orig).lower()
    return isinstance(exc, sa.exc.OperationalError) and any(m in message for m in _SQLITE_TRANSIENT)


def run_with_retries(
    func: Callable[[], T], *, what: str, catalog: str, attempts: int = 8, base_delay: float = 0.05
) -> T:
    """Call ``func``, retrying transient database failures with jittered exponential back-off.

    Args:
        func: One whole transaction (it is run again from the start after a failure).
        what: What ``func`` does, for the error message (``"open the catalog"``).
        catalog: The catalog's URL, redacted, for the error message.
        attempts: How many times to try in all.
        base_delay: Seconds; attempt ``n`` sleeps up to ``base_delay * 2**n`` before retrying.

    Raises:
        CatalogBusyError: If every attempt failed transiently.
    """
    for attempt in range(attempts - 1):
        try:
            return func()
        except sa.exc.DBAPIError as exc:
            if not is_transient(exc):
                raise
        time.sleep(random.uniform(0.5, 1.0) * base_delay * 2**attempt)  # noqa: S311 - jitter, not crypto
    try:
        return func()
    except sa.exc.DBAPIError as exc:
        if not is_transient(exc):
            raise
        raise CatalogBusyError(
            f"cannot {what} in catalog {catalog!r}: the database stayed busy through {attempts} "
            f"attempts ({exc.orig}); other processes hold it, retry later"
        ) from exc


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable catalog url>"
