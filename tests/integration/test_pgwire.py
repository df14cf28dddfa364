"""The PostgreSQL-wire endpoint (``flowlake serve --pg``) with psql and psycopg: tables, queries, time
travel, grants, authentication, and bad input answered with errors while the server keeps serving."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from _console_lake import Lake, build_lake

from flowlake.testing import free_port
from flowlake.ui.pgwire import start_pg_server
from harness.services import require_service

pytestmark = pytest.mark.integration


@dataclass
class Endpoint:
    port: int
    lake: Lake
    alice_token: str

    def connect(self, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=user, password=password, dbname="lake", connect_timeout=10
        )

    def psql(self, user: str, password: str, *commands: str) -> subprocess.CompletedProcess[str]:
        psql = shutil.which("psql")
        require_service(psql is not None, "psql is not installed: apt-get install -y postgresql-client")
        assert psql is not None
        args = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "lake", "-X"]
        for command in commands:
            args += ["-c", command]
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        return subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    lake = build_lake(tmp_path_factory.mktemp("pg"))
    alice_token = lake.admin.create_principal("alice")
    port = free_port()
    server = start_pg_server(lake.admin, port=port, max_message_bytes=64 * 1024)
    yield Endpoint(port, lake, alice_token)
    server.stop()


def test_psql_lists_tables_queries_and_travels_in_time(endpoint: Endpoint) -> None:
    result = endpoint.psql(
        "alice", endpoint.alice_token, r"\dt *.*", "select order_id, shop from ods.orders order by order_id",
        "set as_of = '1'", "select count(*) as n from ods.orders", "set as_of = default",
        "select count(*) as n from ods.orders",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for table in ("orders_enriched", "orders", "_dead_letter"):
        assert f"| {table} " in out
    assert " 1 | s9" in out
    counts = [line.strip() for line in out.splitlines() if line.strip() in ("4", "5")]
    assert counts == ["5", "4"]  # version 1 had 5 orders; the head has 4 (one deleted)


def test_psql_describes_a_table_and_lists_only_lake_tables(endpoint: Endpoint) -> None:
    result = endpoint.psql("alice", endpoint.alice_token, r"\d ods.orders", r"\d")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    out = result.stdout
    assert 'Table "ods.orders"' in out
    for line in ("order_id | int8", "shop     | varchar", "amount   | numeric(12,2)"):
        assert line in out, out
    assert "pgshim" not in out and "| orders_enriched | table" in out  # the shim is not listed


def test_psycopg_queries_with_parameters_and_introspection(endpoint: Endpoint) -> None:
    with endpoint.connect("bob", endpoint.lake.bob_token) as conn:
        rows = conn.execute(
            "select city, amount from dwd.orders_enriched where order_id = %s and city = %s", (1, "Oslo")
        ).fetchall()
        assert rows == [("Oslo", Decimal("99.00"))]
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables order by 1, 2"
        ).fetchall()
        assert tables == [("dwd", "orders_enriched")]  # only what bob may read
        columns = conn.execute(
            "select column_name from information_schema.columns where table_name = 'orders_enriched' "
            "order by ordinal_position"
        ).fetchall()
        assert [c[0] for c in columns] == ["order_id", "city", "amount"]
        assert conn.execute("select count(*) from dwd.orders_enriched").fetchone() == (1,)


def test_refused_without_a_grant(endpoint: Endpoint) -> None:
    with endpoint.connect("bob", endpoint.lake.bob_token) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=r"lacks 'read' on 'ods\.orders'"):
            conn.execute("select * from ods.orders")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from read_csv('/etc/passwd')")
    result = endpoint.psql("bob", endpoint.lake.bob_token, "select * from ods.orders")
    assert result.returncode != 0
    assert "lacks 'read'" in result.stderr
    assert "s9" not in result.stdout


def test_wrong_password_and_someone_elses_token_are_refused(endpoint: Endpoint) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        endpoint.connect("bob", "fl_wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        endpoint.connect("alice", endpoint.lake.bob_token)  # bob's token does not make you alice


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # the client sent all it will send
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_malformed_startup_and_huge_queries_get_errors_not_a_crash(endpoint: Endpoint) -> None:
    assert _raw(endpoint.port, b"\x00\x00\x00\x08garbage!").startswith(b"E")  # unknown protocol
    assert b"invalid startup packet length" in _raw(endpoint.port, b"\xff\xff\xff\xff" + b"x" * 8)
    assert b"invalid startup packet length" in _raw(endpoint.port, struct.pack("!ii", 1 << 30, 196608))
    assert _raw(endpoint.port, b"\x00\x00") == b""  # a truncated packet: the connection just ends
    with endpoint.connect("bob", endpoint.lake.bob_token) as conn, pytest.raises(psycopg.OperationalError):
        conn.execute("select 1 -- " + "x" * 200_000)  # over the 64 KiB test limit
    with endpoint.connect("bob", endpoint.lake.bob_token) as conn:  # the server still serves
        assert conn.execute("select 1 + 1").fetchone() == (2,)
