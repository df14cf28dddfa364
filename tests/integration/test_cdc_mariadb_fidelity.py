"""CDC fidelity against a real MariaDB: every column type exact through the snapshot and the stream,
schema changes under a running ingester, no update landing in half, no poison pill.

The oracle is ``SELECT *`` of the source table, compared column by column with the ODS table. Zero
dates are the one documented exception: they are ``NULL`` in ODS (both paths).
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_cdc_mariadb import connect, fresh_database, lake, wait_for

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
from flowlake.cdc.record_json import load_record
from flowlake.status import table_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb"),
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")

MATRIX = """CREATE TABLE tm.matrix (
  id BIGINT UNSIGNED PRIMARY KEY,
  i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT,
  u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
  dec1 DECIMAL(20,6), dbl DOUBLE, flt FLOAT,
  vc VARCHAR(40) CHARACTER SET utf8mb4, l1 VARCHAR(20) CHARACTER SET latin1, ch CHAR(5), txt TEXT,
  bl BLOB, bn BINARY(4), vb VARBINARY(8), bt BIT(10), bt8 BIT(8),
  en ENUM('a','b','c'), st SET('x','b','c'),
  y YEAR, d DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL, tm TIME(6), tm0 TIME,
  js JSON
)"""
COLUMNS = [
    "id", "i8", "u8", "i16", "u16", "i24", "u24", "i32", "u32", "i64", "u64", "dec1", "dbl", "flt",
    "vc", "l1", "ch", "txt", "bl", "bn", "vb", "bt", "bt8", "en", "st", "y", "d", "dtm", "ts", "tm",
    "tm0", "js",
]  # fmt: skip
U64 = 2**64 - 1
# Each value set is SQL text per column (after id); hex literals keep the bytes exact.
LOW = [
    "-128", "0", "-32768", "0", "-8388608", "0", "-2147483648", "0", "-9223372036854775808", "0",
    "-99999999999999.999999", "-1.7976931348623157e308", "123456792",
    "X'61008000F09F9880E4B8ADE69687'", "X'81418D8F909D'", "'a'", "''",
    "X'00FF00'", "X'61000000'", "X'0000'", "b'1010101010'", "b'10101010'",
    "'a'", "'x,b'", "0", "'0000-00-00'", "'1000-01-01 00:00:00.000001'", "'1970-01-01 00:00:01.000'",
    "'-838:59:59.000000'", "'-12:30:00'", "'{\"k\": [1, 2.5, \"\\u00e9\"]}'",
]  # fmt: skip
HIGH = [
    "127", "255", "32767", "65535", "8388607", "16777215", "2147483647", "4294967295",
    "9223372036854775807", "18446744073709551615",
    "99999999999999.999999", "2.2250738585072014e-308", "-3.4028235e38",
    "X'F09F8E89E4B8ADE69687E5AD97'", "X'E9FF80'", "'abcde'", "REPEAT('x', 300)",
    "X''", "X'00000000'", "X'00FF00FF00FF0000'", "b'0000000001'", "b'0'",
    "'c'", "''", "2155", "'9999-12-31'", "'9999-12-31 23:59:59.999999'", "'2038-01-19 03:14:07.999'",
    "'838:59:59.000000'", "'838:59:59'", "'[]'",
]  # fmt: skip
MIDDLE = [
    "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
    "0.000001", "0.1", "0.1", "'plain'", "'caf\u00e9'", "'ab'", "'text'",
    "X'FF'", "X'FF'", "X'01'", "b'0000000101'", "b'11111111'",
    "'b'", "'b,x,c'", "1901", "'2026-00-15'", "'2026-02-00 00:00:00'", "'0000-00-00 00:00:00.000'",
    "'-00:00:00.000001'", "'00:00:00'", "'null'",
]  # fmt: skip
NULLS = ["NULL"] * len(LOW)
LEGACY = "bn BINARY(4), bt BIT(12), st SET('p','q'), y YEAR, tm TIME(6), d DECIMAL(30,10), c CHAR(4)"
LEGACY_COLUMNS = ["bn", "bt", "st", "y", "tm", "d", "c"]
LEGACY_VALUES = "X'01', b'101', 'q,p', 0, '-100:00:00.5', 12345678901234567890.0123456789, 'ab'"


def insert(cur: Any, key: int, values: list[str]) -> None:
    cur.execute(f"INSERT INTO tm.matrix VALUES ({key}, {', '.join(values)})")


def update(cur: Any, key: int, values: list[str]) -> None:
    sets = ", ".join(f"{c} = {v}" for c, v in zip(COLUMNS[1:], values, strict=True))
    cur.execute(f"UPDATE tm.matrix SET {sets} WHERE id = {key}")


def source_rows(cur: Any) -> list[dict[str, Any]]:
    """``SELECT *``, with FLOAT read exactly and zero dates as NULL (the documented rule)."""
    cur.execute("SELECT *, CAST(flt AS DOUBLE) FROM tm.matrix ORDER BY id")
    out = []
    for values in cur.fetchall():
        row = dict(zip(COLUMNS, values[:-1], strict=True))
        row["flt"] = values[-1]
        for date in ("d", "dtm", "ts"):
            if isinstance(row[date], str):  # PyMySQL's text of a zero date
                row[date] = None
        if isinstance(row["ts"], dt.datetime):
            row["ts"] = row["ts"].replace(tzinfo=dt.UTC)
        out.append(row)
    return out


def check_equal(cat: fl.Catalog, cur: Any) -> None:
    ods = sorted(cat.load_table("ods.matrix").read().to_pylist(), key=lambda r: r["id"])
    expected = source_rows(cur)
    assert [r["id"] for r in ods] == [r["id"] for r in expected]
    for got, want in zip(ods, expected, strict=True):
        for column in COLUMNS:
            assert type(got[column]) is type(want[column]) and got[column] == want[column], (
                f"id {want['id']} column {column}: ODS {got[column]!r}, MariaDB {want[column]!r}"
            )
    # the latin1 text is the server's own conversion, byte for byte
    cur.execute("SELECT id, HEX(CONVERT(l1 USING utf8mb4)) FROM tm.matrix ORDER BY id")
    for (key, hexed), row in zip(cur.fetchall(), ods, strict=True):
        assert key == row["id"] and (hexed or None) == (
            row["l1"].encode().hex().upper() if row["l1"] else None
        )


def test_every_type_is_exact_through_snapshot_and_stream_and_undecodable_rows_are_dead_letters(
    mariadb: str, tmp_path: Path
) -> None:
    # zero dates and MariaDB's latin1 bytes, as legacy apps write
    cur = fresh_database(mariadb, "tm", non_strict=True)
    cur.execute(MATRIX)
    # (the columns after v: a letter holds the server's value of every column it could decode)
    cur.execute(f"CREATE TABLE tm.legacy (id INT PRIMARY KEY, v VARCHAR(10) CHARACTER SET swe7, {LEGACY})")
    cur.execute(f"INSERT INTO tm.legacy VALUES (1, 'old', {LEGACY_VALUES})")
    for key, values in ((1, LOW), (2, HIGH), (3, MIDDLE), (4, NULLS), (5, MIDDLE), (U64, LOW)):
        insert(cur, key, values)
    cat = fl.connect(*lake(tmp_path))
    first = OdsIngester(cat, MySqlSource(f"{mariadb}/tm", chunk_size=2)).run(until_idle=True)
    assert first.dead_letters == 0 and not first.stopped
    assert cat.load_table("ods.matrix").schema.field("tm").type == pa.duration("us")
    check_equal(cat, cur)  # the snapshot

    # the stream: every row moves to other edge values, new rows get them, one key goes
    for key, values in ((1, HIGH), (2, MIDDLE), (3, NULLS), (4, LOW), (U64, HIGH)):
        update(cur, key, values)
    for key, values in ((10, LOW), (11, HIGH), (12, MIDDLE), (13, NULLS), (U64 - 1, LOW)):
        insert(cur, key, values)
    cur.execute("DELETE FROM tm.matrix WHERE id IN (5, 13)")
    # swe7 has no Python codec: these records cannot be decoded and must not stop the source
    cur.execute("UPDATE tm.legacy SET v = 'new' WHERE id = 1")
    cur.execute(f"INSERT INTO tm.legacy VALUES (2, 'x', {LEGACY_VALUES})")
    cur.execute("INSERT INTO tm.matrix (id, vc) VALUES (14, 'after the bad ones')")
    second = OdsIngester(cat, MySqlSource(f"{mariadb}/tm")).run(until_idle=True)
    assert second.dead_letters == 2 and not second.stopped
    check_equal(cat, cur)
    changes = cat.load_table("ods.matrix").changes(1)
    assert changes.num_rows > 0 and set(changes.column("_kind").to_pylist()) == {0, 1, 2, 3}

    # an undecodable update is dead-lettered whole: the ODS row keeps its old image, no retraction
    legacy = cat.load_table("ods.legacy").read().to_pylist()
    assert [(r["id"], r["v"]) for r in legacy] == [(1, "old")]
    assert cat.load_table("ods.legacy").changes(0).num_rows == 1
    cur.execute("SELECT * FROM tm.legacy ORDER BY id")
    server = {r[0]: dict(zip(["id", "v", *LEGACY_COLUMNS], r, strict=True)) for r in cur.fetchall()}
    letters = cat.load_table("ods._dead_letter").read().to_pylist()
    assert {row["source_table"] for row in letters} == {"tm.legacy"}
    by_kind = {load_record(row["raw"])["kind"]: (row, load_record(row["raw"])) for row in letters}
    letter, record = by_kind["update"]
    assert "column 'v'" in letter["error"] and "swe7" in letter["error"]
    # the letter replays exactly: every value the server's (as the ODS row has it), the text its bytes
    assert record["before"] == {**legacy[0], "v": b"old"} == {**server[1], "v": b"old"}
    assert record["after"] == {**server[1], "v": b"new"}
    for image in (record["before"], record["after"], by_kind["insert"][1]["values"]):
        assert {k: type(v) for k, v in image.items() if k != "v"} == {
            k: type(v) for k, v in server[1].items() if k != "v"
        }
    assert '"file"' in letter["position"] and '"pos"' in letter["position"]
    assert by_kind["insert"][1]["values"] == {**server[2], "v": b"x"}

    third = OdsIngester(cat, MySqlSource(f"{mariadb}/tm")).run(until_idle=True)  # a restart
    assert third.dead_letters == 0 and cat.load_table("ods._dead_letter").read().num_rows == 2
    check_equal(cat, cur)

    # old letters do not make every restart read the binlog again from them (nor fail once purged)
    for key in range(20, 30):
        insert(cur, key, MIDDLE)
    assert OdsIngester(cat, MySqlSource(f"{mariadb}/tm")).run(until_idle=True).changes >= 10
    fifth = OdsIngester(cat, MySqlSource(f"{mariadb}/tm")).run(until_idle=True)
    assert (fifth.skipped_groups, fifth.dead_letters) == (0, 0)
    assert cat.load_table("ods._dead_letter").read().num_rows == 2
    check_equal(cat, cur)


# --- schema changes under a running ingester -------------------------------------------------------


class Running:
    """An ingester running in a thread until stopped."""

    def __init__(self, cat: fl.Catalog, url: str) -> None:
        self.ingester = OdsIngester(cat, MySqlSource(url), max_latency_ms=20)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.ingester.run(stop=self.stop)
        except BaseException as exc:  # surfaced by finish()
            self.error = exc

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error


def ods_row(cat: fl.Catalog, key: int) -> dict[str, Any] | None:
    rows = [r for r in cat.load_table("ods.orders").read().to_pylist() if r["id"] == key]
    return rows[0] if rows else None


def test_schema_changes_under_a_running_ingester_never_lose_a_row(
    mariadb: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cur = fresh_database(mariadb, "sc")
    cur.execute(
        "CREATE TABLE sc.orders (id INT PRIMARY KEY, qty INT, amount DECIMAL(12,2), note VARCHAR(5), "
        "small BIGINT)"
    )
    cur.execute("CREATE TABLE sc.other (id INT PRIMARY KEY, v INT)")
    cur.execute("INSERT INTO sc.orders VALUES (1, 1, 10.00, 'a', 1), (2, 2, 20.00, 'b', 2)")
    cat = fl.connect(*lake(tmp_path))
    src_key = MySqlSource(mariadb).key
    caplog.set_level(logging.WARNING, logger="flowlake.cdc.ingest")
    running = Running(cat, f"{mariadb}/sc")
    try:
        wait_for(lambda: cat.table_exists("ods.orders") and ods_row(cat, 2) is not None, 60, "the snapshot")

        def alter(sql: str) -> None:
            # An ALTER re-snapshots the table. Wait for that snapshot before the next change: a chunk
            # that is ready while the source drains newer events can be emitted after them (the
            # snapshot/stream handover, worked on separately), which would overwrite the change.
            cur.execute(sql)
            cur.execute("SHOW MASTER STATUS")
            file, pos = cur.fetchone()[:2]

            def resnapshotted() -> bool:
                stored = cat.load_table("ods.orders").source_position(src_key) or {}
                done = (stored.get("snapshot") or {}).get("done")
                return bool(done) and (stored.get("file"), stored.get("pos", 0)) >= (file, pos)

            wait_for(resnapshotted, 60, f"the snapshot after {sql!r}")

        def lands(sql: str, key: int, expected: dict[str, Any]) -> None:
            cur.execute(sql)
            wait_for(lambda: _matches(ods_row(cat, key), expected), 60, f"{sql!r} to land")

        alter("ALTER TABLE sc.orders ADD COLUMN t TIME(3)")
        lands("UPDATE sc.orders SET t = '-838:59:59.999' WHERE id = 1", 1, {"t": -_time(838, 59, 59.999)})
        alter("ALTER TABLE sc.orders MODIFY qty BIGINT")
        lands("UPDATE sc.orders SET qty = 1099511627776 WHERE id = 1", 1, {"qty": 2**40})
        alter("ALTER TABLE sc.orders MODIFY amount DECIMAL(14,2)")
        big = decimal.Decimal("123456789012.34")
        lands("UPDATE sc.orders SET amount = 123456789012.34 WHERE id = 2", 2, {"amount": big})
        alter("ALTER TABLE sc.orders MODIFY note VARCHAR(40)")
        lands(
            "UPDATE sc.orders SET note = 'a much longer note' WHERE id = 2", 2, {"note": "a much longer note"}
        )
        alter("ALTER TABLE sc.orders MODIFY small INT")  # a narrowing: ODS keeps BIGINT
        lands("UPDATE sc.orders SET small = 5 WHERE id = 2", 2, {"small": 5})
        orders = cat.load_table("ods.orders").refresh()
        assert orders.schema.field("qty").type == pa.int64()
        assert orders.schema.field("amount").type == pa.decimal128(14, 2)
        assert orders.schema.field("small").type == pa.int64()
        assert any("'small'" in r.message and "int32" in r.message for r in caplog.records)

        # a change ODS cannot store: the table stops there, the row stays, other tables go on
        before = ods_row(cat, 2)
        cur.execute("ALTER TABLE sc.orders MODIFY qty VARCHAR(20)")
        cur.execute("UPDATE sc.orders SET qty = 'lots', note = 'changed' WHERE id = 2")
        cur.execute("UPDATE sc.orders SET note = 'later' WHERE id = 1")
        cur.execute("INSERT INTO sc.other VALUES (1, 1)")
        wait_for(lambda: bool(running.ingester.stats.stopped), 60, "ods.orders to stop")
        wait_for(lambda: cat.table_exists("ods.other") and cat.load_table("ods.other").read().num_rows == 1,
                 60, "ods.other to go on")  # fmt: skip
    finally:
        running.finish()
    reason = running.ingester.stats.stopped["ods.orders"]
    # ALTER re-snapshots the table, so the first change that does not fit is a chunk row's string qty
    assert "column 'qty' (int64) cannot hold" in reason and "the change of key {'id': " in reason
    assert "kept its column type" in reason and "restart the ingester" in reason
    assert ods_row(cat, 2) == before  # not retracted, not half-updated
    row = ods_row(cat, 1)
    assert row is not None
    assert row["note"] == "a"  # nothing after the stop landed
    assert not cat.table_exists("ods._dead_letter")
    assert table_status(cat, "ods.orders").stopped == reason
    source = MySqlSource(mariadb)
    stored = cat.load_table("ods.orders").source_position(src_key)
    assert stored is not None
    assert source.order_of(stored["stopped"]["at"]) > source.order_of(stored)

    # a restart retries from the kept position and stops at the same change, losing nothing
    again = OdsIngester(cat, MySqlSource(f"{mariadb}/sc")).run(until_idle=True)
    assert list(again.stopped) == ["ods.orders"] and ods_row(cat, 2) == before


def _time(hours: int, minutes: int, seconds: float) -> dt.timedelta:
    return dt.timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _matches(row: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    return row is not None and all(row.get(k) == v for k, v in expected.items())


def test_a_decimal_widening_flows_through_the_shop_views_to_dws(mariadb: str, tmp_path: Path) -> None:
    """The issue's case end to end: ``MODIFY amount DECIMAL(14,2)`` and a 14-digit amount reach ODS,
    ``dwd.orders_enriched`` and the DWS aggregates (their tables widen like ODS), and verify holds."""
    from flowlake.demo import flows as shop
    from flowlake.demo.mariadb import ShopDatabase
    from flowlake.demo.pipeline import ShopCdcGenerator, run_views_to_head
    from flowlake.flow.verify import verify_table

    database = ShopDatabase(mariadb, database="fid_shop")
    database.recreate()
    cat = fl.connect(*lake(tmp_path))
    for name in ("ods.orders", "ods.shops"):  # as the demo makes them
        schema, key, properties = shop.TABLES[name]
        cat.create_table(name, schema, primary_key=key, properties=properties)
    database.apply(ShopCdcGenerator().snapshot(40, dt.datetime.now(dt.UTC)))

    def ingest_and_run() -> None:
        stats = OdsIngester(cat, MySqlSource(database.source_url)).run(until_idle=True)
        assert not stats.stopped and not stats.dead_letters
        run_views_to_head(cat, tmp_path / "recovery")

    ingest_and_run()
    cur = connect(mariadb).cursor()
    cur.execute("ALTER TABLE fid_shop.orders MODIFY amount DECIMAL(14,2)")
    cur.execute("UPDATE fid_shop.orders SET amount = 123456789012.34, status = 'paid' WHERE order_id = 2")
    ingest_and_run()
    big = decimal.Decimal("123456789012.34")
    dwd = cat.load_table("dwd.orders_enriched")
    assert dwd.schema.field("amount").type == pa.decimal128(14, 2)
    assert [r["amount"] for r in dwd.read().to_pylist() if r["order_id"] == 2] == [big]
    assert big in cat.load_table("dws.shop_gmv_minute").read().column("max_amount").to_pylist()
    cur.execute("UPDATE fid_shop.orders SET amount = 5.00 WHERE order_id = 3")  # and later changes too
    ingest_and_run()
    assert [r["amount"] for r in dwd.read().to_pylist() if r["order_id"] == 3] == [decimal.Decimal("5.00")]
    ods = cat.load_table("ods.orders").read()
    assert sorted(
        dwd.read().select(["order_id", "amount"]).to_pylist(), key=lambda r: r["order_id"]
    ) == sorted(ods.select(["order_id", "amount"]).to_pylist(), key=lambda r: r["order_id"])
    for name in ("dwd.orders_enriched", "dws.shop_gmv_minute", "dws.city_day"):
        report = verify_table(cat, name)
        assert report.ok, (name, [str(d) for d in report.differences])


def test_snapshot_chunks_continue_after_binary_keys_exactly(mariadb: str, tmp_path: Path) -> None:
    """A chunk continues after the last key as read (bytes), not its text: ``BINARY(16)`` UUID keys with
    bytes >= 0x80 lost rows between chunks (the key went to the server as a UTF-8 string)."""
    cur = fresh_database(mariadb, "bk")
    cur.execute("CREATE TABLE bk.uuids (id BINARY(16) PRIMARY KEY, n INT)")
    cur.execute("CREATE TABLE bk.vb (id VARBINARY(4) PRIMARY KEY, n INT)")
    for n, key in enumerate(
        [b"\x7f", b"\x7f\x80", b"\x7f\x81", b"\x7f\xc2", b"\x7f\xc2\x80", b"\x80", b"\xff"]
    ):
        cur.execute("INSERT INTO bk.vb VALUES (%s, %s)", (key, n))
    for n in range(40):
        cur.execute("INSERT INTO bk.uuids VALUES (UNHEX(REPLACE(UUID(), '-', '')), %s)", (n,))
    cat = fl.connect(*lake(tmp_path))
    for table in ("vb", "uuids"):  # (before the fix the UUID chunks could also repeat without end)
        source = MySqlSource(f"{mariadb}/bk", tables=f"bk.{table}", chunk_size=3)
        stats = OdsIngester(cat, source).run(until_idle=True)
        assert stats.dead_letters == 0 and not stats.stopped
        cur.execute(f"SELECT id, n FROM bk.{table} ORDER BY id")
        ods = sorted((r["id"], r["n"]) for r in cat.load_table(f"ods.{table}").read().to_pylist())
        assert ods == sorted(cur.fetchall()), table


def test_a_time_primary_key_is_snapshotted_streamed_and_never_dead_lettered(
    mariadb: str, tmp_path: Path
) -> None:
    """A ``TIME`` key (negative, fractional, > 24 h) is a duration key in ODS; before, the ODS table could
    not be created and every restart wrote the table's rows as new dead letters (3, then 7, then 12)."""
    cur = fresh_database(mariadb, "tk")
    cur.execute("CREATE TABLE tk.t (id TIME(6) PRIMARY KEY, n INT)")
    for n, key in enumerate(["-838:59:59", "-00:00:00.25", "00:00:00", "838:59:59", "25:00:00.5"]):
        cur.execute("INSERT INTO tk.t VALUES (%s, %s)", (key, n))
    cat = fl.connect(*lake(tmp_path))
    for round_ in range(3):  # snapshot, then streamed inserts, updates and a delete across restarts
        stats = OdsIngester(cat, MySqlSource(f"{mariadb}/tk", tables="tk.t", chunk_size=2)).run(
            until_idle=True
        )
        assert stats.dead_letters == 0 and not stats.stopped
        cur.execute("INSERT INTO tk.t VALUES (%s, %s)", (f"{round_ + 100}:00:00", round_))
        cur.execute("UPDATE tk.t SET n = n + 10 WHERE id = '-00:00:00.25'")
        cur.execute("DELETE FROM tk.t WHERE id = '25:00:00.5'")
    OdsIngester(cat, MySqlSource(f"{mariadb}/tk", tables="tk.t")).run(until_idle=True)
    cur.execute("SELECT id, n FROM tk.t")
    assert sorted((r["id"], r["n"]) for r in cat.load_table("ods.t").read().to_pylist()) == sorted(
        cur.fetchall()
    )
    assert not cat.table_exists("ods._dead_letter") or cat.load_table("ods._dead_letter").read().num_rows == 0


