"""Binlog CDC against a real MariaDB that the tests start: snapshot under writes, kill -9, restart.

The oracle is MariaDB itself: ``SELECT *`` for the final state, and an audit table filled by
triggers for the history of every key (so the ODS changelog can be checked change by change).
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
from harness.services import kill_running

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb"),  # one server per session, on one worker
    # mysql-replication connects with PyMySQL's deprecated db= argument
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pymysql = pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")

ORDER_COLUMNS = ["id", "customer", "status", "amount", "updated"]


def connect(url: str) -> Any:
    port = int(url.rsplit(":", 1)[1])
    return pymysql.connect(
        host="127.0.0.1", port=port, user="root", autocommit=True, init_command="SET time_zone='+00:00'"
    )


def lake(tmp_path: Path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "wh").as_uri()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- the workload ----------------------------------------------------------------------------------


def fresh_database(url: str, name: str, *, non_strict: bool = False) -> Any:
    """A cursor on a new connection to ``url`` with database ``name`` dropped and created again;
    ``non_strict`` clears the session's sql_mode (zero dates and MariaDB's latin1 bytes, as legacy
    apps write them)."""
    cur = connect(url).cursor()
    if non_strict:
        cur.execute("SET SESSION sql_mode = ''")
    cur.execute(f"DROP DATABASE IF EXISTS {name}")
    cur.execute(f"CREATE DATABASE {name}")
    return cur


def create_shop(cur: Any, rows: int) -> None:
    cur.execute("DROP DATABASE IF EXISTS shop")
    cur.execute("DROP DATABASE IF EXISTS audit")
    cur.execute("CREATE DATABASE shop")
    cur.execute("CREATE DATABASE audit")
    cur.execute(
        "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer INT NOT NULL, status VARCHAR(16), "
        "amount DECIMAL(12,2), updated DATETIME(6))"
    )
    cur.execute("CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(40), visits INT)")
    # never written after the load: its ODS position stays old, so every restart re-reads the log
    # from there and must skip what the other tables already hold
    cur.execute("CREATE TABLE shop.archive (id INT PRIMARY KEY)")
    cur.execute("INSERT INTO shop.archive VALUES (1), (2)")
    cur.execute(
        "CREATE TABLE audit.orders (seq BIGINT AUTO_INCREMENT PRIMARY KEY, id BIGINT, op CHAR(1), "
        "customer INT, status VARCHAR(16), amount DECIMAL(12,2), updated DATETIME(6))"
    )
    base = dt.datetime(2026, 1, 1)
    for start in range(0, rows, 5000):
        values = [
            (i, i % 997, "new", decimal.Decimal(i % 10_000) / 4, base + dt.timedelta(seconds=i))
            for i in range(start, min(rows, start + 5000))
        ]
        cur.executemany("INSERT INTO shop.orders VALUES (%s, %s, %s, %s, %s)", values)
    cur.executemany("INSERT INTO shop.customers VALUES (%s, %s, 0)", [(i, f"c{i}") for i in range(500)])
    for op, image in (("I", "NEW"), ("U", "NEW"), ("D", "OLD")):
        event = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}[op]
        cur.execute(
            f"CREATE TRIGGER shop.audit_{op} AFTER {event} ON shop.orders FOR EACH ROW "
            f"INSERT INTO audit.orders (id, op, customer, status, amount, updated) VALUES "
            f"({image}.id, '{op}', {image}.customer, {image}.status, {image}.amount, {image}.updated)"
        )


class Writer(threading.Thread):
    """Small transactions of inserts, updates and deletes (distinct keys within a transaction)."""

    def __init__(
        self, url: str, first_new_id: int, *, pause: float = 0.01, behind: Callable[[], bool] | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.conn = connect(url)
        self.next_id = first_new_id
        self.pause = pause
        self.behind = behind  # called every 20 transactions: while True, wait (the reader is far behind)
        self.stop = threading.Event()
        self.transactions = 0
        self.rng = random.Random(5)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.transaction()
                time.sleep(self.pause)
                while self.behind is not None and self.transactions % 20 == 0 and self.behind():
                    if self.stop.wait(0.1):
                        break
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def transaction(self) -> None:
        cur = self.conn.cursor()
        cur.execute("BEGIN")
        touched: set[int] = set()
        for _ in range(self.rng.randint(1, 3)):
            r = self.rng.random()
            hot = self.rng.random() < 0.3  # a few keys change often: a replayed change would show
            key = self.rng.randrange(20) if hot else self.rng.randrange(self.next_id)
            if r < 0.35:
                key, self.next_id = self.next_id, self.next_id + 1
                cur.execute(
                    "INSERT INTO shop.orders VALUES (%s, %s, 'new', 1.00, UTC_TIMESTAMP(6))",
                    (key, key % 997),
                )
            elif key in touched:
                continue
            elif hot or r < 0.8:
                cur.execute(
                    "UPDATE shop.orders SET status = ELT(1 + FLOOR(RAND() * 3), 'paid', 'sent', 'done'), "
                    "amount = amount + 1, updated = UTC_TIMESTAMP(6) WHERE id = %s",
                    (key,),
                )
            else:
                cur.execute("DELETE FROM shop.orders WHERE id = %s", (key,))
            touched.add(key)
        if self.rng.random() < 0.03:  # a transaction spanning two tables (rare: its position lags)
            cur.execute(
                "UPDATE shop.customers SET visits = visits + 1 WHERE id = %s", (self.rng.randrange(500),)
            )
        cur.execute("COMMIT")
        self.transactions += 1

    def finish(self) -> None:
        self.stop.set()
        self.join(30)
        self.conn.close()
        assert self.error is None, self.error


# --- running the CLI in a process we can kill --------------------------------------------------------


def start_ingester(url: str, catalog: str, warehouse: str, *extra: str, log: Path) -> subprocess.Popen[bytes]:
    code = "import sys; from flowlake.cli.main import main; main(sys.argv[1:])"
    args = [
        "ingest", "--source", f"{url}/shop", "--tables", "shop.*", "--namespace", "ods",
        "--catalog", catalog, "--warehouse", warehouse, "--chunk-size", "1000", "--max-rows", "1",
        "--catchup-rows", "1", "--max-latency-ms", "50", *extra,
    ]  # fmt: skip
    out = log.open("ab")
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def position(cat: fl.Catalog, table: str, key: str) -> dict[str, Any] | None:
    if not cat.table_exists(table):
        return None
    found = cat.load_table(table).source_position(key)
    return found if isinstance(found, dict) else None


def snapshot_state(cat: fl.Catalog, table: str, key: str) -> dict[str, Any]:
    found = position(cat, table, key)
    return (found or {}).get("snapshot") or {}


# --- checks ------------------------------------------------------------------------------------------


def source_rows(cur: Any, table: str, columns: list[str]) -> list[dict[str, Any]]:
    cur.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
    return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]


def assert_ods_equals_source(cat: fl.Catalog, cur: Any) -> None:
    """ods.orders and ods.customers hold exactly the rows of shop.orders and shop.customers."""
    orders, customers = cat.load_table("ods.orders"), cat.load_table("ods.customers")
    assert sorted(orders.read().to_pylist(), key=lambda r: r["id"]) == source_rows(
        cur, "shop.orders", ORDER_COLUMNS
    )
    assert sorted(customers.read().to_pylist(), key=lambda r: r["id"]) == source_rows(
        cur, "shop.customers", ["id", "name", "visits"]
    )


def key_histories(changes: pa.Table) -> dict[Any, list[dict[str, Any] | None]]:
    """Replay an ODS changelog; check every retraction; return each key's sequence of states."""
    live: dict[Any, dict[str, Any]] = {}
    history: dict[Any, list[dict[str, Any] | None]] = {}
    for row in changes.to_pylist():
        kind = row.pop("_kind")
        row.pop("_seq")
        key = row["id"]
        if kind in (1, 3):
            assert live.get(key) == row, f"retraction {row} does not match the live row {live.get(key)}"
            del live[key]
            if kind == 3:
                history.setdefault(key, []).append(None)
        else:
            assert key not in live, f"{'+I' if kind == 0 else '+U without -U'} for live key {key}"
            assert not history.get(key) or history[key][-1] != row, f"duplicate change {row}"
            live[key] = row
            history.setdefault(key, []).append(row)
    return history


