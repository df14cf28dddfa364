"""``WHERE`` terms of a SQL query that can be pushed into a table's snapshot dataset.

``flowlake sql`` registers each table as :meth:`LakeTable.dataset`. DuckDB pushes its ``WHERE`` into
the lazily read base files, but the buckets with log files are merged in memory when the dataset is
built, before DuckDB runs, and no scanner can skip buckets by key hash. So the simple terms of a
query's ``WHERE`` go to ``dataset(filter=...)`` as well: one that pins the primary key (``k = 5``,
``k IN (1, 2)``, on every key column) makes it read only the buckets the keys hash to, and the others
skip files and row groups by their statistics in the buckets merged in memory too.

Only what cannot change the answer is pushed: the table is named once in the whole query, as the
only source of the outermost ``SELECT`` (no join, set operation or other reference that would read
rows the ``WHERE`` does not filter), the predicates are top-level ``AND`` terms of that ``WHERE``,
and each literal has its column's kind (integers for integer columns, text for text columns), so
the row filter the dataset applies keeps exactly the rows DuckDB's ``WHERE`` would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from flowlake.table.stats import Predicate


def pushed_filters(sql: str, schemas: Mapping[str, pa.Schema]) -> dict[str, list[Predicate]]:
    """``{table: [(column, op, value), ...]}``: the ``WHERE`` terms that can go to a table's dataset.

    ``schemas`` maps each ``namespace.table`` the query reads (lower case) to its schema. A term is
    pushed when it is ``column = literal`` or ``column IN (literals)`` with literals of the column's
    kind (integers for integer columns, text for text columns), or ``<``, ``<=``, ``>``, ``>=`` between
    an integer column and an integer literal: the comparisons on which DuckDB and Arrow agree exactly.

    >>> schema = pa.schema([("id", pa.int64()), ("v", pa.string())])
    >>> pushed_filters("select v from ods.t where id in (1, 2) and v > 'a' and 3 <= id", {"ods.t": schema})
    {'ods.t': [('id', 'in', [1, 2]), ('id', '>=', 3)]}
    >>> pushed_filters("select * from ods.t a join ods.u b using (id) where id = 1",
    ...                {"ods.t": schema, "ods.u": schema})
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
    if name not in schemas:
        return {}
    qualifiers = {ref.name.lower(), (ref.alias_or_name or ref.name).lower()}
    found = [_predicate(term, schemas[name], qualifiers) for term in _conjuncts(where.this)]
    predicates = [p for p in found if p is not None]
    return {name: predicates} if predicates else {}


def _conjuncts(node: exp.Expr) -> list[exp.Expr]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        return [*_conjuncts(node.left), *_conjuncts(node.right)]
    return [node]


_FLIPPED = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_COMPARISONS: dict[type[exp.Expr], str] = {
    exp.EQ: "=",
    exp.LT: "<",
    exp.LTE: "<=",
    exp.GT: ">",
    exp.GTE: ">=",
}


def _predicate(term: exp.Expr, schema: pa.Schema, qualifiers: set[str]) -> Predicate | None:
    op = _COMPARISONS.get(type(term))
    if op is not None:
        column, literals = term.args.get("this"), [term.args.get("expression")]
        if not isinstance(column, exp.Column):
            column, literals, op = literals[0], [column], _FLIPPED[op]
    elif isinstance(term, exp.In) and not term.args.get("query") and not term.args.get("unnest"):
        column, literals, op = term.this, list(term.expressions), "in"
    else:
        return None
    if not isinstance(column, exp.Column) or (column.table and column.table.lower() not in qualifiers):
        return None
    name = next((f.name for f in schema if f.name.lower() == column.name.lower()), None)
    if name is None or not literals:
        return None
    dtype = schema.field(name).type
    if op not in ("=", "in") and not pa.types.is_integer(dtype):
        return None  # orderings of text, decimals and times: DuckDB's casts decide
    values = [_literal(lit, dtype) if isinstance(lit, exp.Expr) else None for lit in literals]
    if any(v is None for v in values):
        return None
    return (name, op, values) if op == "in" else (name, op, values[0])


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
