"""Skipping (or, in CI, failing) a test whose service this machine lacks; a private PostgreSQL; a
MariaDB primary with a replica.

A test that needs a service that this machine lacks is skipped with the reason, unless
``FLOWLAKE_REQUIRE_SERVICES=1`` is set (as CI does), in which case it fails.
"""

from __future__ import annotations

import importlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from flowlake.cdc.testing import MariaDb, running_mariadb
from flowlake.testing.services import ServiceUnavailableError, free_port


def services_required() -> bool:
    """Whether a missing service is a failure rather than a skip."""
    return os.environ.get("FLOWLAKE_REQUIRE_SERVICES", "") not in ("", "0", "false")


def require_service(available: bool, reason: str) -> None:
    """Skip the running test (or fail it, if services are required) when ``available`` is False."""
    if available:
        return
    if services_required():
        pytest.fail(f"required service missing (FLOWLAKE_REQUIRE_SERVICES=1): {reason}")
    pytest.skip(reason)


# --- a private PostgreSQL with logical decoding ----------------------------------------------------------

PG_BIN: Final = Path("/usr/lib/postgresql/15/bin")
"""Where Debian/Ubuntu put the PostgreSQL 15 server binaries (``FLOWLAKE_PG_BIN`` overrides)."""

PG_USER: Final = "flowlake-pg"
"""The unprivileged account a root test run starts PostgreSQL as (created when missing)."""

