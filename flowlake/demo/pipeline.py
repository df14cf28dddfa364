"""The main demo job: generated shop CDC → ODS → DWD → DWS on the embedded default, verified at the end.

Each round, a generator makes one source transaction (new orders, status and amount updates, orders
moving shop, deletes). Where a MariaDB/MySQL with a row-based binlog is reachable (or ``mariadbd`` is
installed, so the demo can start a private one), the transaction is executed there as SQL and the ODS
ingester reads it from the binlog; otherwise it is written as a file of Debezium JSON change events
(decimals in Debezium's precise base64 encoding) as a MySQL connector would. Either way the ODS
ingester commits it exactly once; the DWD join and the
two DWS aggregates run with bytewax (with recovery state, so each round resumes where the last ended)
up to their inputs' heads. A live view shows rows per layer, freshness, and the top shops by GMV in the
newest minute. At the end ``verify`` recomputes every DWD/DWS table with DuckDB at the input versions
its lineage records and reports whether it matches.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from flowlake.config import DEFAULT_HOME
from flowlake.demo.mariadb import ORDER_COLUMNS
from flowlake.errors import InvalidArgumentError
from flowlake.lake import Catalog

OUTPUTS = ("dwd.orders_enriched", "dws.shop_gmv_minute", "dws.city_day")
DEFAULT_MYSQL = "mysql://root@127.0.0.1:3306"
SourceMode = Literal["auto", "mariadb", "jsonl"]
FlowsMode = Literal["sql", "python"]
"""How the demo computes DWD/DWS: the SQL views of ``shop.sql``, or the Python flows."""
SHOP_SQL = Path(__file__).with_name("shop.sql")
"""The demo's DWD/DWS layers as SQL views (also ``dataflows/shop.sql``)."""
STATUSES = ("created", "paid", "shipped", "done", "cancelled")


