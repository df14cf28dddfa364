"""Running the console (and the metastore beside it) under uvicorn, in the foreground or a thread."""

from __future__ import annotations

import ipaddress
import threading
import time
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from flowlake.errors import InvalidArgumentError


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_local_bind(host: str) -> None:
    """Refuse to serve the no-sign-in ``local`` mode on anything but loopback."""
    if not is_loopback(host):
        raise InvalidArgumentError(
            f"the console's local mode acts as your principal without sign-in, so it binds loopback only "
            f"(got --host {host}); use --auth token to serve it on {host}"
        )


def with_metastore(console: ASGIApp, metastore: ASGIApp, *, prefix: str = "/ui") -> Starlette:
    """One app: the console under ``prefix`` and the REST metastore everywhere else."""
    return Starlette(routes=[Mount(prefix, app=console), Mount("/", app=metastore)])


@dataclass
class BackgroundServer:
    """A uvicorn server on a daemon thread (``flowlake demo --ui``); :meth:`stop` ends it."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


def serve_in_background(app: ASGIApp, *, host: str, port: int, path: str = "/") -> BackgroundServer:
    """Start ``app`` on ``host:port`` in a thread and wait until it listens (10 s at most)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="flowlake-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise InvalidArgumentError(f"the console could not listen on {host}:{port} (is the port taken?)")
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    return BackgroundServer(server, thread, f"http://{shown}:{port}{path}")
