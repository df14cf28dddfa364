"""The Arrow snapshot path (ConnectorX) against a real MariaDB: exact values for every type it takes,
the PyMySQL path for the rest, and the watermark algorithm's guarantees under writes and SIGKILL.

The oracles are the PyMySQL path (the same tables ingested with ``arrow_snapshot=False``) and
``SELECT *`` of the source table.
"""

from __future__ import annotations

import datetime as dt
import decimal
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_cdc_mariadb import (
    ORDER_COLUMNS,
    Writer,
    audit_histories,
    connect,
    create_shop,
    fresh_database,
    is_subsequence,
    key_histories,
    lake,
    source_rows,
    wait_for,
)

import flowlake as fl
from flowlake.cdc import mysql_snapshot_arrow
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
from harness.services import kill_running

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb"),
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")
pytest.importorskip("connectorx")

SAFE = """CREATE TABLE sa.safe (
  id BIGINT PRIMARY KEY,
  i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT,
  u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
  d12 DECIMAL(12,2), d28 DECIMAL(28,10), d38 DECIMAL(38,20), d38i DECIMAL(38,0), dbl DOUBLE,
  vc VARCHAR(40) CHARACTER SET utf8mb4, ch CHAR(5) CHARACTER SET utf8mb4, txt TEXT CHARACTER SET utf8mb4,
  m3 MEDIUMTEXT CHARACTER SET utf8mb3, l1 VARCHAR(300) CHARACTER SET latin1,
  d DATE, dtm DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL
)"""
ALL_BYTES = "X'" + bytes(range(256)).hex() + "'"
# SQL text per column after id; hex literals keep the bytes exact
LOW = [
    "-128", "0", "-32768", "0", "-8388608", "0", "-2147483648", "0", "-9223372036854775808", "0",
    "-9999999999.99", "-999999999999999999.9999999999", "-999999999999999999.99999999999999999999",
    "-" + "9" * 38, "-1.7976931348623157e308",
    "X'61F09F9880E4B8ADE69687'", "''", "''", "''", ALL_BYTES,
    "'1000-01-01'", "'1000-01-01 00:00:00.000001'", "'1000-01-01 00:00:00'", "'1970-01-01 00:00:01'",
]  # fmt: skip
HIGH = [
    "127", "255", "32767", "65535", "8388607", "16777215", "2147483647", "4294967295",
    "9223372036854775807", "18446744073709551615",
    "9999999999.99", "999999999999999999.9999999999", "999999999999999999.99999999999999999999",
    "9" * 38, "2.2250738585072014e-308",
    "'\u4e2d\u6587\u5b57 \U0001f389'", "'abcde'", "REPEAT('\U0001f600', 2000)", "REPEAT('x', 70000)",
    "X'81418D8F909DE9FF80'",
    "'9999-12-31'", "'9999-12-31 23:59:59.999999'", "'9999-12-31 23:59:59'", "'2038-01-19 03:14:07.999999'",
]  # fmt: skip
MIDDLE = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
    "0.01", "0.0000000001", "0.00000000000000000001", "-1", "0.1",
    "'plain'", "' pad'", "'text'", "'\u00e9t\u00e9'", "'caf\u00e9'",
    "'2026-02-03'", "'2026-02-03 04:05:06.5'", "'2026-02-03 04:05:06'", "'2026-02-03 04:05:06.000001'",
]  # fmt: skip
NULLS = ["NULL"] * len(LOW)


class Reads:
    """Counts the chunks ConnectorX read (``rows``: their rows) and the ones it gave back to PyMySQL."""

    def __init__(self) -> None:
        self.arrow = self.rows = self.fallback = 0


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reads]:
    counts = Reads()
    original = mysql_snapshot_arrow.ArrowChunkReader.read

    def read(self: mysql_snapshot_arrow.ArrowChunkReader, sql: str) -> pa.Table | None:
        table = original(self, sql)
        if table is None:
            counts.fallback += 1
        else:
            counts.arrow += 1
            counts.rows += table.num_rows
        return table

    monkeypatch.setattr(mysql_snapshot_arrow.ArrowChunkReader, "read", read)
    yield counts


def ingest(url: str, root: Path, *, arrow: bool, chunk_size: int = 3) -> fl.Catalog:
    """Snapshot ``url``'s tables into a fresh lake (a flush per chunk: the ODS table is known from
    the second chunk on, which ConnectorX reads)."""
    root.mkdir()
    cat = fl.connect(*lake(root))
    source = MySqlSource(url, chunk_size=chunk_size, arrow_snapshot=arrow)
    OdsIngester(cat, source, max_rows=1, catchup_rows=1).run(until_idle=True)
    return cat


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])


