"""`make demo` runs `flowlake demo`: it must work on a fresh folder, twice, and verify itself."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def flowlake(
    cwd: Path, *args: str, path: str | None = None, columns: int = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no FLOWLAKE_* settings from outside (and ``PATH`` replaced, if given)."""
    exe = Path(sys.executable).with_name("flowlake")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWLAKE_")} | {"COLUMNS": str(columns)}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False
    )


def test_demo_runs_on_the_embedded_default_and_again(tmp_path: Path) -> None:
    first = flowlake(
        tmp_path, "demo", "--table-only", "--rows", "20000", "--batches", "4", "--batch-size", "2000"
    )
    assert first.returncode == 0, first.stderr
    assert "verified" in first.stdout
    assert (tmp_path / ".flowlake" / "catalog.db").exists()
    second = flowlake(
        tmp_path, "demo", "--table-only", "--rows", "20000", "--batches", "4", "--batch-size", "2000"
    )
    assert second.returncode == 0, second.stderr
    assert "starting clean" in second.stdout
    listed = flowlake(tmp_path, "tables")
    assert "ods.orders" in listed.stdout
    query = flowlake(tmp_path, "sql", "select count(*) as n from ods.orders")
    assert query.returncode == 0 and "24400" in query.stdout  # 20000 + 4 * (1200 inserts - 100 deletes)


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    outside = flowlake(tmp_path, "tables")
    assert outside.returncode == 1 and "no flowlake project in" in outside.stderr
    assert not (tmp_path / ".flowlake").exists()  # only init and demo create a project
    assert flowlake(tmp_path, "init").returncode == 0
    assert 'principal = "' in (tmp_path / "flowlake.toml").read_text()
    for args, message in (
        (("sql", "select 1 as x", "--format", "parquet"), "--format parquet needs --output FILE"),
        (("sql", "select 1 as x", "--format", "json"), "unknown format 'json'"),
        (("dev", str(tmp_path), "--duration", "1"), "nothing to run in"),
        (("nosuchcommand",), "No such command"),
    ):
        usage = flowlake(tmp_path, *args)
        assert usage.returncode == 2 and "Traceback" not in usage.stderr, usage.stderr
        assert message in " ".join(usage.stderr.split()) and len(usage.stderr.strip().splitlines()) <= 3
    result = flowlake(tmp_path, "history", "ods.missing")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: table 'ods.missing' does not exist" in " ".join(result.stderr.split())
    bad = flowlake(tmp_path, "history", "../../etc")
    assert bad.returncode == 1 and "invalid table name" in bad.stderr


def test_no_command_but_init_and_demo_makes_a_project(tmp_path: Path) -> None:
    """verify, explain, run, serve and dev said nothing and left an empty ./.flowlake behind."""
    (tmp_path / "dataflows").mkdir()
    (tmp_path / "dataflows" / "v.sql").write_text(
        "create materialized view dws.x as select order_id from ods.orders;\n"
    )
    (tmp_path / "dataflows" / "f.py").write_text("import flowlake as fl\nfl.connect().list_tables()\n")
    for args in (
        ("verify", "dws.x"),
        ("explain", "dataflows/v.sql"),
        ("run", "dataflows/v.sql", "--once"),
        ("run", "dataflows/f.py", "--once"),
        ("serve", "--port", "1"),
        ("dev", ".", "--duration", "1"),
    ):
        outside = flowlake(tmp_path, *args)
        assert outside.returncode == 1, (args, outside.stdout, outside.stderr)
        assert f"no flowlake project in {tmp_path}" in " ".join(outside.stderr.split()), (args, outside)
        assert "Traceback" not in outside.stderr
        assert not (tmp_path / ".flowlake").exists(), args


