"""The ``flowlake`` command line: thin wrappers over the public API, rich output, one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import flowlake as fl
from flowlake.errors import FlowlakeError

app = typer.Typer(
    help="flowlake: real-time data lakes in pure Python.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() prints one line per error; --debug re-raises
)
console = Console()
err_console = Console(stderr=True)

CatalogOpt = Annotated[str | None, typer.Option("--catalog", help="Catalog URL (env FLOWLAKE_CATALOG).")]
WarehouseOpt = Annotated[
    str | None, typer.Option("--warehouse", help="Warehouse URI (env FLOWLAKE_WAREHOUSE).")
]


@app.callback()
def _options(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Read settings from this file instead of ./flowlake.toml (env FLOWLAKE_CONFIG); "
            "parent folders are never searched.",
        ),
    ] = None,
) -> None:
    """flowlake: real-time data lakes in pure Python."""
    if config is not None:
        if not Path(config).is_file():
            raise fl.InvalidArgumentError(f"config file {config!r} (from --config) does not exist")
        os.environ["FLOWLAKE_CONFIG"] = str(Path(config).resolve())  # commands and their children


def _connect(catalog: str | None, warehouse: str | None, *, create: bool = False) -> fl.Catalog:
    """The catalog of this project; only ``create`` (init, demo) may make a new ``./.flowlake``."""
    if not create:
        _require_project(catalog)
    return fl.connect(catalog=catalog, warehouse=warehouse)


def _require_project(catalog: str | None, folder: Path | None = None) -> None:
    """Refuse to go on unless a catalog is given or ``folder`` (default: here) is a project, so that
    no command but ``init`` and ``demo`` leaves an empty ``.flowlake`` behind."""
    from flowlake.config import DEFAULT_HOME
    from flowlake.errors import CatalogError

    where = folder or Path()
    if catalog is None and not _configured(where):
        raise CatalogError(
            f"no flowlake project in {where.resolve()}: looked for ./flowlake.toml, $FLOWLAKE_CATALOG, "
            f"$FLOWLAKE_CONFIG and ./{DEFAULT_HOME}; run `flowlake init` here, or pass --catalog"
        )


def _configured(folder: Path) -> bool:
    from flowlake.config import DEFAULT_HOME

    return bool(
        os.environ.get("FLOWLAKE_CATALOG")
        or os.environ.get("FLOWLAKE_CONFIG")
        or (folder / "flowlake.toml").is_file()
        or (folder / DEFAULT_HOME).is_dir()
    )


@app.command()
def demo(
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
    duration: Annotated[float, typer.Option(help="Seconds of generated changes before verifying.")] = 30.0,
    rounds: Annotated[int | None, typer.Option(help="Run exactly this many change rounds instead.")] = None,
    follow: Annotated[bool, typer.Option(help="Keep generating until Ctrl-C.")] = False,
    source: Annotated[
        str,
        typer.Option(
            help="auto: MariaDB binlog CDC when a server (or mariadbd) is available, else Debezium JSONL; "
            "mariadb; jsonl."
        ),
    ] = "auto",
    mysql: Annotated[
        str | None,
        typer.Option(help="Source server for --source auto/mariadb (default $FLOWLAKE_DEMO_MYSQL or :3306)."),
    ] = None,
    flows: Annotated[
        str,
        typer.Option(help="sql: DWD/DWS as the SQL views of dataflows/shop.sql; python: the Python flows."),
    ] = "sql",
    table_only: Annotated[bool, typer.Option("--table-only", help="Only the lake-table demo.")] = False,
    rows: Annotated[int, typer.Option(help="--table-only: orders in the initial load.")] = 100_000,
    batches: Annotated[int, typer.Option(help="--table-only: change batches to upsert.")] = 10,
    batch_size: Annotated[int, typer.Option(help="--table-only: changes per batch.")] = 10_000,
    ui: Annotated[
        bool, typer.Option("--ui", help="Serve the web console on 127.0.0.1 while it runs.")
    ] = False,
    ui_port: Annotated[int, typer.Option(help="--ui: the console's port.")] = 8282,
) -> None:
    """The main job on the embedded default: generated shop CDC -> ODS -> DWD -> DWS, then verify."""
    cat = _connect(catalog, warehouse, create=True)
    if ui:
        from flowlake.ui import console_app
        from flowlake.ui.serving import serve_in_background

        web = serve_in_background(console_app(cat), host="127.0.0.1", port=ui_port)
        console.print(f"[bold]console:[/] {web.url} (acting as {cat.principal!r}; up while the demo runs)")
    if table_only:
        from flowlake.demo.job import run_demo

        result = run_demo(cat, initial_rows=rows, batches=batches, batch_size=batch_size)
        if not result.verified:
            raise typer.Exit(1)
        return
    from flowlake.demo.pipeline import run_pipeline_demo

    try:
        if source not in ("auto", "mariadb", "jsonl"):
            raise typer.BadParameter(f"--source must be auto, mariadb or jsonl, got {source!r}")
        if flows not in ("sql", "python"):
            raise typer.BadParameter(f"--flows must be sql or python, got {flows!r}")
        outcome = run_pipeline_demo(
            cat, duration=duration, rounds=rounds, follow=follow, source=source,  # type: ignore[arg-type]
            mysql_url=mysql, console=console, flows=flows,  # type: ignore[arg-type]
        )  # fmt: skip
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if not outcome.verified:
        raise typer.Exit(1)


@app.command()
def tables(
    namespace: Annotated[str | None, typer.Argument(help="Only this namespace.")] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """List tables with their version and primary key."""
    cat = _connect(catalog, warehouse)
    view = Table(title="tables")
    for column in ("table", "version", "primary key", "buckets", "columns"):
        view.add_column(column)
    for name in cat.list_tables(namespace):
        t = cat.load_table(name)
        view.add_row(name, str(t.version), ", ".join(t.primary_key), str(t.buckets), str(len(t.schema)))
    console.print(view)


def summary_text(summary: Mapping[str, Any]) -> str:
    """A commit summary as readable fields, one per line: ``rows +I 8 -U 0 +U 0 -D 0``, ``buckets 0, 3``."""
    lines = []
    for key, value in summary.items():
        if key == "columns":
            continue
        if isinstance(value, Mapping):
            text = " ".join(f"{k} {_plain(v)}" for k, v in value.items())
        elif isinstance(value, list | tuple):
            text = ", ".join(_plain(v) for v in value)
        else:
            text = _plain(value)
        lines.append(f"{key.replace('_', ' ')} {text}")
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


@app.command()
def history(table: str, catalog: CatalogOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Show a table's commits with their summaries."""
    t = _connect(catalog, warehouse).load_table(table)
    view = Table(title=f"history of {table}")
    for column in ("version", "operation", "committed at", "principal", "summary"):
        view.add_column(column)
    for c in t.history():
        view.add_row(
            str(c.version),
            c.operation,
            c.committed_at.isoformat(timespec="seconds"),
            c.principal,
            summary_text(c.summary),
        )
    console.print(view)