def test_every_safe_type_is_exact_through_arrow(mariadb: str, tmp_path: Path, reads: Reads) -> None:
    cur = fresh_database(mariadb, "sa")
    cur.execute(SAFE)
    for i, values in enumerate([LOW, HIGH, MIDDLE, NULLS]):
        cur.execute(f"INSERT INTO sa.safe VALUES ({i + 1}, {', '.join(values)})")
    cur.execute(  # more chunks, and keys the chunks' WHERE must resume after exactly
        "INSERT INTO sa.safe (id, u64, d38, dbl, vc, dtm, ts) SELECT seq, 18446744073709551615 - seq, "
        "seq / 7, 1 / seq, CONCAT('\u00e9', seq), '2026-01-01' + INTERVAL seq SECOND, "
        "'2026-01-01' + INTERVAL seq MICROSECOND FROM sa.seq_10_to_40"
    )
    cur.execute("SET GLOBAL time_zone = '+05:00'")  # ConnectorX's connection must still read UTC
    try:
        fast = ingest(f"{mariadb}/sa", tmp_path / "fast", arrow=True).load_table("ods.safe").read()
    finally:
        cur.execute("SET GLOBAL time_zone = 'SYSTEM'")
    assert reads.arrow >= 10 and reads.fallback == 0 and reads.rows >= 30
    arrow_reads = reads.arrow
    slow = ingest(f"{mariadb}/sa", tmp_path / "slow", arrow=False).load_table("ods.safe").read()
    assert reads.arrow == arrow_reads  # arrow_snapshot=False reads nothing through ConnectorX
    assert fast.schema == slow.schema
    assert sorted_rows(fast) == sorted_rows(slow)
    # doubles bit for bit (== says -0.0 == 0.0)
    assert [bits(r["dbl"]) for r in sorted_rows(fast)] == [bits(r["dbl"]) for r in sorted_rows(slow)]

    names = fast.schema.names
    cur.execute(f"SELECT {', '.join(names)} FROM sa.safe ORDER BY id")  # the session is UTC
    source = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    ods = sorted_rows(fast)
    for row in ods:
        if row["ts"] is not None:
            row["ts"] = row["ts"].astimezone(dt.UTC).replace(tzinfo=None)
    assert ods == source
    assert [bits(r["dbl"]) for r in ods] == [bits(r["dbl"]) for r in source]
    high = next(r for r in ods if r["id"] == 2)
    assert high["u64"] == 2**64 - 1 and high["d38i"] == decimal.Decimal("9" * 38)
    assert high["txt"] == "\U0001f600" * 2000 and len(high["m3"]) == 70000
    assert len(next(r for r in ods if r["id"] == 1)["l1"]) == 256  # every latin1 byte is one character


def bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)


def test_composite_date_and_time_keys_through_arrow(mariadb: str, tmp_path: Path, reads: Reads) -> None:
    # chunks of a (DATE, DATETIME(6), TIMESTAMP(3), VARCHAR) key continue after the last key read
    # through Arrow; the next chunk may be read by either path
    cur = fresh_database(mariadb, "sk")
    cur.execute(
        "CREATE TABLE sk.k (d DATE, t DATETIME(6), ts TIMESTAMP(3), s VARCHAR(4) CHARACTER SET utf8mb4, "
        "v INT, PRIMARY KEY (d, t, ts, s))"
    )
    cur.execute(
        "INSERT INTO sk.k SELECT '2026-01-01' + INTERVAL (seq DIV 10) DAY, "
        "'2026-01-01' + INTERVAL (seq MOD 3) MICROSECOND, '2026-01-01' + INTERVAL (seq MOD 2) SECOND, "
        "CONCAT('\u00e9', seq MOD 5), seq FROM sk.seq_1_to_60"
    )
    fast = ingest(f"{mariadb}/sk", tmp_path / "fast", arrow=True, chunk_size=7).load_table("ods.k").read()
    assert reads.arrow >= 5 and reads.fallback == 0
    slow = ingest(f"{mariadb}/sk", tmp_path / "slow", arrow=False, chunk_size=7).load_table("ods.k").read()
    assert fast.num_rows == 60
    assert sorted(fast.to_pylist(), key=lambda r: r["v"]) == sorted(slow.to_pylist(), key=lambda r: r["v"])


