"""`flowlake sql` is a sandbox: one read-only SELECT over the catalog tables the principal may read.

Every attack is tried as a principal with `read` on `ods` only and as the catalog's admin; each must
fail with a FlowlakeError naming what was refused, and nothing on disk may change.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl
from flowlake.sql import referenced_tables, run_query
from flowlake.sql.sandbox import sandbox_connection

pytestmark = pytest.mark.integration

SECRET = pa.schema([("id", pa.int64()), ("code", pa.string())])


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _lake(tmp_path: Path) -> tuple[fl.Catalog, fl.Catalog, Path]:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", tmp_path / "wh"
    admin = fl.connect(catalog=url, warehouse=wh.as_uri(), principal="admin")
    admin.create_table("ods.orders", ORDERS, primary_key=["order_id"]).upsert(
        orders_table([order(1), order(2)])
    )
    admin.create_table("dws.secret", SECRET, primary_key=["id"]).upsert(
        pa.table({"id": [1], "code": ["launch"]}, schema=SECRET)
    )
    admin.grant("read", "ods", "reader")
    reader = fl.connect(catalog=url, warehouse=wh.as_uri(), principal="reader")
    return admin, reader, wh


def _attacks(tmp_path: Path, wh: Path) -> list[str]:
    lake_file = next(p for p in wh.rglob("*.parquet") if "orders" in str(p))
    return [
        f"select * from read_parquet('{wh}/dws/secret/**/*.parquet')",
        "select * from read_csv('/etc/passwd')",
        "select * from read_json('/etc/passwd')",
        "select * from glob('/etc/*')",
        "select * from read_text('/etc/passwd')",
        f"select * from '{lake_file}'",
        "select * from ods.orders where exists (select * from read_csv_auto('/etc/passwd'))",
        f"copy (select 1 as x) to '{lake_file}'",
        f"copy ods.orders to '{tmp_path / 'out.csv'}'",
        f"attach '{tmp_path / 'evil.db'}' as evil",
        "install httpfs",
        "load httpfs",
        "set enable_external_access = true",
        "set threads = 1",
        "pragma threads = 1",
        "pragma enable_profiling",
        f"export database '{tmp_path / 'dump'}'",
        "create table ods.x as select 1",
        "select * from query_table('dws.secret')",
        "select * from query('select * from dws.secret')",
        "select 1; select * from dws.secret",
        "call pragma_version()",
        "select * from flowlake.ods.orders",
    ]


@pytest.mark.parametrize("who", ["reader", "admin"])
def test_every_attack_fails_and_changes_nothing(tmp_path: Path, who: str) -> None:
    admin, reader, wh = _lake(tmp_path)
    cat = reader if who == "reader" else admin
    before = _tree(tmp_path)
    for sql in _attacks(tmp_path, wh):
        with pytest.raises((fl.SqlSandboxError, fl.PermissionDeniedError)) as err:
            run_query(cat, sql)
        assert "flowlake sql runs one read-only SELECT" in str(err.value), (sql, str(err.value))
    if who == "reader":
        with pytest.raises(fl.PermissionDeniedError, match=r"'reader' lacks 'read' on 'dws.secret'"):
            run_query(cat, "select * from ods.orders join dws.secret on order_id = id")
    else:
        assert run_query(cat, "select code from dws.secret").table.to_pylist() == [{"code": "launch"}]
    assert _tree(tmp_path) == before
    assert cat.load_table("ods.orders").read().num_rows == 2  # the lake still reads


def test_the_duckdb_connection_alone_refuses_files_and_settings(tmp_path: Path) -> None:
    """Layer 3 holds even if the statement checks were bypassed."""
    target = tmp_path / "x.parquet"
    secret_frame = pa.table({"leak": [1]})  # a Python variable DuckDB must not scan by name
    with sandbox_connection() as con:
        for sql in (
            "select * from read_csv('/etc/passwd')",
            f"copy (select 1) to '{target}'",
            f"attach '{tmp_path / 'a.db'}'",
            "load httpfs",
            "set enable_external_access = true",
            "set lock_configuration = false",
            "select * from secret_frame",
        ):
            with pytest.raises(Exception, match=r"Permission|locked|does not exist|disabled"):
                con.execute(sql)
    assert list(tmp_path.iterdir()) == []
    assert secret_frame.num_rows == 1  # it was in scope all along


def test_names_are_case_insensitive_and_quoted_names_work(tmp_path: Path) -> None:
    _, reader, _ = _lake(tmp_path)
    for sql in (
        'select count(*) as n from "ods"."orders"',
        "select count(*) as n from ODS.ORDERS",
        'select count(*) as n from "ODS".Orders',
        "with o as (select * from ods.orders) select count(*) as n from o",
    ):
        result = run_query(reader, sql)
        assert result.table.to_pylist() == [{"n": 2}], sql
        assert dict(result.versions) == {"ods.orders": 1}
    with pytest.raises(fl.TableNotFoundError, match=r"'ods.missing' does not exist"):
        run_query(reader, "select * from ods.missing")
    with pytest.raises(fl.TableNotFoundError, match=r"'orders' does not exist"):
        run_query(reader, "select * from orders")


def test_referenced_tables_finds_every_table() -> None:
    sql = (
        "with recent as (select * from ods.orders) "
        'select (select max(id) from "DWS"."T1") from recent join dwd.x using (order_id) '
        "where order_id in (select order_id from ODS.orders union all select 1 from range(3))"
    )
    assert referenced_tables(sql) == ["dwd.x", "dws.t1", "ods.orders"]


def test_as_of_gives_every_table_one_cut(tmp_path: Path) -> None:
    admin, _, _ = _lake(tmp_path)
    orders, secret = admin.load_table("ods.orders"), admin.load_table("dws.secret")
    time.sleep(0.02)
    cut = dt.datetime.now(dt.UTC)
    time.sleep(0.02)
    orders.upsert(orders_table([order(3)]))
    secret.upsert(pa.table({"id": [2], "code": ["abort"]}, schema=SECRET))
    sql = "select (select count(*) from ods.orders) as o, (select count(*) from dws.secret) as s"
    now = run_query(admin, sql)
    assert now.table.to_pylist() == [{"o": 3, "s": 2}]
    assert dict(now.versions) == {"dws.secret": 2, "ods.orders": 2}
    past = run_query(admin, sql, as_of=cut.isoformat())
    assert past.table.to_pylist() == [{"o": 2, "s": 1}]
    assert dict(past.versions) == {"dws.secret": 1, "ods.orders": 1}
    assert run_query(admin, "select count(*) as n from ods.orders", as_of=1).table.to_pylist() == [{"n": 2}]
    with pytest.raises(fl.InvalidArgumentError, match=r"give a time"):
        run_query(admin, sql, as_of="1")


def test_principal_argument_checks_that_principals_grants(tmp_path: Path) -> None:
    admin, _, _ = _lake(tmp_path)
    assert run_query(admin, "select count(*) as n from ods.orders", principal="reader").table.num_rows == 1
    with pytest.raises(fl.PermissionDeniedError, match=r"'reader' lacks 'read' on 'dws.secret'"):
        run_query(admin, "select * from dws.secret", principal="reader")


def test_cli_refuses_file_access_with_one_line(tmp_path: Path) -> None:
    admin, _, wh = _lake(tmp_path)
    del admin
    exe = Path(sys.executable).with_name("flowlake")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLAKE_")} | {
        "FLOWLAKE_CATALOG": f"sqlite:///{tmp_path / 'c.db'}",
        "FLOWLAKE_WAREHOUSE": wh.as_uri(),
        "FLOWLAKE_PRINCIPAL": "reader",
        "COLUMNS": "200",
    }
    before = _tree(tmp_path)
    for sql, expected in (
        ("select * from read_csv('/etc/passwd')", "table function read_csv() is not allowed"),
        (f"copy ods.orders to '{tmp_path / 'o.csv'}'", "COPY statements are not allowed"),
        ("select * from dws.secret", "principal 'reader' lacks 'read' on 'dws.secret'"),
    ):
        result = subprocess.run(
            [str(exe), "sql", sql], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    ok = subprocess.run(
        [str(exe), "sql", "select count(*) as n from ODS.ORDERS", "--format", "csv"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.split() == ['"n"', "2"], ok.stderr
    assert "ods.orders at version 1" in ok.stderr
    assert _tree(tmp_path) == before
