"""End-to-end freshness: MariaDB commit → ODS → DWD → DWS visible, per change, at a steady write rate.

A writer process commits shop orders to a MariaDB (started here, binlog on) at each target rate for
``--seconds``: one transaction every 20 ms with new orders (45%), updates of status and amount (48%)
and deletes (7%), and records each transaction's commit time under its ``updated_at`` stamp. Meanwhile
the whole pipeline runs as it would in production, each part its own process: ``flowlake ingest``
(binlog → ``ods.orders``/``ods.shops``) and the three shop dataflows under ``bytewax.run`` with
recovery (``dwd.orders_enriched``, ``dws.shop_gmv_minute``, ``dws.city_day``), run with bytewax's runner as
``flowlake run`` does (``flowlake.flow.runner``, which allows a sub-second ``-s``).

Latency per change is read afterwards from the tables themselves: an inserted or updated row reaches
ODS in the version whose commit time is on the timeline; each DWD/DWS commit records in its lineage
(``sources``) the input versions it covers, so a change is visible downstream at the commit time of
the first output version whose lineage reaches the input version that holds it. At the end ODS is
compared with the source tables and every DWD/DWS table with its DuckDB batch recompute. Deletes carry no
stamp of their own and are not timed (they travel the same path). An ODS commit covers every source
transaction that arrived since the last one, so a row changed twice in that window shows only its newest
image (as in any upsert table); only images that became visible are timed. p50/p99 per layer are printed.

Run: ``python benchmarks/freshness.py [--rates 1000,5000] [--seconds 60] [--json out.json]``.
``--initial 20000,1000000`` sweeps the initial orders (the state the flows hold; figures of a
non-default size are prefixed ``initial_N_``). The runner gives the dataflows a state folder in their
recovery directory, so large aggregate and Top-N states snapshot only what changed (small ones inline);
``--snapshots chunks`` chunks every state, ``--snapshots whole`` pickles every state whole (as before
chunked snapshots).
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import flowlake as fl
from flowlake.cdc.mysql_schema import MySqlUrl
from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.demo.flows import shops_table
from flowlake.demo.mariadb import ORDERS_DDL, SHOPS_DDL, connect

sys.path.insert(0, str(Path(__file__).parent))
from _report import report

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ("dwd_orders", "dws_shop_minute", "dws_city_day")
CHAIN = (  # (output, its input whose lineage position is followed)
    ("dwd.orders_enriched", "ods.orders"),
    ("dws.shop_gmv_minute", "dwd.orders_enriched"),
    ("dws.city_day", "dws.shop_gmv_minute"),
)
TICK = 0.02
SHOPS = 30


def _connect(port: int) -> Any:
    return connect(MySqlUrl.parse(f"mysql://root@127.0.0.1:{port}"))


def prepare_source(port: int, db: str, initial: int) -> None:
    """Create ``db`` with the demo's shop tables, ``SHOPS`` shops and ``initial`` orders."""
    conn = _connect(port)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
        cur.execute(SHOPS_DDL.format(db=db))
        cur.execute(ORDERS_DDL.format(db=db))
        shops = shops_table(SHOPS).to_pylist()
        cur.executemany(f"INSERT INTO {db}.shops VALUES (%s, %s, %s, %s)", [tuple(r.values()) for r in shops])
        rng = np.random.default_rng(3)
        for start in range(0, initial, 5000):  # numbers only: written out, not escaped one by one
            ids = range(start, min(initial, start + 5000))
            shops_of, users = (
                rng.integers(0, SHOPS, len(ids)).tolist(),
                rng.integers(0, 5000, len(ids)).tolist(),
            )
            values = ",".join(
                f"({i},{shop},{user},'created',10.5,UTC_TIMESTAMP(6),UTC_TIMESTAMP(6))"
                for i, shop, user in zip(ids, shops_of, users, strict=True)
            )
            cur.execute(f"INSERT INTO {db}.orders VALUES {values}")
    conn.commit()
    conn.close()


