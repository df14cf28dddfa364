"""Security: grants on every path (API, CLI, SQL), no path escapes, no secrets in output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl

pytestmark = pytest.mark.integration


def cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("flowlake")
    full = (
        {k: v for k, v in os.environ.items() if not k.startswith("FLOWLAKE_")}
        | {"COLUMNS": "200"}
        | (env or {})
    )
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=full, timeout=120, check=False
    )


def test_cli_and_sql_paths_check_grants(tmp_path: Path) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="owner")
    owner.create_table("ods.orders", ORDERS, primary_key=["order_id"]).upsert(orders_table([order(1)]))
    as_mallory = {"FLOWLAKE_CATALOG": url, "FLOWLAKE_WAREHOUSE": wh, "FLOWLAKE_PRINCIPAL": "mallory"}
    for args in (
        ["sql", "select * from ods.orders"],
        ["history", "ods.orders"],
        ["compact", "ods.orders"],
        ["clean", "ods.orders"],
        ["grant", "admin", "*", "mallory"],
    ):
        result = cli(tmp_path, *args, env=as_mallory)
        assert result.returncode == 1, (args, result.stdout)
        assert "principal 'mallory' lacks" in " ".join(result.stderr.split()), (args, result.stderr)
    tables = cli(tmp_path, "tables", env=as_mallory)
    assert "ods.orders" not in tables.stdout  # listing shows only readable tables


def test_names_cannot_escape_the_warehouse(catalog: fl.Catalog, tmp_path: Path) -> None:
    for name in ("../x.y", "ods.../x", "ods./etc", "ods.a/b", "ods.a\\b", "ods.%2e%2e"):
        with pytest.raises(fl.InvalidNameError):
            catalog.create_table(name, ORDERS, primary_key=["order_id"])
    with pytest.raises(fl.InvalidNameError):
        catalog.list_tables("../..")
    with pytest.raises(fl.InvalidNameError):
        catalog.register_consumer("x'; drop table flowlake_tables; --", "ods.a", 0)
    assert not any(p.name == "x.y" for p in tmp_path.parent.rglob("x.y"))


def test_sql_injection_in_values_is_inert(catalog: fl.Catalog) -> None:
    t = catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    evil = "x'); drop table flowlake_tables; --"
    t.upsert(orders_table([order(1, shop=evil)]), sources={evil: evil}, token=evil)
    assert t.source_position(evil) == evil
    assert catalog.load_table("ods.orders").read().to_pylist()[0]["shop"] == evil
    catalog.register_consumer("c1", "ods.orders", 1)
    assert catalog.list_tables() == ["ods.orders"]


def test_passwords_never_appear_in_output(tmp_path: Path, postgres_url: str) -> None:
    secret_url = postgres_url.replace("postgresql://root@", "postgresql://root:s3cr3t-pw@")
    wh = (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=secret_url, warehouse=wh)
    assert "s3cr3t" not in repr(cat)
    env = {"FLOWLAKE_CATALOG": secret_url, "FLOWLAKE_WAREHOUSE": wh}
    for args in (["status"], ["tables"], ["demo", "--rows", "500", "--batches", "1", "--batch-size", "100"]):
        result = cli(tmp_path, *args, env=env)
        assert result.returncode == 0, result.stderr
        assert "s3cr3t" not in result.stdout + result.stderr, args
    bad = cli(tmp_path, "tables", env={**env, "FLOWLAKE_CATALOG": secret_url.replace("5432", "1")})
    assert bad.returncode == 1 and "s3cr3t" not in bad.stdout + bad.stderr


def test_consumers_need_ownership_or_write(tmp_path: Path) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="owner")
    owner.create_table("ods.orders", ORDERS, primary_key=["order_id"]).upsert(orders_table([order(1)]))
    owner.register_consumer("flow_a", "ods.orders", 1)
    owner.grant("read", "ods", "mallory")
    owner.grant("write", "ods.orders", "writer")
    mallory = fl.connect(catalog=url, warehouse=wh, principal="mallory")
    writer = fl.connect(catalog=url, warehouse=wh, principal="writer")
    denied = (
        r"'mallory' lacks 'write' on 'ods.orders' \(to (move|drop) consumer 'flow_a': it belongs to 'owner'\)"
    )
    store, table_id = mallory.store, mallory.load_table("ods.orders")._record.id
    with pytest.raises(fl.PermissionDeniedError, match=denied):
        mallory.register_consumer("flow_a", "ods.orders", 0)  # pin history from version 0 forever
    with pytest.raises(fl.PermissionDeniedError, match=denied):
        store.register_consumer(table_id, "flow_a", 1)
    with pytest.raises(fl.PermissionDeniedError, match=denied):
        mallory.drop_consumer("flow_a", "ods.orders")
    with pytest.raises(fl.InvalidArgumentError, match=r"not registered"):  # it cannot even see it
        mallory.advance_consumer("flow_a", "ods.orders", 1)
    assert owner.list_consumers("ods.orders") == {"flow_a": 1}
    # a reader owns the consumers (and pins) it registers, and sees only those
    mallory.register_consumer("mine", "ods.orders", 0)
    mallory.advance_consumer("mine", "ods.orders", 1)
    assert mallory.list_consumers("ods.orders") == {"mine": 1}
    with mallory.load_table("ods.orders").pin() as pin:
        assert pin.read().num_rows == 1
    assert mallory.drop_consumer("mine", "ods.orders")
    # write on the table (what cleaning needs) sees and moves every consumer
    assert writer.list_consumers("ods.orders") == {"flow_a": 1}
    writer.advance_consumer("flow_a", "ods.orders", 1)
    assert writer.drop_consumer("flow_a", "ods.orders")
    assert owner.list_consumers("ods.orders") == {}


def test_grants_are_listed_only_to_their_holder_or_an_admin(tmp_path: Path) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="owner")
    owner.grant("read", "ods", "alice")
    owner.grant("write", "dws.secret", "bob")
    owner.grant("admin", "dws", "carol")
    alice = fl.connect(catalog=url, warehouse=wh, principal="alice")
    assert alice.list_grants() == [("alice", "read", "ods")]
    assert alice.list_grants("bob") == []
    carol = fl.connect(catalog=url, warehouse=wh, principal="carol")
    assert carol.list_grants() == [("bob", "write", "dws.secret"), ("carol", "admin", "dws")]
    assert ("owner", "admin", "*") in owner.list_grants()
    with pytest.raises(fl.PermissionDeniedError, match=r"'alice' lacks 'admin' on 'dws.secret' \(to look up"):
        alice.store.has_privilege("write", "dws.secret", "bob")
    assert carol.store.has_privilege("write", "dws.secret", "bob")
    result = cli(tmp_path, "grants", env={"FLOWLAKE_CATALOG": url, "FLOWLAKE_PRINCIPAL": "alice"})
    assert result.returncode == 0 and "bob" not in result.stdout and "alice" in result.stdout, result.stderr


def test_only_the_first_write_makes_an_admin(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    reader = fl.connect(catalog=url, warehouse=wh, principal="early_reader")
    assert reader.list_tables() == [] and not reader.table_exists("ods.orders")  # reads claim nothing
    assert reader.list_grants() == []
    writer = fl.connect(catalog=url, warehouse=wh, principal="builder")
    with caplog.at_level("WARNING", logger="flowlake.catalog.access"):
        writer.create_table("ods.orders", ORDERS, primary_key=["order_id"])
    assert "principal 'builder' is now the admin of catalog" in caplog.text
    assert writer.list_grants() == [("builder", "admin", "*")]
    with pytest.raises(fl.PermissionDeniedError, match=r"'early_reader' lacks 'read' on 'ods.orders'"):
        reader.load_table("ods.orders")
    with pytest.raises(fl.PermissionDeniedError, match=r"'early_reader' lacks 'admin'"):
        reader.create_table("ods.other", ORDERS, primary_key=["order_id"])
    writer.revoke("admin", "*", "builder")  # even with no grant left, nobody claims it again
    late = fl.connect(catalog=url, warehouse=wh, principal="late")
    with pytest.raises(fl.PermissionDeniedError, match=r"'late' lacks 'admin' on '\*'"):
        late.grant("admin", "*", "late")
    assert late.store.claim_admin() == "builder"  # type: ignore[attr-defined]


def test_init_and_the_cli_say_who_became_admin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = cli(
        tmp_path, "grant", "read", "ods", "bob", env={"FLOWLAKE_CATALOG": url, "FLOWLAKE_PRINCIPAL": "amy"}
    )
    assert first.returncode == 0 and "principal 'amy' is now the admin" in " ".join(first.stderr.split())
    project = tmp_path / "p"
    project.mkdir()
    init = cli(project, "init", "--principal", "zoe")
    assert init.returncode == 0 and "as 'zoe' (you are its admin)" in " ".join(init.stdout.split()), init


def test_cli_reads_config_from_here_or_from_config_only(tmp_path: Path) -> None:
    planted = tmp_path / "planted.db"
    (tmp_path / "flowlake.toml").write_text(
        f'[flowlake]\nprincipal = "planted"\ncatalog = "sqlite:///{planted}"\n'
    )
    child = tmp_path / "work"
    child.mkdir()
    outside = cli(child, "tables")  # the parent's file is not read: here is no project at all
    assert outside.returncode == 1 and "no flowlake project" in outside.stderr
    assert not planted.exists() and not (child / ".flowlake").exists()
    chosen = cli(child, "--config", "../flowlake.toml", "grant", "read", "ods", "bob")
    assert chosen.returncode == 0, chosen.stderr
    assert "principal 'planted' is now the admin" in " ".join(chosen.stderr.split()) and planted.exists()
    missing = cli(child, "--config", "nope.toml", "tables")
    assert missing.returncode == 1
    assert "config file 'nope.toml' (from --config) does not exist" in " ".join(missing.stderr.split())


def test_processes_racing_to_be_first_writer_all_succeed(tmp_path: Path) -> None:
    """Several processes of one principal write to a new catalog at once: one claims it, none is refused."""
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    fl.connect(catalog=url, warehouse=wh, principal="svc").list_tables()  # the catalog exists, unclaimed
    script = (
        "import sys, pyarrow as pa, flowlake as fl\n"
        "cat = fl.connect(catalog=sys.argv[1], warehouse=sys.argv[2], principal='svc')\n"
        "cat.create_table(f'ns{sys.argv[3]}.t', pa.schema([('k', pa.int64())]), primary_key=['k'])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, wh, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [e for e in errors if "Error" in e]
    assert len(fl.connect(catalog=url, warehouse=wh, principal="svc").list_tables()) == 6
