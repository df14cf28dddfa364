"""Sandboxed, read-only SQL over catalog tables: what ``flowlake sql`` runs, reusable by any face.

A query sees only the catalog tables it names that its principal may read, each as one snapshot,
and nothing else. Three layers, each enough on its own for what it covers:

1. DuckDB's own parser must find exactly one statement, and it must be a SELECT (so COPY, ATTACH,
   DETACH, INSTALL, LOAD, SET, PRAGMA, CALL, EXPORT, CREATE, INSERT, ... are refused by type).
2. sqlglot (DuckDB dialect) lists the tables the SELECT names. Every ``namespace.table`` must be a
   catalog table the principal may read (quoted or not, any case: DuckDB identifiers are case
   insensitive); a one-part name must be a CTE; table functions other than ``range`` /
   ``generate_series`` (``read_parquet``, ``read_csv``, ``glob``, ``query_table``, ...) are refused.
3. The query runs in a fresh in-memory DuckDB connection opened with ``enable_external_access =
   false`` (no file, network or extension access from SQL), replacement scans of Python variables
   off, extension autoloading off and ``lock_configuration = true`` (no SET or PRAGMA can undo any of
   it). The only data in it are Arrow datasets of the allowed snapshots, registered from Python.

``as_of`` gives every table in the query one cut: a time reads each table at its newest version
committed at or before that time (naive times are UTC); a version number is only meaningful for a
query over one table. Without ``as_of`` each table is read at its head, resolved once before the
query starts, and :attr:`QueryResult.versions` says which versions were read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from flowlake.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    SqlSandboxError,
    TableNotFoundError,
)
from flowlake.names import TableName
from flowlake.sql.keyfilter import pushed_filters
from flowlake.table.stats import Predicate

if TYPE_CHECKING:
    from flowlake.catalog.access import Privilege
    from flowlake.lake import Catalog
    from flowlake.table.table import LakeTable

SANDBOX_SETTINGS: Mapping[str, bool] = {
    "enable_external_access": False,
    "python_enable_replacements": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,  # last: nothing after it can change the settings above
}
"""DuckDB settings of every sandbox connection."""

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALLOWED_TABLE_FUNCTIONS: tuple[type[exp.Expression], ...] = (exp.GenerateSeries,)
_RULES = (
    "flowlake sql runs one read-only SELECT over catalog tables named namespace.table "
    "(no file functions, COPY, ATTACH, INSTALL, LOAD, SET or PRAGMA)"
)


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The rows a query returned and the version of each table it read."""

    table: pa.Table
    versions: Mapping[str, int] = field(default_factory=dict)