def test_zero_dates_in_a_key_do_not_end_the_snapshot_early(mariadb: str, tmp_path: Path) -> None:
    """A zero date in a key column reads as NULL: its row is a dead letter (a key cannot be NULL), and
    the next chunk starts after the date's text; it started after NULL before, matched nothing, and the
    snapshot ended there, silently leaving every later row out."""
    cur = fresh_database(mariadb, "zk", non_strict=True)  # non-strict: zero dates allowed
    cur.execute("CREATE TABLE zk.t (d DATE, n INT, PRIMARY KEY (d, n))")
    rows = [("0000-00-00", 1), ("0000-00-00", 2), ("2026-00-15", 3), ("2026-01-01", 4), ("2026-01-02", 5)]
    cur.executemany("INSERT INTO zk.t VALUES (%s, %s)", [*rows, ("2026-01-03", 6)])
    cat = fl.connect(*lake(tmp_path))
    stats = OdsIngester(cat, MySqlSource(f"{mariadb}/zk", tables="zk.t", chunk_size=2)).run(until_idle=True)
    ods = sorted((r["d"], r["n"]) for r in cat.load_table("ods.t").read().to_pylist())
    assert ods == [(dt.date(2026, 1, d), d + 3) for d in (1, 2, 3)]
    letters = cat.load_table("ods._dead_letter").read().to_pylist()
    assert stats.dead_letters == len(letters) == 3 and all("null" in r["error"] for r in letters)
