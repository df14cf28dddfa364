"""SQL over lake tables, kept for its callers: :func:`run_sql` is the sandboxed
:func:`flowlake.sql.sandbox.run_query` returning only the rows."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from flowlake.lake import Catalog
from flowlake.sql.sandbox import run_query


def run_sql(catalog: Catalog, query: str, *, as_of: str | int | dt.datetime | None = None) -> pa.Table:
    """Run one read-only SELECT over catalog snapshots (see :mod:`flowlake.sql.sandbox`)."""
    return run_query(catalog, query, as_of=as_of).table
