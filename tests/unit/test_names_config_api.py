"""Names, paths, configuration and the public API surface."""

from __future__ import annotations

import inspect
from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.config import Settings
from flowlake.io.fs import open_storage
from flowlake.names import TableName


def test_public_api_is_exactly_all() -> None:
    public = {n for n in dir(fl) if not n.startswith("_") and not inspect.ismodule(getattr(fl, n))}
    assert sorted(public) == sorted(fl.__all__)
    assert len(set(fl.__all__)) == len(fl.__all__)


def test_every_error_is_a_flowlake_error() -> None:
    errors = [getattr(fl, n) for n in fl.__all__ if n.endswith("Error")]
    assert all(issubclass(e, fl.FlowlakeError) for e in errors)


def test_table_name_parsing() -> None:
    assert str(TableName.parse("ods.orders")) == "ods.orders"
    for bad in ["ods", "ods.orders.x", "ODS.orders", "ods/x.y", "ods.ord;ers", "", "ods. x"]:
        with pytest.raises(fl.InvalidNameError):
            TableName.parse(bad)


def test_storage_refuses_path_tricks(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "wh"))
    assert storage.path("ods", "orders").endswith("/wh/ods/orders")
    for bad in ["..", "../x", "a/../../b", "/etc", "a//b", "a\\b"]:
        with pytest.raises(fl.InvalidArgumentError, match="unsafe path"):
            storage.path(bad)
    with pytest.raises(fl.InvalidArgumentError, match="outside the warehouse"):
        storage.relative("/etc/passwd")


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flowlake.toml").write_text(
        '[flowlake]\ncatalog = "sqlite:///from-file.db"\nwarehouse = "file:///wh"\n'
    )
    monkeypatch.delenv("FLOWLAKE_CATALOG", raising=False)
    monkeypatch.setenv("FLOWLAKE_WAREHOUSE", "memory://env")
    s = Settings.resolve(cwd=tmp_path)
    assert s.catalog == "sqlite:///from-file.db"  # file beats default
    assert s.warehouse == "memory://env"  # env beats file
    assert (
        Settings.resolve(cwd=tmp_path, warehouse="s3://flag/x").warehouse == "s3://flag/x"
    )  # flag beats env
    monkeypatch.delenv("FLOWLAKE_WAREHOUSE")
    empty = tmp_path / "sub" / "deeper"
    empty.mkdir(parents=True)
    assert Settings.resolve(cwd=empty).warehouse != "file:///wh"  # parent folders are not searched
    monkeypatch.setenv("FLOWLAKE_CONFIG", str(tmp_path / "flowlake.toml"))
    assert Settings.resolve(cwd=empty).warehouse == "file:///wh"  # an explicit file is read
    monkeypatch.delenv("FLOWLAKE_CONFIG")
    assert Settings.resolve(cwd=empty, config=tmp_path / "flowlake.toml").catalog == "sqlite:///from-file.db"
    with pytest.raises(
        fl.InvalidArgumentError, match=r"config file '.*nope.toml' \(from --config\) does not"
    ):
        Settings.resolve(cwd=empty, config=tmp_path / "nope.toml")


def test_a_planted_parent_config_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLOWLAKE_CATALOG", "FLOWLAKE_WAREHOUSE", "FLOWLAKE_PRINCIPAL", "FLOWLAKE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "flowlake.toml").write_text(
        '[flowlake]\nprincipal = "root_by_plant"\ncatalog = "sqlite:////tmp/planted.db"\n'
    )
    project = tmp_path / "home" / "me" / "project"
    project.mkdir(parents=True)
    settings = Settings.resolve(cwd=project)
    assert settings.principal != "root_by_plant"
    assert settings.catalog == f"sqlite:///{project / '.flowlake' / 'catalog.db'}"
    (project / "flowlake.toml").write_text('[flowlake]\nprincipal = "mine"\n')
    assert Settings.resolve(cwd=project).principal == "mine"  # the current folder's file is read


def test_default_connect_is_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOWLAKE_CATALOG", raising=False)
    monkeypatch.delenv("FLOWLAKE_WAREHOUSE", raising=False)
    cat = fl.connect()
    assert (tmp_path / ".flowlake" / "catalog.db").exists()
    assert cat.storage.root == str(tmp_path / ".flowlake" / "warehouse")


def test_catalog_from_newer_flowlake_is_refused(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'c.db'}"
    fl.connect(catalog=url, warehouse=str(tmp_path / "wh"))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("update flowlake_meta set value = '999' where key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(fl.CatalogError, match="newer flowlake"):
        fl.connect(catalog=url, warehouse=str(tmp_path / "wh"))


def test_older_catalog_is_upgraded(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from flowlake.catalog.sqltables import SCHEMA_VERSION

    url = f"sqlite:///{tmp_path / 'c.db'}"
    fl.connect(catalog=url, warehouse=str(tmp_path / "wh")).create_table(
        "ods.t", pa.schema([("k", pa.int64())]), primary_key=["k"]
    )
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # make it look like a version-1 catalog
        conn.execute(sa.text("update flowlake_meta set value = '1' where key = 'schema_version'"))
        conn.execute(sa.text("drop table flowlake_grants"))
        conn.execute(sa.text("delete from flowlake_meta where key = 'first_admin'"))
        conn.execute(sa.text("drop table flowlake_positions"))
    cat = fl.connect(catalog=url, warehouse=str(tmp_path / "wh"))
    with engine.connect() as conn:
        version = conn.execute(
            sa.text("select value from flowlake_meta where key = 'schema_version'")
        ).scalar()
    engine.dispose()
    assert version is not None
    assert int(version) == SCHEMA_VERSION
    t = cat.load_table("ods.t")  # a catalog without grants refuses no read, and its first writer
    t.upsert(pa.table({"k": [1]}), sources={"x": 1})
    assert t.source_position("x") == 1
    assert cat.list_grants() == [(cat.principal, "admin", "*")]  # ... became its admin
