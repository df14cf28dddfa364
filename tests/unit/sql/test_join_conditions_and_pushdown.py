"""The planner puts a join's conditions on the matched pair inside the join, filters of one side before
it, and has each lake source read only the columns its views use."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

import flowlake as fl
from flowlake.sql import compile_views, plan_views
from flowlake.sql.plan import Calc, Join, Source, walk


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    c = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    orders = pa.schema([("order_id", pa.int64()), ("shop_id", pa.int32()), ("amount", pa.float64()),
                        ("note", pa.string()), ("ts", pa.timestamp("us", tz="UTC"))])  # fmt: skip
    c.create_table("ods.orders", orders, primary_key=["order_id"])
    c.create_table(
        "ods.shops",
        pa.schema([("shop_id", pa.int32()), ("city", pa.string()), ("opened", pa.timestamp("us", tz="UTC"))]),
        primary_key=["shop_id"],
    )
    return c


def _join(cat: fl.Catalog, select: str) -> Join:
    (view,) = plan_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    (join,) = [n for n in walk([view.output]) if isinstance(n, Join)]
    return join


@pytest.mark.parametrize(
    "select",
    [
        "SELECT o.order_id, s.city FROM ods.orders o JOIN ods.shops s ON o.shop_id = s.shop_id "
        "WHERE o.ts BETWEEN s.opened AND s.opened + INTERVAL 1 DAY",
        "SELECT o.order_id, s.city FROM ods.orders o JOIN ods.shops s "
        "ON o.shop_id = s.shop_id AND o.ts BETWEEN s.opened AND s.opened + INTERVAL 1 DAY",
        "SELECT o.order_id, s.city FROM ods.orders o, ods.shops s "
        "WHERE o.shop_id = s.shop_id AND o.ts BETWEEN s.opened AND s.opened + INTERVAL 1 DAY",
        "SELECT o.order_id, s.city FROM ods.orders o LEFT JOIN ods.shops s "
        "ON o.shop_id = s.shop_id AND o.ts BETWEEN s.opened AND s.opened + INTERVAL 1 DAY",
    ],
)
def test_a_condition_on_both_sides_is_applied_inside_the_join(cat: fl.Catalog, select: str) -> None:
    join = _join(cat, select)
    assert join.condition is not None and "BETWEEN" in join.condition
    assert set(join.condition_columns) == {"o.ts", "s.opened"}
    assert "where the pair has" in join.describe()
    (view,) = plan_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    after = [n for n in walk([view.output]) if isinstance(n, Calc) and n.input is join]
    assert all(n.where is None for n in after)  # no filter after the join


def test_one_side_conditions_filter_that_side_before_an_inner_join(cat: fl.Catalog) -> None:
    join = _join(
        cat,
        "SELECT o.order_id, s.city FROM ods.orders o JOIN ods.shops s ON o.shop_id = s.shop_id "
        "AND o.amount > 3 AND s.city <> 'Oslo'",
    )
    assert join.condition is None
    for side, text in ((join.left, "amount"), (join.right, "city")):
        assert isinstance(side, Calc) and side.where is not None and text in side.where


def test_a_preserved_side_condition_of_a_left_join_pads_instead_of_filtering(cat: fl.Catalog) -> None:
    join = _join(
        cat,
        "SELECT o.order_id, s.city FROM ods.orders o LEFT JOIN ods.shops s "
        "ON o.shop_id = s.shop_id AND o.amount > 3",
    )
    assert join.how == "left" and join.condition is not None and "amount" in join.condition
    assert isinstance(join.left, Calc) and join.left.where is None


def test_a_where_condition_is_not_moved_into_a_join_a_later_right_join_pads(cat: fl.Catalog) -> None:
    (view,) = plan_views(
        "CREATE MATERIALIZED VIEW dws.v WITH (primary_key = 'order_id') AS SELECT o.order_id, s.city "
        "FROM ods.orders o JOIN ods.shops s ON o.shop_id = s.shop_id "
        "RIGHT JOIN ods.orders p ON p.order_id = o.order_id WHERE o.amount < s.shop_id",
        cat,
    )
    joins = [n for n in walk([view.output]) if isinstance(n, Join)]
    assert all(j.condition is None for j in joins)


def test_sources_read_only_the_columns_their_views_use(cat: fl.Catalog) -> None:
    text = (
        "CREATE MATERIALIZED VIEW dws.a AS SELECT order_id, amount * 2 AS twice FROM ods.orders;\n"
        "CREATE MATERIALIZED VIEW dws.b AS SELECT shop_id, count(*) AS n FROM ods.orders "
        "WHERE note LIKE 'x%' GROUP BY shop_id;\n"
        "CREATE MATERIALIZED VIEW dws.c AS SELECT s.shop_id, s.city FROM ods.shops s"
    )
    planned = plan_views(text, cat)
    sources = {n.table: n for p in planned for n in walk([p.output]) if isinstance(n, Source)}
    assert sources["ods.orders"].columns == ("order_id", "shop_id", "amount", "note")  # not ts
    assert sources["ods.shops"].columns == ("shop_id", "city")  # not opened
    assert "columns [order_id, shop_id, amount, note]" in sources["ods.orders"].describe()


def test_a_view_over_pruned_columns_computes_the_same_rows(cat: fl.Catalog) -> None:
    orders = cat.load_table("ods.orders")
    orders.upsert(pa.table({"order_id": [1, 2], "shop_id": pa.array([1, 2], pa.int32()),
                            "amount": [1.5, 2.5], "note": ["xa", "b"],
                            "ts": pa.array([0, 0], pa.timestamp("us", tz="UTC"))}))  # fmt: skip
    text = (
        "CREATE MATERIALIZED VIEW dws.a AS SELECT order_id, amount * 2 AS twice FROM ods.orders "
        "WHERE note LIKE 'x%'"
    )
    flow = Dataflow("pruned")
    compile_views(text, flow, catalog=cat, stop="head")
    run_main(flow)  # type: ignore[no-untyped-call]
    assert cat.load_table("dws.a").read().to_pylist() == [{"order_id": 1, "twice": 3.0}]
