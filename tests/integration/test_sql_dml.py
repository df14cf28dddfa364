"""``flowlake sql`` statements for batch work: each is one lake commit with an exact changelog, gives what
DuckDB gives running the same statement on a copy, and checks grants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.errors import PermissionDeniedError, SqlError, SqlSandboxError
from flowlake.sql.dml import run_statement
from flowlake.sql.sandbox import run_query
from flowlake.testing import apply_changelog

pytestmark = pytest.mark.integration

SETUP = [
    "CREATE TABLE ods.items (id BIGINT, name VARCHAR, price DECIMAL(10,2), qty INTEGER, PRIMARY KEY (id))",
    "CREATE TABLE ods.fixes (id BIGINT, name VARCHAR, gone BOOLEAN, PRIMARY KEY (id))",
]
STATEMENTS = [
    "INSERT INTO ods.items VALUES (1, 'a', 1.50, 3), (2, 'b', 2.00, NULL), (3, 'c', NULL, 1), "
    "(4, 'd', 9.99, 0)",
    "INSERT INTO ods.items (id, name) VALUES (2, 'bb'), (5, 'e')",  # an upsert of the named columns
    "UPDATE ods.items SET price = price * 2, qty = coalesce(qty, 0) + 1 WHERE price IS NOT NULL",
    "DELETE FROM ods.items WHERE qty = 1",
    "DELETE FROM ods.items WHERE id = 99",  # nothing
    "INSERT INTO ods.fixes VALUES (1, 'A', false), (4, NULL, true), (8, 'h', false)",
    "MERGE INTO ods.items USING ods.fixes f ON items.id = f.id "
    "WHEN MATCHED AND f.gone THEN DELETE "
    "WHEN MATCHED THEN UPDATE SET name = f.name "
    "WHEN NOT MATCHED THEN INSERT (id, name, qty) VALUES (f.id, f.name, 0)",
    "INSERT INTO ods.items SELECT id + 100, upper(name), 1.00, qty FROM ods.items WHERE qty > 0",
    "UPDATE ods.items SET name = f.name FROM ods.fixes f WHERE items.id = f.id + 100",
]


def rows(table: Any) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    return fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())


def test_statements_equal_duckdb_on_a_copy_and_commit_exact_changelogs(cat: fl.Catalog) -> None:
    oracle = duckdb.connect()
    oracle.execute("CREATE SCHEMA ods")
    for statement in SETUP:
        assert "done" in str(run_statement(cat, statement))
        oracle.execute(statement)
    items = cat.load_table("ods.items")
    assert items.primary_key == ("id",)
    for statement in STATEMENTS:
        before, version = items.read(), items.refresh().version
        result = run_statement(cat, statement)
        reference = statement.replace("INSERT INTO", "INSERT OR REPLACE INTO")
        oracle.execute(reference)
        for name in ("ods.items", "ods.fixes"):
            got = run_query(cat, f"SELECT * FROM {name}").table
            assert rows(got) == sorted(oracle.execute(f"SELECT * FROM {name}").fetchall()), statement
        if result.table == "ods.items" and result.commit is not None:
            assert result.commit.version == items.refresh().version == version + 1, statement
            changes = items.changes(version, version + 1)
            start = {r["id"]: r for r in before.to_pylist()}
            replayed = apply_changelog(start, changes, ["id"])  # strict: -U/-D retract exact rows
            assert sorted(replayed.values(), key=lambda r: r["id"]) == items.read().sort_by("id").to_pylist()
        elif result.table == "ods.items":
            assert items.refresh().version == version, f"{statement}: a no-op made a commit"


def test_ddl_alter_and_drop(cat: fl.Catalog) -> None:
    run_statement(cat, "CREATE TABLE dws.t (k VARCHAR, v DOUBLE, PRIMARY KEY (k)) WITH (buckets = 2)")
    table = cat.load_table("dws.t")
    assert (table.buckets, table.primary_key) == (2, ("k",))
    run_statement(cat, "INSERT INTO dws.t VALUES ('a', 1.5)")
    run_statement(cat, "ALTER TABLE dws.t ADD COLUMN note VARCHAR")
    assert cat.load_table("dws.t").schema.names == ["k", "v", "note"]
    run_statement(cat, "UPDATE dws.t SET note = 'x'")
    assert cat.load_table("dws.t").read().to_pylist() == [{"k": "a", "v": 1.5, "note": "x"}]
    run_statement(cat, "CREATE TABLE dws.events (msg VARCHAR)")  # no key: an append table
    run_statement(cat, "INSERT INTO dws.events VALUES ('one'), ('two')")
    with pytest.raises(SqlError, match="append table"):
        run_statement(cat, "DELETE FROM dws.events WHERE msg = 'one'")
    run_statement(cat, "DROP TABLE dws.t")
    assert not cat.table_exists("dws.t")
    run_statement(cat, "DROP TABLE IF EXISTS dws.t")


def test_statements_check_grants_and_stay_in_the_sandbox(tmp_path: Path) -> None:
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="owner")
    run_statement(owner, "CREATE TABLE ods.items (id BIGINT, name VARCHAR, PRIMARY KEY (id))")
    run_statement(owner, "INSERT INTO ods.items VALUES (1, 'a')")
    owner.grant("read", "ods", "reader")
    reader = fl.connect(catalog=url, warehouse=wh, principal="reader")
    for statement in (
        "DELETE FROM ods.items",
        "INSERT INTO ods.items VALUES (2, 'b')",
        "UPDATE ods.items SET name = 'z'",
        "DROP TABLE ods.items",
        "CREATE TABLE ods.mine (id BIGINT, PRIMARY KEY (id))",
    ):
        with pytest.raises(PermissionDeniedError):
            run_statement(reader, statement)
    assert owner.load_table("ods.items").read().to_pylist() == [{"id": 1, "name": "a"}]
    with pytest.raises(SqlSandboxError, match="read_csv"):
        run_statement(owner, "INSERT INTO ods.items SELECT 9, line FROM read_csv('/etc/passwd')")
    with pytest.raises(SqlSandboxError):
        run_statement(owner, "ATTACH '/tmp/x.db' AS x")
    assert owner.load_table("ods.items").version == 1


def test_ddl_needs_admin_and_sources_need_read_for_writers_too(tmp_path: Path) -> None:
    """A principal with write on a table may change its rows, not its schema; and what a statement
    reads needs read, whoever writes."""
    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    owner = fl.connect(catalog=url, warehouse=wh, principal="owner")
    run_statement(owner, "CREATE TABLE ods.items (id BIGINT, name VARCHAR, PRIMARY KEY (id))")
    run_statement(owner, "CREATE TABLE dws.secret (id BIGINT, code VARCHAR, PRIMARY KEY (id))")
    run_statement(owner, "INSERT INTO dws.secret VALUES (1, 'launch')")
    owner.grant("write", "ods.items", "writer")
    writer = fl.connect(catalog=url, warehouse=wh, principal="writer")
    assert "1 row(s) written" in str(run_statement(writer, "INSERT INTO ods.items VALUES (1, 'a')"))
    for statement, denied in (
        ("ALTER TABLE ods.items ADD COLUMN note VARCHAR", "'admin' on 'ods.items'"),
        ("DROP TABLE ods.items", "'admin' on 'ods.items'"),
        ("CREATE TABLE ods.mine (id BIGINT, PRIMARY KEY (id))", "'admin' on 'ods'"),
        ("MERGE INTO ods.items USING dws.secret s ON items.id = s.id "
         "WHEN MATCHED THEN UPDATE SET name = s.code", "'read' on 'dws.secret'"),
        ("UPDATE ods.items SET name = (SELECT max(code) FROM dws.secret)", "'read' on 'dws.secret'"),
    ):  # fmt: skip
        for cat, principal in ((writer, None), (owner, "writer")):  # as itself, or a face acting for it
            with pytest.raises(PermissionDeniedError, match=f"'writer' lacks {denied}"):
                run_statement(cat, statement, principal=principal)
    table = owner.load_table("ods.items")
    assert table.schema.names == ["id", "name"] and table.read().to_pylist() == [{"id": 1, "name": "a"}]
    run_statement(owner, "ALTER TABLE ods.items ADD COLUMN note VARCHAR")  # the admin may
    assert owner.load_table("ods.items").schema.names == ["id", "name", "note"]


def test_a_statement_does_not_overwrite_a_concurrent_write_to_the_rows_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement runs on a snapshot; a write to the same keys landing before its commit made the
    retry commit the statement's stale rows over it (a lost update). Now the statement fails."""
    from flowlake.table.table import LakeTable

    url, wh = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=url, warehouse=wh)
    run_statement(cat, "CREATE TABLE ods.stock (id BIGINT, qty INTEGER, PRIMARY KEY (id))")
    run_statement(cat, "INSERT INTO ods.stock VALUES (1, 10), (2, 20)")
    real_apply = LakeTable.apply
    other = fl.connect(catalog=url, warehouse=wh)
    schema = other.load_table("ods.stock").schema
    racing = {"armed": True}

    def apply_after_a_rival(self: LakeTable, *args: Any, **kwargs: Any) -> Any:
        if racing.pop("armed", False):  # another writer lands between the snapshot and the commit
            other.load_table("ods.stock").upsert(pa.table({"id": [1], "qty": [15]}, schema=schema))
        return real_apply(self, *args, **kwargs)

    monkeypatch.setattr(LakeTable, "apply", apply_after_a_rival)
    with pytest.raises(fl.CommitConflictError, match=r"ods\.stock"):
        run_statement(cat, "UPDATE ods.stock SET qty = qty + 1 WHERE id = 1")
    assert rows(cat.load_table("ods.stock").read()) == [(1, 15), (2, 20)]  # the rival's write stands
    racing["armed"] = True  # a rival on other keys does not stop a statement
    monkeypatch.setattr(
        LakeTable,
        "apply",
        lambda self, *a, **k: (
            racing.pop("armed", False)
            and other.load_table("ods.stock").upsert(pa.table({"id": [3], "qty": [30]}, schema=schema)),
            real_apply(self, *a, **k),
        )[1],
    )
    run_statement(cat, "UPDATE ods.stock SET qty = qty + 1 WHERE id = 2")
    assert rows(cat.load_table("ods.stock").read()) == [(1, 15), (2, 21), (3, 30)]
