"""DuckDB as the test oracle: compute the expected table in batch SQL and compare it with a pipeline's.

>>> import pyarrow as pa
>>> orders = pa.table({"shop": ["a", "a", "b"], "amount": [10, 5, 7]})
>>> expected = duckdb_query("SELECT shop, sum(amount) AS gmv FROM orders GROUP BY shop", orders=orders)
>>> assert_matches_duckdb(pa.table({"shop": ["b", "a"], "gmv": [7, 15]}),
...                       "SELECT shop, sum(amount) AS gmv FROM orders GROUP BY shop",
...                       sort_by=["shop"], orders=orders)
>>> expected.sort_by("shop").to_pylist()  # DuckDB widens an int64 sum to a decimal
[{'shop': 'a', 'gmv': Decimal('15')}, {'shop': 'b', 'gmv': Decimal('7')}]
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from flowlake.testing.tables import assert_tables_equal


def duckdb_query(sql: str, **tables: pa.Table) -> pa.Table:
    """Run ``sql`` in a fresh in-memory DuckDB where each keyword names an Arrow table.

    Args:
        sql: One query; it refers to the tables by their keyword names.
        tables: The inputs, e.g. ``orders=lake_table.read()``.
    """
    import duckdb

    con = duckdb.connect()
    try:
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def assert_matches_duckdb(actual: pa.Table, sql: str, *, sort_by: Sequence[str], **tables: pa.Table) -> None:
    """Assert ``actual`` holds the rows ``sql`` computes over ``tables`` in DuckDB (in any order).

    Columns must match by name and order; values by equality after casting DuckDB's result to
    ``actual``'s schema (DuckDB widens sums, for example).
    """
    expected = duckdb_query(sql, **tables)
    if expected.column_names == actual.column_names:
        expected = expected.cast(actual.schema)
    assert_tables_equal(actual, expected, sort_by=sort_by)
