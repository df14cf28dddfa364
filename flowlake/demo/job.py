"""The demo job: the table layer doing real work on the embedded default catalog.

It loads a generated ``ods.orders`` table, upserts change batches into it (new orders, status and
amount updates, deletes), then shows a time-travel query, an incremental changelog read, compaction
and cleaning, checking the results as it goes. Later stages of the product (CDC ingestion, dataflows)
grow this job into the full ODS → DWD → DWS pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.demo.workload import ORDERS_SCHEMA, OrdersWorkload
from flowlake.lake import Catalog
from flowlake.table.table import LakeTable

TABLE = "ods.orders"


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did, for callers and tests."""

    versions: int
    rows: int
    changes: int
    changes_per_s: float
    verified: bool


def _gmv_by_status(dataset: object) -> list[tuple[str, int, float]]:
    con = duckdb.connect()
    con.register("orders", dataset)
    rows = con.execute(
        "select status, count(*) as orders, sum(amount)::double as gmv "
        "from orders group by status order by status"
    ).fetchall()
    con.close()
    return [(str(s), int(n), float(g)) for s, n, g in rows]


def run_demo(
    catalog: Catalog,
    *,
    initial_rows: int = 100_000,
    batches: int = 10,
    batch_size: int = 10_000,
    seed: int = 7,
    console: Console | None = None,
) -> DemoResult:
    """Run the table demo on ``catalog`` and print what it does."""
    out = console or Console()
    say: Callable[[str], None] = out.print
    if catalog.table_exists(TABLE):
        say(f"[yellow]{TABLE} exists from an earlier run: starting clean (dropping it)[/]")
        catalog.drop_table(TABLE)
    table = catalog.create_table(TABLE, ORDERS_SCHEMA, primary_key=["order_id"], buckets=8)
    say(
        f"[bold]flowlake demo[/] as {catalog.principal}: catalog {catalog.display_url}, "
        f"warehouse {catalog.storage.uri}"
    )

    workload = OrdersWorkload(seed=seed)
    started = time.perf_counter()
    first = table.upsert(workload.initial(initial_rows))
    say(f"loaded {initial_rows:,} orders as version {first.version} in {time.perf_counter() - started:.2f}s")

    progress = Table(title=f"upserting {batches} batches of {batch_size:,} changes into {TABLE}")
    for column in ("version", "+I", "-U/+U", "-D", "log files", "ms"):
        progress.add_column(column, justify="right")
    total_changes, write_seconds = 0, 0.0
    for _ in range(batches):
        batch = workload.changes(batch_size)
        t = time.perf_counter()
        commit = table.apply(batch)
        elapsed = time.perf_counter() - t
        write_seconds += elapsed
        rows = commit.summary["rows"]
        total_changes += rows["+I"] + rows["+U"] + rows["-D"]
        progress.add_row(
            str(commit.version), f"{rows['+I']:,}", f"{rows['+U']:,}", f"{rows['-D']:,}",
            str(commit.summary["files_added"]), f"{elapsed * 1000:.0f}",
        )  # fmt: skip
    out.print(progress)
    say(f"{total_changes:,} changes at {total_changes / write_seconds:,.0f} changes/s")

    verified = _time_travel(table, first.version, out)
    verified &= _changelog(table, first.version, out)
    verified &= _maintenance(table, workload, out)
    head = table.read()
    verified &= head.num_rows == len(workload.live)
    say(
        f"[bold green]verified[/]: the table holds exactly the {len(workload.live):,} live orders"
        if verified
        else "[bold red]verification failed[/]"
    )
    say("look further:  flowlake tables   flowlake history ods.orders   "
        "flowlake sql \"select status, count(*) from ods.orders group by 1\"")  # fmt: skip
    return DemoResult(table.version, head.num_rows, total_changes, total_changes / write_seconds, verified)


def _time_travel(table: LakeTable, first_version: int, out: Console) -> bool:
    then = _gmv_by_status(table.dataset(version=first_version))
    now = _gmv_by_status(table.dataset())
    view = Table(title=f"time travel: GMV by status at version {first_version} vs head ({table.version})")
    for column in ("status", f"orders@v{first_version}", f"gmv@v{first_version}", "orders@head", "gmv@head"):
        view.add_column(column, justify="right")
    for (status, n0, g0), (_, n1, g1) in zip(then, now, strict=True):
        view.add_row(status, f"{n0:,}", f"{g0:,.2f}", f"{n1:,}", f"{g1:,.2f}")
    out.print(view)
    return bool(sum(n for _, n, _ in then) == table.read(version=first_version).num_rows)


def _changelog(table: LakeTable, first_version: int, out: Console) -> bool:
    changes = table.changes(first_version)
    kinds = changes.column(KIND_COLUMN).to_numpy()
    counts = {kind.symbol: int((kinds == kind).sum()) for kind in RowKind}
    out.print(f"changelog of versions {first_version + 1}..{table.version}: {counts}")
    updated = changes.filter(pc.equal(changes[KIND_COLUMN], int(RowKind.UPDATE_BEFORE)))
    if updated.num_rows:
        key = updated["order_id"][0]
        pair = changes.filter(pc.equal(changes["order_id"], key)).select(
            ["order_id", "status", "amount", KIND_COLUMN]
        )
        out.print(f"one order's history (before-images let consumers retract):\n{pair.to_pylist()}")
    return counts["-U"] == counts["+U"]


def _maintenance(table: LakeTable, workload: OrdersWorkload, out: Console) -> bool:
    t = time.perf_counter()
    merged = table.read()
    merged_s = time.perf_counter() - t
    files_before = table.last_scan.files
    t = time.perf_counter()
    commit = table.compact()
    compact_s = time.perf_counter() - t
    t = time.perf_counter()
    compacted = table.read()
    compacted_s = time.perf_counter() - t
    out.print(
        f"compaction (version {commit.version if commit else '-'}): {files_before} files → "
        f"{table.last_scan.files} base files in {compact_s:.2f}s; read {merged.num_rows:,} rows in "
        f"{merged_s:.2f}s before, {compacted_s:.2f}s after"
    )
    cleaned = table.clean(retain_last=1)
    out.print(
        f"clean(retain_last=1): deleted {cleaned.files_deleted} files "
        f"({cleaned.bytes_deleted / 1e6:.1f} MB); "
        f"oldest readable version is now {cleaned.oldest_version}"
    )
    same = merged.sort_by("order_id").equals(compacted.sort_by("order_id"))
    return same and merged.num_rows == len(workload.live) and isinstance(merged, pa.Table)
