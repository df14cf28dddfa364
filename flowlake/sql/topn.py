"""Top-N: ``ROW_NUMBER() OVER (...)`` bounded by ``rn <= N`` (or QUALIFY) → :class:`~flowlake.sql.plan.TopN`.

The bound is found either in the enclosing query's WHERE (``rn <= N``, ``rn < N``, ``rn = 1`` and
the mirrored forms) or in the SELECT's QUALIFY. A Top-N is keyed by its partition columns plus the
rank when the rank is selected, by the partition columns alone for N = 1.

A Top-N directly over a join that partitions by the whole key of one of the join's sides does not
carry that side's other selected columns (those it does not rank, filter or join by): within a
partition they are one row's, so they are fetched for the top rows only, by joining the Top-N's
output with that side on its key (Nexmark q9: the auction's wide columns are not copied into every
(auction, bid) pair and the Top-N's state, only into each auction's best bid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from flowlake.flow import SortKey
from flowlake.flow.schemas import join_schema
from flowlake.sql.plan import Join, Node, TopN
from flowlake.sql.project import Projector
from flowlake.sql.relation import Relation, body
from flowlake.sql.sqltree import join_and
from flowlake.sql.support import unsupported


@dataclass(frozen=True)
class TopNBound:
    """The N of a Top-N, and whether the enclosing query uses the rank column."""

    n: int
    rank_used: bool


def take_bound(
    select: exp.Select, sub: exp.Subquery, conjuncts: list[exp.Expr]
) -> tuple[TopNBound | None, list[exp.Expr]]:
    """The bound that ``select``'s WHERE ``conjuncts`` put on the rank of its FROM subquery ``sub``,
    and the conjuncts left."""
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
    return TopNBound(n, used), rest


def qualify_bound(clause: exp.Expr, windows: list[exp.Expr]) -> tuple[TopNBound, list[exp.Expr]]:
    """The bound of a QUALIFY clause, and the window it ranks by (as a one-item select list)."""
    condition = clause.this if isinstance(clause, exp.Qualify) else clause
    limit = _window_limit(condition)
    if limit is None:
        raise unsupported(
            "this QUALIFY condition", clause, "write QUALIFY ROW_NUMBER() OVER (...) <= N (or = 1)"
        )
    n, window = limit
    if windows and windows[0].unalias() != window:
        raise unsupported("QUALIFY on another window than the selected one", clause, "use the same window")
    return TopNBound(n, bool(windows)), windows or [window]


def plan_top_n(
    projector: Projector,
    select: exp.Select,
    rel: Relation,
    conjuncts: list[exp.Expr],
    window_item: exp.Expr,
    bound: TopNBound | None,
) -> Relation:
    """``select``, whose select list has the ROW_NUMBER() ``window_item``, over ``rel``."""
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
    deferred = _deferrable(rel, columns, parts, orders, conjuncts)
    if deferred is not None:
        rel, columns = deferred.narrow(projector, rel), [c for c in columns if c[0] not in deferred.columns]
    pre = projector.calc(rel, [*columns, *parts, *orders], join_and(conjuncts))
    rank = window_item.alias_or_name if bound.rank_used else None
    sort = tuple(
        SortKey(name, bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
        for (name, _), o in zip(orders, order, strict=True)
    )
    schema = body(pre.node.schema)
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
    top_node: Node = node
    if deferred is not None:  # the wide columns of the partition's join side, for the top rows only
        top_node = deferred.fetch(projector, node, parts)
    top = Relation(top_node, dict(seen), [], list(pre.equal))
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
    return projector.calc(top, post, None)


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


def _limit(conjunct: exp.Expr, is_rank: Callable[[exp.Expr], bool]) -> int | None:
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


@dataclass(frozen=True)
class _Deferred:
    """Columns of one side of the join under a Top-N that the Top-N leaves to a join after it.

    The side is joined on its whole key and the Top-N partitions by that key (or a column equal to
    it), so within a partition these columns are one row's: they cannot change the rank, and the
    top rows get them from the side by its key.
    """

    join: Join
    side: Node
    columns: dict[str, str]
    """Carried column name -> the side's column."""
    key: dict[str, str]
    """Partition column name -> the side's key column it equals."""

    def narrow(self, projector: Projector, rel: Relation) -> Relation:
        """``rel`` (the join) with the side's deferred columns left out."""
        dropped = set(self.columns.values())
        kept = [f.name for f in body(self.side.schema) if f.name not in dropped]
        side = _select(projector, self.side, [(name, name) for name in kept])
        join = self.join
        left, right = (side, join.right) if self.side is join.left else (join.left, side)
        node = Join(
            schema=join_schema(left.schema, right.schema, join.on), key=join.key, left=left, right=right,
            on=join.on, how=join.how, condition=join.condition, condition_columns=join.condition_columns,
        )  # fmt: skip
        scope = {qc: internal for qc, internal in rel.scope.items() if internal not in dropped}
        equal = [group - dropped for group in rel.equal if len(group - dropped) > 1]
        return Relation(node, scope, [], equal)

    def fetch(self, projector: Projector, top: TopN, parts: Sequence[tuple[str, exp.Expr]]) -> Join:
        """``top``'s changes joined with the side's row of their partition (for the deferred columns)."""
        on = tuple(name for name, _ in parts if name in self.key)
        side = _select(projector, self.side, [*((n, self.key[n]) for n in on), *self.columns.items()])
        schema = join_schema(top.schema, side.schema, on)
        return Join(schema=schema, key=top.key, left=top, right=side, on=on, how="inner")


