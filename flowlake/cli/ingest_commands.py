"""``flowlake ingest``: CDC from MySQL/MariaDB, PostgreSQL or Debezium JSON lines into ODS tables."""

from __future__ import annotations

import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, app, console
from flowlake.errors import InvalidArgumentError

if TYPE_CHECKING:
    from flowlake.cdc import IngestStats


def _primary_keys(values: list[str] | None) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for item in values or []:
        table, sep, cols = item.partition("=")
        if not sep or "." not in table or not cols:
            raise InvalidArgumentError(f"--primary-key takes db.table=col[,col], got {item!r}")
        keys[table.strip()] = [c.strip() for c in cols.split(",") if c.strip()]
    return keys


class _SnapshotBars:
    """One rich progress bar per table being snapshotted: rows, chunks, ETA."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, update: object) -> None:
        from flowlake.cdc import SnapshotProgress

        if not isinstance(update, SnapshotProgress):
            return
        task = self.tasks.get(update.table)
        total = update.rows if update.done else max(update.estimated_rows, update.rows + 1)
        if task is None:
            task = self.tasks[update.table] = self.progress.add_task(update.table, total=total, chunks=0)
        self.progress.update(task, completed=update.rows, total=total, chunks=update.chunks)


@app.command()
def ingest(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="mysql://user:pw@host:3306/db, postgresql://user:pw@host:5432/db[?slot=s&publication=p], "
            "or 'debezium-jsonl' followed by the path/URL of the files.",
        ),
    ],
    location: Annotated[
        str | None, typer.Argument(help="For --source debezium-jsonl: the file or folder (fsspec URL).")
    ] = None,
    tables: Annotated[
        str | None,
        typer.Option(
            help="db.table (PostgreSQL: schema.table) glob patterns, comma-separated "
            "(default: <db>.*; PostgreSQL: public.*)."
        ),
    ] = None,
    namespace: Annotated[str, typer.Option(help="ODS namespace.")] = "ods",
    table_template: Annotated[str, typer.Option(help="ODS table name from {db} and {table}.")] = "{table}",
    primary_key: Annotated[
        list[str] | None, typer.Option(help="db.table=col[,col] for sources without keys (repeatable).")
    ] = None,
    max_rows: Annotated[int, typer.Option(help="Commit once this many changes are buffered.")] = 10_000,
    max_latency_ms: Annotated[int, typer.Option(help="Commit once the oldest change is this old.")] = 500,
    catchup_rows: Annotated[
        int,
        typer.Option(help="While a commit runs and changes keep coming, buffer up to this many."),
    ] = 100_000,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Rows per snapshot chunk (default 5000; 20000 for MySQL tables read into Arrow)."),
    ] = None,
    snapshot: Annotated[str, typer.Option(help="initial (snapshot then stream) or never.")] = "initial",
    buckets: Annotated[int, typer.Option(help="Buckets of new ODS tables.")] = 4,
    until_idle: Annotated[
        bool, typer.Option(help="Exit once caught up (snapshot done, log drained).")
    ] = False,
    duration: Annotated[float | None, typer.Option(help="Exit after this many seconds.")] = None,
    max_line_mb: Annotated[
        float,
        typer.Option(help="debezium-jsonl: longer lines become dead letters (with their size)."),
    ] = 8.0,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Ingest CDC into ODS tables, exactly once; resumes from the positions stored in the tables."""
    from flowlake.cdc import OdsIngester, Source, count_dead_letters, open_source

    if source in ("debezium-jsonl", "jsonl"):
        if not location:
            raise InvalidArgumentError("--source debezium-jsonl needs the files' path, e.g. file:///data/cdc")
        url = f"debezium-jsonl:{location}"
    else:
        url = source
    cat = _connect(catalog, warehouse)
    progress = Progress(
        TextColumn("snapshot [bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows, {task.fields[chunks]} chunks"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    bars = _SnapshotBars(progress)
    max_line_bytes = None
    if url.startswith("debezium-jsonl:"):
        if max_line_mb <= 0:
            raise InvalidArgumentError(f"--max-line-mb must be positive, got {max_line_mb}")
        max_line_bytes = int(max_line_mb * (1 << 20))
    src: Source = open_source(
        url, tables=tables, chunk_size=chunk_size, snapshot=snapshot, on_progress=bars,
        max_line_bytes=max_line_bytes,
    )  # fmt: skip
    ingester = OdsIngester(
        cat, src, namespace=namespace, table_template=table_template,
        primary_keys=_primary_keys(primary_key), max_rows=max_rows, max_latency_ms=max_latency_ms,
        catchup_rows=catchup_rows, buckets=buckets,
    )  # fmt: skip
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        with progress:
            stats = ingester.run(until_idle=until_idle, duration=duration, stop=stop)
    except KeyboardInterrupt:
        stats = ingester.stats
    finally:
        signal.signal(signal.SIGTERM, previous)
    _report(stats, src.key, count_dead_letters(cat, namespace), namespace)
    if stats.stopped:
        raise typer.Exit(1)


def _report(stats: IngestStats, source: str, dead: Mapping[str, int], namespace: str) -> None:
    """Print what a run ingested, its dead letters and the tables it stopped."""
    view = Table(title=f"ingested from {source}")
    for column in ("table", "changes"):
        view.add_column(column)
    for name, count in sorted(stats.tables.items()):
        view.add_row(name, f"{count:,}")
    console.print(view)
    console.print(
        f"{stats.groups:,} transaction groups, {stats.changes:,} changes in {stats.commits:,} commits "
        f"({stats.skipped_groups:,} groups already committed, skipped); "
        f"{stats.dead_letters:,} new dead letters"
    )
    if dead:
        summary = ", ".join(f"{table}: {n:,}" for table, n in sorted(dead.items()))
        console.print(f"[yellow]dead letters in {namespace}._dead_letter[/]: {summary}")
    else:
        console.print(f"no dead letters in {namespace}._dead_letter")
    for name, reason in sorted(stats.stopped.items()):
        console.print(f"[red]{name}: ingestion stopped[/] {escape(reason)}")


@app.command("dead-letters")
def dead_letters_command(
    table: Annotated[
        str, typer.Argument(help="The ODS table (ods.orders) or its source table (shop.orders).")
    ],
    replay: Annotated[
        bool,
        typer.Option(help="Apply the letters that now decode and no newer change supersedes, exactly once."),
    ] = False,
    namespace: Annotated[str, typer.Option(help="ODS namespace.")] = "ods",
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """List a table's dead letters (reason, source, position, size); --replay applies what now decodes."""
    from flowlake.cdc import list_dead_letters, replay_dead_letters, resolve_ods_table, summarize_dead_letters

    cat = _connect(catalog, warehouse)
    ods, source_table = resolve_ods_table(cat, table, namespace)
    letters = (replay_dead_letters if replay else list_dead_letters)(cat, ods, source_table, namespace)
    if not letters:
        console.print(f"no dead letters for {ods.name} ({source_table}) in {namespace}._dead_letter")
        return
    out = Table(title=f"dead letters of {ods.name} ({source_table})", show_lines=False)
    for column in ("id", "status", "position", "size", "reason"):
        out.add_column(column, overflow="fold")
    for letter in letters:
        position = ", ".join(f"{k}={v}" for k, v in letter.position.items() if k != "table")
        reason = letter.error if not letter.note else f"{letter.error}\n→ {letter.note}"
        out.add_row(letter.id[:12], letter.status, escape(position), f"{letter.size:,} B", escape(reason))
    console.print(out)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summarize_dead_letters(letters).items()))
    console.print(f"{len(letters)} dead letter(s) from {letters[0].source}: {counts}")
