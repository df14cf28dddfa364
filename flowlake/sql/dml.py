"""SQL for batch work on lake tables: DDL and DML statements, each one lake commit with grants checked.

``CREATE TABLE ns.t (..., PRIMARY KEY (...)) [WITH (buckets = 8)]``, ``ALTER TABLE ns.t ADD COLUMN``,
``DROP TABLE ns.t``, ``INSERT INTO`` (an upsert on primary-key tables, as ``INSERT OR REPLACE``),
``DELETE FROM ... WHERE``, ``UPDATE ... SET ... WHERE`` and ``MERGE INTO ... USING ... ON ... WHEN [NOT]
MATCHED``. DuckDB runs each statement in the sandbox of :mod:`flowlake.sql.sandbox`: the target is a
copy of its snapshot (with its primary key), the tables the statement reads are their snapshots, and
the difference between the copy before and after, by primary key, becomes one commit. The table
computes exact before-images, so downstream flows and views see the fix as ``-U/+U`` and ``-D``.

Cost: the target snapshot is copied into DuckDB, so a statement costs in proportion to the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import SqlError, SqlSandboxError
from flowlake.names import TableName
from flowlake.sql.sandbox import (
    _readable,
    _register,
    check_principal,
    referenced_tables,
    sandbox_connection,
    statement_type,
)

if TYPE_CHECKING:
    from flowlake.catalog.base import Commit
    from flowlake.lake import Catalog

WRITES: Final = ("INSERT", "DELETE", "UPDATE", "MERGE_INTO")
DDL: Final = ("CREATE", "ALTER", "DROP")
_OPTIONS: Final = {"buckets"}


@dataclass(frozen=True, slots=True)
class StatementResult:
    """What a statement did: its table, kind, the commit it made (if any) and the rows it changed."""

    table: str
    statement: str
    commit: Commit | None = None
    upserted: int = 0
    deleted: int = 0
    detail: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.statement in ("CREATE", "DROP", "ALTER"):
            return f"{self.statement} TABLE {self.table}: done"
        if self.commit is None:
            return f"{self.statement} {self.table}: no row changed (no commit)"
        return (
            f"{self.statement} {self.table}: version {self.commit.version} "
            f"({self.upserted} row(s) written, {self.deleted} deleted)"
        )


def run_statement(catalog: Catalog, sql: str, *, principal: str | None = None) -> StatementResult:
    """Run one DDL or DML statement against catalog tables (see the module docs).

    Raises:
        SqlError: The statement is not one of the supported kinds, or DuckDB refuses it.
        PermissionDeniedError: The principal may not write the target or read a source.
        TableNotFoundError: A table it names does not exist.
    """
    kind = statement_type(sql)
    if kind in DDL:
        return _ddl(catalog, sql, kind, principal)
    if kind in WRITES:
        return _write(catalog, sql, kind, principal)
    raise SqlSandboxError(
        f"{kind} statements are not run by flowlake sql; it runs SELECT, CREATE/ALTER/DROP TABLE, INSERT, "
        "DELETE, UPDATE and MERGE"
    )


def _parse(sql: str) -> exp.Expr:
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise SqlError(f"cannot read the statement: {str(exc).splitlines()[0]}") from exc
    return tree


def _target(tree: exp.Expr) -> str:
    tables = tree.args.get("tables") if isinstance(tree, exp.Drop) else None
    if tables and len(tables) != 1:
        raise SqlError("drop one table at a time")
    node = tables[0] if tables else tree.this
    if isinstance(node, exp.Schema):
        node = node.this
    if not isinstance(node, exp.Table) or not node.db or node.catalog:
        raise SqlError("name the table as namespace.table, e.g. ods.orders")
    return str(TableName.parse(f"{node.db.lower()}.{node.name.lower()}"))


# -- DDL ---------------------------------------------------------------------------------------------


def _ddl(catalog: Catalog, sql: str, kind: str, principal: str | None) -> StatementResult:
    tree = _parse(sql)
    name = _target(tree)
    # CREATE needs admin on the namespace, ALTER and DROP on the table (or above), for every principal:
    # create_table and drop_table check the catalog's own; evolve_schema alone asks only write (an
    # ingester adds the columns its source added), so ALTER checks it here
    obj = name.split(".", 1)[0] if kind == "CREATE" else name
    check_principal(catalog, "admin", obj, principal)
    if kind == "ALTER":
        catalog.store.authorize("admin", name)
    if kind == "DROP":
        if not isinstance(tree, exp.Drop) or str(tree.args.get("kind", "")).upper() != "TABLE":
            raise SqlError("flowlake sql drops tables only: DROP TABLE ns.t")
        catalog.drop_table(name, missing_ok=bool(tree.args.get("exists")))
        return StatementResult(name, "DROP")
    if kind == "CREATE":
        return _create(catalog, tree, name)
    return _alter(catalog, tree, name)


def _create(catalog: Catalog, tree: exp.Expr, name: str) -> StatementResult:
    if not isinstance(tree, exp.Create) or str(tree.args.get("kind", "")).upper() != "TABLE":
        raise SqlError("flowlake sql creates tables only: CREATE TABLE ns.t (..., PRIMARY KEY (...))")
    if tree.expression is not None:
        raise SqlError("CREATE TABLE ... AS SELECT is not supported: create the table, then INSERT INTO it")
    options: dict[str, str] = {}
    properties = tree.args.get("properties")
    for prop in properties.expressions if properties is not None else []:
        option = prop.name.lower() if isinstance(prop, exp.Property) else ""
        if option not in _OPTIONS:
            raise SqlError(f"CREATE TABLE {name}: unknown option {prop.sql(dialect='duckdb')!r}; use buckets")
        value = prop.args.get("value")
        options[option] = value.name if isinstance(value, exp.Literal) else str(value)
    plain = tree.copy()
    plain.set("properties", None)
    with sandbox_connection() as con:
        namespace, table = name.split(".", 1)
        try:
            con.execute(f'CREATE SCHEMA "{namespace}"')
            con.execute(plain.sql(dialect="duckdb"))
            schema = con.sql(f'SELECT * FROM "{namespace}"."{table}" LIMIT 0').to_arrow_table().schema
            rows = con.execute(
                "SELECT constraint_column_names FROM duckdb_constraints() "
                "WHERE schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
                [namespace, table],
            ).fetchall()
        except duckdb.Error as exc:
            raise SqlError(f"CREATE TABLE {name}: {exc}") from exc
    key: list[str] | None = [str(c) for c in rows[0][0]] if rows else None
    buckets = int(options.get("buckets", "4"))
    catalog.create_table(
        name, _utc(schema), primary_key=key, buckets=buckets, exist_ok=bool(tree.args.get("exists"))
    )
    return StatementResult(name, "CREATE", detail={"primary_key": ", ".join(key or ())})


def _alter(catalog: Catalog, tree: exp.Expr, name: str) -> StatementResult:
    actions = tree.args.get("actions") or [] if isinstance(tree, exp.Alter) else []
    columns = [a for a in actions if isinstance(a, exp.ColumnDef)]
    if not columns or len(columns) != len(actions):
        raise SqlError(f"ALTER TABLE {name}: only ADD COLUMN name type is supported")
    table = catalog.load_table(name)
    nulls = ", ".join(f'NULL::{c.args["kind"].sql(dialect="duckdb")} AS "{c.name}"' for c in columns)
    with sandbox_connection() as con:
        try:
            schema = con.sql(f"SELECT {nulls} LIMIT 0").to_arrow_table().schema
        except duckdb.Error as exc:
            raise SqlError(f"ALTER TABLE {name}: {exc}") from exc
    fields = [f.with_nullable(True) for f in _utc(schema)]
    table.evolve_schema(pa.schema([*table.schema, *fields]))
    return StatementResult(name, "ALTER", detail={"added": ", ".join(f.name for f in fields)})


# -- DML ---------------------------------------------------------------------------------------------


def _write(catalog: Catalog, sql: str, kind: str, principal: str | None) -> StatementResult:
    tree = _parse(sql)
    name = _target(tree)
    check_principal(catalog, "write", name, principal)
    target = catalog.load_table(name)
    sources = [n for n in referenced_tables(sql) if n != name]
    readable = {n: _readable(catalog, n, principal) for n in sources}
    key = list(target.primary_key)
    if not key and kind != "INSERT":
        raise SqlError(f"{name} is an append table (no primary key): it takes INSERT only")
    version = target.version  # the snapshot the statement runs on, and the commit is checked from
    before = target.read(version=version)
    with sandbox_connection() as con:
        for source, table in readable.items():
            _register(con, TableName.parse(source), table, table.resolve_version())
        _copy(con, name, before, key)
        statement = _as_upsert(tree) if kind == "INSERT" and key else sql
        try:
            con.execute(statement)
        except duckdb.Error as exc:
            raise SqlError(f"{kind} into {name} failed: {exc}") from exc
        after = _utc_table(con.sql(f"SELECT * FROM {_quoted(name)}").to_arrow_table(), target.schema)
        if not key:
            added = after.slice(before.num_rows)
            if not added.num_rows:
                return StatementResult(name, _label(kind))
            return StatementResult(name, _label(kind), target.append(added), upserted=added.num_rows)
        con.register("__before", before)
        con.register("__after", after)
        on = " AND ".join(f'a."{k}" = b."{k}"' for k in key)
        differs = " OR ".join(
            f'a."{c}" IS DISTINCT FROM b."{c}"' for c in target.schema.names if c not in key
        )
        changed = con.sql(
            f'SELECT a.* FROM __after a LEFT JOIN __before b ON {on} WHERE b."{key[0]}" IS NULL'
            + (f" OR {differs}" if differs else "")
        ).to_arrow_table()
        gone = con.sql(f"SELECT b.* FROM __before b ANTI JOIN __after a ON {on}").to_arrow_table()
    if not changed.num_rows and not gone.num_rows:
        return StatementResult(name, _label(kind))
    changelog = pa.concat_tables([changed.cast(target.schema), gone.cast(target.schema)])
    kinds = np.concatenate(
        [
            np.full(changed.num_rows, RowKind.UPDATE_AFTER, np.int8),
            np.full(gone.num_rows, RowKind.DELETE, np.int8),
        ]
    )
    # the rows were computed from that snapshot: if another writer changed the same keys since,
    # committing them would undo its write, so the commit fails; writes to other keys rebase
    commit = target.apply(changelog.append_column(KIND_COLUMN, pa.array(kinds)), read_version=version)
    return StatementResult(name, _label(kind), commit, upserted=changed.num_rows, deleted=gone.num_rows)


def _label(kind: str) -> str:
    return "MERGE" if kind == "MERGE_INTO" else kind


def _quoted(name: str) -> str:
    namespace, table = name.split(".", 1)
    return f'"{namespace}"."{table}"'


def _copy(con: duckdb.DuckDBPyConnection, name: str, rows: pa.Table, key: list[str]) -> None:
    """The target as a real DuckDB table (with its primary key) holding ``rows``."""
    namespace, _ = name.split(".", 1)
    con.register("__snapshot", rows)
    described = con.execute("DESCRIBE SELECT * FROM __snapshot").fetchall()
    columns = [f'"{c}" {t}' for c, t, *_ in described]
    if key:
        columns.append("PRIMARY KEY (" + ", ".join(f'"{k}"' for k in key) + ")")
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"')
    con.execute(f"CREATE TABLE {_quoted(name)} ({', '.join(columns)})")
    con.execute(f"INSERT INTO {_quoted(name)} SELECT * FROM __snapshot")
    con.unregister("__snapshot")


def _as_upsert(tree: exp.Expr) -> str:
    """``INSERT`` on a primary-key table as ``INSERT OR REPLACE`` (a lake table upserts by key)."""
    assert isinstance(tree, exp.Insert)
    if tree.args.get("conflict") is not None:
        return str(tree.sql(dialect="duckdb"))
    text = str(tree.sql(dialect="duckdb"))
    return "INSERT OR REPLACE" + text[len("INSERT") :] if text.upper().startswith("INSERT INTO") else text


def _utc(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
            if pa.types.is_timestamp(f.type) and f.type.tz is not None
            else f
            for f in schema
        ]
    )


def _utc_table(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return table.cast(schema) if table.schema != schema else table
