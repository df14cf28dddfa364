"""CLI command for the web console: ``flowlake ui``."""

from __future__ import annotations

from typing import Annotated

import typer

from flowlake.cli.main import CatalogOpt, WarehouseOpt, _connect, app, console


@app.command()
def ui(
    catalog: CatalogOpt = None,
    warehouse: WarehouseOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (local mode: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8282,
    auth: Annotated[
        str,
        typer.Option(
            help="local: act as your own principal, no sign-in (loopback only); "
            "token: sign in with a metastore token (`flowlake token NAME`)."
        ),
    ] = "local",
    poll_ms: Annotated[int, typer.Option(help="How often the overview refreshes, in ms.")] = 2000,
) -> None:
    """The web console: lineage overview, table pages with time travel, SQL, dead letters."""
    import uvicorn

    from flowlake.ui import console_app
    from flowlake.ui.serving import check_local_bind

    if auth not in ("local", "token"):
        raise typer.BadParameter(f"--auth must be local or token, got {auth!r}")
    if auth == "local":
        check_local_bind(host)
    if not 100 <= poll_ms <= 600_000:
        raise typer.BadParameter(f"--poll-ms must be from 100 to 600000, got {poll_ms}")
    cat = _connect(catalog, warehouse)
    hosts = None if auth == "local" else ["*"]
    application = console_app(cat, auth=auth, allowed_hosts=hosts, poll_ms=poll_ms)  # type: ignore[arg-type]
    shown = f"[{host}]" if ":" in host else host
    console.print(f"flowlake console on http://{shown}:{port}/ over {cat.display_url}")
    if auth == "local":
        console.print(
            f"acting as the local principal {cat.principal!r} without sign-in: anyone who can reach "
            f"{shown}:{port} on this machine acts as {cat.principal!r} (use --auth token to require tokens)"
        )
    uvicorn.run(application, host=host, port=port, log_level="warning")
