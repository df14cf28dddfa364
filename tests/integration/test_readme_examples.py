"""Every Python code block of README.md runs as written, in a fresh folder (the embedded default)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_python_examples() -> None:
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_each_python_block_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"block_{index}.py"
    script.write_text(BLOCKS[index])
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"README python block {index} failed:\n{done.stderr[-3000:]}"


SQL_BLOCKS = re.findall(r"^```sql\n(.*?)^```", README.read_text(), re.S | re.M)  # view files
QUERY_BLOCKS = [  # SELECTs in the text, indented in a list item
    textwrap.dedent(b) for b in re.findall(r"^  ```sql\n(.*?)^  ```", README.read_text(), re.S | re.M)
]
FLOWLAKE = str(Path(sys.executable).with_name("flowlake"))


@pytest.mark.parametrize("index", range(len(SQL_BLOCKS)))
def test_each_sql_block_runs_as_views_and_equals_duckdb(index: int, tmp_path: Path) -> None:
    """A view file from the README, at the path its first line names, runs with `flowlake run --once`,
    `flowlake explain` and `flowlake verify` take it, and each view equals its SELECT run by DuckDB."""
    import duckdb

    import flowlake as fl
    from flowlake.demo import flows as shop
    from flowlake.demo.workload import OrdersWorkload

    text = SQL_BLOCKS[index]
    path = tmp_path / text.splitlines()[0].removeprefix("--").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    catalog, warehouse = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    schema, key, _ = shop.TABLES["ods.orders"]
    orders = cat.create_table("ods.orders", schema, primary_key=key)
    workload = OrdersWorkload(shops=9, seed=5)
    orders.upsert(workload.initial(300))
    orders.apply(workload.changes(100))
    env = {"PATH": "/usr/bin:/bin", "FLOWLAKE_CATALOG": catalog, "FLOWLAKE_WAREHOUSE": warehouse}
    views = re.findall(r"CREATE MATERIALIZED VIEW (\S+) AS\s+(.*?);", text, re.S | re.I)
    assert views, "the block defines no view"
    verify = [("verify", name) for name, _ in views]
    for args in (("run", str(path), "--once"), ("explain", str(path)), *verify):
        done = subprocess.run(
            [FLOWLAKE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"flowlake {' '.join(args)}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    oracle = duckdb.connect()
    oracle.execute("CREATE SCHEMA ods")
    oracle.register("current_orders", orders.read())
    oracle.execute("CREATE TABLE ods.orders AS SELECT * FROM current_orders")
    for name, select in views:
        got = sorted(tuple(r.values()) for r in cat.load_table(name).read().to_pylist())
        want = sorted(oracle.execute(select).fetchall())
        assert got == want, name


@pytest.mark.parametrize("index", range(len(QUERY_BLOCKS)))
def test_each_query_block_runs_in_flowlake_sql_and_as_a_view(index: int, tmp_path: Path) -> None:
    """A SELECT from the README's text gives DuckDB's rows through `flowlake sql` and as a view."""
    import datetime as dt

    import duckdb
    import pyarrow as pa

    import flowlake as fl

    select = QUERY_BLOCKS[index].strip()
    assert "ods.bids" in select, "a new query block: give it its input table here"
    catalog, warehouse = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    schema = pa.schema([("bid_id", pa.int64()), ("auction", pa.int64()), ("ts", pa.timestamp("us"))])
    bids = cat.create_table("ods.bids", schema, primary_key=["bid_id"])
    start = dt.datetime(2026, 1, 1)
    rows = [{"bid_id": i, "auction": i % 3, "ts": start + dt.timedelta(seconds=i * 0.7)} for i in range(60)]
    bids.upsert(pa.Table.from_pylist(rows, schema=schema))
    bids.delete(pa.table({"bid_id": [4, 5, 30]}))
    oracle = duckdb.connect()
    oracle.execute("CREATE SCHEMA ods")
    oracle.register("current_bids", bids.read())
    oracle.execute("CREATE TABLE ods.bids AS SELECT * FROM current_bids")
    want = sorted(oracle.execute(select).fetchall())
    env = {"PATH": "/usr/bin:/bin", "FLOWLAKE_CATALOG": catalog, "FLOWLAKE_WAREHOUSE": warehouse}
    out = tmp_path / "q.parquet"
    for args in (
        ("sql", select, "--format", "parquet", "--output", str(out)),
        ("run", str(tmp_path / "q.sql"), "--once"),
    ):
        (tmp_path / "q.sql").write_text(f"CREATE MATERIALIZED VIEW dws.q AS\n{select};\n")
        done = subprocess.run(
            [FLOWLAKE, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"flowlake {args[0]}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    import pyarrow.parquet as pq

    assert sorted(tuple(r.values()) for r in pq.read_table(out).to_pylist()) == want
    assert sorted(tuple(r.values()) for r in cat.load_table("dws.q").read().to_pylist()) == want
