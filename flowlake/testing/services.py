"""Starting and finding the real services a pipeline's tests talk to: free ports, S3 via moto's server.

No test framework is imported here; skipping a test whose service is missing is the test suite's
business (flowlake's own suite does it in ``harness/services.py``).

>>> port = free_port()
>>> 1024 < port < 65536
True
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from flowlake.errors import FlowlakeError


class ServiceUnavailableError(FlowlakeError):
    """A service a test needs is not available on this machine."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceUnavailableError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def start_moto_server() -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's S3 server on a free port; return the process and its endpoint URL."""
    exe = Path(sys.executable).with_name("moto_server")
    command = [str(exe)] if exe.exists() else [shutil.which("moto_server") or "moto_server"]
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - our own venv's executable
        [*command, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
    except ServiceUnavailableError:
        proc.kill()
        raise
    return proc, f"http://127.0.0.1:{port}"