def is_subsequence(part: list[Any], whole: list[Any]) -> bool:
    it = iter(whole)
    return all(any(x == y for y in it) for x in part)


def audit_histories(cur: Any, after_seq: int) -> dict[Any, list[dict[str, Any] | None]]:
    cur.execute(
        "SELECT id, op, customer, status, amount, updated FROM audit.orders WHERE seq > %s ORDER BY seq",
        (after_seq,),
    )
    out: dict[Any, list[dict[str, Any] | None]] = {}
    for key, op, customer, status, amount, updated in cur.fetchall():
        state = (
            None
            if op == "D"
            else dict(zip(ORDER_COLUMNS, (key, customer, status, amount, updated), strict=True))
        )
        out.setdefault(key, []).append(state)
    return out


def test_snapshot_under_writes_survives_sigkill_mid_snapshot_and_mid_stream(
    mariadb: str, tmp_path: Path, cpu_load: int
) -> None:
    conn = connect(mariadb)
    cur = conn.cursor()
    create_shop(cur, 50_000)
    catalog, warehouse = lake(tmp_path)
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    initial = {r["id"]: r for r in source_rows(cur, "shop.orders", ORDER_COLUMNS)}
    key = mariadb.removeprefix("mysql://root@")
    key = f"mysql://127.0.0.1:{key.rsplit(':', 1)[1]}"
    log = tmp_path / "ingest.log"
    # paced by the ingester rather than the clock: on a loaded machine a fixed rate can outrun it forever
    writer = Writer(mariadb, 50_000, pause=0.02, behind=ingester_behind(mariadb, catalog, warehouse, key))
    writer.start()
    started: list[subprocess.Popen[bytes]] = []

    def start(*extra: str) -> subprocess.Popen[bytes]:
        started.append(start_ingester(mariadb, catalog, warehouse, *extra, log=log))
        return started[-1]

    try:
        run_kill_restart(cat, cur, key, writer, start, log)
    finally:
        writer.stop.set()
        kill_running(started)
    check_result(cat, cur, initial, log)


