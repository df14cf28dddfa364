"""A throwaway MariaDB with the binlog on, for CDC tests and benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowlake.testing.services import ServiceUnavailableError, free_port, wait_for_port

BINLOG_FLAGS = (
    "--log-bin=mysql-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--server-id=1",
)


@dataclass(frozen=True, slots=True)
class MariaDb:
    """A running server: its port, data directory and process."""

    port: int
    datadir: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """``mysql://root@127.0.0.1:<port>``."""
        return f"mysql://root@127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        """The server's own log (its stdout and stderr): warnings such as aborted connections."""
        return self.datadir.parent / "server.log"


def mariadb_binaries() -> tuple[str, str] | None:
    """Paths of ``mariadb-install-db`` and ``mariadbd``, or ``None`` if either is missing."""
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
    if install is None or server is None:
        return None
    return install, server


def _install_datadir(install: str, datadir: Path, attempts: int = 3) -> None:
    """Run ``mariadb-install-db`` (retried: it can fail transiently on a loaded machine)."""
    for attempt in range(attempts):
        result = subprocess.run(  # noqa: S603 - fixed binaries, our arguments
            [install, "--no-defaults", f"--datadir={datadir}", "--user=root",
             "--auth-root-authentication-method=normal"],
            capture_output=True, timeout=180, check=False,
        )  # fmt: skip
        if result.returncode == 0:
            return
        shutil.rmtree(datadir, ignore_errors=True)
        if attempt == attempts - 1:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise ServiceUnavailableError(f"mariadb-install-db failed ({result.returncode}): {output}")
        time.sleep(1 + attempt)


@contextmanager
def running_mariadb(root: Path | None = None, *, extra_flags: tuple[str, ...] = ()) -> Iterator[MariaDb]:
    """Initialise a datadir and run ``mariadbd`` with the binlog on, on a free port, until exit.

    Raises:
        ServiceUnavailableError: If the binaries are missing or the server does not come up.
    """
    found = mariadb_binaries()
    if found is None:
        raise ServiceUnavailableError("mariadb-install-db / mariadbd not found on PATH or in /usr/sbin")
    install, server = found
    # the socket lives in a short path of its own: a unix socket path must stay under 108 bytes
    with (
        tempfile.TemporaryDirectory(prefix="flowlake-mariadb-", dir=root) as tmp,
        tempfile.TemporaryDirectory(prefix="fl-sock-") as sockets,
    ):
        datadir = Path(tmp) / "data"
        _install_datadir(install, datadir)
        port = free_port()
        log = (Path(tmp) / "server.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603
            [server, "--no-defaults", f"--datadir={datadir}", "--user=root", f"--port={port}",
             f"--socket={sockets}/s.sock", "--bind-address=127.0.0.1", *BINLOG_FLAGS, *extra_flags],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            try:
                wait_for_port(port, timeout=60)
            except ServiceUnavailableError as exc:
                text = (Path(tmp) / "server.log").read_text(errors="replace")[-2000:]
                raise ServiceUnavailableError(f"mariadbd did not start: {text}") from exc
            yield MariaDb(port, datadir, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
