"""A corpus of SQL views, run incrementally over hypothesis-generated changelogs, must equal DuckDB
running the same SELECT on the inputs at every output version's lineage.

Histories insert, update (moving rows between groups, windows, join partners and top-N ranks), delete
and re-insert orders and shops, with NULLs in every nullable column and ties in amounts. The
dataflow reads one input version per batch, so every intermediate output state is checked, and it
runs twice with bytewax recovery in between, so state survives a restart.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flowlake as fl
from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.flow.verify import verify_history
from flowlake.sql import compile_views

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
ORDERS = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        ("shop_id", pa.int32()),
        ("user_id", pa.int64()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("qty", pa.int32()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
SHOPS = pa.schema(
    [pa.field("shop_id", pa.int32(), nullable=False), ("city", pa.string()), ("category", pa.string())]
)

# (name, options, SELECT): every construct views support, each over the two inputs.
CORPUS: list[tuple[str, str, str]] = [
    # projection and filter
    ("p_all", "", "select * from ods.orders"),
    ("p_exprs", "", "select order_id, amount * qty as total, qty + 1 as q1, -qty as neg from ods.orders"),
    (
        "p_case",
        "",
        "select order_id, case when amount > 50 then 'big' when amount is null then 'none' "
        "else 'small' end as size from ods.orders",
    ),
    (
        "p_cast",
        "",
        "select order_id, cast(amount as double) as amt, cast(qty as varchar) as q from ods.orders",
    ),
    (
        "p_coalesce",
        "",
        "select order_id, coalesce(status, 'unknown') as s, nullif(qty, 0) as q from ods.orders",
    ),
    ("p_in", "", "select order_id, status from ods.orders where status in ('paid', 'new')"),
    ("p_between", "", "select order_id, amount from ods.orders where amount between 10 and 60"),
    ("p_like", "", "select order_id, status from ods.orders where status like 'p%' or status ilike 'N%'"),
    (
        "p_regexp",
        "",
        "select order_id from ods.orders where regexp_matches(coalesce(status, ''), '^(paid|new)$')",
    ),
    (
        "p_strings",
        "",
        "select order_id, upper(status) as u, lower(status) as l, length(status) as n, "
        "concat(status, '-', qty) as c, status || '!' as bang, substring(status, 1, 2) as s2, "
        "trim(' ' || status || ' ') as t, split_part(coalesce(status, 'a-b'), 'a', 1) as sp "
        "from ods.orders",
    ),
    (  # split_part, regexp_extract, lower and upper over a column: computed in Arrow
        "p_arrow_strings",
        "",
        "select order_id, split_part(status, 'a', 2) as sp, regexp_extract(status, '(p|n)(.)', 2) as rx, "
        "upper(split_part(status, 'e', -1)) as up from ods.orders where lower(status) <> 'sent'",
    ),
    (
        "p_time",
        "",
        "select order_id, date_trunc('hour', created_at) as h, extract(minute from created_at) as m, "
        "date_part('hour', created_at) as hp, epoch_ms(created_at) as ms, "
        "created_at + interval 1 hour as later, time_bucket(interval '5 minutes', created_at) as b "
        "from ods.orders",
    ),
    (
        "p_math",
        "",
        "select order_id, abs(-qty) as a, round(amount, 0) as r, floor(amount) as f, ceil(amount) as c "
        "from ods.orders",
    ),
    ("p_null_logic", "", "select order_id from ods.orders where not (status = 'paid') and qty > 0"),
    ("p_not_in", "", "select order_id, qty from ods.orders where status not in ('paid') and qty is not null"),
    (
        "p_and_or",
        "",
        "select order_id, qty from ods.orders where (qty > 2 and status is not null) or amount < 5",
    ),
    ("p_key_renamed", "", "select order_id as id, status as st from ods.orders where shop_id is not null"),
    # aggregates
    ("a_count", "", "select shop_id, count(*) as n, count(status) as ns from ods.orders group by shop_id"),
    (
        "a_sum_avg",
        "",
        "select shop_id, sum(amount) as s, avg(amount) as a, sum(qty) as q from ods.orders group by shop_id",
    ),
    (
        "a_min_max",
        "",
        "select shop_id, min(amount) as lo, max(amount) as hi, min(status) as first_status, "
        "max(created_at) as last_at from ods.orders group by shop_id",
    ),
    (
        "a_distinct",
        "",
        "select shop_id, count(distinct user_id) as users, count(distinct status) as statuses "
        "from ods.orders group by shop_id",
    ),
    (
        "a_filter",
        "",
        "select shop_id, count(*) filter (where status = 'paid') as paid, "
        "coalesce(sum(amount) filter (where status = 'paid'), 0) as paid_gmv from ods.orders "
        "group by shop_id",
    ),
    ("a_having", "", "select shop_id, count(*) as n from ods.orders group by shop_id having count(*) >= 2"),
    (
        "a_expr_key",
        "",
        "select qty % 3 as bucket, count(*) as n, sum(amount) as s from ods.orders group by qty % 3",
    ),
    (
        "a_group_all",
        "",
        "select status, shop_id, count(*) as n from ods.orders where status is not null "
        "and shop_id is not null group by all",
    ),
    (
        "a_post_expr",
        "",
        "select shop_id, sum(amount) / count(*) as mean, count(*) * 2 as twice "
        "from ods.orders group by shop_id",
    ),
    ("a_where", "", "select user_id, max(qty) as most from ods.orders where amount > 20 group by user_id"),
    (
        "a_minute",
        "",
        "select shop_id, date_trunc('minute', created_at) as minute, count(*) as n, "
        "sum(amount) as gmv from ods.orders group by all",
    ),
    (
        "a_bucket",
        "",
        "select time_bucket(interval '10 minutes', created_at) as b, count(*) as n "
        "from ods.orders group by 1",
    ),
    (
        "a_of_a",
        "",
        "select n, count(*) as shops from (select shop_id, count(*) as n from ods.orders "
        "group by shop_id) group by n",
    ),
    (
        "a_cte",
        "",
        "with per_user as (select user_id, sum(amount) as spent from ods.orders group by user_id) "
        "select case when spent > 50 then 'big' else 'small' end as size, count(*) as users "
        "from per_user group by 1",
    ),
    ("a_ordinal", "", "select status, count(*) as n from ods.orders group by 1"),
    # joins
    (
        "j_inner",
        "",
        "select o.order_id, o.amount, s.city from ods.orders o join ods.shops s on o.shop_id = s.shop_id",
    ),
    (
        "j_left",
        "",
        "select o.order_id, s.city, s.category from ods.orders o left join ods.shops s "
        "on o.shop_id = s.shop_id",
    ),
    (
        "j_right",
        "",
        "select o.order_id, s.shop_id, s.city from ods.shops s right join ods.orders o "
        "on s.shop_id = o.shop_id",
    ),
    (
        "j_residual",
        "",
        "select o.order_id, s.city from ods.orders o join ods.shops s on o.shop_id = s.shop_id "
        "and o.amount > 30",
    ),
    (
        "j_left_pushed",
        "",
        "select o.order_id, s.city from ods.orders o left join ods.shops s "
        "on o.shop_id = s.shop_id and s.city <> 'Lima'",
    ),
    (
        "j_left_pair",
        "",
        "select o.order_id, s.city from ods.orders o left join ods.shops s "
        "on o.shop_id = s.shop_id and (s.city = 'Oslo') = (o.qty > 2)",
    ),
    (
        "j_left_preserved",
        "",
        "select o.order_id, o.amount, s.category from ods.orders o left join ods.shops s "
        "on s.shop_id = o.shop_id and o.amount > 30 and s.category is not null",
    ),
    (
        "j_pair_between",
        "primary_key = 'order_id, other'",
        "select a.order_id, b.order_id as other, b.amount from ods.orders a join ods.orders b "
        "on a.shop_id = b.shop_id and b.amount between a.amount - 15 and a.amount + 15",
    ),
    (
        "j_pair_top1",
        "",
        "select order_id, other, amount from (select a.order_id, b.order_id as other, b.amount, "
        "row_number() over (partition by a.order_id order by b.amount desc nulls last, b.order_id) as rn "
        "from ods.orders a join ods.orders b on a.shop_id = b.shop_id "
        "where b.created_at between a.created_at and a.created_at + interval 10 minutes) where rn = 1",
    ),
    (  # q9's shape: a's other columns are fetched for each partition's top row, after the Top-N
        "j_pair_top1_wide",
        "",
        "select * from (select a.order_id, a.status, a.user_id, a.qty, b.order_id as other, b.amount, "
        "row_number() over (partition by a.order_id order by b.amount desc nulls last, b.order_id) as rn "
        "from ods.orders a join ods.orders b on a.shop_id = b.shop_id "
        "where b.created_at between a.created_at and a.created_at + interval 10 minutes) where rn = 1",
    ),
    (
        "j_left_top2_wide",
        "",
        "select order_id, status, qty, other, rn from (select a.order_id, a.status, a.qty, "
        "b.order_id as other, row_number() over (partition by a.order_id order by b.order_id nulls first) "
        "as rn from ods.orders a left join ods.orders b on a.user_id = b.user_id "
        "and b.order_id <> a.order_id) where rn <= 2",
    ),
    (
        "j_top2_per_shop_wide",
        "",
        "select * from (select s.shop_id, s.city, s.category, o.order_id, o.amount, row_number() over "
        "(partition by s.shop_id order by o.amount desc nulls last, o.order_id) as rn from ods.orders o "
        "join ods.shops s on o.shop_id = s.shop_id) where rn <= 2",
    ),
    (
        "j_agg",
        "",
        "select s.city, count(*) as orders, sum(o.amount) as gmv from ods.orders o "
        "join ods.shops s on o.shop_id = s.shop_id group by s.city",
    ),
    (
        "j_agg_strings",
        "",
        "select s.category, min(s.city) as first_city, count(distinct o.user_id) as users "
        "from ods.orders o join ods.shops s on o.shop_id = s.shop_id group by 1",
    ),
    (
        "j_self",
        "",
        "select a.order_id, b.order_id as other from ods.orders a join ods.orders b "
        "on a.user_id = b.user_id where a.order_id < b.order_id",
    ),
    (
        "j_where",
        "",
        "select o.order_id, s.category from ods.orders o join ods.shops s "
        "on o.shop_id = s.shop_id where s.category = 'food' or o.qty > 3",
    ),
    (
        "j_expr_key",
        "primary_key = 'order_id'",
        "select o.order_id, s.city from ods.orders o join ods.shops s on o.shop_id + 1 = s.shop_id + 1",
    ),
    (
        "j_view",
        "",
        "select e.city, max(e.amount) as top_amount from dwd_enriched e "
        "where e.city is not null group by e.city",
    ),
    (
        "j_cast_key",
        "",
        "select o.order_id, s.city from ods.orders o join ods.shops s on o.user_id = s.shop_id",
    ),
    # hopping windows: a row's window starts as a list, unnested, then grouped by
    (
        "w_hop",
        "",
        "select shop_id, window_start, count(*) as n, sum(amount) as s from (select shop_id, amount, "
        "unnest(generate_series(time_bucket(interval '10 minutes', created_at) - interval '20 minutes', "
        "time_bucket(interval '10 minutes', created_at), interval '10 minutes')) as window_start "
        "from ods.orders) group by shop_id, window_start",
    ),
    (
        "w_hop_range",
        "",
        "select window_start, max(amount) as hi, count(distinct shop_id) as shops from (select amount, "
        "shop_id, unnest(range(time_bucket(interval '5 minutes', created_at) - interval '10 minutes', "
        "time_bucket(interval '5 minutes', created_at) + interval '5 minutes', interval '5 minutes')) "
        "as window_start from ods.orders where status is not null) group by window_start",
    ),
    (
        "w_hop_top",
        "",
        "select * from (select window_start, shop_id, n, row_number() over (partition by window_start "
        "order by n desc, shop_id) as rn from (select window_start, shop_id, count(*) as n from ("
        "select shop_id, unnest(generate_series(time_bucket(interval '10 minutes', created_at) - "
        "interval '10 minutes', time_bucket(interval '10 minutes', created_at), interval '10 minutes')) "
        "as window_start from ods.orders where shop_id is not null) group by window_start, shop_id)) "
        "where rn <= 2",
    ),
    # top-n and dedup
    (
        "t_top2",
        "",
        "select * from (select shop_id, order_id, amount, row_number() over "
        "(partition by shop_id order by amount desc, order_id) as rn from ods.orders "
        "where shop_id is not null) where rn <= 2",
    ),
    (
        "t_first",
        "",
        "select shop_id, order_id from (select shop_id, order_id, row_number() over "
        "(partition by shop_id order by created_at, order_id) as rn from ods.orders "
        "where shop_id is not null) where rn = 1",
    ),
    (
        "t_last",
        "",
        "select user_id, status from (select user_id, status, row_number() over "
        "(partition by user_id order by order_id desc) as rn from ods.orders "
        "where user_id is not null) where rn = 1",
    ),
    (
        "t_qualify",
        "",
        "select shop_id, order_id, qty from ods.orders where shop_id is not null "
        "qualify row_number() over (partition by shop_id order by qty desc nulls last, order_id) <= 3",
    ),
    (
        "t_global",
        "",
        "select order_id, amount, rn from (select order_id, amount, row_number() over "
        "(order by amount desc nulls last, order_id) as rn from ods.orders) where rn < 4",
    ),
    (
        "t_nulls_first",
        "",
        "select * from (select shop_id, order_id, status, row_number() over "
        "(partition by shop_id order by status nulls first, order_id) as rn "
        "from ods.orders where shop_id is not null) where rn <= 2",
    ),
    (
        "t_per_city",
        "",
        "select * from (select s.city, o.order_id, o.amount, row_number() over (partition by "
        "s.city order by o.amount desc nulls last, o.order_id) as rn from ods.orders o join ods.shops s "
        "on o.shop_id = s.shop_id where s.city is not null) where rn <= 2",
    ),
    # distinct and union
    (
        "d_distinct",
        "",
        "select distinct status, shop_id from ods.orders where status is not null and shop_id is not null",
    ),
    (
        "d_distinct_city",
        "",
        "select distinct s.city from ods.orders o join ods.shops s on o.shop_id = s.shop_id "
        "where s.city is not null",
    ),
    (
        "u_all",
        "primary_key = 'kind, id'",
        "select 'order' as kind, order_id as id from ods.orders "
        "union all select 'shop' as kind, shop_id as id from ods.shops",
    ),
    (
        "u_distinct",
        "",
        "select shop_id from ods.orders where shop_id is not null union select shop_id from ods.shops",
    ),
    (
        "u_agg",
        "",
        "select id_kind, count(*) as n from (select 'o' as id_kind, order_id as x from ods.orders "
        "union all select 's' as id_kind, shop_id as x from ods.shops) group by id_kind",
    ),
    # subqueries and chains
    (
        "s_from",
        "",
        "select q.order_id, q.total from (select order_id, amount * 2 as total from ods.orders) q "
        "where q.total > 20",
    ),
    (
        "s_nested",
        "",
        "select big, count(*) as n from (select order_id, cast(amount > 40 as int) as big "
        "from (select * from ods.orders where qty > 0)) group by big",
    ),
    (
        "s_cte_join",
        "",
        "with paid as (select order_id, shop_id from ods.orders where status = 'paid') "
        "select s.city, count(*) as paid_orders from paid p join ods.shops s "
        "on p.shop_id = s.shop_id where s.city is not null group by s.city",
    ),
    (
        "s_view_of_view",
        "",
        "select category, count(*) as n from dwd_enriched where category is not null group by category",
    ),
    (
        "s_topn_of_agg",
        "",
        "select * from (select shop_id, gmv, row_number() over (order by gmv desc nulls last, "
        "shop_id) as rn from (select shop_id, sum(amount) as gmv from ods.orders "
        "where shop_id is not null group by shop_id)) where rn <= 2",
    ),
    (
        "s_agg_of_join_of_agg",
        "",
        "select s.category, sum(t.n) as orders from (select shop_id, count(*) as n "
        "from ods.orders group by shop_id) t join ods.shops s on t.shop_id = s.shop_id "
        "group by s.category",
    ),
]

ENRICHED = (
    "select o.order_id, o.shop_id, s.city, s.category, o.amount from ods.orders o "
    "left join ods.shops s on o.shop_id = s.shop_id"
)


def view_file() -> str:
    """The corpus as one view file (views reading ``dwd_enriched`` read the first view)."""
    parts = [f"CREATE MATERIALIZED VIEW dwd.enriched AS {ENRICHED};"]
    for name, options, sql in CORPUS:
        with_ = f" WITH ({options})" if options else ""
        parts.append(
            f"CREATE MATERIALIZED VIEW dws.{name}{with_} AS {sql.replace('dwd_enriched', 'dwd.enriched')};"
        )
    return "\n".join(parts)


STATUSES = ["paid", "new", "sent", None]
CITIES = ["Oslo", "Lima", None]
CATEGORIES = ["food", "toys", None]
order = st.tuples(
    st.just("order"),
    st.integers(0, 11),  # order_id: few keys, so changes hit the same rows
    st.one_of(st.none(), st.integers(0, 4)),
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from(STATUSES),
    st.one_of(st.none(), st.sampled_from([5, 10, 20, 35, 50, 70])),  # ties on purpose
    st.one_of(st.none(), st.integers(0, 5)),
    st.integers(0, 40),
)
shop = st.tuples(st.just("shop"), st.integers(0, 4), st.sampled_from(CITIES), st.sampled_from(CATEGORIES))
ops = st.lists(
    st.one_of(
        order, order, order,
        shop,
        st.tuples(st.just("del_order"), st.integers(0, 11)),
        st.tuples(st.just("del_shop"), st.integers(0, 4)),
        st.just(("commit",)),
    ),
    min_size=5,
    max_size=60,
)  # fmt: skip


class Inputs:
    """The two input tables, written one commit per ``commit`` op (a batch of upserts and deletes)."""

    def __init__(self, cat: fl.Catalog) -> None:
        self.orders_t = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=2)
        self.shops_t = cat.create_table("ods.shops", SHOPS, primary_key=["shop_id"], buckets=1)
        self.orders: dict[int, dict[str, Any]] = {}
        self.shops: dict[int, dict[str, Any]] = {}
        self.dirty_orders: dict[int, dict[str, Any] | None] = {}
        self.dirty_shops: dict[int, dict[str, Any] | None] = {}

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "order":
            _, oid, shop_id, user, status, amount, qty, minute = op
            row = {"order_id": oid, "shop_id": shop_id, "user_id": user, "status": status,
                   "amount": None if amount is None else Decimal(amount) + Decimal("0.25"), "qty": qty,
                   "created_at": T0 + dt.timedelta(minutes=minute)}  # fmt: skip
            self.dirty_orders[oid] = row
        elif kind == "shop":
            self.dirty_shops[op[1]] = {"shop_id": op[1], "city": op[2], "category": op[3]}
        elif kind == "del_order":
            self.dirty_orders[op[1]] = None
        elif kind == "del_shop":
            self.dirty_shops[op[1]] = None
        else:
            self.commit()

    def commit(self) -> None:
        _write(self.orders_t, ORDERS, self.orders, self.dirty_orders, "order_id")
        _write(self.shops_t, SHOPS, self.shops, self.dirty_shops, "shop_id")


def _write(
    table: fl.LakeTable, schema: pa.Schema, model: dict[int, dict[str, Any]],
    dirty: dict[int, dict[str, Any] | None], key: str,
) -> None:  # fmt: skip
    changes: list[tuple[int, dict[str, Any]]] = []
    for k, row in dirty.items():
        old = model.get(k)
        if row is None and old is not None:
            changes.append((RowKind.DELETE, old))
            del model[k]
        elif row is not None and old is None:
            changes.append((RowKind.INSERT, row))
            model[k] = row
        elif row is not None and old is not None and row != old:
            changes += [(RowKind.UPDATE_BEFORE, old), (RowKind.UPDATE_AFTER, row)]
            model[k] = row
    dirty.clear()
    if changes:
        data = pa.Table.from_pylist([r for _, r in changes], schema=schema)
        table.apply(data.append_column(KIND_COLUMN, pa.array([int(c) for c, _ in changes], pa.int8())))


def run_views(cat: fl.Catalog, text: str, recovery: Path) -> None:
    flow = Dataflow("corpus")
    compile_views(text, flow, catalog=cat, stop="head", partitions=2, max_versions=1)
    run_main(flow, epoch_interval=dt.timedelta(0), recovery_config=RecoveryConfig(str(recovery)))  # type: ignore[no-untyped-call]


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate],
)
@given(history=ops, cut=st.floats(0.2, 0.8))
def test_every_view_equals_duckdb_at_every_version(history: list[tuple[Any, ...]], cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cat = fl.connect(catalog=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}/wh")
        inputs = Inputs(cat)
        recovery = Path(tmp) / "recovery"
        recovery.mkdir()
        init_db_dir(recovery, 1)  # type: ignore[no-untyped-call]
        text = view_file()
        split = int(len(history) * cut)
        for op in history[:split]:
            inputs.apply(op)
        inputs.commit()
        run_views(cat, text, recovery)  # first run, then resume from recovery with more history
        for op in history[split:]:
            inputs.apply(op)
        inputs.commit()
        run_views(cat, text, recovery)
        failures = []
        for name in ["dwd.enriched", *(f"dws.{n}" for n, _, _ in CORPUS)]:
            for report in verify_history(cat, name):
                if not report.ok:
                    failures.append(f"{name}@{report.version}: {[str(d) for d in report.differences[:3]]}")
        assert not failures, "\n".join(failures[:10])


def test_the_corpus_covers_sixty_views() -> None:
    assert len(CORPUS) + 1 >= 60