def test_a_table_with_a_column_outside_the_safe_set_takes_the_pymysql_path(
    mariadb: str, tmp_path: Path, reads: Reads
) -> None:
    cur = fresh_database(mariadb, "sb")
    cur.execute("CREATE TABLE sb.f (id INT PRIMARY KEY, v VARCHAR(5) CHARACTER SET utf8mb4, x FLOAT)")
    cur.execute("CREATE TABLE sb.e (id INT PRIMARY KEY, e ENUM('a', 'b'))")
    cur.execute("CREATE TABLE sb.u (id INT PRIMARY KEY, v VARCHAR(5) CHARACTER SET utf16)")
    for table, value in (("f", "'a', 0.1"), ("e", "'b'"), ("u", "'\u00e9'")):
        cur.execute(f"INSERT INTO sb.{table} SELECT seq, {value} FROM sb.seq_1_to_20")
    fast = ingest(f"{mariadb}/sb", tmp_path / "fast", arrow=True)
    assert reads.arrow == 0 and reads.fallback == 0
    slow = ingest(f"{mariadb}/sb", tmp_path / "slow", arrow=False)
    for table in ("f", "e", "u"):
        got = fast.load_table(f"ods.{table}").read()
        assert got.num_rows == 20
        assert sorted_rows(got) == sorted_rows(slow.load_table(f"ods.{table}").read())


def test_a_chunk_arrow_cannot_take_exactly_falls_back_to_pymysql_alone(
    mariadb: str, tmp_path: Path, reads: Reads
) -> None:
    cur = fresh_database(mariadb, "sz")
    cur.execute("CREATE TABLE sz.z (id INT PRIMARY KEY, d DATE, t DATETIME)")
    cur.execute("INSERT INTO sz.z SELECT seq, '2026-01-01' + INTERVAL seq DAY, NULL FROM sz.seq_1_to_30")
    cur.execute("SET SESSION sql_mode = ''")
    cur.execute("UPDATE sz.z SET d = '0000-00-00', t = '2026-00-10 00:00:00' WHERE id = 20")  # zero dates
    fast = ingest(f"{mariadb}/sz", tmp_path / "fast", arrow=True).load_table("ods.z").read()
    assert reads.fallback == 1 and reads.arrow >= 8  # only the chunk holding id 20
    slow = ingest(f"{mariadb}/sz", tmp_path / "slow", arrow=False).load_table("ods.z").read()
    assert sorted_rows(fast) == sorted_rows(slow)
    assert next(r for r in sorted_rows(fast) if r["id"] == 20) == {"id": 20, "d": None, "t": None}


