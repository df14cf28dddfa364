"""CDC ingestion figures: decoding, Debezium JSONL → ODS, and MariaDB binlog → ODS with latency.

1. Decode: ``--events`` Debezium messages of an orders table (60% inserts, 35% updates, 5% deletes),
   decoded by a bare ``orjson.loads`` loop to tuples, by ``pyarrow.json`` with a schema, and by
   flowlake's ``decode_batch`` (10k-message batches) and ``decode`` (per message).
2. JSONL → ODS: ``--jsonl-events`` such messages (default 1M: a catch-up long enough that the run's
   fixed start — catalog, ODS table, first statements — weighs little) as a file, ingested into an ODS
   table (changes/s end to end), beside the bare ``orjson.loads`` loop over the same lines timed just
   before and just after it (their mean is the baseline: load drifts).
3. Binlog → ODS (needs ``mariadbd``; a throwaway server is started): catch-up throughput over
   ``--binlog-rows`` changes written while the ingester was stopped (in 1000-row and in 1-row
   transactions), each beside mysql-replication alone parsing the same binlog range; the initial
   snapshot of a ``--snapshot-rows`` table into ODS through ConnectorX into Arrow (the fast path) and
   through PyMySQL, beside the bare chunked SELECTs through each (``--snapshot-only`` runs only this);
   then the latency from
   MariaDB commit to ODS commit visible (p50/p99) while a writer commits at each of ``--rates``
   changes/s.
4. PostgreSQL → ODS (needs the PostgreSQL 15 binaries; a private server with ``wal_level=logical`` is
   started): catch-up over ``--binlog-rows`` changes through the pgoutput slot, beside the server
   decoding and sending the same slot range alone.

Catch-up figures give wall-clock changes/s and the ingesting process's CPU time per change (all its
threads; the database servers are other processes).

    python benchmarks/cdc_ingest.py [--events 200000] [--jsonl-events 1000000] [--binlog-rows 100000]
        [--rates 1000,5000] [--seconds 10] [--skip-binlog] [--skip-postgres] [--json out.json]
        [--snapshot-rows 200000] [--snapshot-chunk 20000] [--snapshot-only] [--skip-pymysql-ods]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.json as pj

import flowlake as fl
from flowlake.cdc import decode, decode_batch
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource
from flowlake.cdc.source import TableSpec

SOURCE = {"connector": "mysql", "db": "shop", "table": "orders", "file": "mysql-bin.000003", "pos": 1}
ROW = pa.struct(
    [("order_id", pa.int64()), ("customer", pa.int64()), ("status", pa.string()), ("amount", pa.float64())]
)


def messages(n: int, seed: int = 3) -> list[bytes]:
    """Debezium payload-only messages: inserts of new keys, updates and deletes of live ones."""
    rng = random.Random(seed)
    live: dict[int, dict[str, Any]] = {}
    keys: list[int] = []
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.6 or len(keys) < 100:
            row = {"order_id": i, "customer": i % 997, "status": "new", "amount": float(i % 500)}
            live[i] = row
            keys.append(i)
            m = {"op": "c", "before": None, "after": row}
        elif r < 0.95:
            k = keys[rng.randrange(len(keys))]
            old = live[k]
            new = {**old, "status": rng.choice(["paid", "sent", "done"]), "amount": old["amount"] + 1}
            live[k] = new
            m = {"op": "u", "before": old, "after": new}
        else:
            idx = rng.randrange(len(keys))
            k = keys[idx]
            keys[idx] = keys[-1]
            keys.pop()
            m = {"op": "d", "before": live.pop(k), "after": None}
        out.append(orjson.dumps({**m, "source": SOURCE, "ts_ms": 1_700_000_000_000 + i}))
    return out


def rate(count: int, seconds: float) -> int:
    return round(count / seconds) if seconds > 0 else 0


def orjson_loop(msgs: list[bytes]) -> float:
    """The peer baseline: parse each line and pull the fields out into tuples; returns seconds."""
    t0 = time.perf_counter()
    rows = []
    for m in msgs:
        obj = orjson.loads(m)
        image = obj["after"] or obj["before"]
        rows.append((obj["op"], image["order_id"], image["customer"], image["status"], image["amount"]))
    return time.perf_counter() - t0


def bench_decode(msgs: list[bytes]) -> dict[str, Any]:
    orjson_s = orjson_loop(msgs)

    blob = b"\n".join(msgs)
    schema = pa.schema([("op", pa.string()), ("before", ROW), ("after", ROW)])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    t0 = time.perf_counter()
    pj.read_json(io.BytesIO(blob), parse_options=options)
    pyarrow_s = time.perf_counter() - t0

    row_schema = pa.schema(list(ROW))
    t0 = time.perf_counter()
    changes = 0
    for start in range(0, len(msgs), 10_000):
        changes += decode_batch(msgs[start : start + 10_000], row_schema).table.num_rows
    batch_s = time.perf_counter() - t0

    sample = msgs[:50_000]
    t0 = time.perf_counter()
    for m in sample:
        decode(m)
    single_s = time.perf_counter() - t0
    return {
        "events": len(msgs),
        "changes": changes,
        "orjson_loop_events_per_s": rate(len(msgs), orjson_s),
        "pyarrow_json_events_per_s": rate(len(msgs), pyarrow_s),
        "decode_batch_events_per_s": rate(len(msgs), batch_s),
        "decode_batch_changes_per_s": rate(changes, batch_s),
        "decode_per_message_events_per_s": rate(len(sample), single_s),
    }


def bench_jsonl(msgs: list[bytes], tmp: Path) -> dict[str, Any]:
    folder = tmp / "jsonl"
    folder.mkdir()
    (folder / "0001.jsonl").write_bytes(b"\n".join(msgs) + b"\n")
    cat = fl.connect(catalog=f"sqlite:///{tmp / 'jsonl.db'}", warehouse=(tmp / "wh-jsonl").as_uri())
    source = JsonlSource(str(folder), follow=False)
    before_s = orjson_loop(msgs)
    t0 = time.perf_counter()
    stats = OdsIngester(cat, source, primary_keys={"shop.orders": ["order_id"]}, buckets=8).run(
        until_idle=True
    )
    seconds = time.perf_counter() - t0
    after_s = orjson_loop(msgs)
    orjson_s = (before_s + after_s) / 2
    ods = cat.load_table("ods.orders")
    decoded, decode_s = jsonl_source_only(folder, TableSpec("shop.orders", ods.schema, ods.primary_key))
    return {
        "jsonl_messages": len(msgs),
        "jsonl_ods_changes": stats.changes,
        "jsonl_commits": stats.commits,
        "jsonl_orjson_loop_messages_per_s": rate(len(msgs), orjson_s),
        "jsonl_orjson_loop_before_after": f"{rate(len(msgs), before_s):,} / {rate(len(msgs), after_s):,}",
        "jsonl_to_ods_messages_per_s": rate(len(msgs), seconds),
        "jsonl_to_ods_changes_per_s": rate(stats.changes, seconds),
        "jsonl_to_ods_vs_orjson_loop": round(orjson_s / seconds, 2),
        "jsonl_source_decode_changes": decoded,
        "jsonl_source_decode_messages_per_s": rate(len(msgs), decode_s),
        "jsonl_source_decode_vs_orjson_loop": round(orjson_s / decode_s, 2),
    }


def jsonl_source_only(folder: Path, spec: TableSpec) -> tuple[int, float]:
    """The source's half alone: read and decode the file into Arrow changelogs for a known ODS table
    (what the ingester gets from it), no commits; returns (changes, seconds)."""
    source = JsonlSource(str(folder), follow=False)
    source.start({spec.source_table: None})
    source.target(spec.source_table, spec)
    changes = 0
    t0 = time.perf_counter()
    while True:
        groups = source.poll(0.0)
        for group in groups:
            changes += sum(len(b) for b in group.batches.values())  # messages: one change each or two
        if not groups and source.caught_up():
            return changes, time.perf_counter() - t0


WRITER = """
import json, sys, time, pymysql
port, per_second, seconds, first_id, out = sys.argv[1:]
per_tick, next_id = max(1, int(per_second) // 100), int(first_id)
conn = pymysql.connect(host="127.0.0.1", port=int(port), user="root", autocommit=True)
cur, committed = conn.cursor(), {}
start = tick = time.perf_counter()
while time.perf_counter() - start < float(seconds):
    ids = list(range(next_id, next_id + per_tick))
    next_id += per_tick
    rows = [(i, i % 997, "new", 1.5) for i in ids]
    cur.executemany("INSERT INTO shop.orders VALUES (%s, %s, %s, %s)", rows)
    now = time.time()
    committed.update(dict.fromkeys(ids, now))
    tick += 0.01
    time.sleep(max(0.0, tick - time.perf_counter()))
open(out, "w").write(json.dumps(committed))
"""
"""A writer in its own process (so that it does not share the GIL with the ingester): inserts at a
target rate, one transaction every 10 ms, and records each row's commit time."""


def bench_binlog(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import pymysql  # type: ignore[import-untyped]

    from flowlake.cdc.mysql import MySqlSource
    from flowlake.cdc.testing import mariadb_binaries, running_mariadb

    if mariadb_binaries() is None:
        return {"binlog": "skipped: mariadbd not installed"}
    figures: dict[str, Any] = {}
    with running_mariadb(tmp) as server:
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
        cur = conn.cursor()
        cur.execute("CREATE DATABASE shop")
        cur.execute(
            "CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, customer INT, status VARCHAR(8), amount DOUBLE)"
        )
        cat = fl.connect(catalog=f"sqlite:///{tmp / 'binlog.db'}", warehouse=(tmp / "wh-binlog").as_uri())
        url = f"{server.url}/shop"
        OdsIngester(cat, MySqlSource(url)).run(until_idle=True)  # creates ods.orders, stores a position
        n = args.binlog_rows
        cur.execute("SHOW MASTER STATUS")
        before = cur.fetchone()[:2]
        for start in range(0, n, 1000):  # 1000-row transactions: inserts, then updates of half of them
            cur.executemany(
                "INSERT INTO shop.orders VALUES (%s, %s, %s, %s)",
                [(i, i % 997, "new", 1.0) for i in range(start, min(n, start + 1000))],
            )
        cur.execute("UPDATE shop.orders SET status = 'paid', amount = amount + 1 WHERE id % 2 = 0")
        figures["binlog_bare_parse_changes_per_s_big_tx"] = bare_binlog(server.url, before, cur)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = OdsIngester(cat, MySqlSource(url), buckets=8).run(until_idle=True)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        figures["binlog_catchup_changes_big_tx"] = stats.changes
        figures["binlog_to_ods_changes_per_s_big_tx"] = rate(stats.changes, seconds)
        figures["binlog_to_ods_cpu_us_per_change_big_tx"] = round(cpu * 1e6 / max(stats.changes, 1), 1)
        small = n // 10
        cur.execute("SHOW MASTER STATUS")
        before = cur.fetchone()[:2]
        for i in range(n, n + small):  # single-row transactions
            cur.execute("INSERT INTO shop.orders VALUES (%s, %s, %s, %s)", (i, i % 997, "new", 1.0))
        figures["binlog_bare_parse_changes_per_s_1row_tx"] = bare_binlog(server.url, before, cur)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = OdsIngester(cat, MySqlSource(url), buckets=8).run(until_idle=True)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        figures["binlog_catchup_changes_1row_tx"] = stats.changes
        figures["binlog_to_ods_changes_per_s_1row_tx"] = rate(stats.changes, seconds)
        figures["binlog_to_ods_cpu_us_per_change_1row_tx"] = round(cpu * 1e6 / max(stats.changes, 1), 1)
        for per_second in args.rates:
            first = n + small + per_second * 1000
            figures.update(latency(cat, server.port, url, per_second, args.seconds, tmp, first_id=first))
        figures.update(bench_snapshot(cur, server.url, args.snapshot_rows, tmp, chunk=args.snapshot_chunk))
        conn.close()
    return figures


def bare_binlog(url: str, start: tuple[str, int], cur: Any) -> int:
    """The peer baseline: mysql-replication alone parsing the same binlog range (rows, nothing else)."""
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    from flowlake.cdc.mysql_schema import MySqlUrl

    cur.execute("SHOW MASTER STATUS")
    end = cur.fetchone()[:2]
    stream = BinLogStreamReader(
        connection_settings=MySqlUrl.parse(url).settings(), server_id=random.randint(10_000, 2**31 - 1),
        blocking=False, resume_stream=True, log_file=start[0], log_pos=int(start[1]),
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], enable_logging=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    changes = 0
    for event in stream:
        changes += len(event.rows)
        if (stream.log_file, stream.log_pos) >= (end[0], int(end[1])):
            break
    seconds = time.perf_counter() - t0
    stream.close()
    return rate(changes, seconds)


def bench_snapshot(
    cur: Any, url: str, rows: int, tmp: Path, *, chunk: int = 20_000, pymysql_ods: bool = True
) -> dict[str, Any]:
    """Initial snapshot of a ``rows``-row table into ODS, through ConnectorX into Arrow (the fast path,
    the default when ``connectorx`` is installed) and through PyMySQL (``arrow_snapshot=False``), beside
    the same chunked key-order SELECTs alone through PyMySQL and through ConnectorX."""
    import connectorx as cx

    from flowlake.cdc.mysql import MySqlSource

    cur.execute(
        "CREATE TABLE shop.snap (id BIGINT PRIMARY KEY, customer INT, status VARCHAR(8), amount DOUBLE)"
    )
    for start in range(0, rows, 1_000_000):  # one statement per 1M rows (a bounded transaction)
        stop = min(rows, start + 1_000_000)
        cur.execute(
            f"INSERT INTO shop.snap SELECT seq, seq % 997, 'new', 1.5 FROM shop.seq_{start + 1}_to_{stop}"
        )
    sql = "SELECT id, customer, status, amount FROM shop.snap WHERE id > {} ORDER BY id LIMIT {}"
    t0 = time.perf_counter()
    last, fetched = 0, 0
    while True:  # the peer baseline: the same chunked key-order SELECTs through PyMySQL, nothing else
        cur.execute(sql.format(int(last), chunk))
        got = cur.fetchall()
        if not got:
            break
        fetched += len(got)
        last = got[-1][0]
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    last, fetched_cx = 0, 0
    while True:  # and through ConnectorX into Arrow
        table = cx.read_sql(f"{url}/shop", sql.format(int(last), chunk), return_type="arrow")
        if not table.num_rows:
            break
        fetched_cx += table.num_rows
        last = table.column("id")[-1].as_py()
    bare_cx = time.perf_counter() - t0
    figures: dict[str, Any] = {
        "snapshot_rows": fetched,
        "snapshot_chunk_rows": chunk,
        "snapshot_bare_select_rows_per_s": rate(fetched, bare),
        "snapshot_bare_connectorx_rows_per_s": rate(fetched_cx, bare_cx),
    }
    for arrow in (True, False) if pymysql_ods else (True,):
        name = "snapshot-arrow" if arrow else "snapshot-pymysql"
        cat = fl.connect(catalog=f"sqlite:///{tmp / f'{name}.db'}", warehouse=(tmp / f"wh-{name}").as_uri())
        source = MySqlSource(f"{url}/shop", tables="shop.snap", chunk_size=chunk, arrow_snapshot=arrow)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = OdsIngester(cat, source, buckets=8).run(until_idle=True)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert stats.changes == fetched, (stats.changes, fetched)
        key = "snapshot_to_ods" if arrow else "snapshot_to_ods_pymysql"
        figures[f"{key}_rows_per_s"] = rate(stats.changes, seconds)
        figures[f"{key}_cpu_us_per_row"] = round(cpu * 1e6 / max(stats.changes, 1), 2)
    return figures


def bench_snapshot_only(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """``--snapshot-only``: the snapshot section alone, on a throwaway MariaDB."""
    import pymysql

    from flowlake.cdc.testing import mariadb_binaries, running_mariadb

    if mariadb_binaries() is None:
        return {"snapshot": "skipped: mariadbd not installed"}
    with running_mariadb(tmp) as server:
        conn = pymysql.connect(host="127.0.0.1", port=server.port, user="root", autocommit=True)
        cur = conn.cursor()
        cur.execute("CREATE DATABASE shop")
        figures = bench_snapshot(
            cur,
            server.url,
            args.snapshot_rows,
            tmp,
            chunk=args.snapshot_chunk,
            pymysql_ods=not args.skip_pymysql_ods,
        )
        conn.close()
    return figures


def latency(
    cat: fl.Catalog, port: int, url: str, per_second: int, seconds: float, tmp: Path, *, first_id: int
) -> dict[str, Any]:
    from flowlake.cdc.mysql import MySqlSource

    seen: dict[int, float] = {}

    def on_commit(name: str, commit: fl.Commit, changelog: pa.Table) -> None:
        seen.update(dict.fromkeys(changelog.column("id").to_pylist(), time.time()))

    stop = threading.Event()
    ingester = OdsIngester(cat, MySqlSource(url), max_latency_ms=50, on_commit=on_commit)
    runner = threading.Thread(target=lambda: ingester.run(stop=stop, poll_timeout=0.005))
    runner.start()
    time.sleep(1.0)
    out = tmp / f"writer-{per_second}.json"
    args = [str(port), str(per_second), str(seconds), str(first_id), str(out)]
    subprocess.run([sys.executable, "-c", WRITER, *args], check=True)  # noqa: S603 - our own code
    time.sleep(1.0)
    stop.set()
    runner.join()
    committed = {int(k): v for k, v in json.loads(out.read_text()).items()}
    delays = sorted(seen[i] - t for i, t in committed.items() if i in seen)
    key = f"at_{per_second}_per_s"
    if not delays:
        return {f"latency_{key}": "no changes seen"}
    return {
        f"written_{key}": len(committed),
        f"achieved_rate_{key}": round(len(committed) / seconds),
        f"seen_{key}": len(delays),
        f"latency_p50_ms_{key}": round(statistics.median(delays) * 1000, 1),
        f"latency_p99_ms_{key}": round(delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000, 1),
    }


def bench_postgres(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """pgoutput → ODS catch-up over ``--binlog-rows`` changes in 1000-row transactions (inserts, then
    an update of half), beside the server decoding and sending the same slot range alone
    (``pg_logical_slot_peek_binary_changes``, fetched, no client parsing)."""
    import psycopg

    from flowlake.cdc.postgres import PostgresSource
    from flowlake.testing.services import ServiceUnavailableError

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the harness is not installed
    from harness.services import postgres_binaries, running_postgres

    if postgres_binaries() is None:
        return {"postgres": "skipped: PostgreSQL server binaries not installed"}
    try:
        with running_postgres() as pg:
            url = f"{pg.url}/postgres"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "CREATE TABLE public.orders "
                    "(id BIGINT PRIMARY KEY, customer INT, status TEXT, amount FLOAT8)"
                )
                cat = fl.connect(catalog=f"sqlite:///{tmp / 'pg.db'}", warehouse=(tmp / "wh-pg").as_uri())
                OdsIngester(cat, PostgresSource(url, tables="public.orders")).run(until_idle=True)
                n = args.binlog_rows
                for start in range(0, n, 1000):
                    with conn.transaction(), conn.cursor() as cur:
                        cur.executemany(
                            "INSERT INTO public.orders VALUES (%s, %s, %s, %s)",
                            [(i, i % 997, "new", 1.0) for i in range(start, min(n, start + 1000))],
                        )
                conn.execute("UPDATE public.orders SET status = 'paid', amount = amount + 1 WHERE id % 2 = 0")
                t0 = time.perf_counter()
                rows = conn.execute(
                    "SELECT data FROM pg_logical_slot_peek_binary_changes('flowlake_postgres', NULL, NULL, "
                    "'proto_version', '1', 'publication_names', 'flowlake_postgres')"
                ).fetchall()
                bare = time.perf_counter() - t0
            changes = n + n // 2 * 2
            t0, c0 = time.perf_counter(), time.process_time()
            stats = OdsIngester(cat, PostgresSource(url, tables="public.orders"), buckets=8).run(
                until_idle=True
            )
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    except ServiceUnavailableError as exc:
        return {"postgres": f"skipped: {exc}"}
    return {
        "pg_bare_peek_messages": len(rows),
        "pg_bare_peek_changes_per_s": rate(changes, bare),
        "pg_catchup_changes": stats.changes,
        "pg_to_ods_changes_per_s": rate(stats.changes, seconds),
        "pg_to_ods_cpu_us_per_change": round(cpu * 1e6 / max(stats.changes, 1), 1),
    }


def main() -> None:
    """Parse flags, run, print a table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--jsonl-events", type=int, default=1_000_000, help="messages of the JSONL → ODS section"
    )
    parser.add_argument("--binlog-rows", type=int, default=100_000)
    parser.add_argument("--snapshot-rows", type=int, default=200_000)
    parser.add_argument(
        "--snapshot-chunk", type=int, default=20_000, help="rows per snapshot chunk (Arrow default)"
    )
    parser.add_argument("--snapshot-only", action="store_true", help="run only the snapshot section")
    parser.add_argument(
        "--skip-pymysql-ods", action="store_true", help="snapshot section: skip the slow PyMySQL → ODS run"
    )
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-binlog", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--json", default=None, help="write the figures to this path")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-cdc-bench-"))
    msgs = messages(args.events)
    figures: dict[str, Any] = {"machine": f"{platform.machine()} {platform.python_version()}"}
    figures["load_average_at_start"] = round(os.getloadavg()[0], 1)
    if args.snapshot_only:
        figures.update(bench_snapshot_only(args, tmp))
        figures["load_average_at_end"] = round(os.getloadavg()[0], 1)
        report(figures, args.json)
        return
    figures.update(bench_decode(msgs))
    jsonl = msgs if args.jsonl_events == args.events else messages(args.jsonl_events)
    figures.update(bench_jsonl(jsonl, tmp))
    if not args.skip_binlog:
        figures.update(bench_binlog(args, tmp))
    if not args.skip_postgres:
        figures.update(bench_postgres(args, tmp))
    figures["load_average_at_end"] = round(os.getloadavg()[0], 1)
    report(figures, args.json)


def report(figures: dict[str, Any], path: str | None) -> None:
    """Print the figures as a table; write them as JSON to ``path`` if given."""
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else f"{key:<{width}}  {value}")
    if path:
        Path(path).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
