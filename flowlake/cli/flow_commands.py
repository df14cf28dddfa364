"""``flowlake run`` and ``flowlake verify``: dataflow commands registered on the main CLI app."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flowlake.cli.main import (
    CatalogOpt,
    WarehouseOpt,
    _connect,
    _require_project,
    app,
    console,
    err_console,
)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def run(
    ctx: typer.Context,
    dataflow: Annotated[str, typer.Argument(help="dataflows/x.py, dataflows/x.py:flow or views/x.sql")],
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
    once: Annotated[
        bool, typer.Option("--once", help="Stop when the inputs' current head is processed.")
    ] = False,
) -> None:
    """Run a dataflow (x.py) or a view file (x.sql) with bytewax (-r DIR -s 0.5 -b 0 -w 2 pass through).

    bytewax's own runner, except that -s (snapshot interval = epoch, which bounds output freshness)
    may be a fraction of a second, and that with -r DIR large aggregate and Top-N states snapshot
    only what changed, as chunk files in DIR/state (--state-dir PATH: elsewhere).
    """
    views = dataflow.endswith(".sql")
    target = dataflow if ":" in dataflow or views else f"{dataflow}:flow"
    path = target.split(":", 1)[0]
    if path.endswith((".py", ".sql")) and not Path(path).exists():
        err_console.print(f"[bold red]error:[/] no dataflow file {path!r}")
        raise typer.Exit(2)
    _require_project(catalog)  # a flow's fl.connect() would make an empty ./.flowlake otherwise
    if views:  # plan it here first, so a mistake in the SQL is one clear line
        from flowlake.sql import plan_views

        plan_views(Path(path).read_text(), _connect(catalog, warehouse))
    env = dict(os.environ)
    if catalog:
        env["FLOWLAKE_CATALOG"] = catalog
    if warehouse:
        env["FLOWLAKE_WAREHOUSE"] = warehouse
    if once:
        env["FLOWLAKE_FLOW_STOP"] = "head"
    runner = "flowlake.sql.runner" if views else "flowlake.flow.runner"
    command = [sys.executable, "-m", runner, target, *ctx.args]
    sys.stdout.flush()
    sys.stderr.flush()
    # become the runner (same process): a supervisor's SIGTERM or SIGKILL reaches the dataflow itself,
    # and no orphaned worker is left behind when this process is killed
    os.execve(sys.executable, command, env)  # noqa: S606 - our own interpreter, argv list


@app.command()
def explain(
    views: Annotated[Path, typer.Argument(help="A view file: CREATE MATERIALIZED VIEW ... AS SELECT ...")],
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Print the operator plan of a view file: per operator its key, its state, and each output's key."""
    from flowlake.sql import explain as explain_views

    if not views.is_file():
        err_console.print(f"[bold red]error:[/] no view file {str(views)!r}")
        raise typer.Exit(2)
    console.print(explain_views(views.read_text(), _connect(catalog, warehouse)), markup=False)


@app.command()
def verify(
    table: Annotated[str, typer.Argument(help="namespace.table written by a dataflow")],
    version: Annotated[
        int | None, typer.Option("--version", help="Verify this version (default head).")
    ] = None,
    all_versions: Annotated[bool, typer.Option("--all", help="Verify every version with lineage.")] = False,
    sql: Annotated[str | None, typer.Option("--sql", help="Defining SQL (default: table property).")] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Recompute a table in batch with DuckDB at its lineage's input versions and show differences."""
    from flowlake.flow.verify import verify_table

    cat = _connect(catalog, warehouse)
    if all_versions:
        versions: list[int | None] = [
            c.version for c in cat.load_table(table).history() if c.summary.get("sources")
        ]
    else:
        versions = [version]
    failed = False
    for v in versions:
        report = verify_table(cat, table, version=v, sql=sql)
        inputs = ", ".join(f"{k}@{n}" for k, n in sorted(report.inputs.items()))
        status = "[green]ok[/]" if report.ok else f"[bold red]{len(report.differences)} difference(s)[/]"
        console.print(
            f"{table}@{report.version} ({report.rows} rows) vs batch recompute of {inputs}: {status}"
            + (f"; {report.excluded} key(s) frozen by late data left out" if report.excluded else "")
        )
        if not report.ok:
            failed = True
            view = Table(title=f"differences in {table}@{report.version}")
            view.add_column("difference")
            for diff in report.differences[:50]:
                view.add_row(str(diff))
            console.print(view)
    if failed:
        raise typer.Exit(1)
