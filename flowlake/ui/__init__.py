"""The faces over HTTP: the web console (``flowlake ui``) and, beside it, the PostgreSQL-wire endpoint.

:func:`console_app` builds the console (a Starlette app) over a catalog: an overview of the layers as
a lineage graph with each table's version, rows, freshness and consumer lag; a page per table with its
schema, buckets, commit timeline chart, lineage, changelog sample and time travel; a SQL page over the
read-only sandbox of ``flowlake sql``; dead letters. It signs users in with metastore bearer tokens
and runs every call as their principal, so the catalog checks their grants (see
:mod:`flowlake.ui.auth`). Pages are server-rendered HTML plus plain JavaScript; the chart library
(uPlot, MIT) ships as static files in the package, so nothing is fetched from the internet.
"""

from flowlake.ui.app import console_app

__all__ = ["console_app"]
