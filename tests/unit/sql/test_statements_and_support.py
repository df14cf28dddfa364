"""View files parse into definitions; every construct views cannot run is refused clearly, with its place."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.errors import SqlError, UnsupportedSqlError
from flowlake.sql import explain, parse_views, plan_views


@pytest.fixture
def cat(tmp_path: Path) -> fl.Catalog:
    c = fl.connect(catalog=f"sqlite:///{tmp_path / 'c.db'}", warehouse=(tmp_path / "wh").as_uri())
    orders = pa.schema([("order_id", pa.int64()), ("shop_id", pa.int32()), ("user_id", pa.int64()),
                        ("amount", pa.float64()), ("status", pa.string()),
                        ("ts", pa.timestamp("us", tz="UTC"))])  # fmt: skip
    c.create_table("ods.orders", orders, primary_key=["order_id"])
    c.create_table(
        "ods.shops", pa.schema([("shop_id", pa.int32()), ("city", pa.string())]), primary_key=["shop_id"]
    )
    return c


def test_a_file_holds_views_with_options_and_their_select_as_written() -> None:
    text = """-- two views
CREATE MATERIALIZED VIEW dws.a WITH (primary_key = 'shop_id', buckets = 8, horizon = '2h') AS
SELECT shop_id, count(*) AS n FROM ods.orders GROUP BY shop_id;

