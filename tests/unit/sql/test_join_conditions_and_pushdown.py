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
from flowlake.sql.plan import Calc, Join, Source, TopN, walk


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


TOP1_PER_SHOP = (
    "SELECT * FROM (SELECT s.shop_id, s.city, o.order_id, o.amount, ROW_NUMBER() OVER (PARTITION BY "
    "{part} ORDER BY o.amount DESC, o.order_id) AS rn FROM ods.orders o JOIN ods.shops s "
    "ON o.shop_id = s.shop_id WHERE o.ts >= s.opened) WHERE rn = 1"
)


def _top_n_input_columns(cat: fl.Catalog, select: str) -> tuple[list[str], list[Join]]:
    (view,) = plan_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    nodes = list(walk([view.output]))
    (top,) = [n for n in nodes if isinstance(n, TopN)]
    return top.input.schema.names, [n for n in nodes if isinstance(n, Join)]


def test_a_top_n_over_a_join_fetches_the_partition_sides_other_columns_after_it(cat: fl.Catalog) -> None:
    # partitioned by the shop side's whole key: s.city is one shop's, fetched for the top rows only
    columns, joins = _top_n_input_columns(cat, TOP1_PER_SHOP.format(part="s.shop_id"))
    assert "s.city" not in columns and "o.amount" in columns
    assert len(joins) == 2
    pairs, fetch = (joins[0], joins[1]) if isinstance(joins[1].left, TopN) else (joins[1], joins[0])
    assert isinstance(fetch.left, TopN) and fetch.key == fetch.left.key
    assert "s.city" in fetch.right.schema.names and "s.city" not in pairs.schema.names
    assert "s.opened" in pairs.schema.names  # the join condition reads it: not deferred


@pytest.mark.parametrize(
    "select",
    [
        TOP1_PER_SHOP.format(part="o.shop_id"),  # a column of the other side: not the shop's key
        TOP1_PER_SHOP.format(part="s.city"),  # not a key
        TOP1_PER_SHOP.format(part="s.shop_id").replace("ORDER BY o.amount", "ORDER BY s.city, o.amount"),
    ],
)
def test_a_top_n_keeps_columns_it_ranks_by_or_not_of_the_partitions_row(cat: fl.Catalog, select: str) -> None:
    columns, joins = _top_n_input_columns(cat, select)
    assert "s.city" in columns and len(joins) == 1


def test_a_top_n_with_fetched_columns_computes_the_same_rows(cat: fl.Catalog) -> None:
    ts = pa.timestamp("us", tz="UTC")
    shops = {
        "shop_id": pa.array([1, 2], pa.int32()),
        "city": ["Oslo", "Lima"],
        "opened": pa.array([0, 5], ts),
    }
    cat.load_table("ods.shops").upsert(pa.table(shops))
    orders = {"order_id": [1, 2, 3, 4], "shop_id": pa.array([1, 1, 2, 2], pa.int32()),
              "amount": [1.5, 2.5, 9.0, 3.0], "note": ["a", "b", "c", "d"],
              "ts": pa.array([1, 1, 1, 6], ts)}  # fmt: skip
    cat.load_table("ods.orders").upsert(pa.table(orders))
    flow = Dataflow("fetched")
    compile_views(f"CREATE MATERIALIZED VIEW dws.v AS {TOP1_PER_SHOP.format(part='s.shop_id')}", flow,
                  catalog=cat, stop="head")  # fmt: skip
    run_main(flow)  # type: ignore[no-untyped-call]
    rows = sorted(cat.load_table("dws.v").read().to_pylist(), key=lambda r: r["shop_id"])
    assert rows == [
        {"shop_id": 1, "city": "Oslo", "order_id": 2, "amount": 2.5, "rn": 1},
        {"shop_id": 2, "city": "Lima", "order_id": 4, "amount": 3.0, "rn": 1},  # order 3 is before opening
    ]