def writer(port: int, db: str, rate: int, seconds: float, initial: int, out: Path) -> None:
    """Commit ~``rate`` changes/s for ``seconds``; write {updated_at µs: commit time} to ``out``."""
    import datetime as dt

    conn = _connect(port)
    cur = conn.cursor()
    rng = np.random.default_rng(rate)
    live = list(range(initial))
    place = {key: at for at, key in enumerate(live)}  # where each live key is in ``live``
    next_id = initial
    per_tx = max(1, round(rate * TICK))
    n_insert, n_delete = round(per_tx * 0.45), round(per_tx * 0.07)
    n_update = per_tx - n_insert - n_delete
    statuses = np.array(["paid", "shipped", "done", "cancelled"])
    upsert = (
        f"INSERT INTO {db}.orders VALUES {{}} ON DUPLICATE KEY UPDATE "
        "status = VALUES(status), amount = VALUES(amount), updated_at = VALUES(updated_at)"
    )
    committed: dict[int, float] = {}
    changes = 0
    last_us = 0
    start = tick = time.perf_counter()
    while time.perf_counter() - start < seconds:
        now_us = max(int(time.time() * 1_000_000), last_us + 1)
        last_us = now_us
        stamp = (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=now_us)).isoformat(" ")
        touched = pick_live(rng, live, n_update + n_delete)
        updated, deleted = touched[:n_update], touched[n_update:]
        # numbers and fixed words only: the statement is written out here rather than escaped value by
        # value by PyMySQL (which cost the writer, the benchmark's load, most of its CPU)
        amounts = np.round(rng.uniform(1, 500, n_insert + len(updated)), 2).tolist()
        shops, users = rng.integers(0, SHOPS, n_insert).tolist(), rng.integers(0, 5000, n_insert).tolist()
        picked = statuses[rng.integers(0, 4, len(updated))].tolist()
        new_ids = range(next_id, next_id + n_insert)
        rows = [
            f"({i},{shop},{user},'created',{amount:.2f},'{stamp}','{stamp}')"
            for i, shop, user, amount in zip(new_ids, shops, users, amounts[:n_insert], strict=True)
        ]
        rows += [
            f"({i},0,0,'{status}',{amount:.2f},'{stamp}','{stamp}')"
            for i, status, amount in zip(updated, picked, amounts[n_insert:], strict=True)
        ]
        if rows:
            cur.execute(upsert.format(",".join(rows)))
        if deleted:
            cur.execute(f"DELETE FROM {db}.orders WHERE order_id IN ({', '.join(map(str, deleted))})")
        conn.commit()
        committed[now_us] = time.time()
        changes += len(rows) + len(deleted)
        for key in deleted:  # swap-remove: O(1) a key (the live list grows to 100k+ keys in a run)
            at = place.pop(key)
            last = live.pop()
            if last != key:
                live[at], place[last] = last, at
        place.update((key, len(live) + i) for i, key in enumerate(range(next_id, next_id + n_insert)))
        live.extend(range(next_id, next_id + n_insert))
        next_id += n_insert
        tick += TICK
        time.sleep(max(0.0, tick - time.perf_counter()))
    elapsed = time.perf_counter() - start
    conn.close()
    out.write_text(json.dumps({"committed": committed, "changes": changes, "seconds": elapsed}))


def pick_live(rng: np.random.Generator, live: list[int], count: int) -> list[int]:
    """``count`` distinct live keys drawn uniformly (all of them if fewer), in O(count): the writer is
    the benchmark's load, not part of what it measures, so it must not eat the cores the pipeline runs on
    (``rng.choice(..., replace=False)`` permutes the whole list on every transaction)."""
    if count >= len(live):
        return list(live)
    picked: dict[int, None] = {}
    while len(picked) < count:
        for at in rng.integers(0, len(live), size=count - len(picked)).tolist():
            picked.setdefault(at)
    return [live[at] for at in list(picked)[:count]]


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: S603


def _caught_up(cat: fl.Catalog) -> bool:
    try:
        for output, source in CHAIN:
            head = cat.load_table(source).refresh().version
            if cat.load_table(output).refresh().source_position(f"table:{source}") != head:
                return False
    except fl.FlowlakeError:
        return False
    return True


def _wait(predicate: Any, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)
    raise SystemExit(f"timed out waiting for {what}\n{tails}")


def _timeline(table: fl.LakeTable, since: int) -> dict[int, float]:
    return {c.version: c.committed_at.timestamp() for c in table.history() if c.version > since}


@dataclass(frozen=True, slots=True)
class Lineage:
    """The commits of an output that record a position of one input, in version order."""

    versions: list[int]
    positions: list[int]
    times: list[float]

    @classmethod
    def of(cls, table: fl.LakeTable, source: str) -> Lineage:
        """``table``'s commits that record a position of ``source``."""
        lineage = cls([], [], [])
        for c in sorted(table.history(), key=lambda c: c.version):
            pos = (c.summary.get("sources") or {}).get(f"table:{source}")
            if isinstance(pos, int):
                lineage.versions.append(c.version)
                lineage.positions.append(pos)
                lineage.times.append(c.committed_at.timestamp())
        return lineage

    def first_covering(self, version: int) -> int | None:
        """Index of the first commit whose input position reaches ``version`` (None: none yet)."""
        i = bisect.bisect_left(self.positions, version)
        return i if i < len(self.positions) else None


