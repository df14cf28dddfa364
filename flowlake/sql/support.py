"""What SQL views support, checked on the parsed SELECT before planning: a clear error, never a wrong result.

Each construct that cannot be maintained incrementally (or not yet) raises
:class:`~flowlake.errors.UnsupportedSqlError` naming it, where it is (line and column of the view
file) and what to write instead.
"""

from __future__ import annotations

from typing import Final

from sqlglot import exp

from flowlake.errors import UnsupportedSqlError

AGGREGATES: Final = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
}
"""Aggregate functions a view may use (``count(DISTINCT x)`` as well)."""

_VOLATILE: Final = frozenset(
    {
        "random", "rand", "now", "current_timestamp", "current_date", "current_time", "get_current_time",
        "get_current_timestamp", "transaction_timestamp", "localtimestamp", "localtime", "today", "uuid",
        "gen_random_uuid", "uuidv4", "uuidv7", "nextval", "currval", "setseed",
    }
)  # fmt: skip
"""Functions whose value changes between calls: a retraction would not cancel its insertion."""

_VOLATILE_NODES: Final = (exp.Rand, exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime)


def position(node: exp.Expr) -> str:
    """`` at line L, column C`` of the first identifier in ``node`` that the parser placed, or ``""``."""
    for candidate in node.walk():
        meta = getattr(candidate, "_meta", None) or {}
        if "line" in meta:
            return f" at line {meta['line']}, column {meta['col']}"
    return ""


def unsupported(what: str, node: exp.Expr, instead: str) -> UnsupportedSqlError:
    """The error for one unsupported construct."""
    snippet = node.sql(dialect="duckdb")
    snippet = snippet if len(snippet) <= 80 else snippet[:77] + "..."
    return UnsupportedSqlError(
        f"{what} is not supported in a materialized view{position(node)}: {snippet}; {instead}"
    )


def function_name(node: exp.Func) -> str:
    """A function's SQL name, lowercase."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return str(node.sql_name()).lower()


def check_query(query: exp.Expr) -> None:
    """Raise :class:`UnsupportedSqlError` for the first construct of ``query`` that views cannot run."""
    for node in query.walk():
        _check_node(node)


def _check_node(node: exp.Expr) -> None:
    if isinstance(node, exp.Select):
        _check_select(node)
    elif isinstance(node, exp.Union) and node.args.get("distinct") is None:
        pass
    elif isinstance(node, exp.Intersect | exp.Except):
        raise unsupported(type(node).__name__.upper(), node, "rewrite it as a join or NOT EXISTS-free filter")
    elif isinstance(node, exp.With) and node.args.get("recursive"):
        raise unsupported("WITH RECURSIVE", node, "views compute one fixed point per input change only")
    elif isinstance(node, exp.Window):
        if not isinstance(node.this, exp.RowNumber):
            raise unsupported(
                f"window function {node.this.sql(dialect='duckdb')}",
                node,
                "use ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) filtered by rn <= N (Top-N), "
                "or an aggregate with GROUP BY",
            )
        if not node.args.get("order"):
            raise unsupported("ROW_NUMBER() without ORDER BY", node, "give the window an ORDER BY")
    elif isinstance(node, exp.Subquery | exp.Exists) and not isinstance(node.parent, exp.From | exp.Join):
        raise unsupported("a subquery inside an expression", node, "join with it in FROM instead")
    elif isinstance(node, exp.In) and node.args.get("query") is not None:
        raise unsupported("IN (subquery)", node, "join with the subquery in FROM instead")
    elif isinstance(node, exp.Lateral | exp.Unnest | exp.Pivot):
        raise unsupported(type(node).__name__.upper(), node, "compute it in the input table instead")
    elif isinstance(node, _VOLATILE_NODES):
        raise unsupported("a non-deterministic function", node, "store the value in an input table")
    elif isinstance(node, exp.Func):
        _check_function(node)


def _check_select(select: exp.Select) -> None:
    for arg, what, instead in (
        (
            "order",
            "ORDER BY",
            "a view is an unordered table: drop it, or keep the first N rows with ROW_NUMBER()",
        ),
        ("limit", "LIMIT", "use ROW_NUMBER() OVER (ORDER BY ...) with rn <= N"),
        ("offset", "OFFSET", "use ROW_NUMBER() OVER (ORDER BY ...) with rn > N"),
        ("laterals", "LATERAL", "join with a subquery in FROM"),
    ):
        if select.args.get(arg):
            raise unsupported(what, select.args[arg] if arg != "laterals" else select, instead)
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise unsupported(
            "DISTINCT ON", distinct, "use ROW_NUMBER() OVER (PARTITION BY ... ORDER BY ...) = 1"
        )
    group = select.args.get("group")
    grouping = (exp.Rollup, exp.Cube, exp.GroupingSets)
    if group is not None and (
        any(group.args.get(a) for a in ("grouping_sets", "cube", "rollup"))
        or any(isinstance(g, grouping) for g in group.expressions)
    ):
        raise unsupported(
            "GROUPING SETS/CUBE/ROLLUP", group, "write one view per grouping and UNION ALL them"
        )
    for join in select.args.get("joins") or []:
        side, kind = str(join.args.get("side") or "").upper(), str(join.args.get("kind") or "").upper()
        if side == "FULL":
            raise unsupported("FULL OUTER JOIN", join, "use a LEFT JOIN from each side and UNION ALL")
        if kind in ("CROSS", "SEMI", "ANTI", "ASOF", "POSITIONAL") or join.args.get("using"):
            what = "JOIN ... USING" if join.args.get("using") else f"{kind} JOIN"
            raise unsupported(what, join, "write JOIN ... ON a.x = b.x")
        if join.args.get("on") is None and not is_comma_join(join):
            raise unsupported("a join without ON", join, "join on at least one equality a.x = b.y")


def is_comma_join(join: exp.Join) -> bool:
    """``FROM a, b``: an inner join whose conditions are in WHERE."""
    return not any(join.args.get(a) for a in ("on", "using", "kind", "side", "method"))


def _check_function(node: exp.Func) -> None:
    name = function_name(node)
    if name in _VOLATILE:
        raise unsupported(
            f"the non-deterministic function {name}()", node, "store the value in an input table"
        )
    if isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window):
        kind = type(node)
        if kind not in AGGREGATES:
            raise unsupported(
                f"the aggregate {name}()", node, "use count, count(DISTINCT), sum, avg, min or max"
            )
        distinct = isinstance(node.this, exp.Distinct)
        if distinct and kind is not exp.Count:
            raise unsupported(f"{name}(DISTINCT ...)", node, "only count(DISTINCT x) is supported")
        if (
            any(isinstance(inner, exp.AggFunc) for inner in node.this.walk() if inner is not node)
            if node.this
            else False
        ):
            raise unsupported(
                "an aggregate inside an aggregate", node, "aggregate a subquery's result in FROM"
            )
