"""Small helpers over sqlglot trees that the planning steps share: conjuncts, qualifiers, aggregates."""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp


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


def qualifiers(node: exp.Expr) -> set[str]:
    """The table aliases that ``node``'s columns name."""
    return {c.table for c in node.find_all(exp.Column)}


def is_aggregate(node: exp.Expr) -> bool:
    """Whether ``node`` is an aggregate call (not a window function's)."""
    return isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window)


def contains_aggregate(node: exp.Expr) -> bool:
    """Whether ``node`` has an aggregate call in it."""
    return any(is_aggregate(n) for n in node.walk())


def aggregate_calls(node: exp.Expr) -> list[exp.Expr]:
    """Aggregate calls in ``node``, with their FILTER clause when they have one."""
    found: list[exp.Expr] = []
    for n in node.walk():
        if (isinstance(n, exp.Filter) and is_aggregate(n.this)) or (
            is_aggregate(n) and not isinstance(n.parent, exp.Filter)
        ):
            found.append(n)
    return found


def replace(tree: exp.Expr, old: exp.Expr, new: exp.Expr) -> exp.Expr:
    """``tree`` with every node equal to ``old`` replaced by ``new``."""
    return tree.copy().transform(lambda n: new.copy() if n == old else n)


def select_items(query: exp.Expr) -> list[exp.Expr]:
    """The select list of ``query`` (of its first side for a UNION)."""
    while isinstance(query, exp.Subquery):
        query = query.this
    if isinstance(query, exp.Union):
        return select_items(query.left)
    return list(query.expressions) if isinstance(query, exp.Select) else []