@app.command()
def compact(table: str, catalog: CatalogOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Fold log files into base files."""
    commit = _connect(catalog, warehouse).load_table(table).compact()
    console.print(
        "nothing to compact"
        if commit is None
        else f"compacted into version {commit.version}: {commit.summary}"
    )


@app.command()
def clean(
    table: str,
    retain_last: Annotated[int, typer.Option(help="Versions to keep readable.")] = 10,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Delete files that no retained version needs (consumers further behind than the table's
    maintain.clean.consumer_max_lag are dropped first)."""
    lake_table = _connect(catalog, warehouse).load_table(table)
    lag = lake_table.policy.clean_consumer_max_lag
    result = lake_table.clean(retain_last=retain_last, consumer_max_lag_seconds=lag)
    console.print(
        f"deleted {result.files_deleted} files and {result.orphans_deleted} orphans; "
        f"oldest readable version {result.oldest_version}"
    )


def _ran_statement(query: str, as_of: str | None, catalog: str | None, warehouse: str | None) -> bool:
    """Run ``query`` if it is a DDL/DML statement (one commit) and say what it did; False for a SELECT."""
    from flowlake.sql.dml import DDL, WRITES, run_statement
    from flowlake.sql.sandbox import statement_type

    if statement_type(query) not in (*DDL, *WRITES):
        return False
    if as_of is not None:
        raise typer.BadParameter("--as-of reads the past; statements change the present")
    console.print(str(run_statement(_connect(catalog, warehouse), query)))
    return True


@app.command()
def sql(
    query: str,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Read every table as of this ISO time (one cut; naive is UTC), or a one-table query "
            "at this version.",
        ),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, csv or parquet.")] = "table",
    output: Annotated[str | None, typer.Option("--output", "-o", help="File for csv/parquet output.")] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run one SELECT (DuckDB, sandboxed) over the snapshots of tables you may read, or one statement.

    Name tables namespace.table; file functions, COPY, ATTACH, INSTALL/LOAD, SET and PRAGMA are refused.
    CREATE/ALTER/DROP TABLE, INSERT (an upsert on keyed tables), DELETE, UPDATE and MERGE each make
    one commit, with grants checked.
    """
    from flowlake.sql import run_query

    if _ran_statement(query, as_of, catalog, warehouse):
        return
    answer = run_query(_connect(catalog, warehouse), query, as_of=as_of)
    result = answer.table
    if answer.versions:
        err_console.print(
            "read " + ", ".join(f"{name} at version {v}" for name, v in answer.versions.items()), style="dim"
        )
    if output_format == "table":
        view = Table()
        for name in result.column_names:
            view.add_column(name)
        for row in result.to_pylist()[:1000]:
            view.add_row(*(str(v) for v in row.values()))
        console.print(view)
        if result.num_rows > 1000:
            console.print(f"... {result.num_rows - 1000:,} more rows (use --format csv -o FILE)")
    elif output_format == "csv":
        import pyarrow.csv as pacsv

        if output:
            pacsv.write_csv(result, output)
        else:
            sink = pa.BufferOutputStream()
            pacsv.write_csv(result, sink)
            sys.stdout.write(sink.getvalue().to_pybytes().decode())
    elif output_format == "parquet":
        import pyarrow.parquet as pq

        if not output:
            raise typer.BadParameter("--format parquet needs --output FILE")
        pq.write_table(result, output)
    else:
        raise typer.BadParameter(f"unknown format {output_format!r}; use table, csv or parquet")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one clear line for flowlake errors, a traceback only with --debug."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
        os.environ["FLOWLAKE_DEBUG"] = "1"  # for `run`'s worker process: tracebacks there too
    from flowlake.runtime.observability import setup_from_env

    if args[:1] != ["run"]:  # `run` hands over to a worker process, which serves its own metrics
        setup_from_env()  # FLOWLAKE_METRICS_PORT / FLOWLAKE_LOG_FORMAT=json, for workers and ingesters
    try:
        return app(args, standalone_mode=False)
    except FlowlakeError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # click usage errors (typer vendors its own click: match by shape)
        message, code = getattr(exc, "format_message", None), getattr(exc, "exit_code", None)
        if callable(message) and isinstance(code, int) and not debug:
            err_console.print(f"[bold red]error:[/] {escape(str(message()))}")
            sys.exit(code)
        raise


# command modules register themselves on `app`
from flowlake.cli import (  # noqa: E402,F401
    admin_commands,
    catalog_commands,
    flow_commands,
    ingest_commands,
    maintain_commands,
    ui_commands,
)

if __name__ == "__main__":  # run as a script the module is __main__, not the one commands register on
    from flowlake.cli.main import main as registered_main

    registered_main()
