"""Shared fixtures: catalogs on every kind of warehouse, and the real services behind them."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.testing import start_moto_server
from flowlake.testing.load import cpu_hogs, hog_count
from harness.services import require_service

ORDERS = pa.schema(
    [
        ("order_id", pa.int64()),
        ("shop", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("qty", pa.int32()),
        ("paid", pa.bool_()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


_SERVER_LOGS: dict[str, Path] = {}
"""Logs of the session's own servers, by fixture name: a failing test that used one shows its tail."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used a server the tests started reports the tail of that server's log
    (a dropped connection or a crash is explained there, and the log is gone after the session)."""
    report = yield
    if report.failed:
        for name, log in _SERVER_LOGS.items():
            if name in getattr(item, "fixturenames", ()) and log.exists():
                tail = log.read_text(errors="replace")[-4000:]
                report.sections.append((f"{name} server log (tail)", tail))
    return report


@pytest.fixture
def cpu_load() -> Iterator[int]:
    """Busy-loop processes beside the test: timing-dependent losses must show up in CI, not later.

    One hog by default; ``FLOWLAKE_TEST_CPU_HOGS=N`` runs N (0 for a quiet run).
    """
    count = hog_count(1)
    with cpu_hogs(count):
        yield count


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint (moto's server) for this test session."""
    try:
        import moto  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as exc:  # pragma: no cover - dev extra missing
        require_service(False, f"moto/s3fs not installed: {exc}")
    proc, endpoint = start_moto_server()
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_options(endpoint: str) -> dict[str, object]:
    """fsspec options for the moto endpoint."""
    return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}


@pytest.fixture(params=["memory", "file", "s3"])
def warehouse_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> fl.Catalog:
    """A fresh catalog on each kind of warehouse: memory://, file:// and s3:// (moto server)."""
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    if request.param == "memory":
        return fl.connect(catalog=db, warehouse=f"memory://wh-{uuid.uuid4().hex}")
    if request.param == "file":
        return fl.connect(catalog=db, warehouse=(tmp_path / "wh").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    import s3fs

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    options = s3_options(endpoint)
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return fl.connect(catalog=db, warehouse=f"s3://{bucket}/wh", storage_options=options)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MariaDB with the binlog on, for this session; yields its mysql:// URL."""
    from flowlake.cdc.testing import mariadb_binaries, running_mariadb
    from flowlake.testing.services import ServiceUnavailableError

    require_service(mariadb_binaries() is not None, "mariadb-install-db/mariadbd are not installed")
    try:
        with running_mariadb(tmp_path_factory.mktemp("mariadb")) as server:
            _SERVER_LOGS["mariadb"] = server.log
            yield server.url
            _SERVER_LOGS.pop("mariadb", None)
    except ServiceUnavailableError as exc:  # pragma: no cover - depends on the machine
        require_service(False, str(exc))


@pytest.fixture
def catalog(tmp_path: Path) -> fl.Catalog:
    """A fresh embedded catalog on a local folder."""
    return fl.connect(catalog=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=(tmp_path / "wh").as_uri())


@pytest.fixture
def orders(catalog: fl.Catalog) -> fl.LakeTable:
    """An empty ods.orders table with 4 buckets."""
    return catalog.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=4)


PG_DSN = "postgresql://root@127.0.0.1:5432/test"


def _postgres_available() -> tuple[bool, str]:
    try:
        import psycopg
    except ImportError as exc:
        return False, f"psycopg not installed: {exc}"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True, ""
    except psycopg.Error as exc:
        return False, f"PostgreSQL not reachable at {PG_DSN}: {exc}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A catalog URL on the machine's PostgreSQL, in a fresh schema that is dropped afterwards."""
    ok, reason = _postgres_available()
    require_service(ok, reason)
    import psycopg

    schema = f"fl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")  # generated name, not user input
    try:
        yield f"{PG_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh catalog URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


SERVICE_MARKS = ("integration", "s3", "slow")
"""Tests carrying any of these marks also get ``services``: ``pytest -m "not services"`` is the fast suite."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``services`` on every test that needs PostgreSQL, MariaDB, S3 (moto) or runs processes."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_s3 = "s3_endpoint" in getattr(item, "fixturenames", ()) or (
            callspec is not None and callspec.params.get("warehouse_catalog") == "s3"
        )
        if on_s3 or any(item.get_closest_marker(mark) for mark in SERVICE_MARKS):
            item.add_marker(pytest.mark.services)
