"""CLI commands for the catalog: grants, tokens, lineage and the REST metastore server."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, _require_project, app, console
from flowlake.lake import Privilege


@app.command()
def grant(
    privilege: Annotated[str, typer.Argument(help="read, write or admin")],
    obj: Annotated[str, typer.Argument(metavar="OBJECT", help="'*', a namespace or namespace.table")],
    principal: str,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Give PRINCIPAL PRIVILEGE on OBJECT."""
    _connect(catalog, warehouse).grant(_privilege(privilege), obj, principal)
    console.print(f"granted {privilege} on {obj} to {principal}")


@app.command()
def revoke(
    privilege: str,
    obj: Annotated[str, typer.Argument(metavar="OBJECT")],
    principal: str,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Take PRIVILEGE on OBJECT back from PRINCIPAL."""
    removed = _connect(catalog, warehouse).revoke(_privilege(privilege), obj, principal)
    console.print(f"revoked {privilege} on {obj} from {principal}" if removed else "there was no such grant")


@app.command()
def grants(
    principal: Annotated[str | None, typer.Argument()] = None,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """List grants."""
    view = Table(title="grants")
    for column in ("principal", "privilege", "object"):
        view.add_column(column)
    for row in _connect(catalog, warehouse).list_grants(principal):
        view.add_row(*row)
    console.print(view)


@app.command()
def token(
    principal: str,
    revoke_token: Annotated[bool, typer.Option("--revoke", help="Invalidate the principal's token.")] = False,
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Create a principal's bearer token for the REST metastore (printed once), or revoke it."""
    cat = _connect(catalog, warehouse)
    if revoke_token:
        cat.revoke_token(principal)
        console.print(f"token of {principal} revoked")
    else:
        console.print(cat.create_principal(principal), soft_wrap=True)


@app.command()
def lineage(table: str, catalog: CatalogOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Print a table's upstream graph and its freshness as JSON."""
    cat = _connect(catalog, warehouse)
    payload = {"lineage": cat.lineage(table).to_dict(), "freshness_seconds": cat.freshness(table)}
    console.print_json(orjson.dumps(payload).decode())


@app.command()
def serve(
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8181,
    max_body_mb: Annotated[
        float, typer.Option(help="Largest request body to accept, in MiB (larger ones get 413).")
    ] = 64.0,
    ui: Annotated[
        bool, typer.Option("--ui", help="Also serve the web console at /ui (sign-in with tokens).")
    ] = False,
    pg: Annotated[
        int | None,
        typer.Option(
            "--pg",
            metavar="PORT",
            help="Also serve the PostgreSQL wire protocol on PORT (user + token as password).",
        ),
    ] = None,
) -> None:
    """Run the REST metastore over a catalog (clients: fl.connect(catalog="http://host:port", token=...))."""
    if max_body_mb <= 0:
        raise typer.BadParameter(f"--max-body-mb must be positive, got {max_body_mb}")
    import uvicorn

    from flowlake.config import Settings
    from flowlake.lake import metastore_app, redact_url

    _require_project(catalog)
    url = Settings.resolve(catalog=catalog).catalog
    app: Any = metastore_app(url, max_body_bytes=int(max_body_mb * 1024 * 1024))
    console.print(f"flowlake metastore on http://{host}:{port} over {redact_url(url)}")
    if ui:
        from flowlake.ui import console_app
        from flowlake.ui.serving import with_metastore

        web = console_app(_connect(url, warehouse), auth="token", allowed_hosts=["*"])
        app = with_metastore(web, app)
        console.print(f"flowlake console on http://{host}:{port}/ui/ (sign in with a `flowlake token`)")
    if pg is not None:
        from flowlake.ui.pgwire import start_pg_server

        start_pg_server(_connect(url, warehouse), host=host, port=pg)
        console.print(
            f"flowlake PostgreSQL endpoint on {host}:{pg} (user NAME, password: its `flowlake token`)"
        )
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _privilege(value: str) -> Privilege:
    if value not in ("read", "write", "admin"):
        raise typer.BadParameter(f"unknown privilege {value!r}; use read, write or admin")
    return value  # type: ignore[return-value]