create materialized view dws.b as select * from dws.a where n > 1
"""
    a, b = parse_views(text)
    assert (a.name, a.options, a.line) == (
        "dws.a",
        {"primary_key": "shop_id", "buckets": "8", "horizon": "2h"},
        2,
    )
    assert a.sql == "SELECT shop_id, count(*) AS n FROM ods.orders GROUP BY shop_id"
    assert (b.name, b.sql, b.line) == ("dws.b", "select * from dws.a where n > 1", 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CREATE VIEW dws.a AS SELECT 1", "CREATE MATERIALIZED VIEW"),
        ("SELECT * FROM ods.orders", "CREATE MATERIALIZED VIEW"),
        ("CREATE MATERIALIZED VIEW dws.a WITH (colour = 'red') AS SELECT 1", "unknown option 'colour'"),
        ("CREATE MATERIALIZED VIEW dws.a AS SELECT 1; CREATE MATERIALIZED VIEW dws.a AS SELECT 2", "twice"),
        ("CREATE MATERIALIZED VIEW Bad-Name AS SELECT 1", "line 1"),
        ("CREATE MATERIALIZED VIEW dws.a AS SELEC * FROM x", "line 1"),
        ("-- nothing", "no CREATE MATERIALIZED VIEW"),
    ],
)
def test_bad_files_are_refused_with_the_place(text: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        parse_views(text)


UNSUPPORTED = [
    ("SELECT order_id, rank() OVER (ORDER BY amount) AS r FROM ods.orders", "window function RANK"),
    ("SELECT order_id, sum(amount) OVER (PARTITION BY shop_id) AS s FROM ods.orders", "window function SUM"),
    (
        "SELECT * FROM (SELECT order_id, row_number() OVER (ORDER BY amount) AS rn FROM ods.orders) q",
        "ROW_NUMBER\\(\\) without a bound",
    ),
    (
        "SELECT order_id, row_number() OVER (PARTITION BY shop_id) AS rn FROM ods.orders",
        "ROW_NUMBER\\(\\) without ORDER BY",
    ),
    ("SELECT order_id FROM ods.orders ORDER BY order_id", "ORDER BY"),
    ("SELECT order_id FROM ods.orders LIMIT 10", "LIMIT"),
    ("SELECT order_id FROM ods.orders WHERE shop_id IN (SELECT shop_id FROM ods.shops)", "IN \\(subquery\\)"),
    (
        "SELECT order_id FROM ods.orders o "
        "WHERE EXISTS (SELECT 1 FROM ods.shops s WHERE s.shop_id = o.shop_id)",
        "subquery inside an expression",
    ),
    (
        "SELECT order_id, (SELECT max(amount) FROM ods.orders) AS m FROM ods.orders",
        "subquery inside an expression",
    ),
    ("SELECT o.order_id FROM ods.orders o FULL JOIN ods.shops s ON o.shop_id = s.shop_id", "FULL OUTER JOIN"),
    ("SELECT o.order_id FROM ods.orders o CROSS JOIN ods.shops s", "CROSS JOIN"),
    ("SELECT o.order_id FROM ods.orders o JOIN ods.shops s USING (shop_id)", "USING"),
    ("SELECT o.order_id FROM ods.orders o JOIN ods.shops s ON o.amount > 3", "without an equality"),
    ("SELECT shop_id FROM ods.orders INTERSECT SELECT shop_id FROM ods.shops", "INTERSECT"),
    ("SELECT shop_id FROM ods.orders EXCEPT SELECT shop_id FROM ods.shops", "EXCEPT"),
    (
        "WITH RECURSIVE r AS (SELECT 1 AS x UNION ALL SELECT x + 1 FROM r WHERE x < 3) SELECT x FROM r",
        "RECURSIVE",
    ),
    ("SELECT shop_id, count(*) AS n FROM ods.orders GROUP BY ROLLUP (shop_id)", "ROLLUP"),
    ("SELECT shop_id, median(amount) AS m FROM ods.orders GROUP BY shop_id", "the aggregate median"),
    ("SELECT shop_id, string_agg(status, ',') AS s FROM ods.orders GROUP BY shop_id", "the aggregate"),
    ("SELECT shop_id, sum(DISTINCT amount) AS s FROM ods.orders GROUP BY shop_id", "sum\\(DISTINCT"),
    ("SELECT DISTINCT ON (shop_id) shop_id, order_id FROM ods.orders", "DISTINCT ON"),
    ("SELECT order_id, now() AS t FROM ods.orders", "non-deterministic"),
    ("SELECT order_id, random() AS r FROM ods.orders", "non-deterministic"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table function"),
    ("SELECT * FROM orders", "without its namespace"),
    ("SELECT 1 AS one", "SELECT without FROM"),
    ("SELECT shop_id, max(count(*)) AS m FROM ods.orders GROUP BY shop_id", "aggregate inside an aggregate"),
]


@pytest.mark.parametrize(("select", "message"), UNSUPPORTED)
def test_each_unsupported_construct_gets_a_clear_error(cat: fl.Catalog, select: str, message: str) -> None:
    with pytest.raises(UnsupportedSqlError, match=message) as caught:
        plan_views(f"CREATE MATERIALIZED VIEW dws.v AS\n{select}", cat)
    assert "not supported in a materialized view" in str(caught.value)


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ("SELECT shop_id, amount FROM ods.orders GROUP BY shop_id", "must appear in GROUP BY"),
        ("SELECT nope FROM ods.orders", "nope"),
        ("SELECT * FROM ods.missing", "ods.missing does not exist"),
        ("SELECT shop_id, amount + 1 FROM ods.orders", "give the expression"),
        ("SELECT status FROM ods.orders", "no primary key can be derived"),
        ("SELECT count(*) AS n FROM ods.orders", "without GROUP BY has no key"),
    ],
)
def test_plain_mistakes_are_named(cat: fl.Catalog, select: str, message: str) -> None:
    with pytest.raises(SqlError, match=message):
        plan_views(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)


def test_the_position_of_an_unsupported_construct_is_given(cat: fl.Catalog) -> None:
    text = (
        "CREATE MATERIALIZED VIEW dws.v AS\nSELECT order_id,\n"
        "       lag(amount) OVER (ORDER BY ts) AS prev FROM ods.orders"
    )
    with pytest.raises(UnsupportedSqlError, match="line 3, column"):
        plan_views(text, cat)


@pytest.mark.parametrize(
    ("select", "key"),
    [
        ("SELECT shop_id, count(*) AS n FROM ods.orders GROUP BY shop_id", "(shop_id)"),
        (
            "SELECT o.order_id, s.city FROM ods.orders o JOIN ods.shops s ON o.shop_id = s.shop_id",
            "(order_id)",
        ),
        (
            "SELECT o.order_id, s.city FROM ods.orders o LEFT JOIN ods.shops s ON o.shop_id = s.shop_id",
            "(order_id)",
        ),
        (
            "SELECT s.shop_id AS sid, o.order_id FROM ods.orders o JOIN ods.shops s ON o.shop_id = s.shop_id",
            "(order_id)",
        ),
        (
            "SELECT a.order_id AS x, b.order_id AS y "
            "FROM ods.orders a JOIN ods.orders b ON a.user_id = b.user_id",
            "(x, y)",
        ),
        (
            "SELECT * FROM (SELECT shop_id, order_id, "
            "row_number() OVER (PARTITION BY shop_id ORDER BY amount) AS rn FROM ods.orders) WHERE rn <= 3",
            "(shop_id, rn)",
        ),
        (
            "SELECT shop_id, order_id FROM (SELECT shop_id, order_id, "
            "row_number() OVER (PARTITION BY shop_id ORDER BY amount) AS rn FROM ods.orders) WHERE rn = 1",
            "(shop_id)",
        ),
        ("SELECT DISTINCT status, shop_id FROM ods.orders", "(status, shop_id)"),
        ("SELECT order_id AS id, amount FROM ods.orders WHERE amount > 1", "(id)"),
        (  # hopping windows: 10 minutes every 5
            "SELECT shop_id, w, count(*) AS n FROM (SELECT shop_id, unnest(generate_series("
            "time_bucket(INTERVAL '5 minutes', ts) - INTERVAL '5 minutes', time_bucket(INTERVAL '5 minutes', "
            "ts), INTERVAL '5 minutes')) AS w FROM ods.orders) GROUP BY shop_id, w",
            "(shop_id, w)",
        ),
    ],
)
def test_primary_keys_are_derived_as_flink_derives_unique_keys(
    cat: fl.Catalog, select: str, key: str
) -> None:
    plan = explain(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    assert plan.splitlines()[0] == f"view dws.v  primary key {key}"


def test_a_projection_with_unnest_keeps_no_input_key(cat: fl.Catalog) -> None:
    """One change becomes one per element, so ``order_id`` no longer identifies a row."""
    select = "SELECT order_id, unnest(generate_series(1, 3)) AS x FROM ods.orders"
    with pytest.raises(SqlError, match="an unnest in the select list"):
        explain(f"CREATE MATERIALIZED VIEW dws.v AS {select}", cat)
    plan = explain(f"CREATE MATERIALIZED VIEW dws.v WITH (primary_key = 'order_id, x') AS {select}", cat)
    assert "(a row per list element)" in plan


def test_a_view_table_widens_with_its_input_and_refuses_other_type_changes_naming_them(
    cat: fl.Catalog,
) -> None:
    from bytewax.dataflow import Dataflow

    from flowlake.sql import compile_views

    orders = cat.create_table(
        "ods.wide", pa.schema([pa.field("id", pa.int64(), nullable=False), ("amount", pa.decimal128(12, 2))]),
        primary_key=["id"],
    )  # fmt: skip
    view = "CREATE MATERIALIZED VIEW dwd.wide AS SELECT id, amount FROM ods.wide"
    compile_views(view, Dataflow("a"), catalog=cat)
    assert cat.load_table("dwd.wide").schema.field("amount").type == pa.decimal128(12, 2)
    orders.evolve_schema(pa.schema([orders.schema.field("id"), ("amount", pa.decimal128(14, 2))]))
    compile_views(view, Dataflow("b"), catalog=cat)  # ALTER ... MODIFY amount DECIMAL(14,2) upstream
    assert cat.load_table("dwd.wide").schema.field("amount").type == pa.decimal128(14, 2)
    cat.create_table(
        "dwd.narrow", pa.schema([pa.field("id", pa.int64(), nullable=False), ("amount", pa.string())]),
        primary_key=["id"],
    )  # fmt: skip
    with pytest.raises(SqlError, match=r"amount string -> decimal128\(14, 2\).*cannot be widened"):
        compile_views(view.replace("dwd.wide", "dwd.narrow"), Dataflow("c"), catalog=cat)
