"""A view's SELECT (parsed and qualified by sqlglot) → plan nodes, with each output's unique key derived.

The planner works on the qualified tree, where every column names its table alias. A
:class:`Relation` is what a FROM item, a join or a SELECT produces: a plan node plus the scope that
maps ``(alias, column)`` to the node's internal column names, and the columns known to be equal
(join conditions), which let a key column stand for its partner.

Keys follow Flink's unique-key derivation: GROUP BY columns; a join keeps one side's key when the
other side is joined on its whole key (inner joins either way), else both keys together; Top-N keeps
its partition columns plus the rank (the partition columns alone for N = 1); DISTINCT all columns;
a projection keeps its input's key when it selects every key column (or an equal one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import OptimizeError
from sqlglot.optimizer.qualify import qualify

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN
from flowlake.errors import SqlError, TableNotFoundError
from flowlake.flow._aggstate import AggregateState
from flowlake.flow._relational import join_schema
from flowlake.flow._topn import SortKey
from flowlake.flow.aggs import Agg, Window, duration_us
from flowlake.sql.evaluate import BatchQuery, common_schema, query_schema, quote
from flowlake.sql.plan import Aggregate, Calc, Join, Lookup, Node, Output, Source, TopN, Union
from flowlake.sql.statements import DIALECT, ViewDefinition
from flowlake.sql.support import AGGREGATES, check_query, is_comma_join, position, unsupported

KEEP = "__keep"
"""Column of a :class:`Calc` query that holds its filter's verdict."""

_BUCKET_UNITS_US = {"SECOND": 1_000_000, "MINUTE": 60_000_000, "HOUR": 3_600_000_000, "DAY": 86_400_000_000}
_INTERVAL_UNITS_US = {
    "SECOND": 1_000_000, "SECONDS": 1_000_000, "MINUTE": 60_000_000, "MINUTES": 60_000_000,
    "HOUR": 3_600_000_000, "HOURS": 3_600_000_000, "DAY": 86_400_000_000, "DAYS": 86_400_000_000,
}  # fmt: skip


class Catalogish(Protocol):
    """What the planner needs of a catalog: a table's schema and primary key."""

    def table_shape(self, name: str) -> tuple[pa.Schema, tuple[str, ...] | None]:
        """``(schema, primary key)`` of a lake table; raises ``TableNotFoundError``."""
        ...


@dataclass
class Relation:
    """A plan node with the names under which its columns are visible."""

    node: Node
    scope: dict[tuple[str, str], str]
    names: list[str] = field(default_factory=list)
    """Output column names, in order (for SELECT results; a table's columns for a table)."""
    equal: list[frozenset[str]] = field(default_factory=list)

    def alias(self, alias: str) -> Relation:
        """The relation as a FROM item named ``alias``."""
        scope = {(alias, name): self.scope[("", name)] for name in self.names}
        return Relation(self.node, scope, list(self.names), list(self.equal))

    def partners(self, column: str) -> set[str]:
        """``column`` and every column known to equal it."""
        out = {column}
        for group in self.equal:
            if column in group:
                out |= group
        return out


@dataclass(frozen=True)
class _TopNBound:
    n: int
    rank_used: bool


def split_and(condition: exp.Expr | None) -> list[exp.Expr]:
    """The conjuncts of ``condition``."""
    if condition is None:
        return []
    if isinstance(condition, exp.And):
        return [*split_and(condition.left), *split_and(condition.right)]
    if isinstance(condition, exp.Paren):
        return split_and(condition.this)
    return [condition]


def join_and(conjuncts: Sequence[exp.Expr]) -> exp.Expr | None:
    """``a AND b AND ...`` (``None`` for no conjuncts)."""
    if not conjuncts:
        return None
    return exp.and_(*conjuncts) if len(conjuncts) > 1 else conjuncts[0]


def _qualifiers(node: exp.Expr) -> set[str]:
    return {c.table for c in node.find_all(exp.Column)}


def _is_aggregate(node: exp.Expr) -> bool:
    return isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window)


