"""Projections and filters: :class:`~flowlake.sql.plan.Calc` nodes over a :class:`Relation`.

A Calc's expressions are rendered on its input's internal column names and run as one DuckDB query
per batch; the columns it selects unchanged pass through in Arrow. Its key is its input's when it
keeps every key column (or a column known to equal one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from sqlglot import exp

from flowlake.changelog import KIND_COLUMN
from flowlake.errors import SqlError
from flowlake.sql.arrowfn import ArrowCall, take_arrow_calls
from flowlake.sql.evaluate import BatchQuery, quote
from flowlake.sql.plan import SERIES_END, SERIES_START, Calc, SeriesExplode
from flowlake.sql.relation import KEEP, PlanState, Relation, body
from flowlake.sql.statements import DIALECT
from flowlake.sql.support import position


def with_kind(schema: pa.Schema) -> pa.Schema:
    """``schema``'s body with the change-kind column a batch query sees."""
    return body(schema).append(pa.field(KIND_COLUMN, pa.int8()))


class Projector:
    """Renders expressions over relations and plans the Calc nodes that compute them."""

    def __init__(self, state: PlanState) -> None:
        self.state = state

    def render(self, expr: exp.Expr, rel: Relation, raw: bool = False) -> str:
        """``expr`` as DuckDB SQL over ``rel``'s internal column names (``raw``: unqualified columns
        are internal names already)."""

        def swap(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Column):
                if raw and not node.table:
                    return node
                internal = rel.scope.get((node.table, node.name))
                if internal is None:
                    raise SqlError(
                        f"view {self.state.view_name}: column {node.sql(dialect=DIALECT)} is not available "
                        f"here{position(node)}"
                    )
                return exp.column(internal, quoted=True)
            return node

        return str(expr.copy().transform(swap).sql(dialect=DIALECT))

    def query(
        self,
        rel: Relation,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        raw: bool = False,
    ) -> BatchQuery:
        """The batch query computing ``items`` (and ``where``'s verdict as ``__keep``) over ``rel``."""
        columns = [f"{self.render(e, rel, raw)} AS {quote(name)}" for name, e in items]
        columns.append(quote(KIND_COLUMN))
        if where is not None:
            columns.append(f"coalesce({self.render(where, rel, raw)}, false) AS {quote(KEEP)}")
        return BatchQuery(f"SELECT {', '.join(columns)} FROM batch")

    def calc(
        self,
        rel: Relation,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        raw: bool = False,
    ) -> Relation:
        """``rel`` projected to ``items`` (name, expression) and filtered by ``where``."""
        query = self.query(rel, items, where, raw)
        schema = body(query.schema(with_kind(rel.node.schema)))
        sources: dict[str, str] = {}  # input column -> output name, for plain column items
        for name, expr in items:
            if isinstance(expr, exp.Column):
                internal = expr.name if raw and not expr.table else rel.scope.get((expr.table, expr.name))
                if internal is not None:
                    sources.setdefault(internal, name)
        # UNNEST(list) in the select list (hopping windows: one row per window a row falls in) makes
        # several changes of one: the input key no longer identifies a row
        explodes = any(isinstance(node, exp.Explode) for _, expr in items for node in expr.walk())
        key: tuple[str, ...] | None = None
        if rel.node.key is not None and not explodes:
            mapped: list[str] = []
            for column in rel.node.key:
                partner = next((sources[p] for p in sorted(rel.partners(column)) if p in sources), None)
                if partner is None:
                    break
                mapped.append(partner)
            else:
                key = tuple(mapped)
        equal: list[frozenset[str]] = []
        for group in rel.equal:
            renamed = frozenset(sources[c] for c in group if c in sources)
            if len(renamed) > 1:
                equal.append(renamed)
        where_sql = self.render(where, rel, raw) if where is not None else None
        passthrough: dict[str, str] | None = None
        computed_sql: str | None = query.sql
        calls: list[ArrowCall] = []
        if not explodes:  # plain columns pass through in Arrow; DuckDB computes the rest (and the filter)
            passthrough, computed_sql, calls = self._hybrid(rel, raw, items, where, schema)
        series = self._series(rel, raw, items, where, schema) if explodes else None
        node = Calc(
            schema=schema, key=key, input=rel.node, sql=query.sql, where=where_sql, explodes=explodes,
            reads=_reads([e for _, e in items] + ([where] if where is not None else []), rel, raw),
            passthrough=passthrough, computed_sql=computed_sql, arrow_calls=tuple(calls), series=series,
        )  # fmt: skip
        names = [name for name, _ in items]
        return Relation(node, {("", n): n for n in names}, names, equal)

    def _series(
        self,
        rel: Relation,
        raw: bool,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        schema: pa.Schema,
    ) -> SeriesExplode | None:
        """The :class:`SeriesExplode` of a select list whose only ``unnest`` is a whole item over
        ``generate_series``/``range`` with a constant positive step and integer or timestamp bounds
        (a hopping window's starts); None for any other list (DuckDB unnests it)."""
        found = [
            (name, expr.this)
            for name, expr in items
            if isinstance(expr, exp.Explode) and isinstance(expr.this, exp.GenerateSeries)
        ]
        explodes = sum(isinstance(n, exp.Explode) for _, e in items for n in e.walk())
        if len(found) != 1 or explodes != 1:
            return None
        name, series = found[0]
        start, end, step = series.args.get("start"), series.args.get("end"), series.args.get("step")
        if start is None or end is None or step is None:
            return None
        type_ = schema.field(name).type
        temporal = pa.types.is_timestamp(type_)
        if temporal:  # (DuckDB's timestamps are microseconds)
            if type_.unit != "us":
                return None
            size = _interval_us(step)
            if size is None:
                return None
        elif type_ == pa.int64() and isinstance(step, exp.Literal) and not step.is_string:
            size = int(step.this)
        else:
            return None
        if size <= 0:
            return None
        others = [(n, e) for n, e in items if n != name]
        bounds = [
            (SERIES_START, exp.cast(start, type_sql(type_))),
            (SERIES_END, exp.cast(end, type_sql(type_))),
        ]
        query = self.query(rel, [*others, *bounds], where, raw)
        exclusive = bool(series.args.get("is_end_exclusive"))
        return SeriesExplode(name, query.sql, size, temporal, exclusive)

    def _hybrid(
        self,
        rel: Relation,
        raw: bool,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        schema: pa.Schema,
    ) -> tuple[dict[str, str], str | None, list[ArrowCall]]:
        """The columns a Calc passes through (output name -> input column or Arrow call result), the
        DuckDB query for the rest and the filter (None: nothing left), and the Arrow calls."""
        passthrough, computed = _plain_columns(items, rel, raw, schema)
        computed, where, calls = self._arrow_calls(rel, raw, computed, where)
        results = {c.name for c in calls}
        left: list[tuple[str, exp.Expr]] = []
        for name, expr in computed:  # a call's result as it is passes through too
            if isinstance(expr, exp.Column) and not expr.table and expr.name in results:
                passthrough[name] = expr.name
            else:
                left.append((name, expr))
        if not left and where is None:
            return passthrough, None, calls
        scope = {**rel.scope, **{("", name): name for name in results}}
        return passthrough, self.query(Relation(rel.node, scope), left, where, raw).sql, calls

    def _arrow_calls(
        self, rel: Relation, raw: bool, computed: list[tuple[str, exp.Expr]], where: exp.Expr | None
    ) -> tuple[list[tuple[str, exp.Expr]], exp.Expr | None, list[ArrowCall]]:
        """The computed items and the filter with the string function calls that Arrow evaluates taken
        out (see :mod:`flowlake.sql.arrowfn`), and those calls."""
        types = {f.name: f.type for f in body(rel.node.schema)}

        def resolve(column: exp.Column) -> str | None:
            return column.name if raw and not column.table else rel.scope.get((column.table, column.name))

        calls: list[ArrowCall] = []
        known: dict[tuple[Any, ...], str] = {}
        out: list[tuple[str, exp.Expr]] = []

        def fresh() -> str:
            return self.state.fresh("__arrow_")

        for name, expr in computed:
            taken, found = take_arrow_calls(expr, types, resolve, fresh, known)
            out.append((name, taken))
            calls += found
        if where is not None:
            where, found = take_arrow_calls(where, types, resolve, fresh, known)
            calls += found
        return out, where, calls


