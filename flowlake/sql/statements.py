"""A view file: ``CREATE MATERIALIZED VIEW ns.name [WITH (...)] AS <select>;`` statements, parsed by sqlglot.

sqlglot (DuckDB dialect) parses the statements; its tokenizer gives each SELECT's exact text, which
is kept as written: it is what ``flowlake verify`` runs in DuckDB.

>>> [v.name for v in parse_views("CREATE MATERIALIZED VIEW dws.n AS SELECT 1 AS one FROM ods.t")]
['dws.n']
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType  # type: ignore[attr-defined]

from flowlake.errors import SqlError, UnsupportedSqlError
from flowlake.names import TableName

DIALECT: Final = "duckdb"

OPTIONS: Final = {
    "primary_key": "columns of the view's primary key, e.g. 'shop_id, minute' (default: derived)",
    "buckets": "hash buckets of the view's table (default 4)",
    "horizon": "late-data horizon of an event-time window, e.g. '2h' (default: windows stay open)",
    "partitions": "key partitions of the view's stateful operators (default 4)",
    "lookup": "tables to LEFT JOIN as lookup joins: no state for that side, rows not revised when it changes",
}
"""Options a view takes in ``WITH (...)``."""

_OPTION_NAME: Final = re.compile(r"^[a-z_]+$")


@dataclass(frozen=True)
class ViewDefinition:
    """One ``CREATE MATERIALIZED VIEW``: its table, its SELECT (text and tree) and its options."""

    name: str
    sql: str
    query: exp.Expr
    options: dict[str, str] = field(default_factory=dict)
    line: int = 1


def _statements(text: str) -> list[list[Token]]:
    try:
        tokens = sqlglot.tokenize(text, dialect=DIALECT)
    except TokenError as exc:
        raise SqlError(f"cannot read the SQL: {exc}") from exc
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            statements.append([])
        else:
            statements[-1].append(token)
    return [s for s in statements if s]


def _select_text(text: str, tokens: list[Token]) -> str:
    depth = 0
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
        elif token.token_type == TokenType.ALIAS and depth == 0 and i + 1 < len(tokens):
            return text[tokens[i + 1].start : tokens[-1].end + 1]
    raise SqlError(f"line {tokens[0].line}: expected CREATE MATERIALIZED VIEW ns.name AS SELECT ...")


def _options(create: exp.Create, name: str) -> dict[str, str]:
    options: dict[str, str] = {}
    properties = create.args.get("properties")
    for prop in properties.expressions if properties is not None else []:
        if isinstance(prop, exp.MaterializedProperty):
            continue
        if not isinstance(prop, exp.Property):
            raise UnsupportedSqlError(f"view {name}: unknown clause {prop.sql(dialect=DIALECT)!r}")
        key = prop.name.lower()
        if not _OPTION_NAME.match(key) or key not in OPTIONS:
            known = ", ".join(sorted(OPTIONS))
            raise SqlError(f"view {name}: unknown option {key!r}; views take {known}")
        value = prop.args.get("value")
        if value is None:
            raise SqlError(f"view {name}: option {key!r} needs a value, e.g. {key} = '...'")
        options[key] = value.name if isinstance(value, exp.Literal) else value.sql(dialect=DIALECT)
    return options


def parse_views(text: str) -> list[ViewDefinition]:
    """The views of a ``.sql`` file, in order.

    Raises:
        SqlError: If the text does not parse, or holds a statement other than CREATE MATERIALIZED VIEW.
    """
    views: list[ViewDefinition] = []
    for tokens in _statements(text):
        line = tokens[0].line
        statement_text = text[tokens[0].start : tokens[-1].end + 1]
        try:
            create = sqlglot.parse_one(statement_text, dialect=DIALECT)
        except ParseError as exc:
            raise SqlError(f"line {line}: cannot parse the statement: {exc}") from exc
        properties = create.args.get("properties") if isinstance(create, exp.Create) else None
        materialized = properties is not None and any(
            isinstance(p, exp.MaterializedProperty) for p in properties.expressions
        )
        if not (
            isinstance(create, exp.Create) and str(create.args.get("kind")).upper() == "VIEW" and materialized
        ):
            raise UnsupportedSqlError(
                f"line {line}: a view file holds CREATE MATERIALIZED VIEW ns.name AS SELECT ... statements; "
                f"got {statement_text.split(None, 3)[:3]}"
            )
        target = create.this
        name = f"{target.db}.{target.name}" if target.db else str(target.name)
        try:
            TableName.parse(name)
        except Exception as exc:
            raise SqlError(f"line {line}: view name {name!r}: {exc}") from exc
        query = create.expression
        if not isinstance(query, exp.Query):
            raise SqlError(f"line {line}: view {name} needs AS SELECT ...")
        if any(v.name == name for v in views):
            raise SqlError(f"line {line}: view {name} is defined twice")
        views.append(ViewDefinition(name, _select_text(text, tokens), query, _options(create, name), line))
    if not views:
        raise SqlError("the file holds no CREATE MATERIALIZED VIEW statement")
    return views