def _contains_aggregate(node: exp.Expr) -> bool:
    return any(_is_aggregate(n) for n in node.walk())


def _body(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name not in (KIND_COLUMN, SEQ_COLUMN, KEEP)])


class Planner:
    """Plans the views of one file, in order; later views may read earlier ones."""

    def __init__(self, tables: Catalogish, *, partitions: int = 4) -> None:
        self.tables = tables
        self.partitions = partitions
        self.views: dict[str, Relation] = {}
        self.outputs: dict[str, Output] = {}
        self.sources: dict[str, Source] = {}
        self._names = itertools.count()
        self._view: ViewDefinition | None = None
        self._late_table: str | None = None
        self.late_keys: list[str] = []
        """SQL of the key columns of the last view's late table (its verify exclusion)."""

    # -- views ----------------------------------------------------------------------------------------

    def plan_view(self, view: ViewDefinition) -> Output:
        """Plan one view; its output node writes ``view.name``."""
        self._view, self._late_table, self.late_keys = view, None, []
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
        for original, name in zip(_select_items(view.query), rel.names, strict=False):
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
        return self._late_table

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
            raise SqlError(f"view {self._view_name}: table {name} does not exist{position(where)}") from exc
        return schema

    @property
    def _view_name(self) -> str:
        return self._view.name if self._view else "?"

    def _fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self._names)}"

    # -- queries --------------------------------------------------------------------------------------

    def plan_query(self, query: exp.Expr, ctes: Mapping[str, Relation], bound: _TopNBound | None) -> Relation:
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
            raise SqlError(f"view {self._view_name}: the sides of UNION ALL have different column counts")
        target = common_schema([_body(p.node.schema) for p in flat])
        names = flat[0].names
        target = pa.schema([f.with_name(n) for f, n in zip(target, names, strict=True)])
        node = Union(schema=target, key=None, parts=tuple(p.node for p in flat))
        rel = Relation(node, {("", n): n for n in names}, list(names))
        if union.args.get("distinct"):
            rel = self._distinct(rel)
        return rel

    def _plan_select(
        self, select: exp.Select, ctes: Mapping[str, Relation], bound: _TopNBound | None
    ) -> Relation:
        conjuncts = split_and(select.args["where"].this) if select.args.get("where") else []
        inner_bound: _TopNBound | None = None
        from_ = select.args.get("from_")
        if from_ is None:
            raise unsupported("SELECT without FROM", select, "select from a lake table")
        if isinstance(from_.this, exp.Subquery) and not select.args.get("joins"):
            inner_bound, conjuncts = self._take_bound(select, from_.this, conjuncts)
        rel, conjuncts = self._plan_from(select, ctes, inner_bound, conjuncts)
        items = list(select.expressions)
        windows = [i for i in items if isinstance(i.unalias(), exp.Window)]
        qualify_clause = select.args.get("qualify")
        if qualify_clause is not None:
            if bound is not None or (windows and len(windows) > 1):
                raise unsupported("QUALIFY with more than one ROW_NUMBER()", qualify_clause, "use one Top-N")
            bound, windows = self._qualify_bound(qualify_clause, windows)
        has_aggregate = select.args.get("group") is not None or any(_contains_aggregate(i) for i in items)
        if windows and has_aggregate:
            raise unsupported("ROW_NUMBER() beside GROUP BY", windows[0], "aggregate in a subquery first")
        if windows:
            rel = self._plan_top_n(select, rel, conjuncts, windows[0], bound)
        elif has_aggregate:
            rel = self._plan_aggregate(select, rel, conjuncts)
        else:
            rel = self._calc(rel, [(i.alias_or_name, i.unalias()) for i in items], join_and(conjuncts))
        if select.args.get("distinct") is not None:
            rel = self._distinct(rel)
        return rel

    def _take_bound(
        self, select: exp.Select, sub: exp.Subquery, conjuncts: list[exp.Expr]
    ) -> tuple[_TopNBound | None, list[exp.Expr]]:
        inner = sub.this
        if not isinstance(inner, exp.Select):
            return None, conjuncts
        ranks = [i.alias_or_name for i in inner.expressions if isinstance(i.unalias(), exp.Window)]
        if len(ranks) != 1:
            return None, conjuncts
        alias = sub.alias_or_name
        rest, n = [], None
        for conjunct in conjuncts:
            limit = _rank_limit(conjunct, alias, ranks[0]) if n is None else None
            if limit is None:
                rest.append(conjunct)
            else:
                n = limit
        if n is None:
            return None, conjuncts
        others = [*select.expressions, *rest]
        used = any(c.table == alias and c.name == ranks[0] for o in others for c in o.find_all(exp.Column))
        return _TopNBound(n, used), rest

    def _qualify_bound(self, clause: exp.Expr, windows: list[exp.Expr]) -> tuple[_TopNBound, list[exp.Expr]]:
        condition = clause.this if isinstance(clause, exp.Qualify) else clause
        limit = _window_limit(condition)
        if limit is None:
            raise unsupported(
                "this QUALIFY condition", clause, "write QUALIFY ROW_NUMBER() OVER (...) <= N (or = 1)"
            )
        n, window = limit
        if windows and windows[0].unalias() != window:
            raise unsupported(
                "QUALIFY on another window than the selected one", clause, "use the same window"
            )
        return _TopNBound(n, bool(windows)), windows or [window]

    # -- FROM and joins ---------------------------------------------------------------------------------

    def _plan_from(
        self,
        select: exp.Select,
        ctes: Mapping[str, Relation],
        bound: _TopNBound | None,
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
            inner = not str(written.args.get("side") or "") and not self._is_lookup(right)
            later_right = any(str(j.args.get("side") or "").upper() == "RIGHT" for j in joins[i + 1 :])
            if is_comma_join(written) or (inner and not later_right):
                sides = {q for q, _ in rel.scope} | {q for q, _ in right.scope}
                on = [c for c in conjuncts if _qualifiers(c) <= sides and len(_qualifiers(c)) > 1]
                conjuncts = [c for c in conjuncts if not any(c is o for o in on)]
                written_on = split_and(written.args.get("on")) if not is_comma_join(written) else []
                join = exp.Join(this=written.this, on=join_and([*written_on, *on]))
            rel = self._plan_join(rel, right, join, needed)
        return rel, conjuncts

    def _plan_item(self, item: exp.Expr, ctes: Mapping[str, Relation], bound: _TopNBound | None) -> Relation:
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
                    f"view {self._view_name}: table {name} does not exist{position(where)}"
                ) from exc
            self.sources[name] = Source(schema=_body(schema), key=key, table=name)
        return self.sources[name]

    def _plan_join(
        self, left: Relation, right: Relation, join: exp.Join, needed: set[tuple[str, str]]
    ) -> Relation:
        side = str(join.args.get("side") or "").upper()
        how = "left" if side in ("LEFT", "RIGHT") else "inner"
        if self._is_lookup(right):
            return self._plan_lookup(left, right, join, needed, side)
        if side == "RIGHT":
            left, right = right, left
        split = _split_join_condition(join, left, right, how)
        pairs = split.pairs
        keys = [self._fresh("__join_key_") for _ in pairs]
        key_types = self._key_types(left, right, pairs)
        left_side = self._join_side(
            left,
            [(k, a) for k, (a, _) in zip(keys, pairs, strict=True)],
            key_types,
            needed,
            join_and(split.left),
        )
        right_side = self._join_side(
            right,
            [(k, b) for k, (_, b) in zip(keys, pairs, strict=True)],
            key_types,
            needed,
            join_and(split.right),
        )
        node_schema = join_schema(left_side.node.schema, right_side.node.schema, keys)
        equal = [*left_side.equal, *right_side.equal]
        for k, (a, b) in zip(keys, pairs, strict=True):
            group = {k}
            for expr, side_rel in ((a, left_side), (b, right_side)):
                if isinstance(expr, exp.Column):
                    group.add(side_rel.scope[(expr.table, expr.name)])
            equal.append(frozenset(group))
        key = self._join_key(left_side, right_side, pairs, how)
        scope = {**left_side.scope, **right_side.scope}
        node = Join(
            schema=node_schema, key=key, left=left_side.node, right=right_side.node, on=tuple(keys), how=how
        )
        condition = join_and(split.pair)
        if condition is not None:
            node.condition = self._render(condition, Relation(node, scope))
            used = [scope[(c.table, c.name)] for c in condition.find_all(exp.Column)]
            node.condition_columns = tuple(dict.fromkeys(used))
        return Relation(node, scope, [], equal)

    def _is_lookup(self, rel: Relation) -> bool:
        return isinstance(rel.node, Source) and rel.node.table in self._lookups()

    def _lookups(self) -> set[str]:
        given = self._view.options.get("lookup", "") if self._view is not None else ""
        return {name.strip() for name in given.split(",") if name.strip()}

    def _plan_lookup(
        self, left: Relation, right: Relation, join: exp.Join, needed: set[tuple[str, str]], side: str
    ) -> Relation:
        assert isinstance(right.node, Source)
        dim = right.node
        if side != "LEFT":
            raise unsupported(
                f"a {side or 'INNER'} JOIN with the lookup table {dim.table}", join,
                "write it as a LEFT JOIN (lookup joins keep every row of the stream)",
            )  # fmt: skip
        split = _split_join_condition(join, left, right, "inner")
        pairs = split.pairs
        columns = [b for _, b in pairs]
        dim_key = [right.scope[(c.table, c.name)] for c in columns if isinstance(c, exp.Column)]
        others = split.left or split.right or split.pair
        if others or len(dim_key) != len(pairs) or set(dim_key) != set(dim.key or ()):
            raise unsupported(
                f"this condition for the lookup table {dim.table}", join,
                f"a lookup join matches the whole primary key of {dim.table} ({', '.join(dim.key or ())}) "
                "with equalities only",
            )  # fmt: skip
        alias = next(iter({q for q, _ in right.scope}))
        dim_types = {f.name: f.type for f in dim.schema}
        keys: list[tuple[str, exp.Expr]] = [
            (name, exp.cast(a.copy(), _duckdb_type(dim_types[name])))
            for (a, _), name in zip(pairs, dim_key, strict=True)
        ]
        no_casts: list[str | None] = [None] * len(keys)  # the keys are cast to the table's types above
        side_rel = self._join_side(left, keys, no_casts, needed, None)
        wanted = {c: internal for (q, c), internal in right.scope.items() if (q, c) in needed}
        rename = {internal: f"{alias}.{c}" for c, internal in wanted.items()}  # the table's own names
        fields = [pa.field(rename[internal], dim_types[internal]) for internal in wanted.values()]
        schema = pa.schema([*_body(side_rel.node.schema), *fields])
        node = Lookup(
            schema=schema, key=side_rel.node.key, input=side_rel.node, table=dim.table, on=tuple(dim_key),
            columns=tuple(wanted.values()), rename=rename,
        )  # fmt: skip
        scope = {**side_rel.scope, **{(alias, c): rename[internal] for c, internal in wanted.items()}}
        return Relation(node, scope, [], side_rel.equal)

    def _key_types(
        self, left: Relation, right: Relation, pairs: list[tuple[exp.Expr, exp.Expr]]
    ) -> list[str | None]:
        """For each join key, a DuckDB type to cast both sides to when their types differ."""
        lq = self._query(left, [(f"k{i}", a) for i, (a, _) in enumerate(pairs)], None)
        rq = self._query(right, [(f"k{i}", b) for i, (_, b) in enumerate(pairs)], None)
        ls, rs = (
            _body(lq.schema(self._with_kind(left.node.schema))),
            _body(rq.schema(self._with_kind(right.node.schema))),
        )
        out: list[str | None] = []
        for lf, rf in zip(ls, rs, strict=True):
            if lf.type == rf.type:
                out.append(None)
                continue
            common = common_schema([pa.schema([lf]), pa.schema([rf])]).field(0).type
            out.append(_duckdb_type(common))
        return out

    def _join_side(
        self,
        rel: Relation,
        keys: list[tuple[str, exp.Expr]],
        key_types: list[str | None],
        needed: set[tuple[str, str]],
        where: exp.Expr | None,
    ) -> Relation:
        items: list[tuple[str, exp.Expr]] = []
        scope: dict[tuple[str, str], str] = {}
        key_cols = set(rel.node.key or ())
        for (qualifier, column), internal in rel.scope.items():
            if (qualifier, column) in needed or internal in key_cols:
                name = f"{qualifier}.{column}"
                items.append((name, exp.column(column, table=qualifier)))
                scope[(qualifier, column)] = name
        for (name, expr), cast in zip(keys, key_types, strict=True):
            items.append((name, exp.cast(expr, cast) if cast else expr))
        side = self._calc(rel, items, where)
        renamed = {rel.scope[qc]: scope[qc] for qc in scope}
        side.scope = scope
        side.equal = [frozenset(renamed[c] for c in group if c in renamed) for group in rel.equal]
        return side

    def _join_key(
        self, left: Relation, right: Relation, pairs: list[tuple[exp.Expr, exp.Expr]], how: str
    ) -> tuple[str, ...] | None:
        def covered(side: Relation, exprs: Iterable[exp.Expr]) -> bool:
            joined = {side.scope[(e.table, e.name)] for e in exprs if isinstance(e, exp.Column)}
            key = side.node.key
            return key is not None and bool(key) and all(side.partners(k) & joined for k in key)

        lk, rk = left.node.key, right.node.key
        if lk is not None and covered(right, (b for _, b in pairs)):
            return lk
        if how == "inner" and rk is not None and covered(left, (a for a, _ in pairs)):
            return rk
        if how == "inner" and lk is not None and rk is not None:
            return (*lk, *rk)
        return None

    # -- projections and filters ------------------------------------------------------------------------

    def _with_kind(self, schema: pa.Schema) -> pa.Schema:
        return _body(schema).append(pa.field(KIND_COLUMN, pa.int8()))

    def _render(self, expr: exp.Expr, rel: Relation, raw: bool = False) -> str:
        def swap(node: exp.Expr) -> exp.Expr:
            if isinstance(node, exp.Column):
                if raw and not node.table:
                    return node
                internal = rel.scope.get((node.table, node.name))
                if internal is None:
                    raise SqlError(
                        f"view {self._view_name}: column {node.sql(dialect=DIALECT)} is not available here"
                        f"{position(node)}"
                    )
                return exp.column(internal, quoted=True)
            return node

        return str(expr.copy().transform(swap).sql(dialect=DIALECT))

    def _query(
        self,
        rel: Relation,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        raw: bool = False,
    ) -> BatchQuery:
        columns = [f"{self._render(e, rel, raw)} AS {quote(name)}" for name, e in items]
        columns.append(quote(KIND_COLUMN))
        if where is not None:
            columns.append(f"coalesce({self._render(where, rel, raw)}, false) AS {quote(KEEP)}")
        return BatchQuery(f"SELECT {', '.join(columns)} FROM batch")

    def _calc(
        self,
        rel: Relation,
        items: Sequence[tuple[str, exp.Expr]],
        where: exp.Expr | None,
        raw: bool = False,
    ) -> Relation:
        query = self._query(rel, items, where, raw)
        schema = _body(query.schema(self._with_kind(rel.node.schema)))
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
        where_sql = self._render(where, rel, raw) if where is not None else None
        passthrough: dict[str, str] | None = None
        computed_sql: str | None = query.sql
        if not explodes:  # plain columns pass through in Arrow; DuckDB computes the rest (and the filter)
            passthrough, computed = _plain_columns(items, rel, raw, schema)
            if computed or where is not None:
                computed_sql = self._query(rel, computed, where, raw).sql
            else:
                computed_sql = None
        node = Calc(
            schema=schema, key=key, input=rel.node, sql=query.sql, where=where_sql, explodes=explodes,
            reads=_reads([e for _, e in items] + ([where] if where is not None else []), rel, raw),
            passthrough=passthrough, computed_sql=computed_sql,
        )  # fmt: skip
        names = [name for name, _ in items]
        return Relation(node, {("", n): n for n in names}, names, equal)

    def _distinct(self, rel: Relation) -> Relation:
        names = list(rel.names)
        by = tuple(rel.scope[("", n)] for n in names)
        node = self._aggregate_node(rel.node, _body(rel.node.schema), by, {"__rows": Agg("count")}, None)
        grouped = Relation(node, {("", n): rel.scope[("", n)] for n in names}, names)
        return self._calc(grouped, [(n, exp.column(n, quoted=True)) for n in names], None)

    # -- aggregates -------------------------------------------------------------------------------------

    def _plan_aggregate(self, select: exp.Select, rel: Relation, conjuncts: list[exp.Expr]) -> Relation:
        items = list(select.expressions)
        group = select.args.get("group")
        if group is not None and group.args.get("all"):
            groups = [i.unalias() for i in items if not _contains_aggregate(i)]
        else:
            groups = list(group.expressions) if group is not None else []
        having = select.args["having"].this if select.args.get("having") else None
        calls: list[exp.Expr] = []
        for node in [*items, *([having] if having is not None else [])]:
            for call in _aggregate_calls(node):
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
        pre_rel = self._calc(rel, pre, join_and(conjuncts))
        node = self._aggregate_node(pre_rel.node, _body(pre_rel.node.schema), by, aggs, window)
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
                    f"view {self._view_name}: column {expr.sql(dialect=DIALECT)} must appear in GROUP BY "
                    f"or be aggregated{position(expr)}"
                )
            return expr

        post = [(i.alias_or_name, i.unalias().copy().transform(swap)) for i in items]
        post_having = having.copy().transform(swap) if having is not None else None
        return self._calc(agg_rel, post, post_having, raw=True)

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
        view = self._view
        horizon = view.options.get("horizon") if view is not None else None
        if horizon is None or self._late_table is not None:
            return None, tuple(names)
        for g, name in zip(groups, names, strict=True):
            bucket = _bucket(g)
            if bucket is None:
                continue
            size_us, column = bucket
            # the window operator computes the window start from the event time itself
            pre[:] = [("event_time", column) if n == name else (n, e) for n, e in pre]
            self._late_table = f"{self._view_name}_late"
            window_sql = _replace(g, column, exp.column("event_time", quoted=True)).sql(dialect=DIALECT)
            self.late_keys = [*(quote(n) for n in names if n != name), f"{window_sql} AS {quote(name)}"]
            window = Window(size_us, "event_time", name, duration_us(horizon))
            return window, tuple(n for n in names if n != name)
        raise SqlError(
            f"view {self._view_name}: WITH (horizon = ...) needs an event-time window in GROUP BY: "
            "date_trunc('minute'|'hour'|'day'|'second', ts) or time_bucket(INTERVAL ..., ts) with a size "
            "that divides a day"
        )

    def _aggregate_node(
        self,
        input_node: Node,
        schema: pa.Schema,
        by: tuple[str, ...],
        aggs: dict[str, Agg],
        window: Window | None,
    ) -> Aggregate:
        state = AggregateState(by, aggs, window)
        state._init_schema(schema)
        out = _body(state.output_schema())
        key = (*by, window.column) if window is not None else by
        late = self._late_table if window is not None else None
        return Aggregate(
            schema=out, key=key, input=input_node, by=by, aggs=aggs, window=window, late_table=late
        )

    # -- Top-N ------------------------------------------------------------------------------------------

    def _plan_top_n(
        self,
        select: exp.Select,
        rel: Relation,
        conjuncts: list[exp.Expr],
        window_item: exp.Expr,
        bound: _TopNBound | None,
    ) -> Relation:
        window = window_item.unalias()
        if bound is None:
            raise unsupported(
                "ROW_NUMBER() without a bound", window_item,
                "filter it in the enclosing query: WHERE rn <= N (or = 1), or QUALIFY ROW_NUMBER() ... <= N",
            )  # fmt: skip
        columns, seen = _carried_columns(select, window_item, rel)
        partition = list(window.args.get("partition_by") or [])
        parts = [(f"__partition_{i}", p) for i, p in enumerate(partition)] or [
            ("__partition_0", exp.Literal.number(0))
        ]
        order = list(window.args["order"].expressions)
        orders = [(f"__order_{i}", o.this) for i, o in enumerate(order)]
        pre = self._calc(rel, [*columns, *parts, *orders], join_and(conjuncts))
        rank = window_item.alias_or_name if bound.rank_used else None
        sort = tuple(
            SortKey(name, bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
            for (name, _), o in zip(orders, order, strict=True)
        )
        schema = _body(pre.node.schema)
        if rank is not None:
            schema = schema.append(pa.field(rank, pa.int64(), nullable=False))
        part_names = tuple(n for n, _ in parts)
        keyed_by = part_names if partition else ()  # no PARTITION BY: one partition, a constant
        if rank is not None:
            key: tuple[str, ...] | None = (*keyed_by, rank)
        elif bound.n == 1 and keyed_by:
            key = keyed_by
        else:
            key = pre.node.key
        node = TopN(
            schema=schema,
            key=key,
            input=pre.node,
            partition_by=part_names,
            order_by=sort,
            n=bound.n,
            rank=rank,
        )
        top = Relation(node, dict(seen), [], list(pre.equal))
        post: list[tuple[str, exp.Expr]] = []
        for item in select.expressions:
            if item is not window_item:
                post.append((item.alias_or_name, item.unalias()))
            elif rank is not None:
                post.append((rank, exp.column(rank, table="__rank")))
                top.scope[("__rank", rank)] = rank
        for name, p in parts:  # a selected partition column stands for its partition: it keeps the key
            inner = seen.get((p.table, p.name)) if isinstance(p, exp.Column) else None
            if inner is not None:
                top.equal.append(frozenset({name, inner}))
        return self._calc(top, post, None)


def _carried_columns(
    select: exp.Select, window_item: exp.Expr, rel: Relation
) -> tuple[list[tuple[str, exp.Expr]], dict[tuple[str, str], str]]:
    """Columns a Top-N carries: those its SELECT uses, and its input's key (named ``alias.column``)."""
    columns: list[tuple[str, exp.Expr]] = []
    seen: dict[tuple[str, str], str] = {}
    wanted = [
        (c.table, c.name) for i in select.expressions if i is not window_item for c in i.find_all(exp.Column)
    ]
    key = set(rel.node.key or ())
    wanted += [qc for qc, internal in rel.scope.items() if internal in key]
    for qualifier, column in wanted:
        if (qualifier, column) not in seen:
            seen[(qualifier, column)] = name = f"{qualifier}.{column}"
            columns.append((name, exp.column(column, table=qualifier)))
    return columns, seen


@dataclass(frozen=True)
class _JoinCondition:
    """A join's ON split: equality pairs (left, right), filters of one side (applied before the join),
    and conditions on the matched pair (applied inside it)."""

    pairs: list[tuple[exp.Expr, exp.Expr]]
    left: list[exp.Expr]
    right: list[exp.Expr]
    pair: list[exp.Expr]


def _split_join_condition(join: exp.Join, left: Relation, right: Relation, how: str) -> _JoinCondition:
    """ON's conjuncts as (left, right) equality pairs, side filters and pair conditions.

    A conjunct over one side filters that side before the join, except the preserved side of a left
    join (its rows stay, null-padded when the conjunct fails: a pair condition); a conjunct without
    columns filters the right side; the rest are pair conditions.
    """
    left_q, right_q = {q for q, _ in left.scope}, {q for q, _ in right.scope}
    split = _JoinCondition([], [], [], [])
    for conjunct in split_and(join.args.get("on")):
        if isinstance(conjunct, exp.EQ):
            a, b = conjunct.left, conjunct.right
            qa, qb = _qualifiers(a), _qualifiers(b)
            if qa and qb and qa <= left_q and qb <= right_q:
                split.pairs.append((a, b))
                continue
            if qa and qb and qa <= right_q and qb <= left_q:
                split.pairs.append((b, a))
                continue
        quals = _qualifiers(conjunct)
        if quals <= right_q:
            split.right.append(conjunct)  # also ON false and other constants: no right row matches
        elif quals <= left_q and how != "left":
            split.left.append(conjunct)
        else:
            split.pair.append(conjunct)
    if not split.pairs:
        raise unsupported("a join without an equality between its sides", join, "join on a.x = b.y")
    return split


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
    input_types = {f.name: f.type for f in _body(rel.node.schema)}
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


def _replace(tree: exp.Expr, old: exp.Expr, new: exp.Expr) -> exp.Expr:
    """``tree`` with every node equal to ``old`` replaced by ``new``."""
    return tree.copy().transform(lambda n: new.copy() if n == old else n)


def _select_items(query: exp.Expr) -> list[exp.Expr]:
    while isinstance(query, exp.Subquery):
        query = query.this
    if isinstance(query, exp.Union):
        return _select_items(query.left)
    return list(query.expressions) if isinstance(query, exp.Select) else []


def _aggregate_calls(node: exp.Expr) -> list[exp.Expr]:
    """Aggregate calls in ``node``, with their FILTER clause when they have one."""
    found: list[exp.Expr] = []
    for n in node.walk():
        if (isinstance(n, exp.Filter) and _is_aggregate(n.this)) or (
            _is_aggregate(n) and not isinstance(n.parent, exp.Filter)
        ):
            found.append(n)
    return found


def _rank_limit(conjunct: exp.Expr, alias: str, rank: str) -> int | None:
    """N of ``alias.rank <= N`` (or ``< N``, ``= 1``, and the mirrored forms), else None."""

    def is_rank(e: exp.Expr) -> bool:
        return isinstance(e, exp.Column) and e.table == alias and e.name == rank

    return _limit(conjunct, is_rank)


def _window_limit(condition: exp.Expr) -> tuple[int, exp.Expr] | None:
    found: list[exp.Expr] = []

    def is_window(e: exp.Expr) -> bool:
        if isinstance(e, exp.Window) and isinstance(e.this, exp.RowNumber):
            found.append(e)
            return True
        return False

    n = _limit(condition, is_window)
    return (n, found[-1]) if n is not None else None


def _limit(conjunct: exp.Expr, is_rank: Any) -> int | None:
    if not isinstance(conjunct, exp.LTE | exp.LT | exp.EQ | exp.GTE | exp.GT):
        return None
    a, b = conjunct.left, conjunct.right
    flipped = False
    if is_rank(b) and isinstance(a, exp.Literal):
        a, b, flipped = b, a, True
    if not (is_rank(a) and isinstance(b, exp.Literal) and b.is_int):
        return None
    n = int(b.name)
    kind: type[exp.Expr] = type(conjunct)
    if flipped:
        mirror: dict[type[exp.Expr], type[exp.Expr]] = {
            exp.LTE: exp.GTE,
            exp.LT: exp.GT,
            exp.GTE: exp.LTE,
            exp.GT: exp.LT,
        }
        kind = mirror.get(kind, kind)
    if kind is exp.LTE:
        return n if n >= 1 else None
    if kind is exp.LT:
        return n - 1 if n >= 2 else None
    if kind is exp.EQ:
        return 1 if n == 1 else None
    return None


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


def _duckdb_type(dtype: pa.DataType) -> str:
    from flowlake.sql.evaluate import sandboxed_connection

    con = sandboxed_connection()
    try:
        con.register("t", pa.table({"x": pa.array([], dtype)}))
        row = con.execute("DESCRIBE SELECT x FROM t").fetchone()
        return str(row[1])
    finally:
        con.close()