def _select(projector: Projector, node: Node, items: Sequence[tuple[str, str]]) -> Node:
    """A projection of ``node``'s columns (output name, column), passed through in Arrow."""
    rel = Relation(node, {("", f.name): f.name for f in body(node.schema)})
    return projector.calc(rel, [(name, exp.column(column, quoted=True)) for name, column in items], None).node


def _deferrable(
    rel: Relation,
    columns: Sequence[tuple[str, exp.Expr]],
    parts: Sequence[tuple[str, exp.Expr]],
    ranked: Sequence[tuple[str, exp.Expr]],
    conjuncts: Sequence[exp.Expr],
) -> _Deferred | None:
    """The carried ``columns`` a Top-N over ``rel`` can leave out and fetch after it, if any: those of
    a join side (either side of an inner join, the left of a left join) whose whole key the partition
    columns ``parts`` cover, that no partition, ORDER BY (``ranked``), filter, join key or join
    condition reads."""
    join = rel.node
    if not isinstance(join, Join) or join.how not in ("inner", "left"):
        return None

    def internal(expr: exp.Expr) -> str | None:
        return rel.scope.get((expr.table, expr.name)) if isinstance(expr, exp.Column) else None

    read = {internal(c) for _, e in [*parts, *ranked] for c in e.find_all(exp.Column)}
    read |= {internal(c) for e in conjuncts for c in e.find_all(exp.Column)}
    read |= {*join.condition_columns, *join.on, *(join.key or ())}
    types = {f.name: f.type for f in join.schema}
    for side in [join.left] if join.how == "left" else [join.left, join.right]:
        if not side.key:
            continue
        names = {f.name: f.type for f in body(side.schema)}
        key: dict[str, str] = {}
        for name, expr in parts:
            column = internal(expr)
            for k in side.key:
                if column in names and column in rel.partners(k) and types.get(column) == names[k]:
                    key.setdefault(name, k)
        if set(key.values()) != set(side.key):
            continue
        deferred: dict[str, str] = {}
        for name, expr in columns:
            column = internal(expr)
            if column is not None and column in names and column not in read and column not in side.key:
                deferred[name] = column
        if deferred:
            return _Deferred(join, side, deferred, key)
    return None
