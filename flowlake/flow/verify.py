"""Self-verification: recompute a dataflow's output in batch with DuckDB and diff it.

A table written by :class:`~flowlake.flow.lake.LakeSink` records in every commit the input versions
it covers (``sources``: ``{"table:dwd.orders_enriched": 12, ...}``). :func:`verify_table` reads the
output at a version, runs the table's defining SQL (property ``flowlake.verify_sql``) over each input
*at the version recorded in lineage*, and compares row by row on the primary key. Keys that late
data froze (property ``flowlake.verify_exclude_sql``) are reported apart, not as differences.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError
from flowlake.flow._joinside import no_nulls
from flowlake.lake import Catalog
from flowlake.names import TableName
from flowlake.table.table import LakeTable
from flowlake.table.writer import keys_distinct

VERIFY_SQL = "flowlake.verify_sql"
VERIFY_EXCLUDE_SQL = "flowlake.verify_exclude_sql"
_TABLE_REF = re.compile(r"\b([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\b")


@dataclass(frozen=True, slots=True)
class Difference:
    """One key whose row differs: ``expected`` (batch) vs ``actual`` (table); None means absent."""

    key: tuple[Any, ...]
    expected: dict[str, Any] | None
    actual: dict[str, Any] | None

    def __str__(self) -> str:
        if self.actual is None:
            return f"missing {self.key}: expected {self.expected}"
        if self.expected is None:
            return f"extra {self.key}: {self.actual}"
        cols = [c for c in self.expected if not _same(self.expected[c], self.actual.get(c))]
        detail = ", ".join(f"{c}: expected {self.expected[c]!r} got {self.actual.get(c)!r}" for c in cols)
        return f"differs {self.key}: {detail}"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_table` compared and found.

    >>> report = VerifyReport("dws.t", version=4, inputs={"ods.orders": 9}, rows=2)
    >>> report.ok, report.differences
    (True, [])"""

    table: str
    version: int
    inputs: Mapping[str, int]
    rows: int
    differences: list[Difference] = field(default_factory=list)
    excluded: int = 0

    @property
    def ok(self) -> bool:
        """Whether the table equals its batch recompute."""
        return not self.differences


def lineage(table: LakeTable, version: int | None = None) -> tuple[int, dict[str, int]]:
    """``(commit version, {input table: version})`` from the newest commit at or before ``version``.

    Commits without lineage (compaction, schema changes, or a write by hand) change nothing that
    lineage describes, so a version is verified against the inputs of the newest flow commit before it.
    """
    head = table.refresh().version if version is None else version
    for commit in reversed(table.history()):
        if commit.version > head:
            continue
        sources = commit.summary.get("sources")
        if sources:
            found = {k.removeprefix("table:"): int(v) for k, v in sources.items() if k.startswith("table:")}
            return commit.version, found
    return 0, {}


def as_of(table: LakeTable, positions: Mapping[str, int]) -> int | None:
    """The newest version of a flow-written table whose lineage is at or before ``positions``.

    Views of one SQL file run in one dataflow, so a view that reads another records the lake
    tables both read, not the other view's version. Its consistent input is the other view's table
    as of the same input versions: the newest commit whose lineage does not pass ``positions`` on
    any input (an input ``positions`` lacks had not been read: version 0); None if none qualifies.
    """
    best: int | None = None
    for commit in table.history():
        sources = commit.summary.get("sources")
        if not sources:
            continue
        found = {k.removeprefix("table:"): int(v) for k, v in sources.items() if k.startswith("table:")}
        if found and all(v <= positions.get(k, 0) for k, v in found.items()):
            best = commit.version
    return best


def table_property(catalog: Catalog, name: str, key: str) -> str | None:
    """A table property (None if unset)."""
    qualified = TableName.parse(name)
    record = catalog.store.get_table(qualified.namespace, qualified.table)
    return record.properties.get(key)


