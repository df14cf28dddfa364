"""A small lake for the console tests: ODS → DWD with lineage, a dead letter, and two principals."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

import flowlake as fl

ORDERS = pa.schema([("order_id", pa.int64()), ("shop", pa.string()), ("amount", pa.decimal128(12, 2))])
ENRICHED = pa.schema([("order_id", pa.int64()), ("city", pa.string()), ("amount", pa.decimal128(12, 2))])
DEAD = pa.schema(
    [
        ("source", pa.string()),
        ("source_table", pa.string()),
        ("position", pa.string()),
        ("error", pa.string()),
        ("raw", pa.binary()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass
class Lake:
    """The catalog as its admin, the URLs to reopen it, and bob's token (bob may read dwd only)."""

    admin: fl.Catalog
    catalog_url: str
    warehouse: str
    bob_token: str


def build_lake(tmp_path: Path) -> Lake:
    """ods.orders (3 versions, from a binlog), dwd.orders_enriched (from ods.orders), a dead letter."""
    catalog_url, warehouse = f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "wh").as_uri()
    cat = fl.connect(catalog=catalog_url, warehouse=warehouse, principal="alice")
    cat.claim_admin()
    orders = cat.create_table("ods.orders", ORDERS, primary_key=["order_id"], buckets=2)
    rows = [{"order_id": i, "shop": f"s{i % 2}", "amount": Decimal(f"{i}.50")} for i in range(1, 6)]
    orders.upsert(pa.Table.from_pylist(rows, ORDERS), sources={"binlog:shop": {"file": "b.1", "pos": 4}})
    orders.upsert(
        pa.Table.from_pylist([{"order_id": 1, "shop": "s9", "amount": Decimal("99.00")}], ORDERS),
        sources={"binlog:shop": {"file": "b.1", "pos": 9}},
    )
    orders.delete(pa.table({"order_id": [5]}), sources={"binlog:shop": {"file": "b.1", "pos": 12}})
    enriched = cat.create_table("dwd.orders_enriched", ENRICHED, primary_key=["order_id"], buckets=1)
    enriched.upsert(
        pa.Table.from_pylist([{"order_id": 1, "city": "Oslo", "amount": Decimal("99.00")}], ENRICHED),
        sources={"table:ods.orders": orders.version},
    )
    dead = cat.create_table("ods._dead_letter", DEAD, primary_key=None, buckets=1)
    dead.append(
        pa.Table.from_pylist(
            [
                {
                    "source": "binlog:shop",
                    "source_table": "shop.orders",
                    "position": '{"pos": 7}',
                    "error": "cannot decode charset swe7",
                    "raw": b'{"bad": "\\xff<script>"}',
                    "ingested_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                }
            ],
            DEAD,
        )
    )
    bob_token = cat.create_principal("bob")
    cat.grant("read", "dwd", "bob")
    return Lake(cat, catalog_url, warehouse, bob_token)


SHOPS = pa.schema([("shop", pa.string()), ("city", pa.string())])
GMV = pa.schema([("shop", pa.string()), ("minute", pa.int64()), ("gmv", pa.decimal128(14, 2))])


def add_pipeline(lake: Lake) -> None:
    """Make the lake pipeline-shaped, like the demo: ods.shops joins into DWD, and a DWS table on top.

    bob may then read dws only (not the ODS and DWD tables it comes from).
    """
    cat = lake.admin
    shops = cat.create_table("ods.shops", SHOPS, primary_key=["shop"], buckets=1)
    shops.upsert(
        pa.table({"shop": ["s0", "s1", "s9"], "city": ["Oslo", "Rome", "Oslo"]}, SHOPS),
        sources={"binlog:shop": {"file": "b.1", "pos": 20}},
    )
    enriched = cat.load_table("dwd.orders_enriched")
    orders = cat.load_table("ods.orders")
    enriched.upsert(
        pa.Table.from_pylist([{"order_id": 2, "city": "Oslo", "amount": Decimal("2.50")}], ENRICHED),
        sources={"table:ods.orders": orders.version, "table:ods.shops": shops.version},
    )
    gmv = cat.create_table("dws.shop_gmv_minute", GMV, primary_key=["shop", "minute"], buckets=1)
    commit_gmv(cat, minute=0, gmv="101.50")
    assert gmv.refresh().version == 1
    cat.revoke("read", "dwd", "bob")
    cat.grant("read", "dws", "bob")


def commit_gmv(cat: fl.Catalog, *, minute: int, gmv: str) -> int:
    """One commit of the DWS table, as its flow makes one per epoch; returns the new version."""
    table = cat.load_table("dws.shop_gmv_minute")
    upstream = cat.load_table("dwd.orders_enriched").version
    rows = pa.Table.from_pylist([{"shop": "s9", "minute": minute, "gmv": Decimal(gmv)}], GMV)
    return table.upsert(rows, sources={"table:dwd.orders_enriched": upstream}).version
