"""SQL over lake tables with DuckDB: tables are addressed as ``namespace.table``."""

from __future__ import annotations

import datetime as dt
import re

import duckdb
import pyarrow as pa

from flowlake.catalog.catalog import Catalog
from flowlake.errors import InvalidArgumentError, InvalidNameError, TableNotFoundError

_TABLE_REF = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\b")


def run_sql(catalog: Catalog, query: str, *, as_of: str | int | None = None) -> pa.Table:
    """Run ``query`` with every ``namespace.table`` it names bound to that table's snapshot.

    Each table is registered in a DuckDB schema named after its namespace, so the SQL text is never
    rewritten. ``as_of`` reads every table at a version (an integer) or at a time (ISO 8601).
    """
    version, moment = _parse_as_of(as_of)
    con = duckdb.connect()
    try:
        for namespace, name in sorted({m.groups() for m in _TABLE_REF.finditer(query)}):
            qualified = f"{namespace}.{name}"
            try:  # a missing grant raises here, so SQL is checked like every other read
                table = catalog.load_table(qualified)
            except (TableNotFoundError, InvalidNameError):
                continue  # not a lake table (a DuckDB name, a column reference, ...)
            con.execute(f'create schema if not exists "{namespace}"')  # validated name
            at = table.resolve_version(version, moment) if version is not None or moment is not None else None
            dataset = table.dataset(version=at)
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


def _parse_as_of(as_of: str | int | None) -> tuple[int | None, dt.datetime | None]:
    if as_of is None:
        return None, None
    if isinstance(as_of, int) or str(as_of).isdigit():
        return int(as_of), None
    try:
        return None, dt.datetime.fromisoformat(str(as_of))
    except ValueError:
        raise InvalidArgumentError(f"--as-of {as_of!r}: give a version number or an ISO time") from None
