"""The web console in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``)
driven by selenium, against the console served by uvicorn on a pipeline-shaped lake.

Screenshots of each page go to ``tmp/artifacts/console/`` (or ``$FLOWLAKE_ARTIFACTS/console``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _console_lake import Lake, add_pipeline, build_lake, commit_gmv

from flowlake.testing import free_port
from flowlake.ui import console_app
from flowlake.ui.serving import serve_in_background
from harness.services import require_service

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FLOWLAKE_ARTIFACTS", ROOT / "tmp" / "artifacts")) / "console"
CANVAS_INK = """
const c = document.querySelector(arguments[0] + ' canvas');
if (!c) return 0;
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
return n;
"""


def _browser_paths() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    paths = _browser_paths()
    require_service(
        paths is not None,
        "headless Chromium is not installed: apt-get install -y chromium chromium-driver (.ci/run does it)",
    )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # pragma: no cover - dev extra missing
        require_service(False, f"selenium is not installed (pip install -e '.[dev]'): {exc}")
    assert paths is not None
    options = Options()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_page_load_timeout(30)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    built = build_lake(tmp_path_factory.mktemp("console"))
    add_pipeline(built)
    return built


@pytest.fixture(scope="module")
def local_url(lake: Lake) -> Iterator[str]:
    server = serve_in_background(console_app(lake.admin, poll_ms=300), host="127.0.0.1", port=free_port())
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def token_url(lake: Lake) -> Iterator[str]:
    app = console_app(lake.admin, auth="token", allowed_hosts=["127.0.0.1"])
    server = serve_in_background(app, host="127.0.0.1", port=free_port())
    yield server.url
    server.stop()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.1)
    error = driver.execute_script("return (document.getElementById('error') || {}).textContent")
    raise AssertionError(f"timed out waiting for {what}; page error: {error!r}")


def shot(driver: Any, name: str) -> None:
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def rows_of(driver: Any, selector: str) -> list[list[str]]:
    script = (
        "return [...document.querySelectorAll(arguments[0] + ' tbody tr')]"
        ".map(tr => [...tr.children].map(td => td.textContent))"
    )
    return list(driver.execute_script(script, selector))


def status_json(lake: Lake) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("flowlake")
    env = {**os.environ, "FLOWLAKE_PRINCIPAL": "alice"}
    args = [str(exe), "status", "--json", "--catalog", lake.catalog_url, "--warehouse", lake.warehouse]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120, env=env).stdout
    return {t["name"]: t for t in orjson.loads(out)["tables"]}


def test_overview_shows_the_pipeline_and_updates_live(browser: Any, lake: Lake, local_url: str) -> None:
    browser.get(local_url)
    wait_for(browser, lambda d: d.find_elements("css selector", "#tables tbody tr"), "the tables")
    expected = status_json(lake)
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#tables tbody tr')].map(tr => Object.assign({}, tr.dataset))"
    )
    assert {row["table"] for row in shown} == set(expected) - {"ods._dead_letter"}
    for row in shown:
        status = expected[row["table"]]
        assert (int(row["version"]), int(row["rows"]), int(row["files"]), int(row["logFiles"])) == (
            status["version"], status["rows"], status["files"], status["log_files"],
        )  # fmt: skip
    edges = browser.execute_script(
        "return [...document.querySelectorAll('#lineage path.edge:not(.external)')]"
        ".map(p => [p.dataset.from, p.dataset.to])"
    )
    lineage = {
        (up.name, name)
        for name in expected
        if not name.endswith("_dead_letter")
        for up in lake.admin.lineage(name).upstream
        if not up.name.startswith("binlog:")
    }
    assert {tuple(e) for e in edges} == lineage
    assert len(browser.find_elements("css selector", "#lineage g.node")) == len(shown) + 1  # + the binlog
    shot(browser, "overview")

    updates = int(browser.execute_script("return document.body.dataset.updates"))
    versions = [commit_gmv(lake.admin, minute=m, gmv=f"{100 + m}.00") for m in range(1, 4)]
    wait_for(
        browser,
        lambda d: (
            d.execute_script(
                "return document.querySelector('#tables tr[data-table=\"dws.shop_gmv_minute\"]')"
                ".dataset.version"
            )
            == str(versions[-1])
        ),
        "the new DWS version on the page without a reload",
    )
    assert int(browser.execute_script("return document.body.dataset.updates")) > updates
    node = browser.execute_script(
        "return document.querySelector('#lineage g[data-node=\"dws.shop_gmv_minute\"]').textContent"
    )
    assert f"v{versions[-1]}" in node


def test_table_page_draws_the_timeline_and_travels_in_time(browser: Any, local_url: str) -> None:
    browser.get(local_url + "table/ods.orders")
    wait_for(browser, lambda d: d.execute_script("return document.body.dataset.ready"), "the table page")
    ink = wait_for(browser, lambda d: d.execute_script(CANVAS_INK, "#timeline-chart"), "the timeline chart")
    assert ink > 500
    assert [r[0] for r in rows_of(browser, "#schema")] == ["order_id", "shop", "amount"]
    wait_for(browser, lambda d: d.find_element("id", "travel-info").text.startswith("version 3"), "head rows")
    version = browser.find_element("id", "travel-version")
    version.clear()
    version.send_keys("1")
    browser.find_element("css selector", "#travel-form button").click()
    wait_for(
        browser, lambda d: d.find_element("id", "travel-info").text.startswith("version 1:"), "version 1"
    )
    rows = rows_of(browser, "#travel-rows")
    assert len(rows) == 5
    assert rows[0] == ["1", "s1", "1.50"]  # before the update to s9 / 99.00 in version 2
    browser.find_element("css selector", "#changes-form button").click()
    wait_for(browser, lambda d: d.find_element("id", "changes-info").text, "the changelog sample")
    shot(browser, "table")


def test_sql_page_shows_result_and_chart(browser: Any, local_url: str) -> None:
    browser.get(
        local_url
        + "sql?q=select%20shop,%20count(*)%20as%20n%20from%20ods.orders%20group%20by%20shop%20order%20by%201"
    )
    wait_for(browser, lambda d: d.find_element("id", "sql-text").get_attribute("value"), "the query text")
    browser.find_element("css selector", "#sql-form button").click()
    wait_for(browser, lambda d: d.execute_script("return document.body.dataset.result") == "ok", "the result")
    assert rows_of(browser, "#sql-rows") == [["s0", "2"], ["s1", "1"], ["s9", "1"]]
    assert wait_for(browser, lambda d: d.execute_script(CANVAS_INK, "#sql-chart"), "the result chart") > 200
    shot(browser, "sql")


def test_dead_letters_page_shows_reason_and_raw_payload(browser: Any, local_url: str) -> None:
    browser.get(local_url + "dead-letters")
    wait_for(browser, lambda d: rows_of(d, "#dl-rows"), "the dead letters")
    [row] = rows_of(browser, "#dl-rows")
    assert row[1] == "shop.orders"
    assert row[3] == "cannot decode charset swe7"
    browser.find_element("css selector", "#dl-rows summary").click()
    assert "<script>" in browser.find_element("css selector", "#dl-rows pre").text  # text, not markup
    shot(browser, "dead-letters")


def test_principal_without_a_grant_is_refused_and_sees_no_rows(
    browser: Any, lake: Lake, token_url: str
) -> None:
    browser.delete_all_cookies()
    browser.get(token_url)
    assert browser.current_url.endswith("/login")
    browser.find_element("id", "token").send_keys("fl_not_a_token")
    browser.find_element("id", "sign-in").click()
    error = wait_for(browser, lambda d: d.find_elements("id", "login-error"), "the sign-in refusal")
    assert "unknown or revoked token" in error[0].text
    browser.find_element("id", "token").send_keys(lake.bob_token)
    browser.find_element("id", "sign-in").click()
    wait_for(browser, lambda d: d.find_elements("css selector", "#tables tbody tr"), "bob's overview")
    assert browser.find_element("id", "principal").text == "bob"
    assert [r[0] for r in rows_of(browser, "#tables")] == ["dws.shop_gmv_minute"]
    assert "ods.orders" not in browser.page_source

    browser.get(token_url + "table/ods.orders")
    wait_for(
        browser, lambda d: d.execute_script("return document.body.dataset.refused") == "1", "the refusal"
    )
    assert "bob" in browser.find_element("id", "error").text
    assert rows_of(browser, "#travel-rows") == []
    shot(browser, "refused-table")

    browser.get(token_url + "sql?q=select%20*%20from%20ods.orders")
    wait_for(browser, lambda d: d.find_element("id", "sql-text").get_attribute("value"), "the query text")
    browser.find_element("css selector", "#sql-form button").click()
    wait_for(
        browser, lambda d: d.execute_script("return document.body.dataset.result") == "refused", "refusal"
    )
    assert rows_of(browser, "#sql-rows") == []
    assert "s9" not in browser.find_element("tag name", "main").text
    shot(browser, "refused-sql")