def test_init_status_and_sql_formats(tmp_path: Path) -> None:
    assert flowlake(tmp_path, "init").returncode == 0
    assert "[flowlake]" in (tmp_path / "flowlake.toml").read_text()
    assert flowlake(tmp_path, "init").returncode != 0  # refuses to overwrite without --force
    demo = flowlake(
        tmp_path, "demo", "--table-only", "--rows", "3000", "--batches", "2", "--batch-size", "500"
    )
    assert demo.returncode == 0, demo.stderr
    import json

    status = json.loads(flowlake(tmp_path, "status", "--json").stdout)
    orders = next(t for t in status["tables"] if t["name"] == "ods.orders")
    assert orders["rows"] == 3000 + 2 * (300 - 25) and orders["log_files"] == 0
    assert "ods" in status["freshness_by_layer"]
    csv = flowlake(tmp_path, "sql", "select count(*) as n from ods.orders", "--format", "csv")
    assert csv.stdout.split() == ['"n"', "3550"]
    out = tmp_path / "orders.parquet"
    flowlake(tmp_path, "sql", "select * from ods.orders", "--format", "parquet", "-o", str(out))
    import pyarrow.parquet as pq

    assert pq.read_table(out).num_rows == 3550

    narrow = flowlake(tmp_path, "status", columns=80)
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    assert "ods.orders" in narrow.stdout and "…" not in narrow.stdout  # nothing cut off
    history = flowlake(tmp_path, "history", "ods.orders").stdout
    assert "rows +I 3000 -U 0 +U 0 -D 0" in history and "{'" not in history  # fields, not dict reprs
    assert flowlake(tmp_path, "grant", "read", "ods.*", "alice").returncode == 0
    assert "alice" in flowlake(tmp_path, "grants").stdout


def test_pipeline_demo_cdc_to_dws_verifies_and_restarts_clean(tmp_path: Path) -> None:
    first = flowlake(tmp_path, "demo", "--rounds", "2", "--source", "jsonl")
    assert first.returncode == 0, first.stderr[-3000:]
    text = " ".join(first.stdout.split())
    assert "fresh start" in text
    assert "ODS equals the generated source (Debezium JSONL files): True" in text
    for name in ("dwd.orders_enriched", "dws.shop_gmv_minute", "dws.city_day"):
        assert f"verify {name}" in text
    assert "verified: every layer" in text
    again = flowlake(tmp_path, "demo", "--rounds", "1", "--source", "jsonl")
    assert again.returncode == 0 and "starting clean" in again.stdout
    lineage = flowlake(tmp_path, "lineage", "dws.shop_gmv_minute")
    assert (
        "ods.orders" in lineage.stdout
    )  # the SQL views of one file all derive from the lake tables it reads
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    look_around = readme.split("Then look around:\n\n```sh\n", 1)[1].split("```", 1)[0]
    for line in look_around.strip().splitlines():  # the README's commands after `make demo`, as written
        args = shlex.split(line)
        assert args[0] == ".venv/bin/flowlake", line
        done = flowlake(tmp_path, *args[1:])
        assert done.returncode == 0 and "error" not in done.stderr, (line, done.stderr[-1500:])
        assert done.stdout.strip(), line


def test_pipeline_demo_with_the_python_flows_verifies(tmp_path: Path) -> None:
    run = flowlake(tmp_path, "demo", "--rounds", "1", "--source", "jsonl", "--flows", "python")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DWD/DWS layers: Python flows" in run.stdout and "verified: every layer" in run.stdout
    lineage = flowlake(tmp_path, "lineage", "dws.shop_gmv_minute")
    assert "dwd.orders_enriched" in lineage.stdout and "ods.orders" in lineage.stdout


@pytest.mark.xdist_group("mariadb")
def test_pipeline_demo_reads_mariadb_binlog_when_it_can(tmp_path: Path) -> None:
    from flowlake.cdc.testing import mariadb_binaries
    from harness.services import require_service

    require_service(mariadb_binaries() is not None, "mariadb-install-db/mariadbd are not installed")
    # port 1 has no server: the demo says so and starts its own mariadbd with the binlog on
    run = flowlake(
        tmp_path, "demo", "--rounds", "2", "--source", "mariadb", "--mysql", "mysql://root@127.0.0.1:1"
    )
    text = " ".join(run.stdout.split())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "starting a private mariadbd" in text
    assert "ODS equals the generated source (MariaDB binlog): True" in text
    assert "ODS equals SELECT * FROM orders in the source database: True" in text
    assert "verified: every layer" in text


def test_pipeline_demo_refuses_mariadb_without_a_server_or_binaries(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # a PATH with no mariadbd on it
    empty.mkdir()
    args = ("demo", "--rounds", "1", "--source", "mariadb", "--mysql", "mysql://root@127.0.0.1:1")
    run = flowlake(tmp_path, *args, path=str(empty))
    message = " ".join(run.stderr.split())
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "--source mariadb: cannot connect to mysql://127.0.0.1:1" in message
    assert "mariadbd is not installed" in message
