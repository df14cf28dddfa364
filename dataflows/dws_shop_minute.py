"""dwd.orders_enriched -> dws.shop_gmv_minute (shop by updating minute window) + late-data table.

Run: ``python -m bytewax.run dataflows/dws_shop_minute.py:flow`` (recovery: ``-r DIR -s 5 -b 0``), or
``flowlake run dataflows/dws_shop_minute.py``. The catalog and warehouse come from ``FLOWLAKE_CATALOG`` /
``FLOWLAKE_WAREHOUSE``; ``FLOWLAKE_FLOW_STOP=head`` stops at the inputs' current head.
"""

from __future__ import annotations

from flowlake.demo.flows import FlowOptions, dws_shop_minute_flow

flow = dws_shop_minute_flow(FlowOptions.from_env())
