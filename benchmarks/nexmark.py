"""Nexmark on flowlake SQL views, side by side with PyFlink SQL on the same events.

Generates Nexmark events (``_nexmark_gen``: persons, auctions, bids in the 1:3:46 proportion, ids and
event times as the Flink nexmark generator makes them) into lake tables ``nexmark.person``,
``nexmark.auction`` (primary key ``id``) and ``nexmark.bid`` (an append table), one commit per table
per ``--commit-events`` events, and into one Parquet file per table. Then, per query
(``_nexmark_queries``), each in a fresh process:

- flowlake: the query as a ``CREATE MATERIALIZED VIEW`` compiled with ``flowlake.sql.compile`` into a
  bytewax dataflow run by ``run_main`` (one worker) from version 0 to the inputs' head
  (``stop="head"``): read the lake changelogs, compute, commit the view's table. Then DuckDB runs the
  same SELECT over the Parquet files and the view's table must equal it (doubles to 6 decimals).
- PyFlink (``apache-flink``, its own interpreter: ``--flink-python``): the Flink SQL text over the
  Parquet files (streaming mode, parallelism 1, a ``blackhole`` sink as in the Nexmark project).
  Its time is the job's net runtime minus that of the same job over empty files (the job's fixed
  start-up), i.e. throughput after start-up.

events/s counts the rows of the tables a query reads (both engines read only those), per worker;
flowlake's figures also give events per CPU second of its process (all its threads), which a shared
machine's load moves much less than wall-clock time.
Peak RSS is the process's (flowlake) or the Python client's plus the JVM's (PyFlink).

    python benchmarks/nexmark.py [--events 1000000] [--queries q0,q1,...] [--engines flowlake,flink]
        [--flink-python .venv-flink/bin/python] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import proc_status_kb
from _nexmark_gen import AUCTION, BID, PERSON, NexmarkGenerator
from _nexmark_queries import LEFT_OUT, QUERIES, REWRITTEN, LeftOut, Query

SCHEMAS = {"person": PERSON, "auction": AUCTION, "bid": BID}
KEYS: dict[str, list[str] | None] = {"person": ["id"], "auction": ["id"], "bid": None}
BY_NAME = {q.name: q for q in QUERIES}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def open_catalog(workdir: Path) -> Any:
    import flowlake as fl

    return fl.connect(catalog=f"sqlite:///{workdir / 'catalog.db'}", warehouse=(workdir / "wh").as_uri())


def prepare(workdir: Path, events: int, *, commit_events: int, tps: int, seed: int) -> dict[str, int]:
    """Generate ``events`` events into the lake tables and Parquet files under ``workdir``."""
    cat = open_catalog(workdir)
    tables = {
        name: cat.create_table(f"nexmark.{name}", schema, primary_key=KEYS[name], buckets=4)
        for name, schema in SCHEMAS.items()
    }
    writers: dict[str, pq.ParquetWriter] = {}
    csv_writers: dict[str, pacsv.CSVWriter] = {}
    for name, schema in SCHEMAS.items():
        for folder in ("parquet", "csv", "csv_empty"):
            (workdir / folder / name).mkdir(parents=True, exist_ok=True)
        (workdir / "csv_empty" / name / "part-0.csv").write_text("")
        writers[name] = pq.ParquetWriter(workdir / "parquet" / name / "part-0.parquet", schema)
        csv_writers[name] = pacsv.CSVWriter(
            workdir / "csv" / name / "part-0.csv",
            schema,
            write_options=pacsv.WriteOptions(include_header=False),
        )
    generator = NexmarkGenerator(tps=tps, seed=seed)
    rows = dict.fromkeys(SCHEMAS, 0)
    for start in range(0, events, commit_events):
        batch = generator.events(start, min(commit_events, events - start))
        for name, data in batch.items():
            if not data.num_rows:
                continue
            if KEYS[name] is None:
                tables[name].append(data)
            else:
                tables[name].upsert(data)
            writers[name].write_table(data)
            csv_writers[name].write_table(data)
            rows[name] += data.num_rows
    for writer in [*writers.values(), *csv_writers.values()]:
        writer.close()
    return rows


def view_text(query: Query) -> str:
    with_ = f" WITH ({query.options})" if query.options else ""
    return f"CREATE MATERIALIZED VIEW nexmark.{query.name}{with_} AS {query.duckdb};"


def _duckdb_over_parquet(workdir: Path) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA nexmark")
    for name in SCHEMAS:
        path = workdir / "parquet" / name / "part-0.parquet"
        con.execute(f"CREATE VIEW nexmark.{name} AS SELECT * FROM read_parquet('{path}')")
    return con


def check_against_duckdb(workdir: Path, query: Query, actual: pa.Table, key: Sequence[str]) -> dict[str, Any]:
    """DuckDB's result of the same SELECT over the Parquet files vs the view's table (as multisets)."""
    con = _duckdb_over_parquet(workdir)
    expected = con.sql(query.duckdb).to_arrow_table()
    if key:
        expected = con.sql(
            "SELECT * FROM expected WHERE " + " AND ".join(f'"{k}" IS NOT NULL' for k in key)
        ).to_arrow_table()
    con.register("expected_rows", expected)
    con.register("actual_rows", actual)

    def rounded(table: str, schema: pa.Schema) -> str:
        cols = [
            f'round("{f.name}", 6) AS "{f.name}"' if pa.types.is_floating(f.type) else f'"{f.name}"'
            for f in schema
        ]
        return f"SELECT {', '.join(cols)} FROM {table}"

    e, a = rounded("expected_rows", expected.schema), rounded("actual_rows", actual.schema)
    missing = con.execute(f"SELECT count(*) FROM ({e} EXCEPT ALL {a})").fetchone()[0]
    extra = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {e})").fetchone()[0]
    return {
        "expected_rows": expected.num_rows,
        "missing": missing,
        "extra": extra,
        "ok": missing == extra == 0,
    }


def run_flowlake(workdir: Path, query: Query, *, partitions: int, check: bool = True) -> dict[str, Any]:
    """Compile the query's view, run it to the inputs' head on one worker, and check it."""
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import run_main

    import flowlake.sql
    from flowlake.flow.batch import ChangeBatch
    from flowlake.flow.runner import freeze_heap

    cat = open_catalog(workdir)
    events = sum(
        cat.load_table(f"nexmark.{t}").read(columns=[SCHEMAS[t].names[0]]).num_rows for t in query.tables
    )
    flow = Dataflow(f"nexmark_{query.name}")
    streams = flowlake.sql.compile(
        view_text(query), flow, catalog=cat, stop="head", partitions=partitions, max_versions=64
    )
    changes = [0]

    def count(_step: str, batch: ChangeBatch) -> None:
        changes[0] += batch.data.num_rows

    op.inspect("count_changes", streams[f"nexmark.{query.name}"], count)
    freeze_heap()  # as flowlake's runner does before it runs a dataflow
    start, cpu = time.perf_counter(), time.process_time()
    run_main(flow)  # type: ignore[no-untyped-call]
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    table = cat.load_table(f"nexmark.{query.name}")
    result = table.read()
    figures: dict[str, Any] = {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed),
        "cpu_s": round(cpu, 3),
        "events_per_cpu_s": round(events / cpu),
        "changes_out": changes[0],
        "rows_out": result.num_rows,
        "peak_rss_mb": round((proc_status_kb("VmHWM") or 0) / 1024, 1),
    }
    if check:
        figures["duckdb_check"] = check_against_duckdb(workdir, query, result, table.primary_key)
    return figures


def left_out_errors(items: Sequence[LeftOut] = LEFT_OUT) -> list[dict[str, str]]:
    """Each query in ``items`` with its reason and the error flowlake gives for the nearest view."""
    from bytewax.dataflow import Dataflow

    import flowlake as fl
    import flowlake.sql
    from flowlake.errors import SqlError

    out = []
    with tempfile.TemporaryDirectory(prefix="nexmark-leftout-") as tmp:
        cat = fl.connect(catalog=f"sqlite:///{tmp}/c.db", warehouse=Path(tmp, "wh").as_uri())
        for name, schema in SCHEMAS.items():
            cat.create_table(f"nexmark.{name}", schema, primary_key=KEYS[name])
        side = pa.schema([pa.field("key", pa.int64(), nullable=False), ("value", pa.string())])
        cat.create_table("nexmark.side_input", side, primary_key=["key"])
        for item in items:
            error = ""
            if item.attempt:
                with_ = f" WITH ({item.options})" if item.options else ""
                text = f"CREATE MATERIALIZED VIEW nexmark.{item.name}{with_} AS {item.attempt};"
                try:
                    flowlake.sql.compile(text, Dataflow("x"), catalog=cat, stop="head")
                    error = "(compiles)"
                except SqlError as exc:
                    error = f"{type(exc).__name__}: {exc}"
            out.append({"query": item.name, "reason": item.reason, "error": error})
    return out


FLINK_TYPES = {
    pa.int64(): "BIGINT",
    pa.string(): "STRING",
    pa.timestamp("ms"): "TIMESTAMP(3)",
}


def flink_ddl(name: str, schema: pa.Schema, path: Path) -> str:
    cols = ",\n  ".join(f"`{f.name}` {FLINK_TYPES[f.type]}" for f in schema)
    return (
        f"CREATE TABLE {name} (\n  {cols},\n"
        "  WATERMARK FOR `datetime` AS `datetime` - INTERVAL '4' SECOND\n) "
        f"WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')"
    )


def run_flink(workdir: Path, query: Query) -> dict[str, Any]:
    """The query's Flink SQL into a blackhole sink: net runtime over the data and over empty files."""
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    env.get_config().set("parallelism.default", "1")
    events = sum(
        pq.ParquetFile(workdir / "parquet" / t / "part-0.parquet").metadata.num_rows for t in query.tables
    )

    def run(folder: str) -> float:
        env.execute_sql("DROP TEMPORARY TABLE IF EXISTS sink")
        for name, schema in SCHEMAS.items():
            env.execute_sql(f"DROP TABLE IF EXISTS {name}")
            env.execute_sql(flink_ddl(name, schema, workdir / folder / name))
        table = env.sql_query(query.flink)
        cols = ", ".join(
            f"`{n}` {t}"
            for n, t in zip(
                table.get_schema().get_field_names(),
                [str(t) for t in table.get_schema().get_field_data_types()],
                strict=True,
            )
        )
        env.execute_sql(f"CREATE TEMPORARY TABLE sink ({cols}) WITH ('connector' = 'blackhole')")
        result = table.execute_insert("sink")
        job = result.get_job_client().get_job_execution_result().result()
        runtime_ms: int = job.get_net_runtime()
        return runtime_ms / 1000

    empty = min(run("csv_empty") for _ in range(2))
    total = run("csv")
    seconds = max(total - empty, 1e-3)
    rss = (proc_status_kb("VmHWM") or 0) + sum(
        (proc_status_kb("VmHWM", p) or 0) for p in _descendants(os.getpid())
    )
    return {
        "events": events,
        "seconds": round(seconds, 3),
        "net_runtime_s": round(total, 3),
        "empty_job_s": round(empty, 3),
        "events_per_s": round(events / seconds),
        "peak_rss_mb": round(rss / 1024, 1),
    }


