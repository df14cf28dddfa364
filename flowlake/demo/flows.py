"""The demo ``shop`` pipeline: ODS → DWD → DWS dataflows, their tables and their batch definitions.

* ``dwd_orders``: ``ods.orders`` ⋈ ``ods.shops`` (a regular left join with retractions, so a shop
  moving city revises its orders) → ``dwd.orders_enriched``.
* ``dws_shop_minute``: ``dwd.orders_enriched`` → ``dws.shop_gmv_minute`` (shop by updating minute
  window) and ``dws.shop_gmv_minute_late`` (changes beyond the horizon, with the reason).
* ``dws_city_day``: ``dws.shop_gmv_minute`` ⋈ ``ods.shops`` → ``dws.city_day``: a second aggregate
  fed by the first one's changelog, to show chaining.

Each output table stores the DuckDB SQL that recomputes it in batch (property
``flowlake.verify_sql``), which ``flowlake verify`` runs at the input versions from lineage.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow, Stream

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.demo.workload import ORDERS_SCHEMA
from flowlake.flow import aggs
from flowlake.flow.batch import ChangeBatch
from flowlake.flow.lake import CatalogSpec, open_catalog
from flowlake.flow.operators import aggregate, filter_rows, join, lake_input, lake_output, late_rows
from flowlake.flow.verify import VERIFY_EXCLUDE_SQL, VERIFY_SQL
from flowlake.lake import Catalog

SHOPS_SCHEMA = pa.schema(
    [
        pa.field("shop_id", pa.int32(), nullable=False),
        ("name", pa.string()),
        ("city", pa.string()),
        ("category", pa.string()),
    ]
)
"""``shop.shops``: the demo's shop dimension."""

DWD_ORDERS_SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        ("shop_id", pa.int32()),
        ("city", pa.string()),
        ("category", pa.string()),
        ("user_id", pa.int64()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
SHOP_MINUTE_SCHEMA = pa.schema(
    [
        pa.field("shop_id", pa.int32(), nullable=False),
        pa.field("minute", pa.timestamp("us", tz="UTC"), nullable=False),
        ("orders", pa.int64()),
        ("paid_gmv", pa.decimal128(38, 2)),
        ("avg_amount", pa.float64()),
        ("max_amount", pa.decimal128(12, 2)),
        ("distinct_users", pa.int64()),
    ]
)
SHOP_MINUTE_LATE_SCHEMA = pa.schema(
    [
        *[f for f in DWD_ORDERS_SCHEMA if f.name != "order_id"],
        pa.field("order_id", pa.int64()),
        ("change_kind", pa.int8()),
        pa.field("change_seq", pa.int64(), nullable=False),
        ("reason", pa.string()),
    ]
)
CITY_DAY_SCHEMA = pa.schema(
    [
        pa.field("city", pa.string(), nullable=False),
        pa.field("day", pa.timestamp("us", tz="UTC"), nullable=False),
        ("orders", pa.int64()),
        ("paid_gmv", pa.decimal128(38, 2)),
        ("max_amount", pa.decimal128(12, 2)),
        ("active_shops", pa.int64()),
    ]
)

DWD_SQL = """
select o.order_id, o.shop_id, s.city, s.category, o.user_id, o.status, o.amount, o.created_at
from ods.orders o left join ods.shops s on o.shop_id = s.shop_id
"""
SHOP_MINUTE_SQL = """
select shop_id, date_trunc('minute', created_at) as minute, count(*) as orders,
       coalesce(sum(amount) filter (where status = 'paid'), 0) as paid_gmv,
       avg(amount) as avg_amount, max(amount) as max_amount, count(distinct user_id) as distinct_users
from dwd.orders_enriched where shop_id is not null and created_at is not null
group by all
"""
SHOP_MINUTE_EXCLUDE_SQL = """
select distinct shop_id, date_trunc('minute', created_at) as minute from dws.shop_gmv_minute_late
"""
CITY_DAY_SQL = """
select s.city, date_trunc('day', m.minute) as day, sum(m.orders) as orders, sum(m.paid_gmv) as paid_gmv,
       max(m.max_amount) as max_amount, count(distinct m.shop_id) as active_shops
from dws.shop_gmv_minute m join ods.shops s on m.shop_id = s.shop_id
where s.city is not null
group by all
"""

TABLES: dict[str, tuple[pa.Schema, list[str], dict[str, str]]] = {
    "ods.orders": (ORDERS_SCHEMA, ["order_id"], {}),
    "ods.shops": (SHOPS_SCHEMA, ["shop_id"], {}),
    "dwd.orders_enriched": (DWD_ORDERS_SCHEMA, ["order_id"], {VERIFY_SQL: DWD_SQL}),
    "dws.shop_gmv_minute": (
        SHOP_MINUTE_SCHEMA,
        ["shop_id", "minute"],
        {VERIFY_SQL: SHOP_MINUTE_SQL, VERIFY_EXCLUDE_SQL: SHOP_MINUTE_EXCLUDE_SQL},
    ),
    "dws.shop_gmv_minute_late": (SHOP_MINUTE_LATE_SCHEMA, ["change_seq"], {}),
    "dws.city_day": (CITY_DAY_SCHEMA, ["city", "day"], {VERIFY_SQL: CITY_DAY_SQL}),
}


def ensure_tables(catalog: Catalog, *, buckets: int = 4) -> None:
    """Create the shop pipeline's tables that do not exist yet."""
    for name, (schema, key, properties) in TABLES.items():
        catalog.create_table(
            name, schema, primary_key=key, buckets=buckets, properties=properties, exist_ok=True
        )


@dataclass(frozen=True)
class FlowOptions:
    """How a shop dataflow runs: where, until when, how finely it reads, how late data may be."""

    catalog: CatalogSpec = None
    stop: Literal["head"] | int | None = None
    max_versions: int = 64
    max_read_rows: int = 1_000_000
    partitions: int = 4
    horizon: str = "2h"
    poll_interval: float = 0.5
    flow_ids: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, catalog: CatalogSpec = None) -> FlowOptions:
        """Options from the environment.

        ``FLOWLAKE_FLOW_STOP`` (``head`` or a version), ``FLOWLAKE_FLOW_MAX_VERSIONS``,
        ``FLOWLAKE_FLOW_MAX_READ_ROWS``, ``FLOWLAKE_HORIZON`` and ``FLOWLAKE_FLOW_POLL`` (seconds).
        """
        if os.environ.get("FLOWLAKE_LOG"):
            logging.basicConfig(level=os.environ["FLOWLAKE_LOG"].upper(), format="%(asctime)s %(message)s")
        stop = os.environ.get("FLOWLAKE_FLOW_STOP") or None
        return cls(
            catalog=catalog,
            stop="head" if stop == "head" else (int(stop) if stop else None),
            max_versions=int(os.environ.get("FLOWLAKE_FLOW_MAX_VERSIONS", "64")),
            max_read_rows=int(os.environ.get("FLOWLAKE_FLOW_MAX_READ_ROWS", "1000000")),
            horizon=os.environ.get("FLOWLAKE_HORIZON", "2h"),
            poll_interval=float(os.environ.get("FLOWLAKE_FLOW_POLL", "0.5")),
        )


