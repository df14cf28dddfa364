"""GROUP BY, aggregates, DISTINCT and event-time windows → :class:`~flowlake.sql.plan.Aggregate` nodes.

A SELECT with aggregates becomes a Calc computing the group columns and aggregate arguments, the
Aggregate, and a Calc computing the select list and HAVING over the groups and aggregate values.
With ``WITH (horizon = ...)`` an epoch-aligned time bucket in GROUP BY (``date_trunc``,
``time_bucket``) becomes the aggregate's event-time window, and rows later than the horizon go to
the view's late-data table.
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import exp

from flowlake.errors import SqlError
from flowlake.flow.aggs import Agg, Window, duration_us
from flowlake.flow.schemas import aggregate_schema
from flowlake.sql.evaluate import quote
from flowlake.sql.plan import Aggregate, Node
from flowlake.sql.project import Projector
from flowlake.sql.relation import PlanState, Relation, body
from flowlake.sql.sqltree import aggregate_calls, contains_aggregate, join_and, replace
from flowlake.sql.statements import DIALECT
from flowlake.sql.support import AGGREGATES, position, unsupported

_BUCKET_UNITS_US = {"SECOND": 1_000_000, "MINUTE": 60_000_000, "HOUR": 3_600_000_000, "DAY": 86_400_000_000}
_INTERVAL_UNITS_US = {
    "SECOND": 1_000_000, "SECONDS": 1_000_000, "MINUTE": 60_000_000, "MINUTES": 60_000_000,
    "HOUR": 3_600_000_000, "HOURS": 3_600_000_000, "DAY": 86_400_000_000, "DAYS": 86_400_000_000,
}  # fmt: skip


class AggregatePlanner:
    """Plans a SELECT's GROUP BY and aggregates, and DISTINCT (a grouping by every column)."""

    def __init__(self, state: PlanState, projector: Projector) -> None:
        self.state = state
        self.projector = projector

    def plan(self, select: exp.Select, rel: Relation, conjuncts: list[exp.Expr]) -> Relation:
        """``select`` (which aggregates) over ``rel``, filtered first by the WHERE ``conjuncts``."""
        items = list(select.expressions)
        group = select.args.get("group")
        if group is not None and group.args.get("all"):
            groups = [i.unalias() for i in items if not contains_aggregate(i)]
        else:
            groups = list(group.expressions) if group is not None else []
        having = select.args["having"].this if select.args.get("having") else None
        calls: list[exp.Expr] = []
        for node in [*items, *([having] if having is not None else [])]:
            for call in aggregate_calls(node):
                if call not in calls:
                    calls.append(call)
        group_names = self._group_names(items, groups)
        pre: list[tuple[str, exp.Expr]] = list(zip(group_names, groups, strict=True))
        aggs: dict[str, Agg] = {}
        agg_names: list[str] = []
        for j, call in enumerate(calls):
            func, condition = (
                (call.this, call.expression.this) if isinstance(call, exp.Filter) else (call, None)
            )
            name = f"agg_{j}"
            agg_names.append(name)
            arg = func.this
            distinct = isinstance(arg, exp.Distinct)
            if distinct:
                if len(arg.expressions) != 1:
                    raise unsupported("count(DISTINCT a, b)", func, "count distinct over one expression")
                arg = arg.expressions[0]
            kind = AGGREGATES[type(func)]  # type: ignore[index]
            column = None
            if not (isinstance(arg, exp.Star) or arg is None):
                column = f"arg_{j}"
                pre.append((column, arg))
            where = None
            if condition is not None:
                pre.append((f"filter_{j}", condition))
                where = (f"filter_{j}", "==", True)
            func_name = "count_distinct" if distinct else kind
            aggs[name] = Agg(func_name, column, where)  # type: ignore[arg-type]
        window, by = self._window(groups, group_names, rel, pre)
        pre_rel = self.projector.calc(rel, pre, join_and(conjuncts))
        node = self._node(pre_rel.node, body(pre_rel.node.schema), by, aggs, window)
        scope = {("", n): n for n in [*group_names, *agg_names]}
        agg_rel = Relation(node, scope, [*group_names, *agg_names])

        def swap(expr: exp.Expr) -> exp.Expr:
            for g, name in zip(groups, group_names, strict=True):
                if expr == g:
                    return exp.column(name, quoted=True)
            for call, name in zip(calls, agg_names, strict=True):
                if expr == call:
                    return exp.column(name, quoted=True)
            if isinstance(expr, exp.Column) and expr.table:
                raise SqlError(
                    f"view {self.state.view_name}: column {expr.sql(dialect=DIALECT)} must appear in "
                    f"GROUP BY or be aggregated{position(expr)}"
                )
            return expr

        post = [(i.alias_or_name, i.unalias().copy().transform(swap)) for i in items]
        post_having = having.copy().transform(swap) if having is not None else None
        return self.projector.calc(agg_rel, post, post_having, raw=True)

    def distinct(self, rel: Relation) -> Relation:
        """``rel``'s distinct rows (keyed by every column)."""
        names = list(rel.names)
        by = tuple(rel.scope[("", n)] for n in names)
        node = self._node(rel.node, body(rel.node.schema), by, {"__rows": Agg("count")}, None)
        grouped = Relation(node, {("", n): rel.scope[("", n)] for n in names}, names)
        return self.projector.calc(grouped, [(n, exp.column(n, quoted=True)) for n in names], None)

    def _group_names(self, items: list[exp.Expr], groups: list[exp.Expr]) -> list[str]:
        names: list[str] = []
        for i, g in enumerate(groups):
            alias = next((it.alias_or_name for it in items if it.unalias() == g), None)
            name = (
                alias
                if alias and alias not in names and not alias.startswith(("agg_", "arg_", "filter_"))
                else f"group_{i}"
            )
            names.append(name)
        return names

    def _window(
        self,
        groups: list[exp.Expr],
        names: list[str],
        rel: Relation,
        pre: list[tuple[str, exp.Expr]],
    ) -> tuple[Window | None, tuple[str, ...]]:
        horizon = self.state.option("horizon")
        if horizon is None or self.state.late_table is not None:
            return None, tuple(names)
        for g, name in zip(groups, names, strict=True):
            bucket = _bucket(g)
            if bucket is None:
                continue
            size_us, column = bucket
            # the window operator computes the window start from the event time itself
            pre[:] = [("event_time", column) if n == name else (n, e) for n, e in pre]
            self.state.late_table = f"{self.state.view_name}_late"
            window_sql = replace(g, column, exp.column("event_time", quoted=True)).sql(dialect=DIALECT)
            self.state.late_keys = [*(quote(n) for n in names if n != name), f"{window_sql} AS {quote(name)}"]
            window = Window(size_us, "event_time", name, duration_us(horizon))
            return window, tuple(n for n in names if n != name)
        raise SqlError(
            f"view {self.state.view_name}: WITH (horizon = ...) needs an event-time window in GROUP BY: "
            "date_trunc('minute'|'hour'|'day'|'second', ts) or time_bucket(INTERVAL ..., ts) with a size "
            "that divides a day"
        )

    def _node(
        self,
        input_node: Node,
        schema: pa.Schema,
        by: tuple[str, ...],
        aggs: dict[str, Agg],
        window: Window | None,
    ) -> Aggregate:
        out = body(aggregate_schema(schema, by, aggs, window))
        key = (*by, window.column) if window is not None else by
        late = self.state.late_table if window is not None else None
        return Aggregate(
            schema=out, key=key, input=input_node, by=by, aggs=aggs, window=window, late_table=late
        )


def _bucket(group: exp.Expr) -> tuple[int, exp.Expr] | None:
    """``(size_us, timestamp column)`` of an epoch-aligned time bucket, else None."""
    if isinstance(group, exp.TimestampTrunc | exp.DateTrunc):
        unit_node = group.args.get("unit")
        unit = str(unit_node.name if unit_node is not None else "").upper()
        column = group.this
        if unit in _BUCKET_UNITS_US and isinstance(column, exp.Column):
            return _BUCKET_UNITS_US[unit], column
        return None
    if isinstance(group, exp.DateBin) and group.args.get("origin") is None:
        interval, column = group.this, group.expression
        if isinstance(interval, exp.Interval) and isinstance(column, exp.Column):
            try:
                amount = int(interval.this.name)
            except ValueError:
                return None
            unit = str(interval.unit.name if interval.unit is not None else "").upper()
            size = amount * _INTERVAL_UNITS_US.get(unit, 0)
            if size > 0 and _INTERVAL_UNITS_US["DAY"] % size == 0:
                return size, column
    return None