def _reads(exprs: Sequence[exp.Expr], rel: Relation, raw: bool) -> tuple[str, ...] | None:
    """The input columns that ``exprs`` read (None: unknown, e.g. a star left unexpanded)."""
    names: dict[str, None] = {}
    for expr in exprs:
        for node in expr.walk():
            if isinstance(node, exp.Star):
                return None
            if isinstance(node, exp.Column):
                internal = node.name if raw and not node.table else rel.scope.get((node.table, node.name))
                if internal is None:
                    return None
                names[internal] = None
    return tuple(names)


def _plain_columns(
    items: Sequence[tuple[str, exp.Expr]], rel: Relation, raw: bool, schema: pa.Schema
) -> tuple[dict[str, str], list[tuple[str, exp.Expr]]]:
    """The items that are an input column unchanged (output name -> input name; same type), and the
    others."""
    input_types = {f.name: f.type for f in body(rel.node.schema)}
    plain: dict[str, str] = {}
    computed: list[tuple[str, exp.Expr]] = []
    for name, expr in items:
        internal = None
        if isinstance(expr, exp.Column):
            internal = expr.name if raw and not expr.table else rel.scope.get((expr.table, expr.name))
        if internal is not None and input_types.get(internal) == schema.field(name).type:
            plain[name] = internal
        else:
            computed.append((name, expr))
    return plain, computed


_INTERVAL_US = {
    "MICROSECOND": 1, "MILLISECOND": 1000, "SECOND": 1_000_000, "MINUTE": 60_000_000,
    "HOUR": 3_600_000_000, "DAY": 86_400_000_000,
}  # fmt: skip
"""Fixed-length interval units in microseconds (views' DuckDB connections run in UTC: a day is 24 h)."""


def _interval_us(node: exp.Expr) -> int | None:
    """A literal ``INTERVAL 'n unit'`` of a fixed length in microseconds, else None."""
    if not isinstance(node, exp.Interval) or not isinstance(node.this, exp.Literal):
        return None
    unit = node.args.get("unit")
    name = unit.name.upper().removesuffix("S") if unit is not None else ""
    if name not in _INTERVAL_US:
        return None
    try:
        return int(node.this.this) * _INTERVAL_US[name]
    except ValueError:
        return None


def type_sql(type_: pa.DataType) -> str:
    """DuckDB's name of a series' type: BIGINT, TIMESTAMP or TIMESTAMPTZ (microseconds)."""
    if pa.types.is_timestamp(type_):
        return "TIMESTAMPTZ" if type_.tz is not None else "TIMESTAMP"
    return "BIGINT"
