"""The binlog reader's fast path against its library path: the same binlog, read both ways from the
same start (by file/offset and by GTID), must give the same transactions, positions and changes.

The workload mixes tables the fast path reads by columns (integers of every width, floats, text in
two charsets, binary, NULLs, rows events split over several events, updates, deletes) with tables it
hands to mysql-replication (every other type, a charset Python cannot decode: dead letters), multi-
table transactions, DDL, TRUNCATE, a table dropped and created again, and transactions of a database
the filter leaves out.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_cdc_mariadb import fresh_database
from test_cdc_mariadb_fidelity import COLUMNS, HIGH, LEGACY, LEGACY_VALUES, LOW, MATRIX, MIDDLE, NULLS

from flowlake.cdc import mysql_binlog
from flowlake.cdc.batch import UndecodedRow
from flowlake.cdc.handoff import Handoff
from flowlake.cdc.mysql_binlog import BinlogReader, ReaderSettings, TxItem, TxRun
from flowlake.cdc.mysql_gtid import MariaDbGtids
from flowlake.cdc.mysql_schema import MySqlUrl
from flowlake.cdc.source import TableFilter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb"),
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")

PLAIN = """CREATE TABLE tf.plain (
  id BIGINT PRIMARY KEY, i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED,
  i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, u64 BIGINT UNSIGNED,
  f FLOAT, d DOUBLE, s VARCHAR(300) CHARACTER SET utf8mb4, l VARCHAR(10) CHARACTER SET latin1,
  c CHAR(3), t TEXT, b BLOB, bn BINARY(4), vb VARBINARY(20)
)"""
PLAIN_ROW = (
    "({id}, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, 18446744073709551615, "
    "1.5, -2.25, REPEAT('\u00e9', {n}), X'E9FF80', 'ab', REPEAT('t', {n}), X'00FF', X'6100', X'')"
)


def workload(cur: Any) -> None:
    """Every kind of transaction the test reads back."""
    cur.execute(PLAIN)
    cur.execute(MATRIX.replace("tm.matrix", "tf.matrix"))
    cur.execute(f"CREATE TABLE tf.legacy (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET swe7, {LEGACY})")
    cur.execute("CREATE DATABASE IF NOT EXISTS tf_other")
    cur.execute("CREATE TABLE IF NOT EXISTS tf_other.x (id INT PRIMARY KEY, v INT)")
    for i in range(30):  # one-row transactions
        cur.execute("INSERT INTO tf.plain VALUES " + PLAIN_ROW.format(id=i, n=i % 7))
    cur.execute("INSERT INTO tf.plain (id) VALUES (1000)")  # NULLs in every other column
    cur.execute("BEGIN")  # a transaction of 2000 rows: its rows events are split
    values = ", ".join(PLAIN_ROW.format(id=2000 + i, n=i % 300) for i in range(2000))
    cur.execute("INSERT INTO tf.plain VALUES " + values)
    cur.execute("UPDATE tf.plain SET s = NULL, f = f + 1 WHERE id % 3 = 0")
    cur.execute("DELETE FROM tf.plain WHERE id % 5 = 0")
    cur.execute("COMMIT")
    for key, row in ((1, LOW), (2, HIGH), (3, MIDDLE), (4, NULLS)):
        cur.execute(f"INSERT INTO tf.matrix VALUES ({key}, {', '.join(row)})")
    cur.execute("BEGIN")  # several tables in one transaction, one the filter leaves out
    cur.execute("UPDATE tf.plain SET u8 = 7, l = X'81' WHERE id < 10")
    sets = ", ".join(f"{c} = {v}" for c, v in zip(COLUMNS[1:], HIGH, strict=True))
    cur.execute(f"UPDATE tf.matrix SET {sets} WHERE id = 1")
    cur.execute("INSERT INTO tf_other.x VALUES (1, 1)")
    cur.execute("COMMIT")
    cur.execute(f"INSERT INTO tf.legacy VALUES (1, 'old', {LEGACY_VALUES})")  # no Python codec: undecoded
    cur.execute("INSERT INTO tf_other.x VALUES (2, 2)")  # only a table left out
    cur.execute(
        "ALTER TABLE tf.plain ADD COLUMN extra INT DEFAULT 7"
    )  # a new table map, with one more column
    cur.execute("UPDATE tf.plain SET extra = id WHERE id < 5")
    cur.execute("DELETE FROM tf.matrix WHERE id = 4")
    cur.execute("TRUNCATE TABLE tf.legacy")
    cur.execute("DROP TABLE tf.matrix")
    cur.execute("CREATE TABLE tf.matrix (id INT PRIMARY KEY, v VARCHAR(5))")
    cur.execute("INSERT INTO tf.matrix VALUES (1, 'again')")
    cur.execute("FLUSH BINARY LOGS")  # a rotation: table maps are read again in the new file
    cur.execute("UPDATE tf.plain SET i32 = 5 WHERE id < 3")
    cur.execute("INSERT INTO tf.matrix VALUES (2, 'x')")


def read_all(
    url: str,
    *,
    fast: bool,
    start: tuple[str, int] | None,
    gtids: str | None,
    end: tuple[str, int],
    runs: list[int] | None = None,
) -> list[Any]:
    """What the reader hands over, up to ``end``, as comparable values (a run of small transactions
    as each of its transactions; ``runs`` gets the number of transactions of each run)."""
    settings = ReaderSettings(
        name="diff", connection=MySqlUrl.parse(url).settings(), server_id=4242 + fast, heartbeat_s=0.2,
        tables=TableFilter.parse("tf.*"), mariadb=True, fast=fast,
    )  # fmt: skip
    handoff = Handoff()
    reader = BinlogReader(settings, handoff, start, MariaDbGtids.parse(gtids) if gtids else None)
    reader.start()
    out: list[Any] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            for taken in handoff.drain(0.2):
                if isinstance(taken, BaseException):
                    raise taken
                if isinstance(taken, TxRun) and runs is not None:
                    runs.append(len(taken))
                for item in taken.items() if isinstance(taken, TxRun) else [taken]:
                    here = (item.file, item.pos) if isinstance(item, TxItem) else item
                    out.append(comparable(item))
                    if here >= end:
                        return out
        raise AssertionError(f"the reader did not reach {end}: {out[-3:]}")
    finally:
        reader.stop()


def comparable(item: Any) -> Any:
    if not isinstance(item, TxItem):
        return ("at", *item)
    changes = []
    for table, kind, entry in item.changes:
        if kind != -1:
            undecoded = (entry.raw, entry.error) if isinstance(entry, UndecodedRow) else None
            changes.append((table, kind, dict(entry), undecoded))
            continue
        names, event = entry
        for i, k in enumerate(event.kinds):
            changes.append((table, k, {n: c[i] for n, c in zip(names, event.columns, strict=True)}, None))
    return ("tx", item.file, item.pos, item.gtid, item.ts, tuple(item.ddl), changes)


def test_the_fast_path_reads_exactly_what_the_library_path_reads(
    mariadb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cur = fresh_database(mariadb, "tf", non_strict=True)
    cur.execute("SHOW MASTER STATUS")
    file, pos = cur.fetchone()[:2]
    cur.execute("SELECT @@gtid_binlog_pos")
    (gtids,) = cur.fetchone()
    workload(cur)
    cur.execute("SHOW MASTER STATUS")
    end = cur.fetchone()[:2]
    end = (str(end[0]), int(end[1]))

    handed: list[int] = []  # the event types the fast path left to the library
    original = mysql_binlog.LibraryEvents.event

    def counting(self: Any, packet: bytes, on_new_file: Any) -> Any:
        handed.append(packet[5])
        return original(self, packet, on_new_file)

    monkeypatch.setattr(mysql_binlog.LibraryEvents, "event", counting)
    for start, state in (((str(file), int(pos)), None), (None, gtids)):
        handed.clear()
        runs: list[int] = []
        fast = read_all(mariadb, fast=True, start=start, gtids=state, end=end, runs=runs)
        library = read_all(mariadb, fast=False, start=start, gtids=state, end=end)
        assert max(runs, default=0) >= 20, f"the one-row transactions did not travel as runs: {runs}"
        assert len(fast) == len(library)
        for got, want in zip(fast, library, strict=True):
            assert got == want
        txs = [item for item in fast if item[0] == "tx"]
        plain = [c for tx in txs for c in tx[6] if c[0] == "tf.plain"]
        assert len(plain) > 2000 and any(c[2]["s"] is None for c in plain)
        assert any(c[3] is not None for tx in txs for c in tx[6]), "no undecoded row: the legacy table"
        assert sum("ALTER tf.plain" in tx[5] for tx in txs) == 1 and any(
            "TRUNCATE" in d for tx in txs for d in tx[5]
        )
        # the plain table's rows events never went through the library, only the matrix table's
        rows_events = [t for t in handed if t in (23, 24, 25, 30, 31, 32)]
        assert rows_events, "the matrix table's rows should go through the library"
        assert len(rows_events) < 10, f"rows events of planned tables went through the library: {handed}"
