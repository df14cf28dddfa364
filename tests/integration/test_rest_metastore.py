"""The REST metastore (`flowlake serve`): the same catalog over HTTP, with tokens and grants enforced
on the server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from _builders import order, orders_table
from conftest import ORDERS

import flowlake as fl
from flowlake.testing import free_port
from flowlake.testing.services import wait_for_port
from flowlake.testing.tables import rows_by_key

pytestmark = pytest.mark.integration


@dataclass
class Metastore:
    url: str
    catalog_url: str
    warehouse: str
    owner: fl.Catalog

    def connect(self, token: str | None) -> fl.Catalog:
        return fl.connect(catalog=self.url, warehouse=self.warehouse, token=token or "")


@pytest.fixture(scope="module")
def metastore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metastore]:
    root = tmp_path_factory.mktemp("metastore")
    catalog_url = f"sqlite:///{root / 'catalog.db'}"
    warehouse = (root / "wh").as_uri()
    owner = fl.connect(catalog=catalog_url, warehouse=warehouse, principal="owner")  # bootstrap admin
    port = free_port()
    exe = Path(sys.executable).with_name("flowlake")
    proc = subprocess.Popen(
        [str(exe), "serve", "--catalog", catalog_url, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        yield Metastore(f"http://127.0.0.1:{port}", catalog_url, warehouse, owner)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tables_through_the_metastore(metastore: Metastore) -> None:
    token = metastore.owner.create_principal("etl")
    metastore.owner.grant("admin", "rest1", "etl")
    cat = metastore.connect(token)
    assert cat.principal == "etl"
    t = cat.create_table("rest1.orders", ORDERS, primary_key=["order_id"], buckets=2)
    t.upsert(orders_table(order(i) for i in range(5)))
    t.delete(pa.table({"order_id": [0]}))
    t.upsert(orders_table([order(1, qty=9)]), token="job/1", sources={"table:rest1.src": 3})
    assert sorted(rows_by_key(t.read(), ["order_id"])) == [1, 2, 3, 4]
    assert t.changes(2).num_rows == 2  # -U, +U
    assert t.source_position("table:rest1.src") == 3
    t.compact()
    t.clean(retain_last=1)
    assert [c.operation for c in t.history()][-1] == "compact"
    # the embedded owner sees exactly the same catalog
    assert rows_by_key(metastore.owner.load_table("rest1.orders").read(), ["order_id"])[1]["qty"] == 9


def test_grants_are_enforced_by_the_server(metastore: Metastore) -> None:
    metastore.owner.create_table("rest2.orders", ORDERS, primary_key=["order_id"]).upsert(
        orders_table([order(1)])
    )
    token = metastore.owner.create_principal("analyst")
    cat = metastore.connect(token)
    with pytest.raises(fl.PermissionDeniedError, match=r"'analyst' lacks 'read' on 'rest2.orders'"):
        cat.load_table("rest2.orders")
    assert "rest2.orders" not in cat.list_tables()
    metastore.owner.grant("read", "rest2.orders", "analyst")
    t = cat.load_table("rest2.orders")
    assert t.read().num_rows == 1
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'write'"):
        t.upsert(orders_table([order(2)]))
    with pytest.raises(fl.PermissionDeniedError, match=r"lacks 'admin'"):
        cat.grant("write", "rest2.orders", "analyst")  # cannot grant itself more


def test_missing_wrong_and_revoked_tokens_are_refused(metastore: Metastore) -> None:
    with pytest.raises(fl.AuthenticationError, match=r"missing bearer token"):
        metastore.connect(None)
    with pytest.raises(fl.AuthenticationError, match=r"unknown or revoked token"):
        metastore.connect("fl_not-a-real-token")
    token = metastore.owner.create_principal("temp")
    metastore.connect(token)  # works
    metastore.owner.revoke_token("temp")
    with pytest.raises(fl.AuthenticationError, match=r"unknown or revoked"):
        metastore.connect(token)
    raw = httpx.post(f"{metastore.url}/v1/rpc/list_tables", content=b"{}")
    assert raw.status_code == 401
    sneaky = httpx.post(
        f"{metastore.url}/v1/rpc/_complete", content=b"{}", headers={"authorization": f"Bearer {token}"}
    )
    assert sneaky.status_code in (401, 404)


def test_conflicts_and_rebases_travel_over_http(metastore: Metastore) -> None:
    token = metastore.owner.create_principal("writer")
    metastore.owner.grant("admin", "rest3", "writer")
    a = metastore.connect(token).create_table("rest3.orders", ORDERS, primary_key=["order_id"])
    b = metastore.connect(token).load_table("rest3.orders")
    a.upsert(orders_table([order(1), order(2)]))
    b._current_state(b.refresh()._record)
    a.upsert(orders_table([order(1, qty=5)]))
    from flowlake.table.writer import plan_write

    state = b._current_state(b._record)
    import numpy as np

    plan = plan_write(state, orders_table([order(1, qty=6)]), np.zeros(1, bool))
    with pytest.raises(fl.CommitConflictError, match=r"same keys") as err:
        b._commit_plan(b._record, plan, None, None)
    assert err.value.table == "rest3.orders" and err.value.expected == 1
    plan = plan_write(state, orders_table([order(2, qty=6)]), np.zeros(1, bool))
    assert b._commit_plan(b._record, plan, None, None)[0].version == 3  # disjoint keys rebase


def test_consumers_and_grants_are_guarded_over_http(metastore: Metastore) -> None:
    t = metastore.owner.create_table("rest4.orders", ORDERS, primary_key=["order_id"])
    t.upsert(orders_table([order(1)]))
    metastore.owner.register_consumer("flow_b", "rest4.orders", 1)
    token = metastore.owner.create_principal("peeker")
    metastore.owner.grant("read", "rest4", "peeker")
    cat = metastore.connect(token)
    with pytest.raises(fl.PermissionDeniedError, match=r"'peeker' lacks 'write' on 'rest4.orders' \(to move"):
        cat.register_consumer("flow_b", "rest4.orders", 0)
    with pytest.raises(fl.PermissionDeniedError, match=r"to drop consumer 'flow_b'"):
        cat.drop_consumer("flow_b", "rest4.orders")
    assert cat.list_consumers("rest4.orders") == {}
    cat.register_consumer("own", "rest4.orders", 1)
    assert cat.list_consumers("rest4.orders") == {"own": 1}
    assert metastore.owner.list_consumers("rest4.orders") == {"flow_b": 1, "own": 1}
    assert cat.list_grants() == [("peeker", "read", "rest4")]
    with pytest.raises(fl.PermissionDeniedError, match=r"to look up the grants of 'owner'"):
        cat.store.has_privilege("admin", "*", "owner")


class _InProcess:
    """The metastore app called in-process through httpx's ASGI transport."""

    def __init__(self, tmp_path: Path, max_body_bytes: int) -> None:
        from flowlake.catalog.rest import create_app
        from flowlake.catalog.sql import SqlMetaStore

        cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
        token = cat.create_principal("svc")
        cat.grant("admin", "*", "svc")
        assert isinstance(cat.store, SqlMetaStore)
        self.app = create_app(cat.store, max_body_bytes=max_body_bytes)
        self.auth = {"authorization": f"Bearer {token}"}

    def post(self, method: str, content: bytes | list[bytes], *, auth: bool = True) -> httpx.Response:
        async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
            for part in parts:
                yield part

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://metastore") as client:
                body = chunks(content) if isinstance(content, list) else content
                headers = self.auth if auth else {}
                return await client.post(f"/v1/rpc/{method}", content=body, headers=headers)

        return asyncio.run(call())


