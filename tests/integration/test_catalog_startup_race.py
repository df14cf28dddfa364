"""A cluster that starts at once: 12 processes open a fresh catalog and create their tables together.

``docker compose up``, a bytewax cluster or ``flowlake dev`` start many processes at the same
moment; each opens the catalog (the first open of a fresh one creates and migrates it) and creates
the tables it writes, in a namespace none of them has created yet. Every process must succeed, on
SQLite, on PostgreSQL and through the REST metastore (two servers started at once on a fresh
PostgreSQL catalog, like two metastore replicas).

The 12 workers are separate processes (``startup_worker.py``) that import flowlake once and then run
several trials; each trial is released to all of them at the same instant, on a new catalog, with
busy-loop processes beside them (``cpu_load``; ``FLOWLAKE_TEST_CPU_HOGS=N``). What
must hold: no worker fails, and afterwards the namespace holds exactly the shared table and one table
per worker, each with the worker's row.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import PG_DSN, _postgres_available

import flowlake as fl
from flowlake.testing import free_port
from flowlake.testing.services import wait_for_port
from harness.services import require_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("startup_worker.py")
WORKERS = 12
TRIALS = 3
TRIAL_TIMEOUT = 120.0


class Crew:
    """``WORKERS`` worker processes that run each trial at the same instant."""

    def __init__(self) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                bufsize=1,
            )
            for _ in range(WORKERS)
        ]  # fmt: skip

    def _read_lines(self, deadline: float) -> list[str]:
        """One stdout line from every worker (fails the test if one dies or the deadline passes)."""
        lines: dict[int, str] = {}
        by_fd = {p.stdout.fileno(): i for i, p in enumerate(self.procs) if p.stdout is not None}
        while len(lines) < len(self.procs):
            waiting = [fd for fd, i in by_fd.items() if i not in lines]
            ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"workers {sorted(set(range(WORKERS)) - set(lines))} did not answer in time")
            for fd in ready:
                i = by_fd[fd]
                proc = self.procs[i]
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if not line:
                    stderr = proc.stderr.read() if proc.stderr is not None else ""
                    pytest.fail(f"worker {i} exited (code {proc.wait()}): {stderr[-2000:]}")
                lines[i] = line.strip()
        return [lines[i] for i in range(len(self.procs))]

    def trial(self, catalogs: list[str], warehouse: str, namespace: str, tokens: list[str]) -> list[Any]:
        """Release one trial to every worker at once; return each worker's answer."""
        for w, proc in enumerate(self.procs):
            spec = {
                "catalog": catalogs[w % len(catalogs)], "warehouse": warehouse, "namespace": namespace,
                "worker": w, "token": tokens[w % len(tokens)] if tokens else "",
            }  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec) + "\n")
        deadline = time.monotonic() + TRIAL_TIMEOUT
        assert self._read_lines(deadline) == ["ready"] * WORKERS
        for proc in self.procs:  # all workers are blocked on this line: release them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
        return [json.loads(line) for line in self._read_lines(deadline)]

    def close(self) -> None:
        """Stop the workers (closing stdin ends their loop)."""
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def crew() -> Iterator[Crew]:
    """The worker processes, shared by the tests of this module (they import flowlake only once)."""
    team = Crew()
    try:
        yield team
    finally:
        team.close()


def check_trial(answers: list[Any], cat: fl.Catalog, namespace: str, label: str) -> None:
    """Every worker succeeded, and the namespace holds exactly the tables and rows they wrote."""
    failures = [
        f"worker {w}: {a['error']}\n{a.get('trace', '')}" for w, a in enumerate(answers) if not a["ok"]
    ]
    assert not failures, f"{label}: {len(failures)} of {WORKERS} workers failed:\n" + "\n".join(failures)
    expected = sorted([f"{namespace}.shared"] + [f"{namespace}.t{w}" for w in range(WORKERS)])
    assert sorted(cat.list_tables(namespace)) == expected, label
    for w in range(WORKERS):
        rows = cat.load_table(f"{namespace}.t{w}").read().to_pylist()
        assert rows == [{"k": w, "worker": w}], f"{label}: table t{w} holds {rows}"
    assert cat.load_table(f"{namespace}.shared").read().num_rows == 0, label


@contextmanager
def fresh_pg_schemas(count: int) -> Iterator[list[str]]:
    """``count`` catalog URLs on the machine's PostgreSQL, each in a new empty schema."""
    ok, reason = _postgres_available()
    require_service(ok, reason)
    import psycopg

    names = [f"fl_start_{uuid.uuid4().hex[:12]}" for _ in range(count)]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for name in names:
            conn.execute(f"create schema {name}")  # generated names, not user input
    try:
        yield [f"{PG_DSN}?options=-csearch_path%3D{name}" for name in names]
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for name in names:
                conn.execute(f"drop schema {name} cascade")


def test_sqlite_cluster_starts_at_once(crew: Crew, tmp_path: Path, cpu_load: int) -> None:
    """Twelve processes open a fresh SQLite catalog file and create their tables together."""
    warehouse = (tmp_path / "wh").as_uri()
    for trial in range(TRIALS):
        url = f"sqlite:///{tmp_path / f'fresh{trial}.db'}"
        answers = crew.trial([url], warehouse, f"ns{trial}", [])
        cat = fl.connect(catalog=url, warehouse=warehouse, principal="owner")
        check_trial(answers, cat, f"ns{trial}", f"sqlite trial {trial}")


def test_postgres_cluster_starts_at_once(crew: Crew, tmp_path: Path, cpu_load: int) -> None:
    """Twelve processes open a fresh PostgreSQL catalog (a new schema) and create their tables together."""
    warehouse = (tmp_path / "wh").as_uri()
    with fresh_pg_schemas(TRIALS) as urls:
        for trial, url in enumerate(urls):
            answers = crew.trial([url], warehouse, f"dd{trial}", [])
            cat = fl.connect(catalog=url, warehouse=warehouse, principal="owner")
            check_trial(answers, cat, f"dd{trial}", f"postgres trial {trial}")


def start_servers(catalog_url: str, count: int) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """``count`` ``flowlake serve`` processes on one catalog, started together; waits for their ports."""
    exe = Path(sys.executable).with_name("flowlake")
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen(
            [str(exe), "serve", "--catalog", catalog_url, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for port in ports
    ]  # fmt: skip
    for proc, port in zip(procs, ports, strict=True):
        try:
            wait_for_port(port, timeout=60)
        except Exception:
            proc.terminate()
            _, err = proc.communicate(timeout=10)
            pytest.fail(
                f"metastore on port {port} did not start (code {proc.returncode}): {err.decode()[-2000:]}"
            )
    return procs, ports


def test_rest_cluster_starts_at_once(crew: Crew, tmp_path: Path, cpu_load: int) -> None:
    """Two metastore replicas open a fresh PostgreSQL catalog at once; then twelve clients, half on
    each replica, create their tables in a new namespace together."""
    warehouse = (tmp_path / "wh").as_uri()
    with fresh_pg_schemas(1) as (url,):
        procs, ports = start_servers(url, 2)
        try:
            owner = fl.connect(catalog=url, warehouse=warehouse, principal="owner")
            token = owner.create_principal("etl")
            owner.grant("admin", "*", "etl")
            endpoints = [f"http://127.0.0.1:{port}" for port in ports]
            for trial in range(TRIALS):
                answers = crew.trial(endpoints, warehouse, f"rest{trial}", [token])
                check_trial(answers, owner, f"rest{trial}", f"rest trial {trial}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=10)
