"""ods.orders join ods.shops -> dwd.orders_enriched (regular left join with retractions).

Run: ``python -m bytewax.run dataflows/dwd_orders.py:flow`` (recovery: ``-r DIR -s 5 -b 0``), or
``flowlake run dataflows/dwd_orders.py``. The catalog and warehouse come from ``FLOWLAKE_CATALOG`` /
``FLOWLAKE_WAREHOUSE``; ``FLOWLAKE_FLOW_STOP=head`` stops at the inputs' current head.
"""

from __future__ import annotations

from flowlake.demo.flows import FlowOptions, dwd_orders_flow

flow = dwd_orders_flow(FlowOptions.from_env())