def test_request_bodies_have_a_limit(tmp_path: Path) -> None:
    server = _InProcess(tmp_path, max_body_bytes=4096)
    body = b'{"namespace": null}'
    fits = server.post("list_tables", body + b" " * (4096 - len(body)))
    assert fits.status_code == 200 and fits.json() == {"result": []}
    over = server.post("list_tables", body + b" " * 4096)
    assert over.status_code == 413 and "--max-body-mb" in over.json()["message"]
    chunked = server.post("list_tables", [body, b" " * 3000, b" " * 3000])  # no content-length
    assert chunked.status_code == 413
    unauthenticated = server.post("list_tables", b" " * 10_000, auth=False)
    assert unauthenticated.status_code == 401  # the token is checked before the body is read
    refused = subprocess.run(
        [str(Path(sys.executable).with_name("flowlake")), "serve", "--max-body-mb", "0"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0 and "--max-body-mb must be positive" in refused.stderr + refused.stdout


@pytest.mark.parametrize(
    ("method", "body", "expected"),
    [
        ("get_table", b'{"__b": "!!!"}', "__b"),
        ("get_table", b'{"namespace": {"__b": "!!!"}, "name": "x"}', "bad __b value"),
        ("get_table", b'{"namespace": {"__dt": "notadate"}, "name": "x"}', "bad __dt value"),
        ("schema", b'{"table_id": {"__schema": "AAAA"}, "schema_id": 0}', "bad __schema value"),
        ("get_table", b'{"namespace": 5, "name": "orders"}', "argument 'namespace' must be str, got 5"),
        ("list_tables", b'{"namespace": ' + b"[" * 1000 + b"]" * 1000 + b"}", "deeper than 64"),
        ("get_table", b'{"namespace": {"__t": "Evil"}, "name": "x"}', "unknown value type 'Evil'"),
        ("get_table", b'{"namespace": {"__tuple": 3}, "name": "x"}', "bad __tuple value"),
        ("get_table", b'{"namespace": "ods", "name": "t", "extra": 1}', "unexpected arguments ['extra']"),
        ("current_version", b'{"table_id": true}', "argument 'table_id' must be int, got True"),
        ("grant", b'{"principal": "x", "privilege": "root", "obj": "*"}', "must be one of"),
        ("commits", b'{"table_id": 1, "start": "0"}', "argument 'start' must be int"),
        (
            "complete_commit",
            b'{"table": {"__t": "TableRecord", "id": "x"}, "request": null}',
            "bad TableRecord",
        ),
        ("forget_files", b'{"table_id": 1, "paths": [1, 2], "oldest_version": 0}', "has an item that"),
        ("get_table", b"[1, 2]", "JSON object of named arguments"),
    ],
)
def test_malformed_requests_answer_400(tmp_path: Path, method: str, body: bytes, expected: str) -> None:
    response = _InProcess(tmp_path, max_body_bytes=1 << 20).post(method, body)
    assert response.status_code == 400, response.text
    assert expected in response.json()["message"], response.json()