def child(args: argparse.Namespace) -> None:
    query = BY_NAME[args.query]
    workdir = Path(args.workdir)
    if args.engine == "flowlake":
        figures = run_flowlake(workdir, query, partitions=args.partitions)
    else:
        figures = run_flink(workdir, query)
    print("NEXMARK_RESULT " + json.dumps(figures), flush=True)


def _spawn(
    python: str, engine: str, query: str, workdir: Path, partitions: int, timeout: float
) -> dict[str, Any]:
    cmd = [python, __file__, "--child", engine, "--query", query, "--workdir", str(workdir),
           "--partitions", str(partitions)]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("NEXMARK_RESULT "):
            return dict(json.loads(line.removeprefix("NEXMARK_RESULT ")))
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": " | ".join(tail) or f"exit {done.returncode}"}


def default_flink_python() -> str | None:
    env = os.environ.get("FLOWLAKE_NEXMARK_FLINK_PYTHON")
    if env:
        return env
    local = Path(__file__).resolve().parent.parent / ".venv-flink" / "bin" / "python"
    if local.exists():
        return str(local)
    try:
        import pyflink  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def run_benchmark(
    *,
    events: int,
    queries: Sequence[str],
    engines: Sequence[str],
    commit_events: int = 100_000,
    tps: int = 10_000_000,
    seed: int = 1,
    partitions: int = 1,
    flink_python: str | None = None,
    workdir: Path | None = None,
    timeout: float = 1800,
) -> dict[str, Any]:
    """Generate the events, run every query on every engine, and return the figures."""
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="flowlake-nexmark-")) if workdir is None else workdir
    try:
        t = time.perf_counter()
        rows = prepare(root, events, commit_events=commit_events, tps=tps, seed=seed)
        prepare_s = time.perf_counter() - t
        results: dict[str, dict[str, Any]] = {}
        for name in queries:
            results[name] = {"kind": BY_NAME[name].kind}
            if "flowlake" in engines:
                results[name]["flowlake"] = _spawn(
                    sys.executable, "flowlake", name, root, partitions, timeout
                )
            if "flink" in engines:
                if flink_python is None:
                    results[name]["flink"] = {"error": "PyFlink not installed (--flink-python)"}
                else:
                    results[name]["flink"] = _spawn(flink_python, "flink", name, root, partitions, timeout)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "events": events,
        "rows": rows,
        "commit_events": commit_events,
        "tps": tps,
        "partitions": partitions,
        "prepare_s": round(prepare_s, 2),
        "queries": results,
        "left_out": left_out_errors(),
        "rewritten": left_out_errors(REWRITTEN),
    }