PG_SETTINGS: Final = (
    "wal_level=logical",
    "max_replication_slots=20",
    "max_wal_senders=20",
    "listen_addresses=127.0.0.1",
    "fsync=off",  # a throwaway server: its durability is not under test, its speed is
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=32MB",
    "max_connections=60",
)


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running private PostgreSQL: its port, data directory and process."""

    port: int
    datadir: Path
    process: subprocess.Popen[bytes]
    user: str

    @property
    def url(self) -> str:
        """``postgresql://<user>@127.0.0.1:<port>`` (trust authentication, database ``postgres``)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}"


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``, or ``None`` if they are not installed."""
    folder = Path(os.environ.get("FLOWLAKE_PG_BIN", str(PG_BIN)))
    if (folder / "initdb").is_file() and (folder / "postgres").is_file():
        return folder
    return None


def unprivileged_user(name: str = PG_USER) -> tuple[int, int]:
    """``(uid, gid)`` of a system account PostgreSQL can run as (it refuses root); made if missing.

    Idempotent and safe when several test processes race to create it.
    """
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(  # noqa: S603 - fixed binary and arguments
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        if result.returncode not in (0, 9):  # 9: it exists (another worker made it meanwhile)
            raise ServiceUnavailableError(
                f"cannot create the user {name!r} to run PostgreSQL as: {result.stderr.decode()[-500:]}"
            ) from None
        entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


@contextmanager
def running_postgres(*, settings: Sequence[str] = ()) -> Iterator[PostgresServer]:
    """Initialise a cluster and run PostgreSQL with ``wal_level=logical`` on a free port, until exit.

    As root the server runs as :data:`PG_USER` (PostgreSQL refuses root); the data directory is a
    fresh folder under the system temp dir (pytest's own temp folders are private to root).

    Raises:
        ServiceUnavailableError: If the binaries are missing or the server does not come up.
    """
    binaries = postgres_binaries()
    if binaries is None:
        raise ServiceUnavailableError(f"PostgreSQL server binaries not found in {PG_BIN}")
    if os.geteuid() == 0:
        uid, gid = unprivileged_user()
        user = PG_USER
    else:
        uid, gid, user = os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name
    as_user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []} if os.geteuid() == 0 else {}
    with tempfile.TemporaryDirectory(prefix="flowlake-pg-") as tmp:
        root = Path(tmp)
        os.chown(root, uid, gid)
        datadir, log_path = root / "data", root / "server.log"
        result = subprocess.run(  # noqa: S603 - fixed binaries, our arguments
            [str(binaries / "initdb"), "-D", str(datadir), "-U", user, "--auth=trust", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, check=False, timeout=180, cwd=root, **as_user,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise ServiceUnavailableError(f"initdb failed ({result.returncode}): {output}")
        port = free_port()
        flags = [f"-c{s}" for s in (*PG_SETTINGS, *settings)]
        with log_path.open("wb") as log:
            os.chown(log_path, uid, gid)
            proc = subprocess.Popen(  # noqa: S603
                [str(binaries / "postgres"), "-D", str(datadir), "-p", str(port), "-k", str(root), *flags],
                stdout=log, stderr=subprocess.STDOUT, cwd=root, **as_user,
            )  # fmt: skip
            try:
                try:
                    _wait_for_postgres(port, user, proc)
                except ServiceUnavailableError as exc:
                    text = log_path.read_text(errors="replace")[-2000:]
                    raise ServiceUnavailableError(f"postgres did not start: {exc}; log: {text}") from exc
                yield PostgresServer(port, datadir, proc, user)
            finally:
                proc.send_signal(signal.SIGINT)  # fast shutdown: SIGTERM would wait for every client
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_for_postgres(port: int, user: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Wait until the server accepts a query (it listens before it has finished starting up)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceUnavailableError(f"postgres exited with status {proc.returncode}")
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=user, dbname="postgres", connect_timeout=5
            ):
                return
        except psycopg.OperationalError:
            time.sleep(0.1)
    raise ServiceUnavailableError(f"postgres on port {port} not ready after {timeout:.0f}s")


# --- a MariaDB primary with a replica, for failover tests ---------------------------------------------

REPLICATION_FLAGS: Final = ("--log-slave-updates", "--gtid-strict-mode=1")
"""Both servers keep what they replicate in their own binlog (a replica can then become the source)."""


@dataclass(frozen=True, slots=True)
class MariaDbPair:
    """A primary and a replica that replicates from it by GTID (``MASTER_USE_GTID=slave_pos``)."""

    primary: MariaDb
    replica: MariaDb

    def wait_for_replica(self, timeout: float = 120.0) -> None:
        """Block until the replica has applied everything the primary has written so far.

        Raises:
            ServiceUnavailableError: If it has not after ``timeout`` seconds (or replication broke).
        """
        pymysql = importlib.import_module("pymysql")

        with pymysql.connect(host="127.0.0.1", port=self.primary.port, user="root") as primary:
            cur = primary.cursor()
            cur.execute("SELECT @@gtid_binlog_pos")
            (target,) = cur.fetchone()
        with pymysql.connect(host="127.0.0.1", port=self.replica.port, user="root") as replica:
            cur = replica.cursor()
            cur.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))
            (result,) = cur.fetchone()
            if result != 0:
                cur.execute("SHOW SLAVE STATUS")
                raise ServiceUnavailableError(f"the replica did not reach {target}: {cur.fetchone()}")

    def promote_replica(self) -> None:
        """Stop replicating on the replica and make it a primary (the old primary should be down)."""
        pymysql = importlib.import_module("pymysql")

        with pymysql.connect(host="127.0.0.1", port=self.replica.port, user="root", autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute("STOP SLAVE")
            cur.execute("RESET SLAVE ALL")


@contextmanager
def running_mariadb_pair(root: Path | None = None) -> Iterator[MariaDbPair]:
    """Run a primary (server id 1) and a replica (server id 2) of it, both with a ROW binlog.

    The primary's binlog is rotated twice before replication starts, so the two servers' binlog file
    names and offsets of the same transaction differ (as they do in production): a position is only
    portable between them as a GTID.

    Raises:
        ServiceUnavailableError: If the binaries are missing, a server does not come up or replication
            does not start.
    """
    pymysql = importlib.import_module("pymysql")

    with (
        running_mariadb(root, extra_flags=(*REPLICATION_FLAGS, "--server-id=1")) as primary,
        running_mariadb(root, extra_flags=(*REPLICATION_FLAGS, "--server-id=2")) as replica,
    ):
        with pymysql.connect(host="127.0.0.1", port=primary.port, user="root", autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute("FLUSH BINARY LOGS")
            cur.execute("FLUSH BINARY LOGS")
        with pymysql.connect(host="127.0.0.1", port=replica.port, user="root", autocommit=True) as conn:
            cur = conn.cursor()
            cur.execute(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='root', "
                "MASTER_PASSWORD='', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos",
                (primary.port,),
            )
            cur.execute("START SLAVE")
        pair = MariaDbPair(primary, replica)
        pair.wait_for_replica(timeout=60)
        yield pair


def stop_server(server: MariaDb, timeout: float = 60.0) -> None:
    """Shut a server down (SIGTERM: a clean shutdown), as a failover drill stops the old primary."""
    server.process.terminate()
    try:
        server.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def kill_running(processes: Sequence[subprocess.Popen[Any]]) -> None:
    """SIGKILL the processes a test started that still run, and reap them (a test's clean-up)."""
    for proc in processes:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