def ingester_behind(url: str, catalog: str, warehouse: str, key: str) -> Callable[[], bool]:
    """Whether ODS is more than ~32 KiB of binlog behind the server (checked from the writer thread)."""
    state: dict[str, Any] = {}

    def behind() -> bool:
        if not state:
            state["cur"] = connect(url).cursor()
            state["cat"] = fl.connect(catalog=catalog, warehouse=warehouse)
        state["cur"].execute("SHOW MASTER STATUS")
        file, pos = state["cur"].fetchone()[:2]
        stored = position(state["cat"], "ods.orders", key)
        if stored is None or "file" not in stored:
            return False
        return str(stored["file"]) != str(file) or int(pos) - int(stored["pos"]) > 32 * 1024

    return behind


def run_kill_restart(
    cat: fl.Catalog,
    cur: Any,
    key: str,
    writer: Writer,
    start: Callable[..., subprocess.Popen[bytes]],
    log: Path,
) -> None:
    try:
        first = start()
        wait_for(lambda: snapshot_state(cat, "ods.orders", key).get("chunks", 0) >= 4, 180, "4 chunks")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = snapshot_state(cat, "ods.orders", key)
        assert not killed_at["done"], "the snapshot finished before the kill; use smaller chunks"

        second = start()

        def all_done() -> bool:
            tables = ("orders", "customers", "archive")
            return all(snapshot_state(cat, f"ods.{t}", key).get("done") for t in tables)

        wait_for(all_done, 420, "the snapshots to finish")
        cur.execute("SELECT COALESCE(MAX(seq), 0) FROM audit.orders")
        (seq_done,) = cur.fetchone()
        (log.parent / "seq_done").write_text(str(seq_done))
        assert snapshot_state(cat, "ods.orders", key)["chunks"] > killed_at["chunks"]
        time.sleep(2)  # streaming
        second.send_signal(signal.SIGKILL)
        second.wait(10)

        before = position(cat, "ods.orders", key)
        third = start()
        # streaming again: it committed past the killed one's position (a fixed sleep is not enough on a
        # loaded machine, where a SIGTERM during start-up would kill it before its handler is installed)
        wait_for(lambda: position(cat, "ods.orders", key) != before, 180, "the third ingester to commit")
    finally:
        writer.finish()
    assert writer.transactions > 100
    third.send_signal(signal.SIGTERM)  # a graceful stop flushes and prints its summary
    assert third.wait(30) == 0, log.read_text()[-3000:]
    last = start("--until-idle")
    assert last.wait(240) == 0, log.read_text()[-3000:]


def check_result(cat: fl.Catalog, cur: Any, initial: dict[Any, dict[str, Any]], log: Path) -> None:
    seq_done = int((log.parent / "seq_done").read_text())
    text = log.read_text()
    assert "no dead letters in ods._dead_letter" in text

    assert_ods_equals_source(cat, cur)
    ods_history = key_histories(cat.load_table("ods.orders").changes(0))
    # every key's ODS states appear in the order MariaDB went through them: no replayed, reordered
    # or invented change (a snapshot may skip states, the stream may not)
    full = audit_histories(cur, 0)
    for k, states in ods_history.items():
        whole = ([initial[k]] if k in initial else []) + full.get(k, [])
        assert is_subsequence(states, whole), f"key {k}: ODS went through {states}, MariaDB {whole}"
    changed_after = audit_histories(cur, seq_done)
    assert changed_after, "the writer made no change after the snapshot"
    for k, states in changed_after.items():
        got = ods_history.get(k, [])
        assert got[-len(states) :] == states, f"key {k}: ODS changes {got} do not end with {states}"
    assert not cat.table_exists("ods._dead_letter")
    skipped = [
        int(n.replace(",", "")) for n in re.findall(r"\(([\d,]+) groups already committed, skipped\)", text)
    ]
    assert skipped and max(skipped) > 0, "no restart after a kill re-read and skipped committed groups"


