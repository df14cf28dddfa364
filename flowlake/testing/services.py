"""Starting and finding the real services tests talk to (S3 via moto's server, databases).

A test that needs a service that this machine lacks is skipped with the reason, unless
``FLOWLAKE_REQUIRE_SERVICES=1`` is set (as CI does), in which case it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from flowlake.errors import FlowlakeError


class ServiceUnavailableError(FlowlakeError):
    """A service a test needs is not available on this machine."""


def services_required() -> bool:
    """Whether a missing service is a failure rather than a skip."""
    return os.environ.get("FLOWLAKE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def require_service(available: bool, reason: str) -> None:
    """Skip the running test (or fail it, if services are required) when ``available`` is False."""
    if available:
        return
    import pytest

    if services_required():
        pytest.fail(f"required service missing (FLOWLAKE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


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