def _input(options: FlowOptions, step: str, flow: Dataflow, table: str) -> Stream[ChangeBatch]:
    return lake_input(
        step, flow, table, catalog=options.catalog, stop=options.stop, max_versions=options.max_versions,
        poll_interval=options.poll_interval, max_read_rows=options.max_read_rows,
    )  # fmt: skip


def dwd_orders_flow(options: FlowOptions | None = None) -> Dataflow:
    """``ods.orders`` ⋈ ``ods.shops`` → ``dwd.orders_enriched``."""
    options = options or FlowOptions.from_env()
    ensure_tables(open_catalog(options.catalog))
    flow = Dataflow(options.flow_ids.get("dwd_orders", "dwd_orders"))
    orders = _input(options, "orders_in", flow, "ods.orders")
    shops = _input(options, "shops_in", flow, "ods.shops")
    enriched = join(
        "enrich_with_shop", orders, shops, on=["shop_id"], how="left",
        left_schema=ORDERS_SCHEMA, right_schema=SHOPS_SCHEMA, partitions=options.partitions,
    )  # fmt: skip
    lake_output("orders_enriched_out", enriched, "dwd.orders_enriched", catalog=options.catalog)
    return flow


def _valid(column: str) -> aggs.Condition:
    def mask(table: pa.Table) -> np.ndarray:
        return np.asarray(pc.is_valid(table.column(column)).to_numpy(zero_copy_only=False), dtype=bool)

    return mask


SHOP_MINUTE_AGGS: Final = {
    "orders": aggs.count(),
    "paid_gmv": aggs.sum("amount", where=("status", "==", "paid"), default=0),
    "avg_amount": aggs.avg("amount"),
    "max_amount": aggs.max("amount"),
    "distinct_users": aggs.count_distinct("user_id"),
}
"""The aggregates of ``dws.shop_gmv_minute`` per shop and minute (benchmarks/aggregate.py measures them)."""


