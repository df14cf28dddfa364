"""dws.shop_gmv_minute join ods.shops -> dws.city_day: an aggregate fed by an aggregate (chaining).

Run: ``python -m bytewax.run dataflows/dws_city_day.py:flow`` (recovery: ``-r DIR -s 5 -b 0``), or
``flowlake run dataflows/dws_city_day.py``. The catalog and warehouse come from ``FLOWLAKE_CATALOG`` /
``FLOWLAKE_WAREHOUSE``; ``FLOWLAKE_FLOW_STOP=head`` stops at the inputs' current head.
"""

from __future__ import annotations

from flowlake.demo.flows import FlowOptions, dws_city_day_flow

flow = dws_city_day_flow(FlowOptions.from_env())
