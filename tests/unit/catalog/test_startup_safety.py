"""The pieces that make opening a catalog and creating tables safe under concurrency (issue 22).

The 12-process scenario itself is tests/integration/test_catalog_startup_race.py; these check each
mechanism alone: SQLite write transactions hold the write lock from their first statement, the
migration re-checks the version under its lock, rows that many processes insert at once are
inserted once, transient database errors are retried and then named, and ``exist_ok`` holds when
another process wins the race for the name.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

import flowlake as fl
from flowlake.catalog.engine import (
    begin_write,
    create_engine,
    insert_if_missing,
    is_transient,
    run_with_retries,
)
from flowlake.catalog.migrations import ensure_schema, stored_version
from flowlake.catalog.sql import SqlMetaStore
from flowlake.catalog.sqltables import SCHEMA_VERSION, namespaces
from flowlake.errors import CatalogBusyError, CatalogError, TableExistsError

SCHEMA = pa.schema([("k", pa.int64())])


def _locked(orig: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError(orig))


def test_sqlite_write_transaction_takes_the_write_lock_at_once(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("create table x (a integer)"))
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    with begin_write(engine) as conn:
        conn.execute(sa.text("select count(*) from x")).scalar()  # only a read so far
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")  # ...but the write lock is already held
    other.execute("BEGIN IMMEDIATE")  # released when the transaction ended
    other.execute("ROLLBACK")
    with engine.connect() as conn:  # a read does not take it
        conn.execute(sa.text("select count(*) from x")).scalar()
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    other.close()
    engine.dispose()


def test_sqlite_ddl_is_transactional(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(RuntimeError), begin_write(engine) as conn:
        conn.execute(sa.text("create table y (a integer)"))
        raise RuntimeError("roll back")
    assert not sa.inspect(engine).has_table("y")  # a half-created catalog is never left behind
    engine.dispose()


def test_migration_waits_for_the_lock_then_finds_the_catalog_current(tmp_path: Path) -> None:
    """A second opener that waited while the first created the catalog re-checks and creates nothing."""
    db = tmp_path / "c.db"
    engine = create_engine(f"sqlite:///{db}")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")  # as every flowlake process sets it
    holder.execute("BEGIN IMMEDIATE")  # another migrator holds the lock
    done = threading.Event()
    errors: list[BaseException] = []

    def open_catalog() -> None:
        try:
            ensure_schema(engine)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)
        done.set()

    opener = threading.Thread(target=open_catalog)
    opener.start()
    time.sleep(0.3)
    assert not done.is_set(), errors  # it waits for the lock instead of failing
    other = create_engine(f"sqlite:///{db}")
    holder.execute("ROLLBACK")
    ensure_schema(other)  # whoever gets the lock first creates; the other re-checks and skips
    opener.join(timeout=30)
    assert done.is_set() and not errors
    with engine.connect() as conn:
        assert stored_version(conn) == SCHEMA_VERSION
    holder.close()
    engine.dispose()
    other.dispose()


def test_current_catalog_opens_without_the_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    engine = create_engine(f"sqlite:///{db}")
    ensure_schema(engine)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a long commit elsewhere
    started = time.monotonic()
    ensure_schema(engine)  # a read only: not blocked by the writer
    assert time.monotonic() - started < 5
    holder.execute("ROLLBACK")
    holder.close()
    engine.dispose()


def test_insert_if_missing_inserts_once(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    ensure_schema(engine)
    for _ in range(2):
        with begin_write(engine) as conn:
            insert_if_missing(conn, namespaces, {"name": "ods", "created_at": 1})
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(namespaces)).scalar_one() == 1
    engine.dispose()


def test_transient_errors_are_recognised() -> None:
    assert is_transient(_locked("database is locked"))
    assert not is_transient(_locked("no such table: flowlake_meta"))
    assert not is_transient(sa.exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE")))
    assert not is_transient(ValueError("database is locked"))


def test_retries_transient_failures_then_succeeds() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _locked("database is locked")
        return "done"

    assert run_with_retries(flaky, what="open", catalog="sqlite:///x.db", base_delay=0.001) == "done"
    assert len(calls) == 3


def test_retries_run_out_with_a_named_error() -> None:
    calls: list[int] = []

    def always_locked() -> None:
        calls.append(1)
        raise _locked("database is locked")

    with pytest.raises(CatalogBusyError, match=r"create table 'ods\.t'.*sqlite:///x\.db.*4 attempts"):
        run_with_retries(
            always_locked, what="create table 'ods.t'", catalog="sqlite:///x.db", attempts=4, base_delay=0.001
        )
    assert len(calls) == 4
    assert issubclass(CatalogBusyError, CatalogError)


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise _locked("no such table: flowlake_meta")

    with pytest.raises(sa.exc.OperationalError):
        run_with_retries(broken, what="open", catalog="sqlite:///x.db", base_delay=0.001)
    assert len(calls) == 1


def test_exist_ok_returns_the_table_another_process_created(tmp_path: Path) -> None:
    """The store saw the name taken (TableExistsError): exist_ok loads the winner's table."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ours = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="owner")
    theirs = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="owner")
    theirs.create_table("ods.t", SCHEMA, primary_key=["k"])
    with pytest.raises(TableExistsError, match=r"'ods\.t' already exists"):
        ours.create_table("ods.t", SCHEMA, primary_key=["k"])
    assert ours.create_table("ods.t", SCHEMA, primary_key=["k"], exist_ok=True).version == 0


def test_a_unique_race_on_another_row_is_not_reported_as_table_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An IntegrityError whose table is not there (e.g. a namespace insert lost) is retried."""
    store = SqlMetaStore(create_engine(f"sqlite:///{tmp_path / 'c.db'}"), principal="owner")
    real = store._insert_table
    failures = [sa.exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE namespaces"))]

    def racing(*args: object) -> int:
        if failures:
            raise failures.pop()
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "_insert_table", racing)
    record = store.create_table("ods", "t", SCHEMA, ["k"], 1, {})
    assert (record.namespace, record.name, record.current_version) == ("ods", "t", 0)
