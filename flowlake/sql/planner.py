"""A view's SELECT (parsed and qualified by sqlglot) → plan nodes, with each output's unique key derived.

The planner works on the qualified tree, where every column names its table alias, and plans a
query as a :class:`~flowlake.sql.relation.Relation` (a plan node and the scope naming its columns).
This module is the front: views, CTEs, UNION, FROM items and the dispatch of a SELECT to its steps,
which live beside it: joins (:mod:`flowlake.sql.join`), GROUP BY, DISTINCT and event-time windows
(:mod:`flowlake.sql.aggregate`), Top-N (:mod:`flowlake.sql.topn`) and projections
(:mod:`flowlake.sql.project`).

Keys follow Flink's unique-key derivation: GROUP BY columns; a join keeps one side's key when the
other side is joined on its whole key (inner joins either way), else both keys together; Top-N keeps
its partition columns plus the rank (the partition columns alone for N = 1); DISTINCT all columns;
a projection keeps its input's key when it selects every key column (or an equal one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from flowlake.errors import SqlError, TableNotFoundError
from flowlake.sql.aggregate import AggregatePlanner
from flowlake.sql.evaluate import common_schema, query_schema
from flowlake.sql.join import JoinPlanner
from flowlake.sql.plan import Output, Source, Union
from flowlake.sql.project import Projector
from flowlake.sql.relation import PlanState, Relation, body
from flowlake.sql.sqltree import contains_aggregate, join_and, qualifiers, select_items, split_and
from flowlake.sql.statements import DIALECT, ViewDefinition
from flowlake.sql.support import check_query, is_comma_join, position, unsupported
from flowlake.sql.topn import TopNBound, plan_top_n, qualify_bound, take_bound


class Catalogish(Protocol):
    """What the planner needs of a catalog: a table's schema and primary key."""

    def table_shape(self, name: str) -> tuple[pa.Schema, tuple[str, ...] | None]:
        """``(schema, primary key)`` of a lake table; raises ``TableNotFoundError``."""
        ...