def test_alter_table_new_tables_and_multi_table_transactions(mariadb: str, tmp_path: Path) -> None:
    cur = fresh_database(mariadb, "evo")
    cur.execute("CREATE TABLE evo.a (id INT PRIMARY KEY, v VARCHAR(10), t TIMESTAMP(3) NULL, d DATE)")
    cur.execute("CREATE TABLE evo.b (k1 INT, k2 VARCHAR(5), n BIGINT UNSIGNED, PRIMARY KEY (k1, k2))")
    cur.execute("CREATE TABLE evo.nokey (x INT)")
    cur.execute(
        "INSERT INTO evo.a VALUES (1, 'x', '2026-01-01 10:00:00.250', '2026-02-03'), (2, 'y', NULL, NULL)"
    )
    cat = fl.connect(*lake(tmp_path))
    source = MySqlSource(f"{mariadb}/evo", chunk_size=1)
    assert OdsIngester(cat, source).run(until_idle=True).changes == 2
    a = cat.load_table("ods.a")
    assert a.read().column("t").to_pylist()[0] == dt.datetime(2026, 1, 1, 10, 0, 0, 250_000, tzinfo=dt.UTC)
    assert cat.load_table("ods.b").primary_key == ("k1", "k2")
    assert not cat.table_exists("ods.nokey")

    cur.execute("ALTER TABLE evo.a ADD COLUMN qty INT DEFAULT 7")
    cur.execute("BEGIN")
    cur.execute("UPDATE evo.a SET v = 'x2' WHERE id = 1")
    cur.execute("INSERT INTO evo.b VALUES (1, 'p', 18446744073709551615)")
    cur.execute("COMMIT")
    cur.execute("CREATE TABLE evo.c (id INT PRIMARY KEY, w VARCHAR(3))")
    cur.execute("INSERT INTO evo.c VALUES (5, 'w')")
    cur.execute("INSERT INTO evo.nokey VALUES (1)")  # no key: skipped with a warning, not dead-lettered
    stats = OdsIngester(cat, MySqlSource(f"{mariadb}/evo")).run(until_idle=True)
    assert stats.dead_letters == 0
    assert a.refresh().schema.names == ["id", "v", "t", "d", "qty"]
    assert sorted(a.read(columns=["id", "v", "qty"]).to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "v": "x2", "qty": 7},
        {"id": 2, "v": "y", "qty": 7},
    ]
    b = cat.load_table("ods.b")
    assert b.read().to_pylist() == [{"k1": 1, "k2": "p", "n": 2**64 - 1}]
    (a_commit,) = [c for c in a.history() if c.summary.get("rows", {}).get("+U")]
    (b_commit,) = [c for c in b.history() if c.summary.get("rows", {}).get("+I")]
    src = source.key
    a_pos, b_pos = a_commit.summary["sources"][src], b_commit.summary["sources"][src]
    assert (a_pos["file"], a_pos["pos"]) == (b_pos["file"], b_pos["pos"])  # one transaction, one position
    assert cat.load_table("ods.c").read().to_pylist() == [{"id": 5, "w": "w"}]

    cur.execute("TRUNCATE TABLE evo.c")
    assert OdsIngester(cat, MySqlSource(f"{mariadb}/evo")).run(until_idle=True).dead_letters == 1
    (letter,) = cat.load_table("ods._dead_letter").read().to_pylist()
    assert letter["source_table"] == "evo.c" and "TRUNCATE" in letter["error"]


def test_watermark_window_reconciles_chunks_without_consistent_snapshots(
    mariadb: str, tmp_path: Path, cpu_load: int
) -> None:
    conn = connect(mariadb)
    cur = conn.cursor()
    create_shop(cur, 8000)
    initial = {r["id"]: r for r in source_rows(cur, "shop.orders", ORDER_COLUMNS)}
    cat = fl.connect(*lake(tmp_path))
    writer = Writer(mariadb, 8000, pause=0.0)
    writer.start()
    try:
        source = MySqlSource(f"{mariadb}/shop", chunk_size=500, consistent_snapshot=False)
        OdsIngester(cat, source, max_rows=2000).run(duration=6)
    finally:
        writer.finish()
    OdsIngester(cat, MySqlSource(f"{mariadb}/shop")).run(until_idle=True)
    orders = cat.load_table("ods.orders")
    assert sorted(orders.read().to_pylist(), key=lambda r: r["id"]) == source_rows(
        cur, "shop.orders", ORDER_COLUMNS
    )
    full = audit_histories(cur, 0)
    for k, states in key_histories(orders.changes(0)).items():
        whole = ([initial[k]] if k in initial else []) + full.get(k, [])
        assert is_subsequence(states, whole), f"key {k}: ODS went through {states}, MariaDB {whole}"
