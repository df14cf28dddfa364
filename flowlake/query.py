"""SQL over lake tables with DuckDB: tables are addressed as ``namespace.table``."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

from flowlake.catalog.catalog import Catalog
from flowlake.errors import InvalidArgumentError

_TABLE_REF = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\b")


def run_sql(catalog: Catalog, query: str, *, version: int | None = None) -> pa.Table:
    """Run ``query`` with every ``namespace.table`` it names bound to that table's snapshot.

    Each table is registered in a DuckDB schema named after its namespace, so the SQL text is never
    rewritten; ``version`` reads every table at that version (time travel).
    """
    known = set(catalog.list_tables())
    con = duckdb.connect()
    try:
        for namespace, name in {m.groups() for m in _TABLE_REF.finditer(query)}:
            qualified = f"{namespace}.{name}"
            if qualified not in known:
                continue
            con.execute(f'create schema if not exists "{namespace}"')  # validated name
            dataset = catalog.load_table(qualified).dataset(version=version)
            con.register(f"__flowlake_{namespace}_{name}", dataset)
            con.execute(
                f'create view "{namespace}"."{name}" as select * from "__flowlake_{namespace}_{name}"'
            )
        try:
            relation = con.sql(query)
            return pa.table({}) if relation is None else relation.to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidArgumentError(f"SQL failed: {exc}") from exc
    finally:
        con.close()