def dws_shop_minute_flow(options: FlowOptions | None = None) -> Dataflow:
    """``dwd.orders_enriched`` → ``dws.shop_gmv_minute`` (+ the late-data table)."""
    options = options or FlowOptions.from_env()
    ensure_tables(open_catalog(options.catalog))
    flow = Dataflow(options.flow_ids.get("dws_shop_minute", "dws_shop_minute"))
    orders = _input(options, "orders_enriched_in", flow, "dwd.orders_enriched")
    orders = filter_rows("with_shop", orders, _valid("shop_id"))
    result = aggregate(
        "shop_minute",
        orders,
        by=["shop_id"],
        aggs=SHOP_MINUTE_AGGS,
        window=aggs.minutes(1, on="created_at", horizon=options.horizon),
        partitions=options.partitions,
    )
    lake_output("shop_minute_out", result.changes, "dws.shop_gmv_minute", catalog=options.catalog)
    late = op.map("late_rows", result.late, late_rows)
    lake_output("late_out", late, "dws.shop_gmv_minute_late", catalog=options.catalog)
    return flow


def dws_city_day_flow(options: FlowOptions | None = None) -> Dataflow:
    """``dws.shop_gmv_minute`` ⋈ ``ods.shops`` → ``dws.city_day`` (an aggregate of an aggregate)."""
    options = options or FlowOptions.from_env()
    ensure_tables(open_catalog(options.catalog))
    flow = Dataflow(options.flow_ids.get("dws_city_day", "dws_city_day"))
    minutes = _input(options, "shop_minute_in", flow, "dws.shop_gmv_minute")
    shops = _input(options, "shops_in", flow, "ods.shops")
    with_city = join(
        "with_city", minutes, shops, on=["shop_id"], how="inner",
        left_schema=SHOP_MINUTE_SCHEMA, right_schema=SHOPS_SCHEMA, partitions=options.partitions,
    )  # fmt: skip
    with_city = filter_rows("with_city_known", with_city, _valid("city"))
    result = aggregate(
        "city_day",
        with_city,
        by=["city"],
        aggs={
            "orders": aggs.sum("orders"),
            "paid_gmv": aggs.sum("paid_gmv"),
            "max_amount": aggs.max("max_amount"),
            "active_shops": aggs.count_distinct("shop_id"),
        },
        window=aggs.days(1, on="minute"),
        partitions=options.partitions,
    )
    lake_output("city_day_out", result.changes, "dws.city_day", catalog=options.catalog)
    return flow


CITIES = np.array(["Berlin", "Lisbon", "Osaka", "Lima", "Accra", "Oslo", "Pune", "Quito"])
CATEGORIES = np.array(["food", "books", "toys", "tools", "garden"])


def shops_table(shops: int, *, seed: int = 11) -> pa.Table:
    """``shops`` seeded shop rows (ids 0..shops-1)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(shops, dtype=np.int32)
    return pa.table(
        {
            "shop_id": pa.array(ids, pa.int32()),
            "name": pa.array([f"shop {i}" for i in ids.tolist()]),
            "city": pa.array(CITIES[rng.integers(0, len(CITIES), shops)]),
            "category": pa.array(CATEGORIES[rng.integers(0, len(CATEGORIES), shops)]),
        },
        schema=SHOPS_SCHEMA,
    )


def as_changelog(rows: pa.Table, kind: RowKind = RowKind.INSERT) -> pa.Table:
    """Rows as a changelog of one kind."""
    return rows.append_column(KIND_COLUMN, pa.array(np.full(rows.num_rows, int(kind), np.int8)))


def run_to_head(catalog: Catalog, recovery: Path | None = None, *, horizon: str = "2h") -> None:
    """Run the three shop flows in this process, each up to its inputs' current head.

    With ``recovery`` (a folder), each flow keeps bytewax recovery state in a sub-folder, so the next
    call resumes where this one ended instead of replaying the inputs' history.
    """
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import run_main

    options = FlowOptions(catalog=catalog, stop="head", horizon=horizon)
    for build in (dwd_orders_flow, dws_shop_minute_flow, dws_city_day_flow):
        config = None
        if recovery is not None:
            folder = recovery / build.__name__
            if not folder.exists():
                folder.mkdir(parents=True)
                init_db_dir(folder, 1)  # type: ignore[no-untyped-call]
            config = RecoveryConfig(str(folder))  # type: ignore[no-untyped-call]
        run_main(build(options), epoch_interval=dt.timedelta(0), recovery_config=config)  # type: ignore[no-untyped-call]