def precise_decimal(cents: int) -> str:
    """A decimal(12,2) value as Debezium's precise encoding: base64 of the big-endian unscaled integer."""
    return base64.b64encode(
        cents.to_bytes(max(1, (cents.bit_length() + 8) // 8), "big", signed=True)
    ).decode()


@dataclass
class ShopCdcGenerator:
    """Seeded source database: shops and orders, emitting Debezium change events per transaction."""

    shops: int = 30
    seed: int = 7
    rng: np.random.Generator = field(init=False)
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def _event(self, op: str, table: str, before: Any, after: Any, tx: str, ts_ms: int) -> bytes:
        self.position += 1
        source = {
            "connector": "mysql", "db": "shop", "table": table, "ts_ms": ts_ms, "file": "demo-bin.000001",
            "pos": self.position, "snapshot": "true" if op == "r" else "false",
        }  # fmt: skip
        transaction = {"id": tx, "total_order": self.position, "data_collection_order": self.position}
        return orjson.dumps(
            {
                "op": op,
                "before": before,
                "after": after,
                "ts_ms": ts_ms,
                "source": source,
                "transaction": transaction,
            }
        )

    def _order(self, order_id: int, now_us: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "order_id": order_id,
            "shop_id": int(rng.integers(0, self.shops)),
            "user_id": int(rng.integers(0, 5_000)),
            "status": "created",
            "amount": precise_decimal(int(rng.integers(100, 50_000))),
            "created_at": now_us - int(rng.integers(0, 50_000_000)),
            "updated_at": now_us,
        }

    def snapshot(self, orders: int, now: dt.datetime) -> list[bytes]:
        """The initial state as snapshot ("r") events: every shop and ``orders`` orders."""
        ts_ms, now_us = int(now.timestamp() * 1000), int(now.timestamp() * 1_000_000)
        cities = ("Berlin", "Lisbon", "Osaka", "Lima", "Accra", "Oslo", "Pune", "Quito")
        shops = [
            {
                "shop_id": s,
                "name": f"shop {s}",
                "city": cities[s % len(cities)],
                "category": ("food", "books")[s % 2],
            }
            for s in range(self.shops)
        ]
        lines = [self._event("r", "shops", None, row, "snapshot", ts_ms) for row in shops]
        for _ in range(orders):
            row = self._order(self.next_id, now_us)
            self.orders[self.next_id] = row
            self.next_id += 1
            lines.append(self._event("r", "orders", None, row, "snapshot", ts_ms))
        return lines

    def transaction(self, changes: int, now: dt.datetime, tx: str) -> list[bytes]:
        """One source transaction of ``changes`` order changes."""
        ts_ms, now_us = int(now.timestamp() * 1000), int(now.timestamp() * 1_000_000)
        lines: list[bytes] = []
        touched: set[int] = set()
        for _ in range(changes):
            roll = self.rng.random()
            live = [k for k in self.orders if k not in touched]
            if roll < 0.45 or not live:
                row = self._order(self.next_id, now_us)
                self.orders[self.next_id] = row
                touched.add(self.next_id)
                self.next_id += 1
                lines.append(self._event("c", "orders", None, row, tx, ts_ms))
                continue
            key = live[int(self.rng.integers(0, len(live)))]
            touched.add(key)
            before = self.orders[key]
            if roll < 0.93:
                after = dict(before, updated_at=now_us)
                if roll < 0.75:
                    after["status"] = STATUSES[min(STATUSES.index(before["status"]) + 1, len(STATUSES) - 1)]
                elif roll < 0.85:
                    after["amount"] = precise_decimal(int(self.rng.integers(100, 50_000)))
                else:
                    after["shop_id"] = int(self.rng.integers(0, self.shops))  # an order moving shop
                self.orders[key] = after
                lines.append(self._event("u", "orders", before, after, tx, ts_ms))
            else:
                del self.orders[key]
                lines.append(self._event("d", "orders", before, None, tx, ts_ms))
        return lines


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """What the demo did."""

    rounds: int
    source_changes: int
    ods_rows: int
    verified: bool
    source: str = "jsonl"


def _in_utc(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row of SQL values with its naive UTC datetimes made aware, as ODS reads them."""
    return tuple(v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) else v for v in row)


def expected_orders(generator: ShopCdcGenerator) -> list[tuple[Any, ...]]:
    """The generator's orders as rows (decimals and UTC timestamps decoded), by ``order_id``."""
    from flowlake.demo.mariadb import order_values

    return [_in_utc(order_values(generator.orders[key])) for key in sorted(generator.orders)]


class _Feed(Protocol):
    """Where the generated transactions go, and how the ODS ingester reads them back."""

    label: str

    def write(self, round_no: int, events: list[bytes]) -> None: ...

    def ingest(self, catalog: Catalog) -> None: ...

    def source_rows(self) -> list[tuple[Any, ...]] | None: ...


@dataclass
class _JsonlFeed:
    folder: Path
    label: str = "Debezium JSONL files"

    def write(self, round_no: int, events: list[bytes]) -> None:
        final = self.folder / f"{round_no:05d}.jsonl"
        partial = final.with_suffix(".tmp")
        partial.write_bytes(b"\n".join(events) + b"\n")
        partial.rename(final)  # the tailing source only ever sees whole files

    def ingest(self, catalog: Catalog) -> None:
        from flowlake.cdc import JsonlSource, OdsIngester

        OdsIngester(catalog, JsonlSource(self.folder.as_uri(), follow=False), namespace="ods").run(
            until_idle=True
        )

    def source_rows(self) -> list[tuple[Any, ...]] | None:
        return None


@dataclass
class _BinlogFeed:
    database: Any  # flowlake.demo.mariadb.ShopDatabase
    label: str = "MariaDB binlog"

    def write(self, round_no: int, events: list[bytes]) -> None:
        self.database.apply(events)

    def ingest(self, catalog: Catalog) -> None:
        from flowlake.cdc import OdsIngester
        from flowlake.cdc.mysql import MySqlSource

        OdsIngester(catalog, MySqlSource(self.database.source_url), namespace="ods").run(until_idle=True)

    def source_rows(self) -> list[tuple[Any, ...]] | None:
        rows = self.database.orders()
        return [_in_utc(r) for r in rows]


def _open_feed(mode: SourceMode, mysql_url: str | None, home: Path, out: Console, stack: ExitStack) -> _Feed:
    """The feed for ``mode``: ``auto`` takes a binlog-enabled server at ``mysql_url`` (default
    ``$FLOWLAKE_DEMO_MYSQL`` or 127.0.0.1:3306), else a private ``mariadbd`` if installed, else JSONL."""
    from flowlake.cdc.mysql_schema import MySqlUrl
    from flowlake.cdc.testing import mariadb_binaries, running_mariadb
    from flowlake.demo.mariadb import ShopDatabase, binlog_ready

    if mode == "jsonl":
        folder = home / "cdc"
        folder.mkdir(parents=True, exist_ok=True)
        return _JsonlFeed(folder)
    url = mysql_url or os.environ.get("FLOWLAKE_DEMO_MYSQL") or DEFAULT_MYSQL
    reason = binlog_ready(url)
    if reason is None:
        out.print(f"source: MariaDB/MySQL at {MySqlUrl.parse(url).key} (binlog CDC)")
        database = ShopDatabase(url)
    elif mariadb_binaries() is not None:
        out.print(f"source: {reason}; starting a private mariadbd with the binlog on")
        server = stack.enter_context(running_mariadb(home))
        database = ShopDatabase(server.url)
    elif mode == "mariadb":
        raise InvalidArgumentError(
            f"--source mariadb: {reason}, and mariadbd is not installed to start a private server; "
            "point --mysql at a server with log_bin=ON, binlog_format=ROW, or use --source jsonl"
        )
    else:
        out.print(f"source: {reason}; writing Debezium JSONL files instead")
        return _open_feed("jsonl", None, home, out, stack)
    stack.callback(database.close)
    database.recreate()
    return _BinlogFeed(database)


def _reset(catalog: Catalog, home: Path, out: Console) -> None:
    from flowlake.demo.flows import TABLES

    existing = [t for t in [*TABLES, "ods._dead_letter"] if catalog.table_exists(t)]
    if existing or home.exists():
        out.print(f"[yellow]found an earlier demo run ({len(existing)} tables): starting clean[/]")
    else:
        out.print("fresh start: no earlier demo run here")
    for name in existing:
        catalog.drop_table(name)
    shutil.rmtree(home, ignore_errors=True)


def _view(catalog: Catalog, round_no: int, changes: int, started: float) -> Table:
    elapsed = time.monotonic() - started
    view = Table(title=f"flowlake demo: round {round_no}, {changes:,} source changes, {elapsed:.0f}s")
    for column in ("layer", "table", "version", "rows", "freshness"):
        view.add_column(column, justify="left" if column in ("layer", "table") else "right")
    for name in ("ods.orders", "ods.shops", *OUTPUTS):
        t = catalog.load_table(name)
        fresh = catalog.freshness(name)
        rows = t.read(columns=list(t.primary_key)).num_rows
        layer = name.split(".")[0].upper()
        view.add_row(layer, name, str(t.version), f"{rows:,}", "-" if fresh is None else f"{fresh:.1f}s")
    gmv = catalog.load_table("dws.shop_gmv_minute").read()
    if gmv.num_rows:
        newest = max(gmv["minute"].to_pylist())
        rows = [r for r in gmv.to_pylist() if r["minute"] == newest]
        top = sorted(rows, key=lambda r: r["paid_gmv"] or 0, reverse=True)[:3]
        for r in top:
            view.add_row(
                "top",
                f"shop {r['shop_id']} @ {newest:%H:%M}",
                "",
                f"GMV {r['paid_gmv']}",
                f"{r['orders']} orders",
            )
    return view


def run_pipeline_demo(
    catalog: Catalog,
    *,
    duration: float = 30.0,
    rounds: int | None = None,
    initial_orders: int = 3_000,
    changes_per_round: int = 400,
    follow: bool = False,
    source: SourceMode = "auto",
    mysql_url: str | None = None,
    console: Console | None = None,
    flows: FlowsMode = "sql",
) -> PipelineResult:
    """Run the whole pipeline on ``catalog`` for ``duration`` seconds (or ``rounds``), then verify.

    ``source``: ``"mariadb"`` (binlog CDC from ``mysql_url``, or a private ``mariadbd``), ``"jsonl"``
    (Debezium JSON files) or ``"auto"`` (MariaDB when possible, else JSONL). ``flows``: the DWD/DWS
    layers as the SQL views of ``shop.sql`` (``"sql"``) or as the Python flows of
    :mod:`flowlake.demo.flows` (``"python"``); both write the same tables.
    """
    out = console or Console()
    home = (
        Path(catalog.storage.root).parent / "demo"
        if catalog.storage.uri.startswith("file://")
        else Path(DEFAULT_HOME) / "demo"
    )
    _reset(catalog, home, out)
    home.mkdir(parents=True)
    with ExitStack() as stack:
        feed = _open_feed(source, mysql_url, home, out, stack)
        return _run(catalog, feed, home / "recovery", out, duration, rounds, follow,
                    initial_orders, changes_per_round, flows)  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover - mypy: ExitStack may swallow exceptions


def run_views_to_head(
    catalog: Catalog, recovery: Path | None = None, *, text: str | None = None, max_versions: int = 64
) -> None:
    """Run the SQL views of ``shop.sql`` (or ``text``) in this process up to their inputs' head.

    With ``recovery`` (a folder), the next call resumes from the views' state instead of replaying.
    ``max_versions``: input versions read per batch.
    """
    from bytewax.dataflow import Dataflow
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import run_main

    from flowlake.sql import compile_views

    config = None
    if recovery is not None:
        folder = recovery / "shop_sql"
        if not folder.exists():
            folder.mkdir(parents=True)
            init_db_dir(folder, 1)  # type: ignore[no-untyped-call]
        config = RecoveryConfig(str(folder))  # type: ignore[no-untyped-call]
    flow = Dataflow("shop_sql")
    views = text if text is not None else SHOP_SQL.read_text()
    compile_views(views, flow, catalog=catalog, stop="head", max_versions=max_versions)
    run_main(flow, epoch_interval=dt.timedelta(0), recovery_config=config)  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def _table_services(catalog: Catalog, out: Console) -> Iterator[None]:
    """Compaction and cleaning in a thread beside the flows (as ``flowlake dev`` runs ``maintain``)."""
    services = catalog.services(max_jobs=1)
    thread = threading.Thread(target=services.run, name="table-services", daemon=True)
    thread.start()
    try:
        yield
    finally:
        services.stop()
        thread.join()
        jobs = services.results
        out.print()  # the live table above ends without a newline
        out.print(
            f"table services: {sum(r.job == 'compact' and r.outcome == 'ok' for r in jobs)} compactions, "
            f"{sum(r.job == 'clean' and r.outcome == 'ok' for r in jobs)} cleans, "
            f"{sum(r.outcome == 'failed' for r in jobs)} failed"
        )


def _run(
    catalog: Catalog, feed: _Feed, recovery: Path, out: Console, duration: float,
    rounds: int | None, follow: bool, initial_orders: int, changes_per_round: int, flows: FlowsMode = "sql",
) -> PipelineResult:  # fmt: skip
    from flowlake.demo import flows as shop
    from flowlake.flow.verify import verify_table

    run_flows: Callable[[Catalog, Path], None]
    if flows == "python":
        shop.ensure_tables(catalog)
        run_flows = shop.run_to_head
    else:
        for name in ("ods.orders", "ods.shops"):
            schema, key, properties = shop.TABLES[name]
            catalog.create_table(name, schema, primary_key=key, properties=properties, exist_ok=True)
        run_flows = run_views_to_head
    out.print(f"DWD/DWS layers: {'SQL views of ' + SHOP_SQL.name if flows == 'sql' else 'Python flows'}")
    generator = ShopCdcGenerator()
    feed.write(0, generator.snapshot(initial_orders, dt.datetime.now(dt.UTC)))
    source_changes = initial_orders + generator.shops
    started = time.monotonic()
    round_no = 0
    with _table_services(catalog, out), Live(console=out, refresh_per_second=2) as live:
        while True:
            feed.ingest(catalog)
            run_flows(catalog, recovery)
            live.update(_view(catalog, round_no, source_changes, started))
            round_no += 1
            done = rounds is not None and round_no > rounds
            if done or (not follow and rounds is None and time.monotonic() - started > duration):
                break
            lines = generator.transaction(changes_per_round, dt.datetime.now(dt.UTC), f"tx-{round_no}")
            feed.write(round_no, lines)
            source_changes += len(lines)
    out.print()
    ods = catalog.load_table("ods.orders").read()
    got = sorted(tuple(r.values()) for r in ods.select(list(ORDER_COLUMNS)).to_pylist())
    expected = expected_orders(generator)
    verified = got == expected
    out.print(f"ODS equals the generated source ({feed.label}): {verified} ({len(expected):,} orders)")
    database_rows = feed.source_rows()
    if database_rows is not None:
        same = got == database_rows
        verified &= same
        out.print(f"ODS equals SELECT * FROM orders in the source database: {same}")
    for name in OUTPUTS:
        report = verify_table(catalog, name)
        verified &= report.ok
        status = "[green]matches[/]" if report.ok else f"[red]{len(report.differences)} differences[/]"
        out.print(f"verify {name} at version {report.version}: {status} the DuckDB batch recompute")
    out.print(
        "[bold green]verified[/]: every layer equals its source / batch recompute"
        if verified
        else "[bold red]verification failed[/]"
    )
    out.print('look further:  flowlake status   flowlake lineage dws.shop_gmv_minute   '
              'flowlake sql "select * from dws.shop_gmv_minute order by paid_gmv desc limit 5"')  # fmt: skip
    label = "mariadb" if isinstance(feed, _BinlogFeed) else "jsonl"
    return PipelineResult(round_no, source_changes, ods.num_rows, verified, label)
