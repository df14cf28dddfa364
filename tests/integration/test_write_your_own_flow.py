"""The "write your own flow" section of dataflows/README.md works as written: the flow file runs with
``flowlake run --once`` (which stops every lake_input), and ``flowlake verify`` checks its table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flowlake as fl
from flowlake.demo import flows as shop
from flowlake.demo.workload import OrdersWorkload

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "dataflows" / "README.md"
FLOWLAKE = str(Path(sys.executable).with_name("flowlake"))


def section_blocks(title: str) -> tuple[str, str]:
    section = README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    assert python and shell, f"the {title!r} section lost its code blocks"
    return python.group(1), shell.group(1)


def test_the_readme_flow_runs_once_and_verifies(tmp_path: Path) -> None:
    code, commands = section_blocks("Write your own flow")
    path = code.splitlines()[0].removeprefix("# ").strip()
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(code)
    catalog, warehouse = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    schema, key, _ = shop.TABLES["ods.orders"]
    orders = cat.create_table("ods.orders", schema, primary_key=key)
    workload = OrdersWorkload(shops=20, seed=2)
    orders.upsert(workload.initial(500))
    orders.apply(workload.changes(200))
    env = {**os.environ, "FLOWLAKE_CATALOG": catalog, "FLOWLAKE_WAREHOUSE": warehouse}
    for line in commands.strip().splitlines():
        argv = line.split("#", 1)[0].split()
        assert argv[0] == "flowlake", line
        done = subprocess.run(
            [FLOWLAKE, *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"{line}: {done.stdout[-1500:]} {done.stderr[-1500:]}"
    assert ": ok" in done.stdout
    assert cat.load_table("dws.shop_totals").read().num_rows == 20


def test_lake_output_to_a_missing_table_fails_when_the_flow_is_built(tmp_path: Path) -> None:
    from bytewax.dataflow import Dataflow

    from flowlake.flow import lake_input, lake_output

    cat = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    schema, key, _ = shop.TABLES["ods.orders"]
    cat.create_table("ods.orders", schema, primary_key=key)
    flow = Dataflow("missing")
    orders = lake_input("in", flow, "ods.orders", catalog=cat)
    with pytest.raises(fl.TableNotFoundError, match=r"dws\.nowhere"):
        lake_output("out", orders, "dws.nowhere", catalog=cat)


def test_the_flow_package_example_runs_once_and_a_missing_output_is_one_line(tmp_path: Path) -> None:
    """The flowlake.flow docstring's flow, as written, under `flowlake run --once`; without its
    create_table the run says which table is missing in one line (it was a bytewax traceback)."""
    import flowlake.flow

    assert flowlake.flow.__doc__ is not None
    code = re.search(r"```python\n(.*?)```", flowlake.flow.__doc__, re.S)
    assert code is not None
    catalog, warehouse = f"sqlite:///{tmp_path / 'c.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog, warehouse=warehouse)
    schema, key, _ = shop.TABLES["ods.orders"]
    cat.create_table("ods.orders", schema, primary_key=key).upsert(
        OrdersWorkload(shops=7, seed=3).initial(100)
    )
    (tmp_path / "doc_flow.py").write_text(code.group(1))
    missing = "\n".join(line for line in code.group(1).splitlines() if "create_table" not in line)
    (tmp_path / "no_table.py").write_text(missing)
    env = {**os.environ, "FLOWLAKE_CATALOG": catalog, "FLOWLAKE_WAREHOUSE": warehouse, "COLUMNS": "200"}
    env.pop("FLOWLAKE_DEBUG", None)

    def run(path: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLOWLAKE, "run", path, "--once"], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip

    done = run("doc_flow.py")
    assert done.returncode == 0, done.stderr[-2000:]
    assert cat.load_table("dws.shop_totals").read().num_rows == 7
    cat.drop_table("dws.shop_totals")
    failed = run("no_table.py")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-2000:]
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "table 'dws.shop_totals' does not exist" in failed.stderr
