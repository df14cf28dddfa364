"""Leases of table service jobs: acquire, renew, release, expiry and takeover, fencing by epoch,
grants, the REST metastore, and the migration that adds them. A SQLite file per test."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import cast

import httpx
import pyarrow as pa
import pytest
import sqlalchemy as sa

import flowlake as fl
from flowlake.catalog.base import MetaStore
from flowlake.catalog.leases import db_now_ms
from flowlake.catalog.sql import SqlMetaStore

SCHEMA = pa.schema([("id", pa.int64())])


@pytest.fixture
def lake(tmp_path: Path) -> tuple[fl.Catalog, int]:
    cat = fl.connect(
        catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri(), principal="ops"
    )
    t = cat.create_table("ods.t", SCHEMA, primary_key=["id"])
    return cat, t._record.id


def test_one_holder_at_a_time_and_release_records_the_run(lake: tuple[fl.Catalog, int]) -> None:
    store, tid = lake[0].store, lake[1]
    first = store.acquire_lease(tid, "compact", "a", 30)
    assert first == 1
    assert store.acquire_lease(tid, "compact", "b", 30) is None
    assert store.acquire_lease(tid, "compact", "a", 30) is None  # not re-entrant either
    assert store.acquire_lease(tid, "clean", "b", 30) == 1  # another job of the same table is free
    (clean, compact) = store.job_states(tid)
    assert (compact.job, compact.holder, compact.epoch) == ("compact", "a", 1)
    assert 25_000 < (compact.expires_in_ms or 0) <= 30_000
    assert store.release_lease(tid, "compact", "a", first, "ok", "version 3")
    assert not store.release_lease(tid, "compact", "a", first, "ok", "twice")  # already released
    state = next(s for s in store.job_states(tid) if s.job == "compact")
    assert (state.holder, state.last_outcome, state.last_detail, state.runs, state.failures) == (
        None, "ok", "version 3", 1, 0,
    )  # fmt: skip
    assert state.last_holder == "a" and state.last_finished_at is not None
    assert store.acquire_lease(tid, "compact", "b", 30) == 2  # the epoch grows per acquisition
    del clean


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(lake: tuple[fl.Catalog, int]) -> None:
    store, tid = lake[0].store, lake[1]
    old = store.acquire_lease(tid, "compact", "dead", 0.2)
    assert old is not None
    assert store.acquire_lease(tid, "compact", "new", 30) is None
    time.sleep(0.35)
    new = store.acquire_lease(tid, "compact", "new", 30)
    assert new == old + 1
    state = store.job_states(tid)[0]
    assert (state.holder, state.last_outcome, state.failures) == ("new", "lost", 1)
    assert "dead" in (state.last_detail or "")
    # the old holder comes back: it can neither renew nor release the lease it lost
    assert not store.renew_lease(tid, "compact", "dead", old, 30)
    assert not store.release_lease(tid, "compact", "dead", old, "ok", "late")
    assert store.renew_lease(tid, "compact", "new", new, 30)
    assert store.job_states(tid)[0].holder == "new"


def test_renewal_keeps_a_lease_past_its_first_expiry(lake: tuple[fl.Catalog, int]) -> None:
    store, tid = lake[0].store, lake[1]
    epoch = store.acquire_lease(tid, "clean", "a", 0.3)
    assert epoch is not None
    for _ in range(4):
        time.sleep(0.1)
        assert store.renew_lease(tid, "clean", "a", epoch, 0.3)
    assert store.acquire_lease(tid, "clean", "b", 30) is None


def test_racing_acquirers_get_exactly_one_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    owner = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops")
    tid = owner.create_table("ods.t", SCHEMA, primary_key=["id"])._record.id
    stores = [
        fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops").store for _ in range(8)
    ]
    barrier = threading.Barrier(len(stores))
    got: list[int | None] = [None] * len(stores)

    def take(i: int, store: MetaStore) -> None:
        barrier.wait()
        got[i] = store.acquire_lease(tid, "compact", f"h{i}", 30)

    threads = [threading.Thread(target=take, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g for g in got if g is not None) == [1]
    winner = got.index(1)
    assert owner.store.job_states(tid)[0].holder == f"h{winner}"


def test_leases_need_write_and_states_need_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    owner = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops")
    tid = owner.create_table("ods.t", SCHEMA, primary_key=["id"])._record.id
    owner.grant("read", "ods", "analyst")
    analyst = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="analyst")
    with pytest.raises(fl.PermissionDeniedError, match="write"):
        analyst.store.acquire_lease(tid, "compact", "x", 30)
    assert analyst.store.job_states(tid) == []


def test_bad_job_outcome_and_ttl_are_refused(lake: tuple[fl.Catalog, int]) -> None:
    store, tid = lake[0].store, lake[1]
    with pytest.raises(fl.InvalidArgumentError, match="unknown table service job 'vacuum'"):
        store.acquire_lease(tid, "vacuum", "a", 30)
    with pytest.raises(fl.InvalidArgumentError, match="at most 86400"):
        store.acquire_lease(tid, "clean", "a", 0)
    epoch = store.acquire_lease(tid, "clean", "a", 30)
    assert epoch is not None
    with pytest.raises(fl.InvalidArgumentError, match="unknown job outcome 'meh'"):
        store.release_lease(tid, "clean", "a", epoch, "meh", "")


def test_dropping_a_table_forgets_its_jobs(lake: tuple[fl.Catalog, int]) -> None:
    cat, tid = lake
    assert cat.store.acquire_lease(tid, "clean", "a", 30) == 1
    cat.drop_table("ods.t")
    assert isinstance(cat.store, SqlMetaStore)
    with cat.store.engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from flowlake_table_jobs")).scalar() == 0


def test_the_database_clock_is_used(lake: tuple[fl.Catalog, int]) -> None:
    store = lake[0].store
    assert isinstance(store, SqlMetaStore)
    with store.engine.connect() as conn:
        assert abs(db_now_ms(conn) - time.time() * 1000) < 5_000  # same host: the same clock


def test_a_version_5_catalog_gains_the_jobs_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("drop table flowlake_table_jobs"))
        conn.execute(sa.text("update flowlake_meta set value = '5' where key = 'schema_version'"))
    cat = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops")
    tid = cat.create_table("ods.t", SCHEMA, primary_key=["id"])._record.id
    assert cat.store.acquire_lease(tid, "compact", "a", 30) == 1
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("select value from flowlake_meta where key='schema_version'")).scalar()
            == "6"
        )


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_leases_through_the_rest_metastore(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from flowlake.catalog.rest import RestMetaStore, create_app

    url = f"sqlite:///{tmp_path / 'c.db'}"
    owner = fl.connect(catalog=url, warehouse=(tmp_path / "wh").as_uri(), principal="ops")
    tid = owner.create_table("ods.t", SCHEMA, primary_key=["id"])._record.id
    token = owner.create_principal("maintainer")
    owner.grant("write", "ods", "maintainer")
    assert isinstance(owner.store, SqlMetaStore)
    # starlette's TestClient is an httpx2.Client, which the store uses exactly like its httpx.Client
    client = cast(
        httpx.Client, TestClient(create_app(owner.store), headers={"authorization": f"Bearer {token}"})
    )
    remote = RestMetaStore.__new__(RestMetaStore)
    remote.url, remote._client, remote.principal = "http://testserver", client, "maintainer"
    epoch = remote.acquire_lease(tid, "compact", "remote-1", 30)
    assert epoch == 1
    assert remote.acquire_lease(tid, "compact", "remote-2", 30) is None
    assert remote.renew_lease(tid, "compact", "remote-1", epoch, 30)
    assert remote.release_lease(tid, "compact", "remote-1", epoch, "idle", "nothing to compact")
    (state,) = remote.job_states(tid)
    assert (state.job, state.last_outcome, state.last_holder, state.runs) == (
        "compact",
        "idle",
        "remote-1",
        1,
    )
    with pytest.raises(fl.PermissionDeniedError, match="admin"):  # changing properties: an ALTER TABLE
        remote.set_table_properties(tid, {"maintain.clean.retain_last": "1"})
    owner.grant("admin", "ods.t", "maintainer")
    record = remote.set_table_properties(tid, {"maintain.clean.retain_last": "4"})
    assert record.properties["maintain.clean.retain_last"] == "4"
    owner.grant("read", "ods", "reader")
    reader_token = owner.create_principal("reader")
    remote._client = cast(
        httpx.Client, TestClient(create_app(owner.store), headers={"authorization": f"Bearer {reader_token}"})
    )
    with pytest.raises(fl.PermissionDeniedError):
        remote.acquire_lease(tid, "clean", "reader-1", 30)
