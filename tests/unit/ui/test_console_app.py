"""The console's pages and JSON API through Starlette's TestClient: data, grants, sign-in, CSRF, errors."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from _console_lake import Lake, build_lake
from starlette.testclient import TestClient

import flowlake as fl
from flowlake.status import catalog_status
from flowlake.ui import console_app


# here rather than in a tests/unit/ui/conftest.py: a second module named conftest shadowed
# tests/conftest.py for `from conftest import ...` when tests/unit was collected first
@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """ods.orders → dwd.orders_enriched with a dead letter; alice is admin, bob may read dwd."""
    return build_lake(tmp_path)


HOST = "testserver"


def local_client(lake: Lake) -> TestClient:
    """A local-mode console (acting as alice, the admin), with its session cookie and CSRF token."""
    client = TestClient(console_app(lake.admin, allowed_hosts=[HOST]), base_url=f"http://{HOST}")
    page = client.get("/")
    assert page.status_code == 200
    client.headers["x-csrf-token"] = csrf_of(page.text)
    return client


def token_app(lake: Lake) -> TestClient:
    return TestClient(console_app(lake.admin, auth="token"), base_url=f"http://{HOST}")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', html) or re.search(
        r'name="csrf" value="([^"]+)"', html
    )
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, token: str) -> TestClient:
    form = client.get("/login")
    response = client.post(
        "/login", data={"csrf": csrf_of(form.text), "token": token}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    page = client.get("/")
    client.headers["x-csrf-token"] = csrf_of(page.text)
    return client


def test_overview_equals_status_and_lineage(lake: Lake) -> None:
    client = local_client(lake)
    data = client.get("/api/overview").json()
    names = [t["name"] for t in data["tables"]]
    assert names == ["ods.orders", "dwd.orders_enriched"]  # layers in order, dead letters apart
    status = {s.name: s for s in catalog_status(lake.admin)}
    for table in data["tables"]:
        expected = status[table["name"]]
        assert (table["version"], table["rows"], table["files"], table["log_files"]) == (
            expected.version, expected.rows, expected.files, expected.log_files,
        )  # fmt: skip
    table_edges = {(e["from"], e["to"]) for e in data["edges"] if not e.get("external")}
    assert table_edges == {
        (u.name, name) for name in names for u in lake.admin.lineage(name).upstream if "." in u.name
    }
    assert ("binlog:shop", "ods.orders") in {(e["from"], e["to"]) for e in data["edges"]}
    assert data["dead_letters"] == {"ods": 1}
    assert data["flows"][0]["output"] == "dwd.orders_enriched"
    assert data["flows"][0]["inputs"] == ["ods.orders"]
    assert data["principal"] == "alice"


def test_pages_render_with_security_headers(lake: Lake) -> None:
    client = local_client(lake)
    for path in ("/", "/table/ods.orders", "/sql", "/dead-letters"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "acting as the local principal" in response.text
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert "<script>" not in response.text  # no inline script: the CSP forbids it
    fresh = TestClient(console_app(lake.admin, allowed_hosts=[HOST]), base_url=f"http://{HOST}")
    cookie = fresh.get("/").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    for asset in ("console.js", "console.css", "uPlot.iife.min.js", "uPlot.min.css"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_table_detail_timeline_time_travel_and_changes(lake: Lake) -> None:
    client = local_client(lake)
    detail = client.get("/api/tables/ods.orders").json()
    assert detail["primary_key"] == ["order_id"]
    assert [f["name"] for f in detail["schema"]] == ["order_id", "shop", "amount"]
    assert detail["downstream"] == ["dwd.orders_enriched"]
    assert detail["external_sources"][0]["source"] == "binlog:shop"
    assert len(detail["bucket_map"]["leaves"]) == 2
    timeline = client.get("/api/tables/ods.orders/timeline").json()["commits"]
    assert [c["version"] for c in timeline] == [0, 1, 2, 3]
    assert timeline[1]["rows"]["+I"] == 5
    assert timeline[2]["rows"]["+U"] == 1
    assert timeline[3]["rows"]["-D"] == 1
    assert all(c["latency_ms"] is not None and c["latency_ms"] >= 0 for c in timeline[1:])
    v1 = client.get("/api/tables/ods.orders/rows?version=1").json()
    assert v1["version"] == 1
    assert v1["total"] == 5
    assert v1["rows"][0] == [1, "s1", "1.50"]
    head = client.get("/api/tables/ods.orders/rows").json()
    assert head["total"] == 4
    assert head["rows"][0] == [1, "s9", "99.00"]
    moment = lake.admin.load_table("ods.orders").history()[1].committed_at.isoformat()
    assert client.get("/api/tables/ods.orders/rows", params={"as_of": moment}).json()["version"] == 1
    changes = client.get("/api/tables/ods.orders/changes?start=1&end=2").json()
    kind_at = [c["name"] for c in changes["columns"]].index("_kind")
    assert [r[kind_at] for r in changes["rows"]] == ["-U", "+U"]


def test_sql_runs_in_the_sandbox_with_csrf(lake: Lake) -> None:
    client = local_client(lake)
    ok = client.post(
        "/api/sql", json={"sql": "select shop, count(*) as n from ods.orders group by shop order by 1"}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["rows"] == [["s0", 2], ["s1", 1], ["s9", 1]]
    assert ok.json()["versions"] == {"ods.orders": 3}
    past = client.post("/api/sql", json={"sql": "select count(*) from ods.orders", "as_of": "1"})
    assert past.json()["rows"] == [[5]]
    refused = client.post("/api/sql", json={"sql": "select * from read_csv('/etc/passwd')"})
    assert refused.status_code == 400
    assert refused.json()["error"] == "SqlSandboxError"
    assert client.post("/api/sql", json={"sql": "copy ods.orders to '/tmp/x.csv'"}).json()["error"] == (
        "SqlSandboxError"
    )
    no_csrf = client.post("/api/sql", json={"sql": "select 1"}, headers={"x-csrf-token": "nope"})
    assert no_csrf.status_code == 403
    assert client.post("/api/sql", content=b"{not json").status_code == 400
    assert client.post("/api/sql", json={"sql": "select 1 " + " " * 70_000}).status_code == 400
    assert client.post("/api/sql", content=b"x" * 300_000).status_code == 413


def test_dead_letters_with_raw_payload(lake: Lake) -> None:
    client = local_client(lake)
    data = client.get("/api/dead-letters").json()
    assert data["namespaces"] == ["ods"]
    [letter] = data["letters"]
    assert letter["error"] == "cannot decode charset swe7"
    assert letter["source_table"] == "shop.orders"
    assert "<script>" in letter["raw"]  # shown as text (the page sets textContent), never as markup
    assert letter["size"] == len(b'{"bad": "\\xff<script>"}')


def test_bad_input_gets_clear_errors_not_tracebacks(lake: Lake) -> None:
    client = local_client(lake)
    cases = {
        "/api/tables/no_dot": 400,
        "/api/tables/ods.Bad-Name": 400,
        "/api/tables/ods.missing": 404,
        "/api/tables/ods.orders/rows?version=99": 404,
        "/api/tables/ods.orders/rows?version=-1": 400,
        "/api/tables/ods.orders/rows?version=1e9": 400,
        "/api/tables/ods.orders/rows?as_of=yesterday": 400,
        "/api/tables/ods.orders/rows?limit=100000": 400,
        "/api/tables/ods.orders/changes": 400,
        "/api/tables/ods.orders/changes?start=3&end=1": 404,
    }
    for path, status in cases.items():
        response = client.get(path)
        assert response.status_code == status, (path, response.text)
        body = response.json()
        assert body["message"]
        assert "Traceback" not in response.text
    assert client.get("/table/not a table").status_code == 400


def test_local_mode_answers_loopback_host_names_only(lake: Lake) -> None:
    app = console_app(lake.admin)
    assert TestClient(app, base_url="http://127.0.0.1:8000").get("/").status_code == 200
    assert TestClient(app, base_url="http://evil.example:8000").get("/").status_code == 400


def test_token_mode_signs_in_and_applies_grants(lake: Lake) -> None:
    client = token_app(lake)
    assert client.get("/", follow_redirects=False).status_code == 303
    assert client.get("/api/overview").status_code == 401
    bob = sign_in(client, lake.bob_token)
    assert "signed in as" in bob.get("/").text
    data = bob.get("/api/overview").json()
    assert data["principal"] == "bob"
    assert [t["name"] for t in data["tables"]] == ["dwd.orders_enriched"]  # no ODS, no dead letters
    assert data["dead_letters"] == {}
    assert data["hidden_upstream_edges"] == 1
    assert all("ods.orders" not in orjson.dumps(e).decode() for e in data["edges"])
    assert data["tables"][0]["freshness_seconds"] is None  # its source is not bob's to see
    for path in ("/api/tables/ods.orders", "/api/tables/ods.orders/rows", "/api/tables/ods.orders/timeline",
                 "/api/tables/ods.orders/changes?start=0"):  # fmt: skip
        refused = bob.get(path)
        assert refused.status_code == 403, path
        assert "rows" not in refused.json()
    refused = bob.post("/api/sql", json={"sql": "select * from ods.orders"})
    assert refused.status_code == 403
    assert refused.json()["error"] == "PermissionDeniedError"
    assert bob.get("/api/dead-letters?namespace=ods").json()["letters"] == []
    mine = bob.post("/api/sql", json={"sql": "select city from dwd.orders_enriched"})
    assert mine.json()["rows"] == [["Oslo"]]


def test_wrong_token_and_login_csrf_are_refused(lake: Lake) -> None:
    client = token_app(lake)
    form = client.get("/login")
    wrong = client.post(
        "/login", data={"csrf": csrf_of(form.text), "token": "fl_wrong"}, follow_redirects=False
    )
    assert wrong.status_code == 401
    assert "unknown or revoked token" in wrong.text
    forged = TestClient(console_app(lake.admin, auth="token"), base_url=f"http://{HOST}")
    no_cookie = forged.post(
        "/login", data={"csrf": "x" * 43, "token": lake.bob_token}, follow_redirects=False
    )
    assert no_cookie.status_code == 403  # a cross-site form has no login cookie (SameSite=Strict)
    assert client.post("/login", content=b"token=" + b"a" * 20_000).status_code == 403


def test_sign_out_needs_the_csrf_token(lake: Lake) -> None:
    bob = sign_in(token_app(lake), lake.bob_token)
    assert bob.post("/logout", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    assert bob.get("/api/whoami").status_code == 200
    bob.post("/logout", data={"csrf": bob.headers["x-csrf-token"]}, follow_redirects=False)
    assert bob.get("/api/whoami").status_code == 401


def test_revoked_token_cannot_sign_in(lake: Lake) -> None:
    lake.admin.revoke_token("bob")
    client = token_app(lake)
    form = client.get("/login")
    response = client.post("/login", data={"csrf": csrf_of(form.text), "token": lake.bob_token})
    assert response.status_code == 401


def test_unexpected_errors_are_generic(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowlake.ui import data

    def boom(*_: object, **__: object) -> None:
        raise RuntimeError("secret internals /srv/path")

    monkeypatch.setattr(data, "overview", boom)
    response = local_client(lake).get("/api/overview")
    assert response.status_code == 500
    assert "secret" not in response.text


def test_auth_mode_is_checked(lake: Lake) -> None:
    with pytest.raises(fl.InvalidArgumentError):
        console_app(lake.admin, auth="none")  # type: ignore[arg-type]
