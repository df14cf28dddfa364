"""CLI commands to set up a project and look at it: init, status."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, _require_project, app, console
from flowlake.config import DEFAULT_HOME, Settings
from flowlake.status import TableStatus


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
    values["principal"] = principal or Settings.resolve().principal
    lines = ["[flowlake]"] + [f"{k} = {orjson.dumps(v).decode()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    cat = _connect(values["catalog"], values["warehouse"], create=True)
    admin = cat.claim_admin()
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
    console.print(f"[bold]flowlake status[/] {escape(cat.display_url)} · {escape(cat.storage.uri)}")
    view = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column, justify in (("table", "left"), ("ver", "right"), ("rows", "right"), ("files", "right"),
                            ("MB", "right"), ("commit", "right"), ("behind", "right")):  # fmt: skip
        view.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    now = dt.datetime.now(dt.UTC)
    for s in statuses:
        fresh = "-" if s.freshness_seconds is None else _age(s.freshness_seconds)
        committed = (
            "-"
            if s.last_commit is None
            else _age((now - dt.datetime.fromisoformat(s.last_commit)).total_seconds()) + " ago"
        )
        view.add_row(
            s.name, str(s.version), f"{s.rows:,}", f"{s.files}/{s.log_files}", f"{s.bytes / 1e6:,.1f}",
            committed, fresh,
        )  # fmt: skip
    console.print(view)
    console.print("  files: data files / of which logs (compaction folds logs into base files)", style="dim")
    for s in statuses:
        if s.consumers:
            lags = ", ".join(f"{c} ({lag} behind)" for c, lag in sorted(s.consumers.items()))
            console.print(f"  {s.name} is read by {escape(lags)}")
    _print_services(statuses)
    for s in statuses:
        if s.stopped is not None:
            console.print(f"[red]{s.name}: CDC ingestion stopped[/] {escape(s.stopped)}")
    if layers:
        console.print(
            "freshness by layer: "
            + ", ".join(f"{layer} {'-' if lag is None else f'{lag:,.1f}s'}" for layer, lag in layers.items())
        )


def _print_services(statuses: list[TableStatus]) -> None:
    """Each table's table-service runs (``flowlake maintain``), then the policies, grouped."""
    for s in statuses:
        if s.services:
            runs = ", ".join(_job_text(job, v) for job, v in s.services.items())
            console.print(f"  {s.name} maintained: {escape(runs)}")
    by_policy: dict[str, list[str]] = {}
    for s in statuses:
        by_policy.setdefault(s.policy, []).append(s.name)
    for policy, names in by_policy.items():
        console.print(f"  policy of {', '.join(names)}: {escape(policy)}", style="dim")


def _job_text(job: str, v: dict[str, Any]) -> str:
    """``compact ok 12s ago (34 runs, 0 failed)`` or ``clean running on host:pid:id``."""
    if v["running_on"]:
        return f"{job} running on {v['running_on']} ({v['runs']} runs, {v['failures']} failed)"
    ago = "" if v["seconds_ago"] is None else f" {_age(float(v['seconds_ago']))} ago"
    return f"{job} {v['last_outcome'] or '-'}{ago} ({v['runs']} runs, {v['failures']} failed)"


def _age(seconds: float) -> str:
    """``42s``, ``3m``, ``5h``, ``2d``: a duration short enough for an 80-column table."""
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:,.0f}{unit}"
    return f"{seconds:.1f}s"


@app.command()
def dev(
    folder: Annotated[
        Path, typer.Argument(help="Project folder with dataflows/ and flowlake.toml.")
    ] = Path(),
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    maintain: Annotated[
        bool, typer.Option(help="Also run the table services (`flowlake maintain`) beside the flows.")
    ] = True,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run the project's ingesters, every dataflow (.py) and view file (.sql) and the table services
    (compaction, cleaning) as supervised processes."""
    import shlex
    import signal
    import subprocess
    import sys
    import tomllib

    from flowlake.config import Settings
    from flowlake.runtime.supervisor import ProcessSpec, Supervisor

    _require_project(catalog, folder)
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
    if maintain:
        specs.append(ProcessSpec("maintain", (exe, "maintain"), env=env))
    supervisor = Supervisor(specs, emit=console.print)
    signal.signal(signal.SIGTERM, lambda *_: supervisor.stop())
    console.print(f"[dev] supervising {', '.join(s.name for s in specs)}; Ctrl-C stops")
    try:
        supervisor.run(duration=duration)
    except KeyboardInterrupt:
        supervisor.stop()
