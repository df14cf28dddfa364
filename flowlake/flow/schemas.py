"""What the flow operators output, for code that plans dataflows (the SQL views' planner).

A planner needs each operator's output columns before it builds the dataflow (to type the views'
tables and the next operator's input), and the changelog filter a planned ``WHERE`` uses. These are
the operators' own definitions, so a plan cannot drift from what runs.

>>> import pyarrow as pa
>>> from flowlake.flow import aggs
>>> orders = pa.schema([("shop_id", pa.int32()), ("amount", pa.float64())])
>>> aggregate_schema(orders, ["shop_id"], {"n": aggs.count(), "gmv": aggs.sum("amount")}).names
['shop_id', 'n', 'gmv']
>>> join_schema(orders, pa.schema([("shop_id", pa.int64()), ("city", pa.string())]), ["shop_id"]).names
['shop_id', 'amount', 'city']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa

from flowlake.flow._aggstate import AggregateState, late_schema
from flowlake.flow._relational import filter_changes, join_schema
from flowlake.flow.aggs import Agg, Window

__all__ = ["aggregate_schema", "filter_changes", "join_schema", "late_schema"]


def aggregate_schema(
    input_schema: pa.Schema, by: Sequence[str], aggs: Mapping[str, Agg], window: Window | None = None
) -> pa.Schema:
    """The columns :func:`~flowlake.flow.aggregate` outputs for this input: the group keys, the window
    column (if any), then one column per aggregate."""
    state = AggregateState(tuple(by), dict(aggs), window)
    state._init_schema(input_schema)
    return state.output_schema()
