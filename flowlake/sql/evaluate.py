"""DuckDB as the expression engine of SQL views: vectorized, sandboxed, and the same semantics as verify.

A view's scalar expressions (projections, filters, group keys, aggregate arguments) run as one DuckDB
query per changelog batch over the batch's Arrow table, so ``CASE``, ``LIKE``, ``date_trunc``, NULL
semantics and casts behave exactly as in the DuckDB recompute that verifies the view. Connections are
per thread (bytewax workers are threads), in memory, with external access disabled and the
configuration locked: user SQL cannot reach files, extensions or settings.

>>> import pyarrow as pa
>>> calc = BatchQuery('SELECT "a" * 2 AS "twice", "_kind" FROM batch')
>>> calc(pa.table({"a": [1, 2], "_kind": pa.array([0, 0], pa.int8())})).column("twice").to_pylist()
[2, 4]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import duckdb
import pyarrow as pa

from flowlake.errors import SqlError
from flowlake.sql.sandbox import SANDBOX_SETTINGS

BATCH: Final = "batch"
"""The name a batch has inside a :class:`BatchQuery`."""

_local = threading.local()


def sandboxed_connection() -> Any:
    """A new in-memory DuckDB connection in UTC that cannot touch files, extensions or settings.

    The settings are :data:`flowlake.sql.sandbox.SANDBOX_SETTINGS` (``lock_configuration`` last),
    applied after the time zone: date functions on ``TIMESTAMPTZ`` then agree with the UTC windows of
    the aggregate operator on every machine.
    """
    con = duckdb.connect(config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    for name, value in SANDBOX_SETTINGS.items():
        con.execute(f"SET {name} = {str(value).lower()}")
    return con


def _thread_connection() -> Any:
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = sandboxed_connection()
    return con


def constant_value(sql: str) -> Any:
    """The value DuckDB gives the constant expression ``sql`` (``SELECT sql``).

    Raises:
        SqlError: If DuckDB cannot evaluate it.
    """
    try:
        result = _thread_connection().sql(f"SELECT {sql} AS v").to_arrow_table()
    except duckdb.Error as exc:
        raise SqlError(f"evaluating the constant {sql!r} failed: {exc}") from exc
    return result.column(0)[0].as_py()


def quote(name: str) -> str:
    """A DuckDB quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """DuckDB's Arrow types as flowlake stores them: UTC timestamps named ``UTC``."""
    fields = []
    for field in schema:
        dtype = field.type
        if pa.types.is_timestamp(dtype) and dtype.tz is not None:
            dtype = pa.timestamp(dtype.unit, tz="UTC")
        fields.append(field.with_type(dtype))
    return pa.schema(fields)


class BatchQuery:
    """One SQL query over a changelog batch (named ``batch``), returning an Arrow table.

    Rows keep their order (one thread, insertion order preserved), so kinds stay aligned.
    """

    def __init__(self, sql: str) -> None:
        self.sql = sql

    def __call__(self, data: pa.Table) -> pa.Table:
        con = _thread_connection()
        con.register(BATCH, data)
        try:
            result = con.sql(self.sql).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(f"evaluating {self.sql!r} failed: {exc}") from exc
        finally:
            con.unregister(BATCH)
        schema = normalize_schema(result.schema)
        return result if schema.equals(result.schema) else result.cast(schema)

    def schema(self, input_schema: pa.Schema) -> pa.Schema:
        """The result schema for inputs of ``input_schema`` (runs the query on no rows)."""
        return self(input_schema.empty_table()).schema


def query_schema(sql: str, inputs: Mapping[str, pa.Schema]) -> pa.Schema:
    """The result schema of ``sql`` over empty tables named ``namespace.table`` with these schemas.

    Also checks that DuckDB accepts the query: errors name the problem as DuckDB states it.
    """
    con = sandboxed_connection()
    try:
        for i, (name, schema) in enumerate(sorted(inputs.items())):
            namespace, _, table = name.rpartition(".")
            con.register(f"__input_{i}", schema.empty_table())
            if namespace:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(namespace)}")
            target = f"{quote(namespace)}.{quote(table)}" if namespace else quote(table)
            con.execute(f"CREATE VIEW {target} AS SELECT * FROM __input_{i}")
        try:
            result = con.sql(f"SELECT * FROM ({sql}) AS q LIMIT 0").to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(f"DuckDB cannot run the view's SELECT: {exc}") from exc
        return normalize_schema(result.schema)
    finally:
        con.close()


def common_schema(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """The schema DuckDB gives ``UNION ALL`` of relations with these schemas (names of the first)."""
    con = sandboxed_connection()
    try:
        parts = []
        for i, schema in enumerate(schemas):
            con.register(f"__part_{i}", schema.empty_table())
            parts.append(f"SELECT * FROM __part_{i}")
        try:
            result = con.sql(" UNION ALL ".join(parts)).to_arrow_table()
        except duckdb.Error as exc:
            raise SqlError(f"the sides of UNION ALL do not fit together: {exc}") from exc
        return normalize_schema(result.schema)
    finally:
        con.close()
