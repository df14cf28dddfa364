"""``flowlake maintain`` (the table services) and ``flowlake table set`` (a table's properties)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, app, console, err_console
from flowlake.table.policy import SPECS

table_app = typer.Typer(help="Look at and change one table's properties (its maintenance policy).")
app.add_typer(table_app, name="table")


@app.command()
def maintain(
    tables: Annotated[
        str, typer.Option("--tables", help="fnmatch patterns of tables to look after, comma-separated.")
    ] = "*",
    jobs: Annotated[int, typer.Option("--jobs", help="Jobs run at once.")] = 2,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between scans of the tables.")] = 1.0,
    lease: Annotated[
        float,
        typer.Option(
            "--lease",
            help="Seconds a job's lease lasts without renewal (a dead service's jobs "
            "are taken over after this).",
        ),
    ] = 30.0,
    once: Annotated[bool, typer.Option("--once", help="Run the jobs due now, then exit.")] = False,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Compact, rebalance and clean tables as their policies ask, until SIGTERM or Ctrl-C.

    Several instances (on several hosts) share the work through leases in the catalog. Exits 1 if a
    job failed in a --once run.
    """
    cat = _connect(catalog, warehouse)
    patterns = [p.strip() for p in tables.split(",") if p.strip()]
    service = cat.services(
        patterns, max_jobs=jobs, poll_seconds=poll, lease_seconds=lease,
        emit=lambda line: console.print(escape(f"[maintain] {line}"), highlight=False, soft_wrap=True),
    )  # fmt: skip
    if once:
        results = service.run_once()
        if not results:
            console.print(escape("[maintain] nothing due"))
        if any(r.outcome == "failed" for r in results):
            raise typer.Exit(1)
        return
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    started = (
        f"[maintain] {service.holder} looking after {', '.join(patterns)} as {cat.principal!r}: "
        f"{jobs} jobs at once, leases of {lease:g}s; SIGTERM or Ctrl-C stops"
    )
    console.print(escape(started), soft_wrap=True)
    try:
        service.run(duration=duration)
    except KeyboardInterrupt:
        service.stop()
    done = service.results
    failed = sum(r.outcome == "failed" for r in done)
    console.print(escape(f"[maintain] stopped after {len(done)} jobs ({failed} failed)"))


@table_app.command("set")
def table_set(
    table: Annotated[str, typer.Argument(help="namespace.table")],
    assignments: Annotated[
        list[str], typer.Argument(metavar="KEY=VALUE...", help="Properties to set; KEY= (empty) unsets one.")
    ],
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Set table properties, e.g. `flowlake table set ods.orders maintain.clean.retain_last=20`."""
    updates: dict[str, str | None] = {}
    for item in assignments:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise typer.BadParameter(
                f"expected KEY=VALUE, got {item!r}; settable keys: {', '.join(sorted(SPECS))}"
            )
        updates[key.strip()] = value if value != "" else None
    t = _connect(catalog, warehouse).load_table(table)
    props = t.set_properties(updates)
    for key, new in updates.items():
        console.print(f"{table}: {key} = {props[key]}" if new is not None else f"{table}: {key} unset")
    console.print(f"policy: {t.policy.describe()}", style="dim")


@table_app.command("show")
def table_show(
    table: Annotated[str, typer.Argument(help="namespace.table")],
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Show a table's properties (each settable one with its meaning) and its maintenance policy."""
    t = _connect(catalog, warehouse).load_table(table)
    props = t.properties
    view = Table(title=f"properties of {table}")
    for column in ("property", "value", "meaning"):
        view.add_column(column)
    for key in sorted(set(props) | set(SPECS)):
        spec = SPECS.get(key)
        value = props.get(key, f"({(spec.default if spec else None) or 'unset'})")
        view.add_row(key, escape(value), escape(spec.meaning) if spec else "set at creation")
    console.print(view)
    try:
        console.print(f"policy: {t.policy.describe()}")
    except Exception as exc:  # a property edited outside the API: say which, do not fail the listing
        err_console.print(f"[red]policy:[/] {escape(str(exc))}")