def _fmt(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_table(figures: Mapping[str, Any]) -> None:
    rows = figures["rows"]
    print(
        f"Nexmark on {figures['machine']}: {figures['events']:,} events (person {rows['person']:,}, "
        f"auction {rows['auction']:,}, bid {rows['bid']:,}), one commit per table per "
        f"{figures['commit_events']:,} events; one worker each"
    )
    header = ["query", "kind", "events", "flowlake ev/s", "changes out", "rows out", "RSS MB", "DuckDB check",
              "PyFlink ev/s", "PyFlink RSS MB", "flowlake/PyFlink"]  # fmt: skip
    lines = [header]
    for name, r in figures["queries"].items():
        f, k = r.get("flowlake", {}), r.get("flink", {})
        check = f.get("duckdb_check", {})
        ok = "" if not check else ("ok" if check["ok"] else f"DIFF -{check['missing']} +{check['extra']}")
        ratio = (
            f"{f['events_per_s'] / k['events_per_s']:.2f}x"
            if "events_per_s" in f and "events_per_s" in k
            else ""
        )
        lines.append([
            name, r["kind"], _fmt(f.get("events", k.get("events", ""))),
            _fmt(f.get("events_per_s", f.get("error", ""))), _fmt(f.get("changes_out", "")),
            _fmt(f.get("rows_out", "")), _fmt(f.get("peak_rss_mb", "")), ok,
            _fmt(k.get("events_per_s", k.get("error", ""))), _fmt(k.get("peak_rss_mb", "")), ratio,
        ])  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
    print("left out (and the error for the nearest view) / rewritten:")
    for item in [*figures["left_out"], *figures["rewritten"]]:
        print(f"  {item['query']}: {item['reason']}")
        if item["error"]:
            print(f"      {item['error'].splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", default=",".join(q.name for q in QUERIES))
    parser.add_argument("--engines", default="flowlake,flink")
    parser.add_argument("--commit-events", type=int, default=100_000)
    parser.add_argument("--tps", type=int, default=10_000_000, help="events per second of event time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=1, help="key partitions of flowlake's operators")
    parser.add_argument("--flink-python", default=None, help="an interpreter with apache-flink installed")
    parser.add_argument("--workdir", default=None, help="keep the data here (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["flowlake", "flink"], help=argparse.SUPPRESS)
    parser.add_argument("--query", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.engine = args.child
        child(args)
        return
    figures = run_benchmark(
        events=args.events,
        queries=[q.strip() for q in args.queries.split(",") if q.strip()],
        engines=[e.strip() for e in args.engines.split(",")],
        commit_events=args.commit_events,
        tps=args.tps,
        seed=args.seed,
        partitions=args.partitions,
        flink_python=args.flink_python or default_flink_python(),
        workdir=Path(args.workdir) if args.workdir else None,
    )
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