def sandbox_connection() -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with the sandbox settings (no files, settings locked)."""
    return duckdb.connect(":memory:", config=dict(SANDBOX_SETTINGS))


def run_query(
    catalog: Catalog,
    sql: str,
    *,
    principal: str | None = None,
    as_of: str | int | dt.datetime | None = None,
) -> QueryResult:
    """Run one SELECT over catalog tables in the sandbox.

    Args:
        catalog: Where the tables are; its own principal must be able to read them.
        sql: One SELECT (DuckDB dialect) naming tables as ``namespace.table``.
        principal: Check grants for this principal as well (a console acting for a user); the
            catalog's principal needs admin on the tables to look up another principal's grants.
        as_of: A time (datetime or ISO 8601 text; naive is UTC) giving every table one cut, or a
            version number (queries over one table only).

    Raises:
        SqlSandboxError: The query is not one SELECT, or names a table function or a three-part name.
        PermissionDeniedError: A named table is not readable by the principal.
        TableNotFoundError: A named table does not exist (or a one-part name is not a CTE).
        InvalidArgumentError: The SQL does not parse or fails in DuckDB, or ``as_of`` is unusable.
    """
    with sandbox_connection() as con:
        _check_single_select(sql, con)
        names = referenced_tables(sql)
        tables = {name: _readable(catalog, name, principal) for name in names}
        versions = _cut(tables, as_of)
        pushed = pushed_filters(sql, {n: t.schema for n, t in tables.items()})
        for name, table in tables.items():
            _register(con, TableName.parse(name), table, versions[name], pushed.get(name))
        return QueryResult(_execute(con, sql), versions)


def referenced_tables(sql: str) -> list[str]:
    """The ``namespace.table`` names a query reads, lower-cased and sorted (CTE names left out).

    Raises:
        SqlSandboxError: The query calls a table function or uses a three-part name.
        TableNotFoundError: A one-part name that is not a CTE.
        InvalidNameError: A name that cannot be a flowlake table.
    """
    try:
        trees = [t for t in sqlglot.parse(sql, dialect="duckdb") if t is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise SqlSandboxError(
            f"cannot find the tables this query reads (sqlglot: {str(exc).splitlines()[0]}); {_RULES}"
        ) from exc
    ctes = {cte.alias_or_name.lower() for tree in trees for cte in tree.find_all(exp.CTE)}
    names: set[str] = set()
    for tree in trees:
        for ref in tree.find_all(exp.Table):
            if not isinstance(ref.this, exp.Identifier):
                if isinstance(ref.this, _ALLOWED_TABLE_FUNCTIONS):
                    continue
                raise SqlSandboxError(f"table function {_function_name(ref.this)}() is not allowed: {_RULES}")
            if ref.catalog:
                raise SqlSandboxError(
                    f"{ref.sql(dialect='duckdb')!s} has three parts; {_RULES}, e.g. ods.orders"
                )
            if not ref.db:
                if ref.name.lower() in ctes:
                    continue
                if not _PLAIN_NAME.fullmatch(ref.name):  # DuckDB would read 'x.parquet' as a file
                    raise SqlSandboxError(f"{ref.name!r} is not a table name (no file reads); {_RULES}")
                raise TableNotFoundError(ref.name)
            names.add(str(TableName.parse(f"{ref.db.lower()}.{ref.name.lower()}")))
    return sorted(names)


def _function_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return node.key


def statement_type(sql: str, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """DuckDB's type of the single statement in ``sql`` (``SELECT``, ``INSERT``, ``MERGE_INTO``, ...).

    Raises:
        InvalidArgumentError: The SQL does not parse.
        SqlSandboxError: It holds more or fewer than one statement.

    ``con``: a connection to parse with (parsing runs nothing); a fresh in-memory one if None.
    """
    with contextlib.nullcontext(con) if con is not None else duckdb.connect(":memory:") as parser:
        try:
            statements = parser.extract_statements(sql)
        except duckdb.Error as exc:
            raise InvalidArgumentError(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise SqlSandboxError(f"the query holds {len(statements)} statements; {_RULES}")
    return str(statements[0].type).rsplit(".", 1)[-1]


def _check_single_select(sql: str, con: duckdb.DuckDBPyConnection) -> None:
    kind = statement_type(sql, con)
    if kind != "SELECT":
        raise SqlSandboxError(f"{kind} statements are not allowed: {_RULES}")


def check_principal(catalog: Catalog, privilege: Privilege, obj: str, principal: str | None) -> None:
    """Raise ``PermissionDeniedError`` unless ``principal`` (when another than the catalog's) holds
    ``privilege`` on ``obj``; the catalog checks its own principal on every read and write itself."""
    if (
        principal is not None
        and principal != catalog.principal
        and not catalog.store.has_privilege(privilege, obj, principal)
    ):
        raise PermissionDeniedError(principal, privilege, obj)


def _readable(catalog: Catalog, name: str, principal: str | None) -> LakeTable:
    check_principal(catalog, "read", name, principal)
    return catalog.load_table(name)  # checks the catalog principal's own grant


def _cut(tables: Mapping[str, LakeTable], as_of: str | int | dt.datetime | None) -> dict[str, int]:
    if as_of is None:
        return {name: t.resolve_version() for name, t in tables.items()}
    if isinstance(as_of, int) or (isinstance(as_of, str) and as_of.isdigit()):
        if len(tables) > 1:
            raise InvalidArgumentError(
                f"as_of version {as_of} names a version of one table, but the query reads "
                f"{', '.join(tables)}; give a time (ISO 8601) to read every table as of one moment"
            )
        return {name: t.resolve_version(int(as_of)) for name, t in tables.items()}
    moment = as_of if isinstance(as_of, dt.datetime) else _parse_time(as_of)
    return {name: t.resolve_version(as_of=moment) for name, t in tables.items()}


def _parse_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(
            f"as_of {text!r}: give a version number or an ISO 8601 time such as 2026-01-01T12:00:00Z"
        ) from None


def _register(
    con: duckdb.DuckDBPyConnection,
    name: TableName,
    table: LakeTable,
    version: int,
    filter: list[Predicate] | None = None,
) -> None:
    """Register ``table`` at ``version``; ``filter`` (terms of the query's WHERE, see
    :mod:`flowlake.sql.keyfilter`) leaves out the buckets and files that cannot match."""
    # names are validated (lowercase letters, digits, _), so quoting them is enough
    internal = f"__flowlake_{name.namespace}_{name.table}"
    con.register(internal, table.dataset(version=version, filter=filter))
    con.execute(f'create schema if not exists "{name.namespace}"')
    con.execute(f'create view "{name.namespace}"."{name.table}" as select * from "{internal}"')


def _execute(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    try:
        relation: Any = con.sql(sql)
        return pa.table({}) if relation is None else relation.to_arrow_table()
    except duckdb.PermissionException as exc:
        raise SqlSandboxError(f"refused: {exc}; {_RULES}") from exc
    except duckdb.Error as exc:
        if "configuration has been locked" in str(exc):
            raise SqlSandboxError(f"refused: {exc}; {_RULES}") from exc
        raise InvalidArgumentError(f"SQL failed: {exc}") from exc