def analyse(cat: fl.Catalog, start_version: int, committed: dict[int, float]) -> dict[str, list[float]]:
    """Latency (s) from source commit to visible in each table, per timed change."""
    ods = cat.load_table("ods.orders")
    changes = ods.changes(start_version, ods.version, columns=["updated_at"])
    kinds = np.asarray(changes.column(KIND_COLUMN).to_numpy())
    keep = (kinds == RowKind.INSERT) | (kinds == RowKind.UPDATE_AFTER)
    stamps = changes.column("updated_at").cast("int64").to_numpy(zero_copy_only=False)[keep]
    versions = (np.asarray(changes.column(SEQ_COLUMN).to_numpy()) >> 32)[keep]
    ods_times = _timeline(ods, start_version)
    chain = [(output, Lineage.of(cat.load_table(output), source)) for output, source in CHAIN]
    out: dict[str, list[float]] = {"ods.orders": [], **{o: [] for o, _ in CHAIN}}
    for stamp, version in zip(stamps.tolist(), versions.tolist(), strict=True):
        source_time = committed.get(int(stamp))
        if source_time is None:
            continue
        out["ods.orders"].append(ods_times[int(version)] - source_time)
        v = int(version)  # the change's version in the current layer's input
        for output, lineage in chain:
            i = lineage.first_covering(v)
            if i is None:
                break
            out[output].append(lineage.times[i] - source_time)
            v = lineage.versions[i]
    return out


def verify(cat: fl.Catalog, port: int, db: str) -> bool:
    """ODS equals the source tables; every DWD/DWS table equals its DuckDB batch recompute."""
    import pymysql  # type: ignore[import-untyped]

    from flowlake.flow.verify import verify_table

    ods = cat.load_table("ods.orders").read(columns=["order_id", "status", "amount"]).sort_by("order_id")
    conn = _connect(port)
    seen, ok = 0, True
    with conn.cursor(pymysql.cursors.SSCursor) as cur:  # streamed and compared in slices: 10M rows fit
        cur.execute(f"SELECT order_id, status, amount FROM {db}.orders ORDER BY order_id")
        while ok and (rows := cur.fetchmany(100_000)):
            mine = ods.slice(seen, len(rows)).to_pylist()
            ok = [tuple(r.values()) for r in mine] == [tuple(r) for r in rows]
            seen += len(rows)
    conn.close()
    ok = ok and seen == ods.num_rows
    if not ok:
        print(f"ods.orders differs from {db}.orders (near row {seen:,} of {ods.num_rows:,})", file=sys.stderr)
    for output, _ in CHAIN:
        report = verify_table(cat, output)
        if not report.ok:
            print(f"{output}: {report.differences[:5]}", file=sys.stderr)
        ok &= report.ok
    return ok


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _snapshot_env(env: dict[str, str], snapshots: str) -> None:
    """The state folder is the runner's default (``<recovery>/state``); ``snapshots`` sets the inline
    threshold: the default one, 0 (always chunks) or never reached (always whole pickles)."""
    env.pop("FLOWLAKE_STATE_DIR", None)
    inline = {"default": None, "chunks": "0", "whole": str(2**62)}[snapshots]
    if inline is None:
        env.pop("FLOWLAKE_STATE_INLINE_BYTES", None)
    else:
        env["FLOWLAKE_STATE_INLINE_BYTES"] = inline


