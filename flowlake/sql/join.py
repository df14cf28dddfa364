"""Joins → :class:`~flowlake.sql.plan.Join` and :class:`~flowlake.sql.plan.Lookup` nodes.

A join's ON splits into equality pairs (the join keys, cast to a common type when the sides'
types differ), filters of one side (applied before the join) and conditions on the matched pair.
A join keeps one side's key when the other side is joined on its whole key (inner joins either
way), else both keys together. A LEFT JOIN with a table named in ``WITH (lookup = ...)`` becomes a
lookup join: each stream row reads the table's current row by its whole primary key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from flowlake.flow.schemas import join_schema
from flowlake.sql.evaluate import common_schema
from flowlake.sql.plan import Join, Lookup, Source
from flowlake.sql.project import Projector, with_kind
from flowlake.sql.relation import PlanState, Relation, body
from flowlake.sql.sqltree import join_and, qualifiers, split_and
from flowlake.sql.support import unsupported


class JoinPlanner:
    """Plans a FROM clause's joins, lookup joins included."""

    def __init__(self, state: PlanState, projector: Projector) -> None:
        self.state = state
        self.projector = projector

    def plan(self, left: Relation, right: Relation, join: exp.Join, needed: set[tuple[str, str]]) -> Relation:
        """``left`` joined with ``right`` as ``join`` says, carrying the ``needed`` columns."""
        side = str(join.args.get("side") or "").upper()
        how = "left" if side in ("LEFT", "RIGHT") else "inner"
        if self.is_lookup(right):
            return self._plan_lookup(left, right, join, needed, side)
        if side == "RIGHT":
            left, right = right, left
        split = _split_join_condition(join, left, right, how)
        pairs = split.pairs
        keys = [self.state.fresh("__join_key_") for _ in pairs]
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
        key = _join_key(left_side, right_side, pairs, how)
        scope = {**left_side.scope, **right_side.scope}
        node = Join(
            schema=node_schema, key=key, left=left_side.node, right=right_side.node, on=tuple(keys), how=how
        )
        condition = join_and(split.pair)
        if condition is not None:
            node.condition = self.projector.render(condition, Relation(node, scope))
            used = [scope[(c.table, c.name)] for c in condition.find_all(exp.Column)]
            node.condition_columns = tuple(dict.fromkeys(used))
        return Relation(node, scope, [], equal)

    def is_lookup(self, rel: Relation) -> bool:
        """Whether ``rel`` is a table the view names in ``WITH (lookup = ...)``."""
        return isinstance(rel.node, Source) and rel.node.table in self._lookups()

    def _lookups(self) -> set[str]:
        given = self.state.option("lookup") or ""
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
        schema = pa.schema([*body(side_rel.node.schema), *fields])
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
        lq = self.projector.query(left, [(f"k{i}", a) for i, (a, _) in enumerate(pairs)], None)
        rq = self.projector.query(right, [(f"k{i}", b) for i, (_, b) in enumerate(pairs)], None)
        ls, rs = (
            body(lq.schema(with_kind(left.node.schema))),
            body(rq.schema(with_kind(right.node.schema))),
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
        side = self.projector.calc(rel, items, where)
        renamed = {rel.scope[qc]: scope[qc] for qc in scope}
        side.scope = scope
        side.equal = [frozenset(renamed[c] for c in group if c in renamed) for group in rel.equal]
        return side


def _join_key(
    left: Relation, right: Relation, pairs: list[tuple[exp.Expr, exp.Expr]], how: str
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
            qa, qb = qualifiers(a), qualifiers(b)
            if qa and qb and qa <= left_q and qb <= right_q:
                split.pairs.append((a, b))
                continue
            if qa and qb and qa <= right_q and qb <= left_q:
                split.pairs.append((b, a))
                continue
        quals = qualifiers(conjunct)
        if quals <= right_q:
            split.right.append(conjunct)  # also ON false and other constants: no right row matches
        elif quals <= left_q and how != "left":
            split.left.append(conjunct)
        else:
            split.pair.append(conjunct)
    if not split.pairs:
        raise unsupported("a join without an equality between its sides", join, "join on a.x = b.y")
    return split


def _duckdb_type(dtype: pa.DataType) -> str:
    from flowlake.sql.evaluate import sandboxed_connection

    con = sandboxed_connection()
    try:
        con.register("t", pa.table({"x": pa.array([], dtype)}))
        row = con.execute("DESCRIBE SELECT x FROM t").fetchone()
        return str(row[1])
    finally:
        con.close()
