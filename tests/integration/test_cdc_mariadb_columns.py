"""Binlog rows events read by columns (flowlake.cdc.mysql_rows) give exactly mysql-replication's values
fixed to the server's, on every column kind the plan reads, at its extremes; the stream then hands the
ingester Arrow changelogs, and ODS equals ``SELECT *``."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any, Literal

import pytest
from test_cdc_mariadb import fresh_database, lake
from test_cdc_mariadb_fidelity import COLUMNS as MATRIX_COLUMNS
from test_cdc_mariadb_fidelity import HIGH, LOW, MIDDLE

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.mysql import MySqlSource
from flowlake.cdc.mysql_rows import decode_event, plan_table
from flowlake.cdc.mysql_schema import MySqlUrl
from flowlake.cdc.mysql_values import row_changes, table_decoders
from flowlake.cdc.source import ChangeGroup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xdist_group("mariadb"),
    pytest.mark.filterwarnings("ignore:'db' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pymysql")
pytest.importorskip("pymysqlreplication")

# the columns of the fidelity matrix that the by-columns plan reads, plus a VARCHAR with a 2-byte length
# and more decimal and temporal shapes (every packed-digit layout, every fractional-seconds width)
PLAIN = """CREATE TABLE tp.plain (
  id BIGINT UNSIGNED PRIMARY KEY,
  i8 TINYINT, u8 TINYINT UNSIGNED, i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT,
  u24 MEDIUMINT UNSIGNED, i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
  dec1 DECIMAL(20,6), dbl DOUBLE, flt FLOAT,
  vc VARCHAR(40) CHARACTER SET utf8mb4, l1 VARCHAR(20) CHARACTER SET latin1, ch CHAR(5), txt TEXT,
  bl BLOB, bn BINARY(4), vb VARBINARY(8), d DATE, dtm DATETIME(6), ts TIMESTAMP(3) NULL,
  lv VARCHAR(300) CHARACTER SET utf8mb4,
  amt DECIMAL(12,2), d0 DECIMAL(18,0), d9 DECIMAL(9,9), d38 DECIMAL(38,10), dt0 DATETIME, dt1 DATETIME(1),
  ts0 TIMESTAMP NULL, ts5 TIMESTAMP(5) NULL, ts6 TIMESTAMP(6) NULL
)"""
FROM_MATRIX = [
    "i8", "u8", "i16", "u16", "i24", "u24", "i32", "u32", "i64", "u64", "dec1", "dbl", "flt",
    "vc", "l1", "ch", "txt", "bl", "bn", "vb", "d", "dtm", "ts",
]  # fmt: skip
MORE = ["lv", "amt", "d0", "d9", "d38", "dt0", "dt1", "ts0", "ts5", "ts6"]
COLUMNS = ["id", *FROM_MATRIX, *MORE]
TIMESTAMPS = ("ts", "ts0", "ts5", "ts6")


def values(matrix: list[str], more: list[str]) -> list[str]:
    picked = dict(zip(MATRIX_COLUMNS[1:], matrix, strict=True))
    return [picked[c] for c in FROM_MATRIX] + more


ROWS = {
    1: values(
        LOW,
        [
            "REPEAT('\u00e9', 300)",
            "-9999999999.99",
            "-999999999999999999",
            "-0.999999999",
            "-" + "9" * 28 + "." + "9" * 10,
            "'1000-01-01 00:00:00'",
            "'1000-01-01 00:00:00.1'",
            "'1970-01-01 00:00:01'",
            "'1970-01-01 00:00:01.00001'",
            "'1970-01-01 00:00:00.000001'",
        ],
    ),
    2: values(
        HIGH,
        [
            "''",
            "9999999999.99",
            "999999999999999999",
            "0.999999999",
            "9" * 28 + "." + "9" * 10,
            "'9999-12-31 23:59:59'",
            "'9999-12-31 23:59:59.9'",
            "'2038-01-19 03:14:07'",
            "'2038-01-19 03:14:07.99999'",
            "'2038-01-19 03:14:07.999999'",
        ],
    ),
    3: values(
        MIDDLE,
        [
            "'short'",
            "-0.01",
            "0",
            "0.000000001",
            "-1.5",
            "'0000-00-00 00:00:00'",
            "'2026-02-30 12:00:00.5'",
            "'0000-00-00 00:00:00'",
            "'2026-12-07 04:05:06.12345'",
            "'2026-12-07 04:05:06.5'",
        ],
    ),
    4: ["NULL"] * (len(COLUMNS) - 1),
}


def write(cur: Any, table: str = "tp.plain") -> None:
    for key, row in ROWS.items():
        cur.execute(f"INSERT INTO {table} VALUES ({key}, {', '.join(row)})")
    cur.execute("BEGIN")
    for key in range(10, 400):  # one rows event with many rows, some null here and there
        rng = random.Random(key)
        row = [
            ROWS[rng.choice([1, 2, 3, 4])][i] if rng.random() < 0.8 else "NULL"
            for i in range(len(COLUMNS) - 1)
        ]
        cur.execute(f"INSERT INTO {table} VALUES ({key}, {', '.join(row)})")
    cur.execute("COMMIT")
    for key, row in [(1, ROWS[2]), (2, ROWS[4]), (4, ROWS[3])]:
        sets = ", ".join(f"{c} = {v}" for c, v in zip(COLUMNS[1:], row, strict=True))
        cur.execute(f"UPDATE {table} SET {sets} WHERE id = {key}")
    cur.execute(f"UPDATE {table} SET i32 = i32 + 1 WHERE id BETWEEN 10 AND 200 AND i32 < 2000000000")
    cur.execute(f"DELETE FROM {table} WHERE id IN (3, 11, 12) OR id > 350")


def test_rows_events_read_by_columns_equal_the_library_rows(mariadb: str) -> None:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

    cur = fresh_database(mariadb, "tp", non_strict=True)  # MariaDB's latin1 bytes, as legacy apps write
    cur.execute(PLAIN)
    cur.execute("SHOW MASTER STATUS")
    file, pos = cur.fetchone()[:2]
    write(cur)
    cur.execute("SHOW MASTER STATUS")
    end = cur.fetchone()[:2]
    stream = BinLogStreamReader(
        connection_settings=MySqlUrl.parse(mariadb).settings(), server_id=random.randint(10_000, 2**31 - 1),
        blocking=False, resume_stream=True, log_file=file, log_pos=int(pos), only_schemas=["tp"],
        only_events=[TableMapEvent, WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], enable_logging=False,
        freeze_schema=True,
    )  # fmt: skip
    compared = {"insert": 0, "update": 0, "delete": 0}
    try:
        plans: dict[int, Any] = {}
        decoders: dict[int, Any] = {}
        for event in stream:
            if isinstance(event, TableMapEvent):
                decoders[event.table_id] = table_decoders(event.columns)
                plans[event.table_id] = plan_table(event.columns, decoders[event.table_id])
                assert plans[event.table_id] is not None, "every column of tp.plain has a reader"
                continue
            kind: Literal["insert", "update", "delete"] = "insert"
            if isinstance(event, UpdateRowsEvent):
                kind = "update"
            elif isinstance(event, DeleteRowsEvent):
                kind = "delete"
            plan = plans[event.table_id]
            decoded = decode_event(plan, event, kind)
            assert decoded is not None
            expected = row_changes("tp.plain", event, kind, decoders[event.table_id])  # after: not consumed
            got = [
                (k, {name: column[i] for name, column in zip(plan.names, decoded.columns, strict=True)})
                for i, k in enumerate(decoded.kinds)
            ]
            assert got == expected
            for (_, a), (_, b) in zip(got, expected, strict=True):  # bytes stay bytes, str stays str
                assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}
            compared[kind] += len(expected)
            if (stream.log_file, stream.log_pos) >= (end[0], int(end[1])):
                break
    finally:
        stream.close()
    assert compared["insert"] >= 394 and compared["update"] >= 100 and compared["delete"] >= 50, compared


def test_stream_hands_the_ingester_arrow_changelogs_and_ods_equals_select(
    mariadb: str, tmp_path: Path
) -> None:
    cur = fresh_database(mariadb, "tq", non_strict=True)
    cur.execute(PLAIN.replace("tp.plain", "tq.plain"))
    cur.execute(f"INSERT INTO tq.plain VALUES (1000, {', '.join(ROWS[1])})")
    catalog, warehouse = lake(tmp_path)
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    url = f"{mariadb}/tq"
    OdsIngester(cat, MySqlSource(url)).run(until_idle=True)  # the snapshot; ODS table made
    write(cur, "tq.plain")
    seen: list[ChangeGroup] = []
    source = MySqlSource(url)
    poll = source.poll

    def recording(timeout: float) -> list[ChangeGroup]:
        groups = poll(timeout)
        seen.extend(groups)
        return groups

    source.poll = recording  # type: ignore[method-assign]
    OdsIngester(cat, source).run(until_idle=True)
    batches = [g.batches["tq.plain"] for g in seen if "tq.plain" in g.batches]
    batched = sum(len(b) for b in batches if b.form == "changelog")
    per_row = sum(len(b) for b in batches if b.form == "rows")
    # the 4 single-row inserts and 3 single-row updates are small transactions: rows (see _MIN_BATCH)
    assert batched > 500 and per_row == 4 + 3 * 2, (batched, per_row)
    cur.execute(
        f"SELECT {', '.join(c if c != 'flt' else 'CAST(flt AS DOUBLE)' for c in COLUMNS)} FROM tq.plain"
    )
    expected = sorted((source_row(r) for r in cur.fetchall()), key=lambda r: r["id"])
    ods = sorted(cat.load_table("ods.plain").read().to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in ods] == [r["id"] for r in expected]
    for got, want in zip(ods, expected, strict=True):
        for column in COLUMNS:
            assert type(got[column]) is type(want[column]) and got[column] == want[column], (
                f"id {want['id']} column {column}: ODS {got[column]!r}, MariaDB {want[column]!r}"
            )


def source_row(values: tuple[Any, ...]) -> dict[str, Any]:
    """A ``SELECT`` row as ODS holds it: zero dates NULL, TIMESTAMPs in UTC."""
    row = dict(zip(COLUMNS, values, strict=True))
    for column, value in row.items():
        if isinstance(value, str) and column in ("d", "dtm", "dt0", "dt1", *TIMESTAMPS):
            row[column] = None  # PyMySQL's text of a zero date
        elif column in TIMESTAMPS and isinstance(value, dt.datetime):
            row[column] = value.replace(tzinfo=dt.UTC)
    return row