def run_rate(server_port: int, rate: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the pipeline at one write rate (and ``args.initial`` initial orders); return its figures."""
    work = tmp / f"rate-{rate}-initial-{args.initial}"
    work.mkdir()
    db = f"shop_{rate}_{args.initial}"
    prepare_source(server_port, db, args.initial)
    env = {**os.environ, "FLOWLAKE_CATALOG": f"sqlite:///{work / 'catalog.db'}",
           "FLOWLAKE_WAREHOUSE": (work / "wh").as_uri(), "FLOWLAKE_FLOW_POLL": str(args.poll)}  # fmt: skip
    _snapshot_env(env, args.snapshots)
    exe = str(Path(sys.executable).with_name("flowlake"))
    procs: list[subprocess.Popen[bytes]] = []
    logs = [work / "ingest.log", *(work / f"{f}.log" for f in FLOWS)]
    try:
        procs.append(_start(
            [exe, "ingest", "--source", f"mysql://root@127.0.0.1:{server_port}/{db}",
             "--max-latency-ms", str(args.max_latency_ms)], env, logs[0],
        ))  # fmt: skip
        cat = fl.connect(catalog=env["FLOWLAKE_CATALOG"], warehouse=env["FLOWLAKE_WAREHOUSE"])

        def loaded() -> bool:
            if not cat.table_exists("ods.orders"):
                return False
            return bool(cat.load_table("ods.orders").read(columns=["order_id"]).num_rows == args.initial)

        _wait(loaded, 120 + args.initial / 2000, "the initial snapshot in ODS", logs)
        for flow, log in zip(FLOWS, logs[1:], strict=True):
            recovery = work / "recovery" / flow
            recovery.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)  # noqa: S603
            argv = [sys.executable, "-m", "flowlake.flow.runner", f"dataflows/{flow}.py:flow",
                    "-r", str(recovery), "-s", str(args.snapshot_interval), "-b", "0"]  # fmt: skip
            procs.append(_start(argv, env, log))
        catch_up = 120 + args.initial / 2000
        _wait(lambda: _caught_up(cat), catch_up, "the dataflows to catch up with the initial load", logs)
        start_version = cat.load_table("ods.orders").refresh().version
        out = work / "committed.json"
        subprocess.run(  # noqa: S603 - our own script
            [sys.executable, __file__, "--writer", str(server_port), db, str(rate), str(args.seconds),
             str(args.initial), str(out)], check=True,
        )  # fmt: skip
        time.sleep(1.0)
        _wait(lambda: _caught_up(cat), 120, "the pipeline to drain", logs)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    verified = verify(cat, server_port, db)
    written = json.loads(out.read_text())
    committed = {int(k): v for k, v in written["committed"].items()}
    latencies = analyse(cat, start_version, committed)
    ods = cat.load_table("ods.orders")
    changes = ods.changes(start_version, ods.version, columns=["order_id"])
    figures: dict[str, Any] = {
        f"rate_{rate}_target_changes_per_s": rate,
        f"rate_{rate}_achieved_changes_per_s": round(written["changes"] / written["seconds"]),
        f"rate_{rate}_source_changes": written["changes"],
        f"rate_{rate}_ods_changes": _source_changes(changes),
        f"rate_{rate}_timed_changes": len(latencies["ods.orders"]),
        f"rate_{rate}_verified": verified,
    }
    for name, values in latencies.items():
        if values:
            layer = name.replace(".", "_")
            figures[f"rate_{rate}_{layer}_p50_s"] = round(statistics.median(values), 3)
            figures[f"rate_{rate}_{layer}_p99_s"] = round(pct(values, 0.99), 3)
            figures[f"rate_{rate}_{layer}_max_s"] = round(max(values), 3)
    return figures


def _source_changes(changes: Any) -> int:
    """Source changes in an ODS changelog: an update's -U/+U pair is one change."""
    kinds = np.asarray(changes.column(KIND_COLUMN).to_numpy())
    return int(np.count_nonzero(kinds != RowKind.UPDATE_BEFORE))


def main() -> None:
    """Parse flags, run each rate, print a table, optionally write JSON."""
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        port, db, rate, seconds, initial, out = sys.argv[2:8]
        writer(int(port), db, int(rate), float(seconds), int(initial), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--initial", type=lambda s: [int(x) for x in s.split(",")], default=[20_000],
                        help="orders in the source before timing (a comma list sweeps)")  # fmt: skip
    parser.add_argument(
        "--snapshots", choices=["default", "chunks", "whole"], default="default",
        help="state snapshots: inline below the threshold then chunks (default), always chunks, or whole",
    )  # fmt: skip
    parser.add_argument("--snapshot-interval", type=float, default=0.5, help="bytewax epoch/snapshot (s)")
    parser.add_argument("--poll", type=float, default=0.1, help="lake source poll interval (s)")
    parser.add_argument("--max-latency-ms", type=int, default=100, help="ingester commit latency bound")
    parser.add_argument("--json", default=None, help="write the figures to this path")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, lake, state)")
    args = parser.parse_args()
    from flowlake.cdc.testing import mariadb_binaries, running_mariadb

    if mariadb_binaries() is None:
        raise SystemExit("freshness needs mariadbd and mariadb-install-db on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="flowlake-freshness-"))
    figures: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "seconds_per_rate": args.seconds,
        "bytewax_snapshot_interval_s": args.snapshot_interval,
        "ingest_max_latency_ms": args.max_latency_ms,
        "snapshots": args.snapshots,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    sweep = list(args.initial)
    try:
        with running_mariadb(tmp) as server:
            for initial in sweep:
                args.initial = initial
                prefix = "" if initial == 20_000 else f"initial_{initial}_"
                for rate in args.rates:
                    result = run_rate(server.port, rate, args, tmp)
                    figures.update({prefix + k: v for k, v in result.items()})
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:  # a 10M-order run leaves ~5 GB (MariaDB, the lake, the flows' state)
            shutil.rmtree(tmp, ignore_errors=True)
    report(figures, args.json)


if __name__ == "__main__":
    main()
