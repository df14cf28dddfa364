"""Primary-key predicates of a SQL query that can be pushed into a table's snapshot dataset.

``flowlake sql`` registers each table as :meth:`LakeTable.dataset`. DuckDB pushes its ``WHERE`` into
the lazily read base files, but the buckets with log files are merged in memory when the dataset is
built, before DuckDB runs, and no scanner can skip buckets by key hash. So a query whose ``WHERE``
pins a table's primary key (``k = 5``, ``k IN (1, 2)``, on every key column) hands those predicates to
``dataset(filter=...)``, which then reads only the buckets the keys hash to.

Only what cannot change the answer is pushed: the table is named once in the whole query, as the
only source of the outermost ``SELECT`` (no join, set operation or other reference that would read
rows the ``WHERE`` does not filter), the predicates are top-level ``AND`` terms of that ``WHERE``,
and each literal has its column's kind (integers for integer columns, text for text columns), so
the row filter the dataset applies keeps exactly the rows DuckDB's ``WHERE`` would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from flowlake.table.stats import Predicate


def key_filters(sql: str, keys: Mapping[str, tuple[Sequence[str], pa.Schema]]) -> dict[str, list[Predicate]]:
    """``{table: [(key column, "in", values), ...]}`` for the tables whose key the query pins.

    ``keys`` maps each ``namespace.table`` the query reads (lower case) to its primary key and schema.

    >>> schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    >>> key_filters("select v from ods.t where id in (1, 2) and v > 'a'", {"ods.t": (["id"], schema)})
    {'ods.t': [('id', 'in', [1, 2])]}
    >>> key_filters("select * from ods.t a join ods.u b using (id) where id = 1",
    ...             {"ods.t": (["id"], schema), "ods.u": (["id"], schema)})
    {}
    """
    try:
        trees = [t for t in sqlglot.parse(sql, dialect="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError:
        return {}
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        return {}
    select = trees[0]
    refs = list(select.find_all(exp.Table))
    source = select.args.get("from_") or select.args.get("from")
    where = select.args.get("where")
    if len(refs) != 1 or select.args.get("joins") or source is None or where is None:
        return {}
    ref = refs[0]
    if not isinstance(source.this, exp.Table) or source.this is not ref:
        return {}
    name = f"{ref.db}.{ref.name}".lower()
    if name not in keys:
        return {}
    primary_key, schema = keys[name]
    qualifiers = {ref.name.lower(), (ref.alias_or_name or ref.name).lower()}
    pinned: dict[str, list[Any]] = {}
    for term in _conjuncts(where.this):
        found = _key_values(term, primary_key, schema, qualifiers)
        if found is not None:
            column, values = found
            kept = pinned.get(column)
            pinned[column] = values if kept is None else [v for v in kept if v in values]
    if any(k not in pinned for k in primary_key):
        return {}
    return {name: [(k, "in", pinned[k]) for k in primary_key]}


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*_conjuncts(node.left), *_conjuncts(node.right)]
    return [node]


def _key_values(
    term: exp.Expr, primary_key: Sequence[str], schema: pa.Schema, qualifiers: set[str]
) -> tuple[str, list[Any]] | None:
    if isinstance(term, exp.EQ):
        column, literals = term.left, [term.right]
        if not isinstance(column, exp.Column):
            column, literals = term.right, [term.left]
    elif isinstance(term, exp.In) and not term.args.get("query") and not term.args.get("unnest"):
        column, literals = term.this, list(term.expressions)
    else:
        return None
    if not isinstance(column, exp.Column) or (column.table and column.table.lower() not in qualifiers):
        return None
    name = next((k for k in primary_key if k.lower() == column.name.lower()), None)
    if name is None or not literals:
        return None
    dtype = schema.field(name).type
    values = [_literal(lit, dtype) for lit in literals]
    if any(v is None for v in values):
        return None
    return name, values


def _literal(node: exp.Expr, dtype: pa.DataType) -> Any:
    """The literal's value if it has the column's kind (an integer, or text), else None."""
    negative = isinstance(node, exp.Neg)
    if negative:
        node = node.this
    if not isinstance(node, exp.Literal):
        return None
    if pa.types.is_integer(dtype) and not node.is_string:
        try:
            value = -int(node.this) if negative else int(node.this)
        except ValueError:
            return None
        info = np.iinfo(dtype.to_pandas_dtype())
        return value if info.min <= value <= info.max else None  # out of range: DuckDB decides
    if (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)) and node.is_string and not negative:
        return str(node.this)
    return None
