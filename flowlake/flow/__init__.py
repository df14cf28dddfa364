"""Dataflows on bytewax: lake source, exactly-once lake sink, retraction-correct operators.

This is the only package of flowlake that imports bytewax.

```python
import pyarrow as pa
from bytewax.dataflow import Dataflow

import flowlake as fl
from flowlake.flow import aggs, aggregate, lake_input, lake_output

totals_schema = pa.schema([("shop_id", pa.int32()), ("orders", pa.int64()), ("gmv", pa.decimal128(38, 2))])
fl.connect().create_table("dws.shop_totals", totals_schema, primary_key=["shop_id"], exist_ok=True)

flow = Dataflow("shop_totals")
orders = lake_input("orders_in", flow, "ods.orders")
spec = {"orders": aggs.count(), "gmv": aggs.sum("amount")}
totals = aggregate("by_shop", orders, by=["shop_id"], aggs=spec)
lake_output("totals_out", totals.changes, "dws.shop_totals")  # the table must exist (see above)
```
"""

from flowlake.flow import aggs
from flowlake.flow._relational import PairCondition
from flowlake.flow._topn import SortKey
from flowlake.flow.aggs import Agg, Window, days, minutes
from flowlake.flow.batch import ChangeBatch, RowChange, from_rows, rows
from flowlake.flow.lake import LakeSink, LakeSource
from flowlake.flow.operators import (
    AggregateOut,
    aggregate,
    dedup,
    filter_rows,
    join,
    lake_input,
    lake_output,
    lookup_join,
    map_rows,
    to_rows,
    top_n,
)
from flowlake.flow.verify import VerifyReport, verify_table

__all__ = [
    "Agg",
    "AggregateOut",
    "ChangeBatch",
    "LakeSink",
    "LakeSource",
    "PairCondition",
    "RowChange",
    "SortKey",
    "VerifyReport",
    "Window",
    "aggregate",
    "aggs",
    "days",
    "dedup",
    "filter_rows",
    "from_rows",
    "join",
    "lake_input",
    "lake_output",
    "lookup_join",
    "map_rows",
    "minutes",
    "rows",
    "to_rows",
    "top_n",
    "verify_table",
]
