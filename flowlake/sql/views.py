"""Compile a view file into a bytewax dataflow, create the views' tables, and explain the plan.

A view's table gets the SELECT as its verify SQL, so ``flowlake verify`` recomputes it in DuckDB at
the input versions of any commit; a view it reads from the same file is read as of those versions
(:func:`flowlake.flow.verify.as_of`): the upstream view as materialized, late data left out as the
stream left it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa
from bytewax.dataflow import Dataflow, Stream

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN
from flowlake.errors import SchemaMismatchError, SqlError, TableNotFoundError
from flowlake.flow.batch import ChangeBatch
from flowlake.flow.lake import CatalogSpec, Start, open_catalog
from flowlake.flow.schemas import late_schema
from flowlake.flow.verify import VERIFY_EXCLUDE_SQL, VERIFY_SQL
from flowlake.lake import Catalog
from flowlake.sql.build import Builder, BuildOptions
from flowlake.sql.plan import Aggregate, Output, prune_sources, walk
from flowlake.sql.planner import Catalogish, Planner
from flowlake.sql.statements import ViewDefinition, parse_views

VIEW_SQL = "flowlake.view_sql"
"""Table property holding the SELECT a view's table was created from, as written."""

__all__ = ["CompiledView", "compile_views", "explain", "plan_views"]


class _Shapes(Catalogish):
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def table_shape(self, name: str) -> tuple[pa.Schema, tuple[str, ...] | None]:
        table = self.catalog.load_table(name)
        key = tuple(table.primary_key) if table.primary_key else None
        return table.schema, key


@dataclass(frozen=True)
class CompiledView:
    """A planned view: its definition, its output node and its late-data table (if any)."""

    view: ViewDefinition
    output: Output
    late_table: str | None
    verify_sql: str
    late_keys: tuple[str, ...] = ()


def plan_views(text: str, catalog: Catalog) -> list[CompiledView]:
    """Parse and plan every view of ``text`` against ``catalog``'s tables (nothing is created)."""
    planner = Planner(_Shapes(catalog))
    planned: list[CompiledView] = []
    for view in parse_views(text):
        output = planner.plan_view(view)
        planned.append(CompiledView(view, output, planner.late_table, view.sql, tuple(planner.late_keys)))
    prune_sources([p.output for p in planned])
    return planned


def _ensure_table(catalog: Catalog, compiled: CompiledView) -> None:
    view, output = compiled.view, compiled.output
    properties = {VERIFY_SQL: compiled.verify_sql, VIEW_SQL: view.sql}
    aggregate = next((n for n in walk([output]) if isinstance(n, Aggregate) and n.late_table), None)
    if aggregate is not None and aggregate.window is not None and compiled.late_table is not None:
        properties[VERIFY_EXCLUDE_SQL] = (
            f"select distinct {', '.join(compiled.late_keys)} from {compiled.late_table}"
        )
        late = late_schema(aggregate.input.schema)
        fields = [f for f in late if f.name not in (KIND_COLUMN, SEQ_COLUMN)]
        fields += [pa.field("change_kind", pa.int8()), pa.field("change_seq", pa.int64(), nullable=False)]
        catalog.create_table(
            compiled.late_table, pa.schema(fields), primary_key=["change_seq"], exist_ok=True
        )
    key = list(output.key or ())
    buckets = int(view.options.get("buckets", "4"))
    try:
        table = catalog.load_table(view.name)
    except TableNotFoundError:
        catalog.create_table(
            view.name, output.schema, primary_key=key, buckets=buckets, properties=properties, exist_ok=True
        )
        return
    same_names = table.schema.names == output.schema.names
    if not same_names or list(table.primary_key or ()) != key:
        raise SqlError(
            f"view {view.name}: its table exists with columns {table.schema.names} and key "
            f"{list(table.primary_key or ())}, but the view produces {output.schema.names} keyed by {key}; "
            f"drop the table (flowlake sql 'DROP TABLE {view.name}' or cat.drop_table) to rebuild it"
        )
    changed = [
        f"{f.name} {table.schema.field(f.name).type} -> {f.type}"
        for f in output.schema
        if table.schema.field(f.name).type != f.type
    ]
    if changed:
        # An input widened (an ODS column after ALTER TABLE ... MODIFY): widen the view's table the same
        # way where that is lossless, so its rows keep following the input.
        try:
            table.evolve_schema(
                pa.schema([f.with_type(output.schema.field(f.name).type) for f in table.schema])
            )
        except SchemaMismatchError as exc:
            raise SqlError(
                f"view {view.name}: its table's column types differ from what the view produces now "
                f"({', '.join(changed)}) and cannot be widened to them ({exc}); drop the table "
                f"(flowlake sql 'DROP TABLE {view.name}' or cat.drop_table) to rebuild it"
            ) from exc


def compile_views(
    text: str,
    flow: Dataflow,
    *,
    catalog: CatalogSpec = None,
    start: Start = "earliest",
    stop: str | int | None = None,
    partitions: int = 4,
    poll_interval: float = 0.5,
    max_versions: int = 64,
) -> dict[str, Stream[ChangeBatch]]:
    """Add the views of ``text`` to ``flow``; return each view's output changelog stream by name.

    Creates each view's table (and late-data table) when missing, with the derived or given primary
    key and its SELECT as verify SQL.

    Raises:
        SqlError: If the text does not parse or plan (:class:`~flowlake.errors.UnsupportedSqlError` for
            constructs views cannot run), or a view's table exists with another shape.
    """
    del start  # views always read their inputs' whole changelog (from version 0)
    cat = open_catalog(catalog)
    stop_at: Literal["head"] | int | None = (
        "head" if stop == "head" else (int(stop) if stop is not None else None)
    )
    options = BuildOptions(
        catalog=catalog,
        stop=stop_at,
        poll_interval=poll_interval,
        partitions=partitions,
        max_versions=max_versions,
    )
    builder = Builder(flow, options)
    streams: dict[str, Stream[ChangeBatch]] = {}
    for compiled in plan_views(text, cat):
        _ensure_table(cat, compiled)
        streams[compiled.view.name] = builder.add(compiled.output, compiled.late_table)
    return streams


def explain(text: str, catalog: Catalog) -> str:
    """The operator plan of each view: per operator what it keys on, what state it keeps, and outputs.

    Operators are numbered across the file; one shared by several views (an input read once, the
    plan of a view another view reads) is shown once, and ``<- n`` names each operator's inputs.
    """
    lines: list[str] = []
    numbers: dict[int, int] = {}
    for compiled in plan_views(text, catalog):
        output = compiled.output
        lines.append(f"view {output.table}  primary key ({', '.join(output.key or ())})")
        for node in walk([output]):
            if id(node) in numbers:
                continue
            numbers[id(node)] = number = len(numbers)
            inputs = ", ".join(str(numbers[id(i)]) for i in node.inputs)
            arrow = f"  <- {inputs}" if inputs else ""
            key = f"key ({', '.join(node.key)})" if node.key is not None else "key none"
            lines.append(f"  {number:>2}. {type(node).__name__.lower():<9} {node.describe()}{arrow}")
            lines.append(f"      {key}; state: {node.state()}")
        if compiled.late_table:
            lines.append(f"  late changes -> {compiled.late_table}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
