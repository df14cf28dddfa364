"""CLI commands to set up a project and look at it: init, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from flowlake.catalog.sql import redact
from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, app, console
from flowlake.config import DEFAULT_HOME


@app.command()
def init(
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
    principal: Annotated[str | None, typer.Option(help="Who acts (default: the local user).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing flowlake.toml.")] = False,
) -> None:
    """Write flowlake.toml here (warehouse, catalog, principal) and create the catalog."""
    path = Path("flowlake.toml")
    if path.exists() and not force:
        raise typer.BadParameter(f"{path} exists; pass --force to overwrite it")
    home = Path.cwd() / DEFAULT_HOME
    values = {
        "catalog": catalog or f"sqlite:///{home / 'catalog.db'}",
        "warehouse": warehouse or (home / "warehouse").as_uri(),
    }
    if principal:
        values["principal"] = principal
    lines = ["[flowlake]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    cat = _connect(values["catalog"], values["warehouse"])
    from flowlake.catalog.sql import SqlMetaStore

    admin = cat.store.claim_admin() if isinstance(cat.store, SqlMetaStore) else None
    role = (
        "you are its admin"
        if admin == cat.principal
        else f"its admin is {admin!r}"
        if admin
        else "admin set by the metastore"
    )
    console.print(f"wrote {path}; catalog ready as {cat.principal!r} ({role}): {cat!r}")


@app.command()
def status(
    namespace: Annotated[str | None, typer.Argument(help="Only this namespace.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Every table by namespace: version, rows, files, backlog, last commit, consumers' lag, freshness."""
    from flowlake.status import catalog_status, layer_freshness

    cat = _connect(catalog, warehouse)
    statuses = catalog_status(cat, namespace)
    layers = layer_freshness(statuses)
    if as_json:
        payload = {"tables": [s.to_dict() for s in statuses], "freshness_by_layer": layers}
        typer.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())
        return
    view = Table(title=f"flowlake status: {redact(cat.catalog_url)} · {cat.storage.uri}")
    for column in (
        "table",
        "version",
        "rows",
        "files",
        "log files",
        "MB",
        "last commit",
        "fresh (s)",
        "consumers",
    ):
        view.add_column(column, justify="right" if column not in ("table", "consumers") else "left")
    for s in statuses:
        consumers = ", ".join(f"{c} (-{lag})" for c, lag in sorted(s.consumers.items())) or "-"
        fresh = "-" if s.freshness_seconds is None else f"{s.freshness_seconds:,.1f}"
        view.add_row(
            s.name, str(s.version), f"{s.rows:,}", str(s.files), str(s.log_files), f"{s.bytes / 1e6:,.1f}",
            s.last_commit or "-", fresh, consumers,
        )  # fmt: skip
    console.print(view)
    for s in statuses:
        if s.stopped is not None:
            console.print(f"[red]{s.name}: CDC ingestion stopped[/] {escape(s.stopped)}")
    if layers:
        console.print(
            "freshness by layer: "
            + ", ".join(f"{layer} {'-' if lag is None else f'{lag:,.1f}s'}" for layer, lag in layers.items())
        )


@app.command()
def dev(
    folder: Annotated[
        Path, typer.Argument(help="Project folder with dataflows/ and flowlake.toml.")
    ] = Path(),
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run the project's ingesters and every dataflow (.py) and view file (.sql) as supervised processes."""
    import shlex
    import signal
    import subprocess
    import sys
    import tomllib

    from flowlake.config import Settings
    from flowlake.runtime.supervisor import ProcessSpec, Supervisor

    settings = Settings.resolve(catalog=catalog, warehouse=warehouse, cwd=folder.resolve())
    env = (("FLOWLAKE_CATALOG", settings.catalog), ("FLOWLAKE_WAREHOUSE", settings.warehouse))
    exe = str(Path(sys.executable).with_name("flowlake"))
    config_path = folder / "flowlake.toml"
    dev_config = (
        tomllib.loads(config_path.read_text()).get("flowlake", {}).get("dev", {})
        if config_path.exists()
        else {}
    )
    specs = []
    for i, args in enumerate(dev_config.get("ingest", [])):
        specs.append(
            ProcessSpec(f"ingest-{i}", (exe, "ingest", *shlex.split(args)), watch=(config_path,), env=env)
        )
    recovery_root = folder / DEFAULT_HOME / "recovery"
    flows = sorted([*(folder / "dataflows").glob("*.py"), *(folder / "dataflows").glob("*.sql")])
    for flow in flows:
        name = flow.stem if flow.suffix == ".py" else f"{flow.stem}_sql"
        recovery = recovery_root / name
        if not recovery.exists():
            recovery.mkdir(parents=True)
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)  # noqa: S603
        argv = (exe, "run", str(flow), "-r", str(recovery), "-s", "5", "-b", "0")
        specs.append(ProcessSpec(name, argv, watch=(flow,), env=env))
    if not specs:
        raise typer.BadParameter(
            f"nothing to run in {folder}: no dataflows/*.py or *.sql and no [flowlake.dev] ingest"
        )
    supervisor = Supervisor(specs, emit=console.print)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    console.print(f"[dev] supervising {', '.join(s.name for s in specs)}; Ctrl-C stops")
    try:
        supervisor.run(duration=duration)
    except KeyboardInterrupt:
        supervisor.stop()
