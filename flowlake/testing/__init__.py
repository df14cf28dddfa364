"""What a user needs to test a pipeline: build changelogs, run them through an in-memory lake and
compare the result with an oracle.

>>> import pyarrow as pa
>>> from flowlake.testing import changelog, delete, insert, memory_lake, assert_matches_duckdb
>>> schema = pa.schema([("id", pa.int64()), ("shop", pa.string()), ("amount", pa.int64())])
>>> rows = [{"id": 1, "shop": "a", "amount": 10}, {"id": 2, "shop": "a", "amount": 5}]
>>> t = memory_lake().create_table("ods.orders", schema, primary_key=["id"], buckets=2)
>>> _ = t.apply(changelog(schema, insert(*rows)))
>>> _ = t.apply(changelog(schema, delete(rows[1])))
>>> assert_matches_duckdb(t.read(), "SELECT * FROM source WHERE id <> 2", sort_by=["id"],
...                       source=pa.Table.from_pylist(rows, schema=schema))

* :mod:`~flowlake.testing.changelogs`: ``changelog``, ``insert``/``update``/``delete`` and
  ``memory_lake`` (an in-memory catalog and warehouse, e.g. behind a pytest fixture).
* :mod:`~flowlake.testing.tables`: ``assert_tables_equal``, ``rows_by_key`` and ``apply_changelog``
  (a strict replay that fails on any wrong retraction).
* :mod:`~flowlake.testing.oracle`: ``duckdb_query`` and ``assert_matches_duckdb``.
* :mod:`~flowlake.testing.load`: ``cpu_hogs``, busy cores beside a timing-sensitive test.
* :mod:`~flowlake.testing.services`: ``free_port`` and ``start_moto_server`` (S3 on localhost).

No test framework is imported: these work under pytest, unittest or a plain script. flowlake's own
chaos and fuzz harnesses are not shipped (they live in the repository's ``harness/``).
"""

from flowlake.testing.changelogs import changelog, delete, insert, memory_lake, update
from flowlake.testing.load import cpu_hogs
from flowlake.testing.oracle import assert_matches_duckdb, duckdb_query
from flowlake.testing.services import free_port, start_moto_server
from flowlake.testing.tables import apply_changelog, assert_tables_equal, rows_by_key

__all__ = [
    "apply_changelog",
    "assert_matches_duckdb",
    "assert_tables_equal",
    "changelog",
    "cpu_hogs",
    "delete",
    "duckdb_query",
    "free_port",
    "insert",
    "memory_lake",
    "rows_by_key",
    "start_moto_server",
    "update",
]