def test_changes_inside_a_chunks_watermark_window_win_over_its_arrow_rows(
    mariadb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deterministic: right after ConnectorX read a chunk (and before the high watermark), another
    # connection updates one of its rows and deletes another. The chunk holds their older images; the
    # stream's events in (low, high] must remove both keys from the Arrow chunk, or ODS would end
    # with the stale row and the deleted one back.
    cur = fresh_database(mariadb, "sw")
    cur.execute("CREATE TABLE sw.t (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET utf8mb4)")
    cur.execute("INSERT INTO sw.t SELECT seq, 'old' FROM sw.seq_1_to_50")
    other = connect(mariadb).cursor()
    touched: list[int] = []
    original = mysql_snapshot_arrow.ArrowChunkReader.read

    def read(self: mysql_snapshot_arrow.ArrowChunkReader, sql: str) -> pa.Table | None:
        table = original(self, sql)
        if table is not None and table.num_rows >= 3 and not touched:
            first, middle = table.column("id")[0].as_py(), table.column("id")[table.num_rows // 2].as_py()
            other.execute("UPDATE sw.t SET v = 'new' WHERE id = %s", (middle,))
            other.execute("DELETE FROM sw.t WHERE id = %s", (first,))
            touched.extend([first, middle])
        return table

    monkeypatch.setattr(mysql_snapshot_arrow.ArrowChunkReader, "read", read)
    cat = ingest(f"{mariadb}/sw", tmp_path / "lake", arrow=True, chunk_size=10)
    assert touched, "no chunk was read through ConnectorX"
    rows = sorted_rows(cat.load_table("ods.t").read())
    assert rows == source_rows(cur, "sw.t", ["id", "v"])
    assert {"id": touched[1], "v": "new"} in rows and touched[0] not in [r["id"] for r in rows]


def test_snapshot_under_writes_through_arrow_loses_and_duplicates_nothing(
    mariadb: str, tmp_path: Path, cpu_load: int, reads: Reads
) -> None:
    conn = connect(mariadb)
    cur = conn.cursor()
    create_shop(cur, 20_000)
    initial = {r["id"]: r for r in source_rows(cur, "shop.orders", ORDER_COLUMNS)}
    cat = fl.connect(*lake(tmp_path))
    source = MySqlSource(f"{mariadb}/shop", chunk_size=500, arrow_snapshot=True)
    stop = threading.Event()
    ingester = OdsIngester(cat, source, max_rows=2000, max_latency_ms=100)
    runner = threading.Thread(target=lambda: ingester.run(stop=stop))
    writer = Writer(mariadb, 20_000, pause=0.005)
    writer.start()
    runner.start()
    try:  # the writer runs through the whole snapshot
        wait_for(lambda: reads.arrow > 0 and not source.snapshot_pending, 300, "the snapshot")
        time.sleep(1)
    finally:
        writer.finish()
        stop.set()
        runner.join(60)
    assert reads.arrow >= 30 and writer.transactions > 100, (reads.arrow, writer.transactions)
    OdsIngester(cat, MySqlSource(f"{mariadb}/shop")).run(until_idle=True)
    orders = cat.load_table("ods.orders")
    assert sorted(orders.read().to_pylist(), key=lambda r: r["id"]) == source_rows(
        cur, "shop.orders", ORDER_COLUMNS
    )
    full = audit_histories(cur, 0)
    for k, states in key_histories(orders.changes(0)).items():  # no duplicate, no reordered change
        whole = ([initial[k]] if k in initial else []) + full.get(k, [])
        assert is_subsequence(states, whole), f"key {k}: ODS went through {states}, MariaDB {whole}"


KILLABLE = """
import sys
from flowlake.cdc import mysql_snapshot_arrow
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
import flowlake as fl
url, catalog, warehouse, until_idle = sys.argv[1:]
original = mysql_snapshot_arrow.ArrowChunkReader.read
def read(self, sql):
    table = original(self, sql)
    print("arrow" if table is not None else "fallback", flush=True)
    return table
mysql_snapshot_arrow.ArrowChunkReader.read = read
source = MySqlSource(url, chunk_size=300, arrow_snapshot=True)
OdsIngester(fl.connect(catalog=catalog, warehouse=warehouse), source, max_rows=500, max_latency_ms=100).run(
    until_idle=until_idle == "1"
)
"""


def test_sigkill_mid_arrow_snapshot_resumes_exactly(mariadb: str, tmp_path: Path, cpu_load: int) -> None:
    conn = connect(mariadb)
    cur = conn.cursor()
    create_shop(cur, 20_000)
    initial = {r["id"]: r for r in source_rows(cur, "shop.orders", ORDER_COLUMNS)}
    catalog, warehouse = lake(tmp_path)
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    out = tmp_path / "out.log"
    started: list[subprocess.Popen[bytes]] = []

    def start(until_idle: bool) -> subprocess.Popen[bytes]:
        args = [f"{mariadb}/shop", catalog, warehouse, "1" if until_idle else "0"]
        with out.open("ab") as log:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-c", KILLABLE, *args], stdout=log, stderr=subprocess.STDOUT
                )
            )
        return started[-1]

    def chunks() -> int:
        if not cat.table_exists("ods.orders"):
            return 0
        found = cat.load_table("ods.orders").source_position(MySqlSource(f"{mariadb}/shop").key)
        return int(((found or {}).get("snapshot") or {}).get("chunks", 0)) if isinstance(found, dict) else 0

    writer = Writer(mariadb, 20_000, pause=0.01)
    writer.start()
    try:
        first = start(until_idle=False)
        wait_for(lambda: chunks() >= 8, 180, "8 chunks")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = chunks()
        assert killed_at < 20_000 // 300, "the snapshot finished before the kill"
        second = start(until_idle=False)
        wait_for(lambda: chunks() >= killed_at + 8, 180, "8 more chunks")
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    finally:
        writer.finish()
        kill_running(started)
    last = start(until_idle=True)
    assert last.wait(300) == 0, out.read_text()[-3000:]
    assert out.read_text().splitlines().count("arrow") >= 16, out.read_text()[-3000:]
    orders = cat.load_table("ods.orders")
    assert sorted(orders.read().to_pylist(), key=lambda r: r["id"]) == source_rows(
        cur, "shop.orders", ORDER_COLUMNS
    )
    full = audit_histories(cur, 0)
    for k, states in key_histories(orders.changes(0)).items():  # nothing replayed twice after a kill
        whole = ([initial[k]] if k in initial else []) + full.get(k, [])
        assert is_subsequence(states, whole), f"key {k}: ODS went through {states}, MariaDB {whole}"
