"""SQL views: ``CREATE MATERIALIZED VIEW`` files compiled to incremental bytewax dataflows.

A view file holds DuckDB-dialect statements; views may read lake tables and earlier views::

    CREATE MATERIALIZED VIEW dws.shop_gmv AS
    SELECT shop_id, count(*) AS orders, sum(amount) AS gmv FROM ods.orders GROUP BY shop_id;

:func:`compile` adds the views to a bytewax ``Dataflow`` (``flowlake run views.sql`` does it for
you), :func:`explain` prints the operator plan. Each view's table is kept up to date from its inputs'
changelogs, exactly once, and its SELECT is what ``flowlake verify`` runs in DuckDB to check it.

:func:`run_query` (:mod:`flowlake.sql.sandbox`) runs one read-only SELECT over the catalog tables a
principal may read, sandboxed; ``flowlake sql`` is built on it.
"""

from flowlake.sql.sandbox import QueryResult, referenced_tables, run_query
from flowlake.sql.statements import ViewDefinition, parse_views
from flowlake.sql.views import CompiledView, compile_views, explain, plan_views

compile = compile_views

__all__ = [
    "CompiledView",
    "QueryResult",
    "ViewDefinition",
    "compile",
    "compile_views",
    "explain",
    "parse_views",
    "plan_views",
    "referenced_tables",
    "run_query",
]
