"""PostgreSQL logical replication into ODS, against a private PostgreSQL 15 the module starts.

The oracle is the server itself: ``SELECT`` for the final state, and an audit table filled by a
trigger for every key's history (so the ODS changelog can be checked change by change).
"""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.postgres import PostgresSource
from flowlake.testing.services import ServiceUnavailableError
from harness.services import kill_running, postgres_binaries, require_service, running_postgres

psycopg = pytest.importorskip("psycopg")

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("postgres-cdc")]

_databases = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A private PostgreSQL 15 with wal_level=logical for this module; yields its URL (no database)."""
    require_service(postgres_binaries() is not None, "PostgreSQL 15 server binaries are not installed")
    try:
        with running_postgres() as pg:
            yield pg.url
    except ServiceUnavailableError as exc:  # pragma: no cover - depends on the machine
        require_service(False, str(exc))


@pytest.fixture
def db(server: str) -> str:
    """A fresh database (so each test has its own slot and publication); yields its URL."""
    name = f"t{os.getpid()}_{next(_databases)}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def connect(url: str) -> Any:
    return psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")


def lake(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "wh").as_uri()


def ingest(cat: fl.Catalog, url: str, **options: Any) -> Any:
    return OdsIngester(cat, PostgresSource(url, chunk_size=options.pop("chunk_size", 2)), **options).run(
        until_idle=True
    )


def ods_rows(cat: fl.Catalog, table: str) -> list[dict[str, Any]]:
    return sorted(cat.load_table(table).read().to_pylist(), key=lambda r: r["id"])


def dead_letters(cat: fl.Catalog) -> list[dict[str, Any]]:
    if not cat.table_exists("ods._dead_letter"):
        return []
    rows: list[dict[str, Any]] = cat.load_table("ods._dead_letter").read().to_pylist()
    return rows


# --- every type, in the snapshot and in the stream --------------------------------------------------

TYPES_DDL = """
CREATE TABLE types (
    id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, n numeric(12, 3), n_free numeric,
    f4 real, f8 double precision, t text, vc varchar(10), ch char(3), b boolean, d date, tm time,
    ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb, by bytea, ai int[], at text[],
    an numeric(5, 2)[]
)
"""
TYPES_VALUES = (
    "%s, -32768, 2147483647, -9223372036854775808, 123456789.125, 0.1000000000000000000000000000001, "
    "1.5, 0.1, 'héllo ☃ ''q''', 'abc', 'x', true, '2026-02-28', '23:59:59.999999', "
    "'2026-01-01 10:00:00.25', '2026-01-01 10:00:00.25+02', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', "
    """'{"b": 1,  "a": [true, null]}', '{"b": 1,  "a": [true, null]}', '\\x00ff10', '{1,NULL,-3}', """
    """'{"a,b",NULL,"x\\"y"}', '{1.50,NULL}'"""
)
TYPES_EXPECTED = {
    "i2": -32768,
    "i4": 2147483647,
    "i8": -(2**63),
    "n": decimal.Decimal("123456789.125"),
    "n_free": "0.1000000000000000000000000000001",
    "f4": 1.5,
    "f8": 0.1,
    "t": "héllo ☃ 'q'",
    "vc": "abc",
    "ch": "x  ",
    "b": True,
    "d": dt.date(2026, 2, 28),
    "tm": dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),
    "ts": dt.datetime(2026, 1, 1, 10, 0, 0, 250_000),
    "tstz": dt.datetime(2026, 1, 1, 8, 0, 0, 250_000, tzinfo=dt.UTC),
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "j": '{"b": 1,  "a": [true, null]}',
    "jb": '{"a": [true, null], "b": 1}',
    "by": b"\x00\xff\x10",
    "ai": "[1,null,-3]",
    "at": '["a,b",null,"x\\"y"]',
    "an": '["1.50",null]',
}
TYPES_SCHEMA = {
    "i2": pa.int16(),
    "i4": pa.int32(),
    "i8": pa.int64(),
    "n": pa.decimal128(12, 3),
    "n_free": pa.string(),
    "f4": pa.float32(),
    "f8": pa.float64(),
    "t": pa.string(),
    "vc": pa.string(),
    "ch": pa.string(),
    "b": pa.bool_(),
    "d": pa.date32(),
    "tm": pa.duration("us"),
    "ts": pa.timestamp("us"),
    "tstz": pa.timestamp("us", tz="UTC"),
    "u": pa.string(),
    "j": pa.string(),
    "jb": pa.string(),
    "by": pa.binary(),
    "ai": pa.string(),
    "at": pa.string(),
    "an": pa.string(),
}


def test_every_type_in_snapshot_and_stream_and_bad_values_as_dead_letters(db: str, tmp_path: Path) -> None:
    conn = connect(db)
    conn.execute(TYPES_DDL)
    conn.execute(f"INSERT INTO types VALUES ({TYPES_VALUES})", [1])
    conn.execute("INSERT INTO types (id) VALUES (2)")  # every column null
    conn.execute("INSERT INTO types (id, n, d) VALUES (3, 'NaN', 'infinity')")  # bad in the snapshot
    cat = fl.connect(*lake(tmp_path))
    stats = ingest(cat, db)
    assert stats.stopped == {}
    table = cat.load_table("ods.types")
    for name, dtype in TYPES_SCHEMA.items():
        assert table.schema.field(name).type == dtype, name

    conn.execute(f"INSERT INTO types VALUES ({TYPES_VALUES})", [11])  # the same values through the stream
    conn.execute("INSERT INTO types (id) VALUES (12)")
    conn.execute("INSERT INTO types (id, n) VALUES (13, 'NaN')")
    conn.execute("INSERT INTO types (id, d) VALUES (14, '-infinity')")
    conn.execute("INSERT INTO types (id, ai) VALUES (15, '{{1,2},{3,4}}')")
    conn.execute("INSERT INTO types (id, an) VALUES (16, '{1.5,NaN}')")
    conn.execute("UPDATE types SET n = 'NaN' WHERE id = 2")  # an update with a bad new image
    stats = ingest(cat, db)
    assert stats.stopped == {}
    rows = {r["id"]: r for r in ods_rows(cat, "ods.types")}
    assert set(rows) == {1, 2, 11, 12}
    for key in (1, 11):
        got = {k: v for k, v in rows[key].items() if k != "id"}
        assert got == TYPES_EXPECTED, key
    assert all(v is None for k, v in rows[2].items() if k != "id")  # its bad update left it as it was
    assert all(v is None for k, v in rows[12].items() if k != "id")

    letters = dead_letters(cat)
    errors = sorted(letter["error"] for letter in letters)
    assert len(errors) == 6, errors
    assert all(letter["source_table"] == "public.types" for letter in letters)
    assert sum("'n' (decimal128(12, 3)) cannot hold 'NaN'" in e for e in errors) == 3
    assert sum("column 'd' (date32[day])" in e for e in errors) == 1  # row 3's first bad column is n
    assert any("multi-dimensional" in e and "'ai'" in e for e in errors)
    stream_errors = [e for e in errors if "LSN" in e]
    assert len(stream_errors) == 5 and all(
        re.search(r"at LSN [0-9A-F]+/[0-9A-F]+ \(xid \d+\)", e) for e in stream_errors
    )


# --- replica identity, TOAST, TRUNCATE, ADD COLUMN ---------------------------------------------------


def changelog_is_exact(table: fl.LakeTable) -> None:
    """Replay the ODS changelog: every retraction equals the live row it retracts."""
    live: dict[Any, dict[str, Any]] = {}
    for row in table.changes(0).to_pylist():
        kind = row.pop("_kind")
        row.pop("_seq")
        if kind in (1, 3):
            assert live.pop(row["id"]) == row
        else:
            assert row["id"] not in live
            live[row["id"]] = row


def test_replica_identity_toast_truncate_and_add_column(db: str, tmp_path: Path) -> None:
    conn = connect(db)
    for name, identity in (("dflt", "DEFAULT"), ("whole", "FULL")):
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text, big text)")
        conn.execute(f"ALTER TABLE {name} REPLICA IDENTITY {identity}")
        conn.execute(f"ALTER TABLE {name} ALTER COLUMN big SET STORAGE EXTERNAL")  # out of line, as is
        conn.execute(f"INSERT INTO {name} SELECT g, 'v' || g, NULL FROM generate_series(1, 5) g")
    cat = fl.connect(*lake(tmp_path))
    ingest(cat, db)
    big = "".join(random.Random(1).choice("abcdefghij") for _ in range(40_000))  # stored out of line
    for name in ("dflt", "whole"):
        conn.execute(f"UPDATE {name} SET v = 'changed' WHERE id = 1")
        conn.execute(f"UPDATE {name} SET id = 10 WHERE id = 2")  # a key change: -D of 2, +I of 10
        conn.execute(f"DELETE FROM {name} WHERE id = 3")
        conn.execute(f"UPDATE {name} SET big = %s WHERE id = 4", [big])
        conn.execute(f"UPDATE {name} SET v = 'toast kept' WHERE id = 4")  # big: unchanged, not sent
    stats = ingest(cat, db)
    assert stats.stopped == {}
    for name in ("dflt", "whole"):
        expected = [dict(zip(("id", "v", "big"), r, strict=True)) for r in conn.execute(
            f"SELECT id, v, big FROM {name} ORDER BY id"
        ).fetchall()]  # fmt: skip
        got = ods_rows(cat, f"ods.{name}")
        if name == "whole":
            assert got == expected
        else:  # the update that left the TOASTed value out is a dead letter: row 4 keeps its old image
            assert [r for r in got if r["id"] != 4] == [r for r in expected if r["id"] != 4]
            assert next(r for r in got if r["id"] == 4) == {"id": 4, "v": "v4", "big": big}
        changelog_is_exact(cat.load_table(f"ods.{name}"))
    (toast,) = dead_letters(cat)
    assert toast["source_table"] == "public.dflt" and "REPLICA IDENTITY FULL" in toast["error"]
    assert "['big']" in toast["error"] and "LSN" in toast["error"]

    conn.execute("ALTER TABLE whole ADD COLUMN qty int DEFAULT 7")  # fills rows without row changes
    conn.execute("INSERT INTO whole (id, v, qty) VALUES (20, 'new', 8)")
    conn.execute("TRUNCATE dflt")
    stats = ingest(cat, db)
    assert stats.stopped == {}
    whole = cat.load_table("ods.whole")
    assert whole.schema.names == ["id", "v", "big", "qty"]
    assert {r["id"]: r["qty"] for r in ods_rows(cat, "ods.whole")} == {1: 7, 4: 7, 5: 7, 10: 7, 20: 8}
    truncate = [d for d in dead_letters(cat) if "TRUNCATE" in d["error"]]
    assert len(truncate) == 1 and truncate[0]["source_table"] == "public.dflt"
    assert "re-snapshot" in truncate[0]["error"] and "LSN" in truncate[0]["error"]
    assert len(ods_rows(cat, "ods.dflt")) == 4  # kept: a truncate is not applied


# --- exactly once across restarts ---------------------------------------------------------------------


class Unconfirming(PostgresSource):
    """A source that never confirms to the server: as if killed between the ODS commit and the ack."""

    def acknowledge(self, order: tuple[Any, ...]) -> None:
        pass


def test_unconfirmed_transactions_are_skipped_on_restart(db: str, tmp_path: Path) -> None:
    conn = connect(db)
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int, n numeric(5, 2))")
    conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g")
    cat = fl.connect(*lake(tmp_path))
    OdsIngester(cat, Unconfirming(db, chunk_size=4)).run(until_idle=True)
    # a dead letter first: the dead-letter table keeps this older position until the run's final
    # checkpoint, which the crash below prevents, so the restart asks the server for everything after it
    conn.execute("INSERT INTO t VALUES (100, 0, 'NaN')")
    for i in range(1, 6):
        conn.execute("UPDATE t SET v = v + 1 WHERE id <= %s", [i])

    def crash_after_the_updates(name: str, commit: fl.Commit, changelog: pa.Table) -> None:
        if name == "ods.t" and changelog.num_rows == 10:  # the last update (5 rows, -U/+U) landed
            raise RuntimeError("simulated crash before the final checkpoint")

    first = OdsIngester(cat, Unconfirming(db), max_rows=1, catchup_rows=1, on_commit=crash_after_the_updates)
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.run(until_idle=True)
    slot = PostgresSource(db).url.slot
    (confirmed,) = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    stored = cat.load_table("ods.t").source_position(PostgresSource(db).key)
    assert stored is not None
    assert lsn(confirmed) < lsn(stored["lsn"])  # the server will send it all again
    changes = cat.load_table("ods.t").changes(0).num_rows
    again = OdsIngester(cat, PostgresSource(db), max_rows=1, catchup_rows=1).run(until_idle=True)
    assert again.skipped_groups >= 5 and again.changes == 0  # re-sent, recognised, not applied twice
    assert cat.load_table("ods.t").changes(0).num_rows == changes
    assert ods_rows(cat, "ods.t") == [{"id": i, "v": max(0, 6 - i), "n": None} for i in range(1, 11)]
    assert len(dead_letters(cat)) == 1
    (confirmed,) = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", [slot]
    ).fetchone()
    assert lsn(confirmed) >= lsn(stored["lsn"])  # a confirming source releases what ODS holds


# --- SIGKILL mid-snapshot and mid-stream -------------------------------------------------------------

ORDER_COLUMNS = ["id", "customer", "status", "amount", "updated"]


def create_shop(conn: Any, rows: int) -> None:
    conn.execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, status text, "
        "amount numeric(12, 2), updated timestamptz)"
    )
    conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, visits int)")
    conn.execute("CREATE TABLE archive (id int PRIMARY KEY)")  # never written: its position stays old
    conn.execute("INSERT INTO archive VALUES (1), (2)")
    conn.execute(
        "CREATE SCHEMA audit; CREATE TABLE audit.orders (seq bigserial PRIMARY KEY, id bigint, op char, "
        "customer int, status text, amount numeric(12, 2), updated timestamptz)"
    )
    conn.execute(
        "INSERT INTO orders SELECT g, g %% 997, 'new', (g %% 10000) / 4.0, "
        "'2026-01-01'::timestamptz + g * interval '1 s' FROM generate_series(0, %s) g",
        [rows - 1],
    )
    conn.execute("INSERT INTO customers SELECT g, 'c' || g, 0 FROM generate_series(0, 499) g")
    conn.execute(
        """CREATE FUNCTION audit.orders() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            INSERT INTO audit.orders (id, op) VALUES (OLD.id, 'D');
          ELSE
            INSERT INTO audit.orders (id, op, customer, status, amount, updated)
            VALUES (NEW.id, left(TG_OP, 1), NEW.customer, NEW.status, NEW.amount, NEW.updated);
          END IF;
          RETURN NULL;
        END $$"""
    )
    conn.execute(
        "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON orders "
        "FOR EACH ROW EXECUTE FUNCTION audit.orders()"
    )


class Writer(threading.Thread):
    """Small transactions of inserts, updates and deletes, paced so the ingester keeps up."""

    def __init__(self, url: str, first_new_id: int, *, behind: Callable[[], bool]) -> None:
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.next_id = first_new_id
        self.behind = behind
        self.stop = threading.Event()
        self.transactions = 0
        self.rng = random.Random(5)
        self.error: BaseException | None = None
        self.lsn: str | None = None
        """The WAL position inside the last transaction, before its commit (which ODS reaches once it
        holds that transaction). Not the server's current position: WAL others write (autovacuum,
        checkpoints) while the writer pauses would keep it ahead of ODS, which has nothing to commit,
        and the writer would wait for ever."""

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.transaction()
                time.sleep(0.02)
                while self.transactions % 10 == 0 and self.behind():
                    if self.stop.wait(0.1):
                        break
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def transaction(self) -> None:
        with self.conn.transaction():
            touched: set[int] = set()
            for _ in range(self.rng.randint(1, 3)):
                r = self.rng.random()
                hot = self.rng.random() < 0.3  # a few keys change often: a replayed change would show
                key = self.rng.randrange(20) if hot else self.rng.randrange(self.next_id)
                if r < 0.35:
                    key, self.next_id = self.next_id, self.next_id + 1
                    self.conn.execute(
                        "INSERT INTO orders VALUES (%s, %s, 'new', 1.00, clock_timestamp())", [key, key % 997]
                    )
                elif key in touched:
                    continue
                elif hot or r < 0.8:
                    self.conn.execute(
                        "UPDATE orders SET amount = amount + 1, updated = clock_timestamp(), "
                        "status = (ARRAY['paid', 'sent', 'done'])[1 + floor(random() * 3)] WHERE id = %s",
                        [key],
                    )
                else:
                    self.conn.execute("DELETE FROM orders WHERE id = %s", [key])
                touched.add(key)
            if self.rng.random() < 0.03:  # a transaction spanning two tables
                self.conn.execute(
                    "UPDATE customers SET visits = visits + 1 WHERE id = %s", [self.rng.randrange(500)]
                )
            at, wrote = self.conn.execute(
                "SELECT pg_current_wal_insert_lsn()::text, pg_current_xact_id_if_assigned() IS NOT NULL"
            ).fetchone()
            if wrote:  # (a transaction whose statements matched no row commits nothing ODS would get)
                self.lsn = at
        self.transactions += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        self.conn.close()
        assert self.error is None, self.error


def start_ingester(url: str, catalog: str, warehouse: str, *extra: str, log: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from flowlake.cli.main import main; main(sys.argv[1:])"
    args = [
        "ingest", "--source", url, "--tables", "public.*", "--namespace", "ods",
        "--catalog", catalog, "--warehouse", warehouse, "--chunk-size", "1000", "--max-rows", "1",
        "--catchup-rows", "1", "--max-latency-ms", "50", *extra,  # one commit per transaction: each state
    ]  # fmt: skip
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env
    )


def position(cat: fl.Catalog, table: str, key: str) -> dict[str, Any]:
    if not cat.table_exists(table):
        return {}
    found = cat.load_table(table).source_position(key)
    return found if isinstance(found, dict) else {}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until ``check()``; ``timeout`` only bounds a failure (generous: at load 12-26 a snapshot
    that takes seconds on a quiet machine took minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lsn(text: str) -> int:
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def test_sigkill_mid_snapshot_and_mid_stream_then_until_idle(db: str, tmp_path: Path, cpu_load: int) -> None:
    conn = connect(db)
    create_shop(conn, 12_000)
    initial = {r[0]: dict(zip(ORDER_COLUMNS, r, strict=True)) for r in conn.execute(
        f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders"
    ).fetchall()}  # fmt: skip
    catalog, warehouse = lake(tmp_path)
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    key = PostgresSource(db).key
    log = tmp_path / "ingest.log"

    def behind() -> bool:  # the writer's last transaction 64 KiB of WAL past ODS: let it catch up
        stored = position(fl.connect(catalog=catalog, warehouse=warehouse), "ods.orders", key)
        if "lsn" not in stored or writer.lsn is None:
            return False
        return lsn(writer.lsn) - lsn(stored["lsn"]) > 64 * 1024

    writer = Writer(db, 12_000, behind=behind)
    writer.start()
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        started.append(start_ingester(db, catalog, warehouse, *extra, log=log))
        return started[-1]

    def snapshot(table: str) -> dict[str, Any]:
        return position(cat, table, key).get("snapshot") or {}

    try:
        seq_done, seq_end = run_kill_restart(cat, conn, db, key, writer, start, snapshot, log)
    finally:
        kill_running(started)
    check_result(cat, conn, initial, int(seq_done), int(seq_end), log)


def run_kill_restart(
    cat: fl.Catalog,
    conn: Any,
    db: str,
    key: str,
    writer: Writer,
    start: Callable[..., subprocess.Popen[bytes]],
    snapshot: Callable[[str], dict[str, Any]],
    log: Path,
) -> tuple[int, int]:
    try:
        first = start()
        wait_for(lambda: snapshot("ods.orders").get("chunks", 0) >= 3, 180, "3 chunks")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = snapshot("ods.orders")
        assert not killed_at["done"], "the snapshot finished before the kill; use smaller chunks"

        second = start()
        tables = ("orders", "customers", "archive")
        wait_for(lambda: all(snapshot(f"ods.{t}").get("done") for t in tables), 300, "the snapshots")
        (seq_done,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit.orders").fetchone()
        before = position(cat, "ods.orders", key)
        wait_for(lambda: position(cat, "ods.orders", key) != before, 120, "streaming")
        second.send_signal(signal.SIGKILL)
        second.wait(10)

        stored = position(cat, "ods.orders", key)
        (confirmed,) = conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            [PostgresSource(db).url.slot],
        ).fetchone()
        assert lsn(confirmed) <= lsn(stored["lsn"]), "the slot was confirmed past what ODS holds"
        third = start()
        wait_for(lambda: position(cat, "ods.orders", key) != stored, 180, "the third ingester to commit")

        def written_after_snapshots() -> bool:  # the writer pauses while ODS is behind: wait for it
            (last,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit.orders").fetchone()
            return int(last) > int(seq_done)

        wait_for(written_after_snapshots, 300, "a write after the snapshots finished")
    finally:
        writer.finish()
    assert writer.transactions > 50
    third.send_signal(signal.SIGTERM)  # a graceful stop flushes and prints its summary
    assert third.wait(30) == 0, log.read_text()[-3000:]
    (seq_end,) = conn.execute("SELECT MAX(seq) FROM audit.orders").fetchone()
    last = start("--until-idle")  # everything committed before it started is in ODS when it exits
    assert last.wait(90) == 0, log.read_text()[-3000:]
    return int(seq_done), int(seq_end)


def check_result(
    cat: fl.Catalog, conn: Any, initial: dict[Any, dict[str, Any]], seq_done: int, seq_end: int, log: Path
) -> None:
    text = log.read_text()
    assert "no dead letters in ods._dead_letter" in text
    expected = [dict(zip(ORDER_COLUMNS, r, strict=True)) for r in conn.execute(
        f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders ORDER BY id"
    ).fetchall()]  # fmt: skip
    assert ods_rows(cat, "ods.orders") == expected
    customers = [dict(zip(("id", "name", "visits"), r, strict=True)) for r in conn.execute(
        "SELECT id, name, visits FROM customers ORDER BY id"
    ).fetchall()]  # fmt: skip
    assert ods_rows(cat, "ods.customers") == customers
    # every key's ODS states appear in the order PostgreSQL went through them: nothing replayed,
    # reordered or invented (a snapshot may skip states, the stream may not)
    audit: dict[Any, list[tuple[int, dict[str, Any] | None]]] = {}
    for seq, key, op, *values in conn.execute(
        "SELECT seq, id, op, customer, status, amount, updated FROM audit.orders ORDER BY seq"
    ).fetchall():
        state = None if op == "D" else dict(zip(ORDER_COLUMNS, (key, *values), strict=True))
        audit.setdefault(key, []).append((seq, state))
    history: dict[Any, list[dict[str, Any] | None]] = {}
    live: dict[Any, dict[str, Any]] = {}
    for row in cat.load_table("ods.orders").changes(0).to_pylist():
        kind = row.pop("_kind")
        row.pop("_seq")
        if kind in (1, 3):
            assert live.pop(row["id"]) == row, "a retraction does not match the live row"
            if kind == 3:
                history.setdefault(row["id"], []).append(None)
        else:
            assert row["id"] not in live
            live[row["id"]] = row
            history.setdefault(row["id"], []).append(row)
    for k, states in history.items():
        whole = ([initial[k]] if k in initial else []) + [s for _, s in audit.get(k, [])]
        it = iter(whole)
        assert all(any(x == y for y in it) for x in states), f"key {k}: ODS {states}, PostgreSQL {whole}"
        after = [s for seq, s in audit.get(k, []) if seq > seq_done]
        if after:
            tail = states[-len(after) :]
            assert tail == after, f"key {k}: ODS ends with {tail}, PostgreSQL after the snapshot {after}"
    assert any(seq > seq_done for changes in audit.values() for seq, _ in changes)
    assert seq_end > seq_done
    # (whether a restart re-reads committed transactions depends on when the kill hit relative to the
    # slot's status update; test_unconfirmed_transactions_are_skipped_on_restart forces that case)


def test_a_restart_waits_for_the_slot_an_earlier_connection_still_holds(db: str, tmp_path: Path) -> None:
    """A walsender of an earlier run (just closed, or of a killed process until the server notices)
    may still hold the slot when the ingester starts again: it waits for it instead of failing."""
    conn = connect(db)
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 5) g")
    cat = fl.connect(*lake(tmp_path))
    ingest(cat, db)
    url = PostgresSource(db).url
    holder = psycopg.connect(**url.settings(replication=True), autocommit=True)
    command = (
        f"START_REPLICATION SLOT {url.slot} LOGICAL 0/0 "
        f"(proto_version '1', publication_names '{url.publication}')"
    )
    assert holder.pgconn.exec_(command.encode()).status == psycopg.pq.ExecStatus.COPY_BOTH
    conn.execute("UPDATE t SET v = 1 WHERE id = 3")
    releaser = threading.Timer(1.5, holder.close)  # the earlier walsender goes away while the run waits
    releaser.start()
    started = time.monotonic()
    try:
        ingest(cat, db)
    finally:
        releaser.join()
    assert time.monotonic() - started >= 1.0, "the run had to wait for the slot"
    assert [r["v"] for r in ods_rows(cat, "ods.t")] == [0, 0, 1, 0, 0]