def run_at(catalog: Catalog, sql: str, versions: Mapping[str, int], *, default_head: bool) -> pa.Table:
    """Run ``sql`` with each ``namespace.table`` it names at ``versions``.

    A table not in ``versions`` is read at its head with ``default_head``, else :func:`as_of` those
    versions (a view of the same dataflow), else at version 0.
    """
    import duckdb  # a flow worker that never verifies does not load DuckDB (~10 MB of its RSS)

    known = set(catalog.list_tables())
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        for namespace, name in sorted({m.groups() for m in _TABLE_REF.finditer(sql)}):
            qualified = f"{namespace}.{name}"
            if qualified not in known:
                continue
            t = catalog.load_table(qualified)
            version = versions.get(qualified)
            if version is None:
                version = t.version if default_head else (as_of(t, versions) or 0)
            con.execute(f'create schema if not exists "{namespace}"')
            con.register(f"__v_{namespace}_{name}", t.dataset(version=version))
            con.execute(f'create view "{namespace}"."{name}" as select * from "__v_{namespace}_{name}"')
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise InvalidArgumentError(f"verification SQL failed: {exc}") from exc
    finally:
        con.close()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _keyed(table: pa.Table, key: Sequence[str]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by key; rows with a NULL key are left out (a table cannot hold them)."""
    keyed = ((tuple(row[k] for k in key), row) for row in table.to_pylist())
    return {k: row for k, row in keyed if all(v is not None for v in k)}


def _conform(result: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    missing = [c for c in schema.names if c not in result.column_names]
    if missing:
        raise InvalidArgumentError(f"verification SQL of {name!r} does not produce columns {missing}")
    columns = [result.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, names=schema.names)


def verify_table(
    catalog: Catalog, name: str, *, version: int | None = None, sql: str | None = None, limit: int = 1000
) -> VerifyReport:
    """Compare a table (at ``version``, default head) with its batch recompute at its input versions.

    Raises:
        InvalidArgumentError: The table has no defining SQL or no lineage yet.

    A table written with lineage (``sources={"table:<input>": version}``) is recomputed in DuckDB
    from its input at that version:

    >>> import flowlake as fl
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://verify-doc")
    >>> orders = cat.create_table("ods.orders", pa.schema([("id", pa.int64()), ("shop", pa.string())]),
    ...                           primary_key=["id"])
    >>> v = orders.upsert(pa.table({"id": [1, 2, 3], "shop": ["a", "a", "b"]})).version
    >>> totals = cat.create_table("dws.totals", pa.schema([("shop", pa.string()), ("n", pa.int64())]),
    ...                           primary_key=["shop"])
    >>> _ = totals.upsert(pa.table({"shop": ["a", "b"], "n": [2, 0]}), sources={"table:ods.orders": v})
    >>> sql = "SELECT shop, count(*) AS n FROM ods.orders GROUP BY shop"
    >>> report = verify_table(cat, "dws.totals", sql=sql)
    >>> report.ok, [str(d) for d in report.differences]
    (False, ["differs ('b',): n: expected 1 got 0"])
    """
    table = catalog.load_table(name)
    definition = sql or table_property(catalog, name, VERIFY_SQL)
    if not definition:
        raise InvalidArgumentError(
            f"table {name!r} has no {VERIFY_SQL!r} property; pass the defining SQL (flowlake verify --sql)"
        )
    at = table.refresh().version if version is None else version
    _, inputs = lineage(table, at)
    if not inputs:
        raise InvalidArgumentError(f"table {name!r} has no lineage yet: run its dataflow first")
    actual = table.read(version=at)
    expected = _conform(run_at(catalog, definition, inputs, default_head=False), actual.schema, name)
    key = list(table.primary_key)
    excluded: set[tuple[Any, ...]] = set()
    exclude_sql = table_property(catalog, name, VERIFY_EXCLUDE_SQL)
    if exclude_sql:
        frozen = run_at(catalog, exclude_sql, {}, default_head=True)
        frozen = _conform(frozen, pa.schema([actual.schema.field(k) for k in key]), name)
        excluded = set(_keyed(frozen, key))
    differences, excluded_count = compare(expected, actual, key, excluded, limit)
    return VerifyReport(
        table=name, version=at, inputs=inputs, rows=actual.num_rows, differences=differences,
        excluded=excluded_count,
    )  # fmt: skip


def compare(
    expected: pa.Table,
    actual: pa.Table,
    key: Sequence[str],
    excluded: AbstractSet[tuple[Any, ...]] = frozenset(),
    limit: int = 1000,
) -> tuple[list[Difference], int]:
    """The keys whose rows differ (up to ``limit``, in key order by ``repr``), leaving ``excluded``
    keys out, and how many excluded keys either side holds. Rows with a NULL key are left out; of rows
    sharing a key the last counts.

    >>> t = pa.table({"k": [1, 2], "v": [1.0, 2.0]})
    >>> for d in compare(t, pa.table({"k": [1, 3], "v": [1.0 + 1e-12, 3.0]}), ["k"])[0]:
    ...     print(d)
    missing (2,): expected {'k': 2, 'v': 2.0}
    extra (3,): {'k': 3, 'v': 3.0}
    """
    want, got = _candidates(expected, actual, key)
    differences: list[Difference] = []
    for k in sorted(set(want) | set(got), key=repr):
        if k in excluded:
            continue
        w, g = want.get(k), got.get(k)
        if w is None or g is None or any(not _same(w[c], g.get(c)) for c in w):
            differences.append(Difference(k, w, g))
            if len(differences) >= limit:
                break
    return differences, len(excluded & _keys_present(expected, actual, key, excluded))


def _candidates(
    expected: pa.Table, actual: pa.Table, key: Sequence[str]
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], dict[tuple[Any, ...], dict[str, Any]]]:
    """The rows by key of both sides that may differ: every row when the sides cannot be lined up
    in Arrow, else only the keys found on one side or whose values Arrow finds unequal (so a table of
    millions of rows is compared without a Python object per row; the rows returned are compared
    value by value as before)."""
    expected, actual = _without_null_keys(expected, key), _without_null_keys(actual, key)
    plain = all(not pa.types.is_nested(f.type) for f in actual.schema)
    if not plain or not (keys_distinct(expected, key) and keys_distinct(actual, key)):
        return _keyed(expected, key), _keyed(actual, key)  # duplicate keys: the last row of each counts
    values = [c for c in actual.column_names if c not in key]
    mark = "__flowlake_side"
    left = expected.append_column(mark + "_w", pa.array(np.arange(expected.num_rows)))
    right = actual.append_column(mark + "_g", pa.array(np.arange(actual.num_rows)))
    right = right.rename_columns(
        [c if c in key or c.startswith(mark) else c + "__g" for c in right.column_names]
    )
    try:
        joined = left.join(right, keys=list(key), join_type="full outer")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # a type Acero cannot join
        return _keyed(expected, key), _keyed(actual, key)
    w_row, g_row = joined.column(mark + "_w"), joined.column(mark + "_g")
    suspect = np.asarray(pc.or_(pc.is_null(w_row), pc.is_null(g_row)).to_numpy(zero_copy_only=False), bool)
    for c in values:
        suspect |= ~_same_values(joined.column(c), joined.column(c + "__g"))
    rows_w = pc.drop_null(pc.filter(w_row, pa.array(suspect))).to_numpy()
    rows_g = pc.drop_null(pc.filter(g_row, pa.array(suspect))).to_numpy()
    return _keyed(expected.take(pa.array(rows_w)), key), _keyed(actual.take(pa.array(rows_g)), key)


def _same_values(a: pa.ChunkedArray, b: pa.ChunkedArray) -> np.ndarray:
    """Per row, whether :func:`_same` holds: NULL with NULL, floats within ``math.isclose``'s default
    tolerance as used there (NaN never), other values equal."""
    if pa.types.is_floating(a.type):
        x = np.asarray(a.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
        y = np.asarray(b.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), np.float64)
        with np.errstate(invalid="ignore"):
            close = np.abs(x - y) <= np.maximum(1e-9 * np.maximum(np.abs(x), np.abs(y)), 1e-9)
    else:
        close = np.asarray(pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False), bool)
    both_null = np.asarray(pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False), bool)
    return np.asarray(close | both_null, bool)


def _without_null_keys(table: pa.Table, key: Sequence[str]) -> pa.Table:
    if not any(table.column(k).null_count for k in key):
        return table
    return table.filter(pa.array(no_nulls(table.select(list(key)))))


def _keys_present(
    expected: pa.Table, actual: pa.Table, key: Sequence[str], keys: AbstractSet[tuple[Any, ...]]
) -> set[tuple[Any, ...]]:
    """Which of ``keys`` (few: the frozen ones) either side holds."""
    if not keys:
        return set()
    wanted = pa.Table.from_pylist([dict(zip(key, k, strict=True)) for k in keys], schema=pa.schema(
        [actual.schema.field(k) for k in key]))  # fmt: skip
    found: set[tuple[Any, ...]] = set()
    for side in (expected, actual):
        hits = wanted.join(side.select(list(key)), keys=list(key), join_type="inner")
        found |= {tuple(r[k] for k in key) for r in hits.to_pylist()}
    return found


def verify_history(catalog: Catalog, name: str) -> list[VerifyReport]:
    """Verify every version of ``name`` that a commit with lineage produced."""
    table = catalog.load_table(name)
    return [
        verify_table(catalog, name, version=c.version) for c in table.history() if c.summary.get("sources")
    ]