class Planner:
    """Plans the views of one file, in order; later views may read earlier ones."""

    def __init__(self, tables: Catalogish, *, partitions: int = 4) -> None:
        self.tables = tables
        self.partitions = partitions
        self.views: dict[str, Relation] = {}
        self.outputs: dict[str, Output] = {}
        self.sources: dict[str, Source] = {}
        self.state = PlanState()
        self.projector = Projector(self.state)
        self.joins = JoinPlanner(self.state, self.projector)
        self.aggregates = AggregatePlanner(self.state, self.projector)

    # -- views ----------------------------------------------------------------------------------------

    def plan_view(self, view: ViewDefinition) -> Output:
        """Plan one view; its output node writes ``view.name``."""
        self.state.start(view)
        check_query(view.query)
        try:
            qualified = qualify(
                view.query.copy(),
                schema=self._schemas(view.query),  # type: ignore[arg-type]
                dialect=DIALECT,
                validate_qualify_columns=True,
                quote_identifiers=False,
            )
        except OptimizeError as exc:
            raise SqlError(f"view {view.name}: {exc}") from exc
        rel = self.plan_query(qualified, {}, None)
        for original, name in zip(select_items(view.query), rel.names, strict=False):
            if not isinstance(original, exp.Alias | exp.Column | exp.Star):
                raise SqlError(
                    f"view {view.name}: give the expression {original.sql(dialect=DIALECT)} a name "
                    f"({original.sql(dialect=DIALECT)} AS {name.strip('_') or 'value'})"
                )
        if len(set(rel.names)) != len(rel.names):
            raise SqlError(f"view {view.name}: output columns repeat a name: {rel.names}")
        inputs = {name: self._real_schema(name) for name in self._inputs(view.query)}
        schema = query_schema(view.sql, inputs)
        if [n.lower() for n in schema.names] != [n.lower() for n in rel.names]:  # pragma: no cover
            raise SqlError(f"view {view.name}: DuckDB names its columns {schema.names}, the plan {rel.names}")
        # sqlglot folds identifiers to lower case, DuckDB keeps them as written: the table uses DuckDB's
        as_written = dict(zip(rel.names, schema.names, strict=True))
        key = tuple(as_written[k] for k in self._output_key(view, rel))
        output = Output(schema=schema, key=key, input=rel.node, table=view.name)
        self.views[view.name] = rel
        self.outputs[view.name] = output
        return output

    @property
    def late_table(self) -> str | None:
        """The late-data table of the view planned last, if it has a windowed aggregate."""
        return self.state.late_table

    @property
    def late_keys(self) -> list[str]:
        """SQL of the key columns of the last view's late table (its verify exclusion)."""
        return self.state.late_keys

    def _output_key(self, view: ViewDefinition, rel: Relation) -> tuple[str, ...]:
        given = view.options.get("primary_key")
        if given:
            by_lower = {n.lower(): n for n in rel.names}
            key = tuple(c.strip() for c in given.split(",") if c.strip())
            missing = [c for c in key if c.lower() not in by_lower]
            if missing:
                raise SqlError(f"view {view.name}: primary_key columns {missing} are not among {rel.names}")
            return tuple(by_lower[c.lower()] for c in key)
        if rel.node.key is None:
            raise SqlError(
                f"view {view.name}: no primary key can be derived from its SELECT (a projection that drops "
                "its input's key, an unnest in the select list, a UNION ALL, a join whose keys are not "
                "selected); select the key columns "
                "or give one: CREATE MATERIALIZED VIEW ... WITH (primary_key = 'a, b') AS ..."
            )
        if not rel.node.key:
            raise SqlError(
                f"view {view.name}: an aggregate without GROUP BY has no key; group by a column, or give "
                "WITH (primary_key = ...)"
            )
        return rel.node.key

    def _schemas(self, query: exp.Expr) -> dict[str, dict[str, dict[str, str]]]:
        ctes = {c.alias_or_name for c in query.find_all(exp.CTE)}
        out: dict[str, dict[str, dict[str, str]]] = {}
        for table in query.find_all(exp.Table):
            if not table.db and table.name in ctes:
                continue
            name = self._table_name(table)
            schema = self._input_schema(name, table)
            out.setdefault(table.db, {})[table.name] = {f.name: "UNKNOWN" for f in schema}
        return out

    def _inputs(self, query: exp.Expr) -> list[str]:
        """The lake tables and earlier views that ``query`` reads."""
        ctes = {c.alias_or_name for c in query.find_all(exp.CTE)}
        names = {self._table_name(t) for t in query.find_all(exp.Table) if t.db or t.name not in ctes}
        return sorted(names)

    def _real_schema(self, name: str) -> pa.Schema:
        if name in self.outputs:
            return self.outputs[name].schema
        return self._source(name, exp.Table()).schema

    def _table_name(self, table: exp.Table) -> str:
        if not isinstance(table.this, exp.Identifier | exp.Var):
            raise unsupported("a table function", table, "read a lake table")
        if not table.db or table.catalog:
            raise unsupported(
                "a table name without its namespace", table, "write namespace.table, e.g. ods.orders"
            )
        return f"{table.db}.{table.name}"

    def _input_schema(self, name: str, where: exp.Expr) -> pa.Schema:
        if name in self.views:
            return pa.schema([pa.field(n, pa.null()) for n in self.views[name].names])
        try:
            schema, _ = self.tables.table_shape(name)
        except TableNotFoundError as exc:
            raise SqlError(
                f"view {self.state.view_name}: table {name} does not exist{position(where)}"
            ) from exc
        return schema

    # -- queries --------------------------------------------------------------------------------------

    def plan_query(self, query: exp.Expr, ctes: Mapping[str, Relation], bound: TopNBound | None) -> Relation:
        """A SELECT, a UNION or a parenthesized query."""
        ctes = self._plan_ctes(query, ctes)
        if isinstance(query, exp.Subquery):
            return self.plan_query(query.this, ctes, bound)
        if isinstance(query, exp.Union):
            return self._plan_union(query, ctes)
        if isinstance(query, exp.Select):
            return self._plan_select(query, ctes, bound)
        raise unsupported(type(query).__name__, query, "write a SELECT")

    def _plan_ctes(self, query: exp.Expr, ctes: Mapping[str, Relation]) -> Mapping[str, Relation]:
        with_ = query.args.get("with_")
        if with_ is None:
            return ctes
        out = dict(ctes)
        for cte in with_.expressions:
            out[cte.alias_or_name] = self.plan_query(cte.this, out, None)
        return out

    def _plan_union(self, union: exp.Union, ctes: Mapping[str, Relation]) -> Relation:
        flat = [self.plan_query(side, ctes, None) for side in (union.left, union.right)]
        widths = {len(p.names) for p in flat}
        if len(widths) != 1:
            raise SqlError(
                f"view {self.state.view_name}: the sides of UNION ALL have different column counts"
            )
        target = common_schema([body(p.node.schema) for p in flat])
        names = flat[0].names
        target = pa.schema([f.with_name(n) for f, n in zip(target, names, strict=True)])
        node = Union(schema=target, key=None, parts=tuple(p.node for p in flat))
        rel = Relation(node, {("", n): n for n in names}, list(names))
        if union.args.get("distinct"):
            rel = self.aggregates.distinct(rel)
        return rel

    def _plan_select(
        self, select: exp.Select, ctes: Mapping[str, Relation], bound: TopNBound | None
    ) -> Relation:
        conjuncts = split_and(select.args["where"].this) if select.args.get("where") else []
        inner_bound: TopNBound | None = None
        from_ = select.args.get("from_")
        if from_ is None:
            raise unsupported("SELECT without FROM", select, "select from a lake table")
        if isinstance(from_.this, exp.Subquery) and not select.args.get("joins"):
            inner_bound, conjuncts = take_bound(select, from_.this, conjuncts)
        rel, conjuncts = self._plan_from(select, ctes, inner_bound, conjuncts)
        items = list(select.expressions)
        windows = [i for i in items if isinstance(i.unalias(), exp.Window)]
        qualify_clause = select.args.get("qualify")
        if qualify_clause is not None:
            if bound is not None or (windows and len(windows) > 1):
                raise unsupported("QUALIFY with more than one ROW_NUMBER()", qualify_clause, "use one Top-N")
            bound, windows = qualify_bound(qualify_clause, windows)
        has_aggregate = select.args.get("group") is not None or any(contains_aggregate(i) for i in items)
        if windows and has_aggregate:
            raise unsupported("ROW_NUMBER() beside GROUP BY", windows[0], "aggregate in a subquery first")
        if windows:
            rel = plan_top_n(self.projector, select, rel, conjuncts, windows[0], bound)
        elif has_aggregate:
            rel = self.aggregates.plan(select, rel, conjuncts)
        else:
            rel = self.projector.calc(
                rel, [(i.alias_or_name, i.unalias()) for i in items], join_and(conjuncts)
            )
        if select.args.get("distinct") is not None:
            rel = self.aggregates.distinct(rel)
        return rel

    # -- FROM -----------------------------------------------------------------------------------------

    def _plan_from(
        self,
        select: exp.Select,
        ctes: Mapping[str, Relation],
        bound: TopNBound | None,
        conjuncts: list[exp.Expr],
    ) -> tuple[Relation, list[exp.Expr]]:
        """The FROM clause's relation, and the WHERE conjuncts left once comma joins took theirs."""
        from_ = select.args["from_"]
        rel = self._plan_item(from_.this, ctes, bound)
        needed = {(c.table, c.name) for c in select.find_all(exp.Column)}
        joins = list(select.args.get("joins") or [])
        for i, written in enumerate(joins):
            right = self._plan_item(written.this, ctes, None)
            join = written
            # WHERE conditions over both sides of an inner join are conditions of the join (evaluated
            # inside it, on matched pairs), unless a later RIGHT join pads this join's rows with NULLs
            inner = not str(written.args.get("side") or "") and not self.joins.is_lookup(right)
            later_right = any(str(j.args.get("side") or "").upper() == "RIGHT" for j in joins[i + 1 :])
            if is_comma_join(written) or (inner and not later_right):
                sides = {q for q, _ in rel.scope} | {q for q, _ in right.scope}
                on = [c for c in conjuncts if qualifiers(c) <= sides and len(qualifiers(c)) > 1]
                conjuncts = [c for c in conjuncts if not any(c is o for o in on)]
                written_on = split_and(written.args.get("on")) if not is_comma_join(written) else []
                join = exp.Join(this=written.this, on=join_and([*written_on, *on]))
            rel = self.joins.plan(rel, right, join, needed)
        return rel, conjuncts

    def _plan_item(self, item: exp.Expr, ctes: Mapping[str, Relation], bound: TopNBound | None) -> Relation:
        alias = item.alias_or_name
        if isinstance(item, exp.Table) and not isinstance(item.this, exp.Identifier | exp.Var):
            raise unsupported("a table function", item, "read a lake table")
        if isinstance(item, exp.Table):
            if not item.db and item.name in ctes:
                return ctes[item.name].alias(alias)
            name = self._table_name(item)
            if name in self.views:
                return self.views[name].alias(alias)
            source = self._source(name, item)
            scope = {(alias, c.lower()): c for c in source.schema.names}  # sqlglot folds names to lower case
            return Relation(source, scope, list(source.schema.names))
        if isinstance(item, exp.Subquery):
            return self.plan_query(item.this, ctes, bound).alias(alias)
        raise unsupported(type(item).__name__, item, "read a lake table or a subquery")

    def _source(self, name: str, where: exp.Expr) -> Source:
        if name not in self.sources:
            try:
                schema, key = self.tables.table_shape(name)
            except TableNotFoundError as exc:
                raise SqlError(
                    f"view {self.state.view_name}: table {name} does not exist{position(where)}"
                ) from exc
            self.sources[name] = Source(schema=body(schema), key=key, table=name)
        return self.sources[name]
