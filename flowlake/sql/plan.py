"""The operator plan of SQL views: a DAG of nodes, each with its output schema and unique key.

The planner (:mod:`flowlake.sql.planner`) turns a view's SELECT into these nodes; the builder
(:mod:`flowlake.sql.build`) turns them into bytewax operators of :mod:`flowlake.flow`; ``flowlake
explain`` prints them. A node's ``key`` is the set of columns that identifies a row of its output
(``None`` when none can be derived), which is what a view's table takes as primary key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from flowlake.flow import SortKey
from flowlake.flow.aggs import Agg, Window
from flowlake.sql.arrowfn import ArrowCall


@dataclass(eq=False)
class Node:
    """One operator of a view plan."""

    schema: pa.Schema
    key: tuple[str, ...] | None

    @property
    def inputs(self) -> tuple[Node, ...]:
        """The nodes this one reads."""
        return ()

    def describe(self) -> str:
        """One line: what the operator does."""
        return type(self).__name__.lower()

    def state(self) -> str:
        """What state the operator keeps (``none`` for stateless ones)."""
        return "none"


@dataclass(eq=False)
class Source(Node):
    """The changelog of a lake table."""

    table: str = ""
    columns: tuple[str, ...] | None = None
    """The columns read (None: all); set once every view of the file is planned."""

    def describe(self) -> str:
        text = f"read {self.table} (changelog from version 0, then new commits)"
        if self.columns is not None and len(self.columns) < len(self.schema):
            text += f" columns [{', '.join(self.columns)}]"
        return text

    def state(self) -> str:
        return "the last version read"


@dataclass(frozen=True)
class SeriesExplode:
    """A Calc whose one list is ``unnest(generate_series(start, end, step))`` (or ``range``) with a
    constant positive ``step``: DuckDB computes each row's ``start`` and ``end`` (and the other
    columns and the filter) once, and the elements are made in numpy, not by DuckDB's unnest."""

    column: str
    """The output column of the elements."""
    sql: str
    """The query for the other columns, the bounds (``__series_start``/``__series_end``) and ``__keep``."""
    step: int
    """The step in microseconds (temporal bounds) or as the integer itself."""
    temporal: bool
    exclusive: bool
    """``range``: the end is left out."""


SERIES_START, SERIES_END = "__series_start", "__series_end"
"""The bound columns of a :class:`SeriesExplode` query."""


@dataclass(eq=False)
class Calc(Node):
    """Scalar expressions and a filter over each batch (one DuckDB query per batch)."""

    input: Node = field(default=None)  # type: ignore[assignment]
    sql: str = ""
    where: str | None = None
    """The filter's SQL, for the plan text (the query computes it as column ``__keep``)."""
    explodes: bool = False
    """Whether the query has ``UNNEST(list)`` in its select list: a change becomes one per element."""
    reads: tuple[str, ...] | None = None
    """The input columns the query reads (None: unknown)."""
    passthrough: dict[str, str] | None = None
    """Output columns that are input columns unchanged (output name -> input name), taken from the
    batch in Arrow; None runs the whole ``sql`` in DuckDB."""
    computed_sql: str | None = None
    """With ``passthrough``: the DuckDB query for the other columns and ``__keep`` (None: nothing to
    compute)."""
    arrow_calls: tuple[ArrowCall, ...] = ()
    """With ``passthrough``: string function calls Arrow computes first, in order, each a column that
    ``passthrough`` and ``computed_sql`` may read."""
    series: SeriesExplode | None = None
    """With ``explodes``: the list is a series whose elements numpy makes (None: DuckDB unnests)."""

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)

    def describe(self) -> str:
        text = "compute " + ", ".join(self.schema.names)
        text += " (a row per list element)" if self.explodes else ""
        if self.series is not None:
            text += f"; {self.series.column} made in numpy (equal rows combined first before an aggregate)"
        text += f" where {self.where}" if self.where else ""
        if self.arrow_calls:
            text += "; computed in Arrow: " + ", ".join(c.describe() for c in self.arrow_calls)
        return text


@dataclass(eq=False)
class Aggregate(Node):
    """Group aggregation with retractions (optionally an updating event-time window)."""

    input: Node = field(default=None)  # type: ignore[assignment]
    by: tuple[str, ...] = ()
    aggs: dict[str, Agg] = field(default_factory=dict)
    window: Window | None = None
    late_table: str | None = None

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)

    def describe(self) -> str:
        funcs = ", ".join(f"{n}={a.func}({a.column or '*'})" for n, a in self.aggs.items())
        keys = list(self.by)
        if self.window is not None:
            keys.append(f"{self.window.column}=window({self.window.on}, {self.window.size_us} us)")
        text = f"aggregate by [{', '.join(keys)}]: {funcs}"
        if self.late_table:
            text += f"; late changes -> {self.late_table}"
        return text

    def state(self) -> str:
        kinds = sorted({a.func for a in self.aggs.values()})
        evict = ", windows evicted past the horizon" if self.window and self.window.horizon_us else ""
        return f"per group: row count and {', '.join(kinds)} accumulators{evict}"


@dataclass(eq=False)
class Join(Node):
    """A regular join with retractions on both sides, on equal key columns."""

    left: Node = field(default=None)  # type: ignore[assignment]
    right: Node = field(default=None)  # type: ignore[assignment]
    on: tuple[str, ...] = ()
    how: str = "inner"
    condition: str | None = None
    """A further condition on matched pairs (DuckDB SQL over output columns), applied inside the join."""
    condition_columns: tuple[str, ...] = ()
    """The output columns ``condition`` reads."""

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.left, self.right)

    def describe(self) -> str:
        text = f"{self.how} join on [{', '.join(self.on)}]"
        return text + (f" where the pair has {self.condition}" if self.condition else "")

    def state(self) -> str:
        return "both sides' live rows, by join key"


@dataclass(eq=False)
class Lookup(Node):
    """A lookup join: each change enriched with a lake table's current row, no state for that side."""

    input: Node = field(default=None)  # type: ignore[assignment]
    table: str = ""
    on: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    rename: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)

    def describe(self) -> str:
        return f"lookup join {self.table} on [{', '.join(self.on)}] for [{', '.join(self.columns)}]"

    def state(self) -> str:
        return f"none per row (a cached snapshot of {self.table}, re-read when it changes)"


@dataclass(eq=False)
class TopN(Node):
    """The first ``n`` rows per partition in an order (``ROW_NUMBER() ... <= n``)."""

    input: Node = field(default=None)  # type: ignore[assignment]
    partition_by: tuple[str, ...] = ()
    order_by: tuple[SortKey, ...] = ()
    n: int = 1
    rank: str | None = None

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)

    def describe(self) -> str:
        order = ", ".join(f"{k.column} {'desc' if k.descending else 'asc'}" for k in self.order_by)
        rank = f" as {self.rank}" if self.rank else ""
        return f"top {self.n} per [{', '.join(self.partition_by)}] by [{order}]{rank}"

    def state(self) -> str:
        return (
            "per partition: its top rows plus a buffer in rank order (Arrow); the other live rows "
            "spilled in Arrow chunks, read back when the buffer runs out"
        )


@dataclass(eq=False)
class Union(Node):
    """UNION ALL: the inputs' changes, cast to one schema."""

    parts: tuple[Node, ...] = ()

    @property
    def inputs(self) -> tuple[Node, ...]:
        return self.parts

    def describe(self) -> str:
        return f"union all of {len(self.parts)} inputs"


@dataclass(eq=False)
class Output(Node):
    """The view's lake table: exactly-once upserts by its primary key."""

    input: Node = field(default=None)  # type: ignore[assignment]
    table: str = ""

    @property
    def inputs(self) -> tuple[Node, ...]:
        return (self.input,)

    def describe(self) -> str:
        return f"write {self.table} (primary key {', '.join(self.key or ())})"

    def state(self) -> str:
        return "the last committed epoch (exactly-once token)"


def walk(roots: list[Node]) -> Iterator[Node]:
    """Every node reachable from ``roots``, inputs before the nodes that read them, each once."""
    seen: set[int] = set()

    def visit(node: Node) -> Iterator[Node]:
        if id(node) in seen:
            return
        seen.add(id(node))
        for child in node.inputs:
            yield from visit(child)
        yield node

    for root in roots:
        yield from visit(root)


def prune_sources(outputs: Sequence[Node]) -> None:
    """Set each :class:`Source`'s ``columns`` to those its readers use (plus its primary key).

    Every reader of a source in the planned views is a :class:`Calc` that names the columns it reads;
    a source with any other reader (or a Calc that reads an unknown set) reads every column.
    """
    readers: dict[int, list[Node]] = {}
    sources: dict[int, Source] = {}
    for node in walk(list(outputs)):
        if isinstance(node, Source):
            sources[id(node)] = node
        for child in node.inputs:
            readers.setdefault(id(child), []).append(node)
    for ident, source in sources.items():
        used: set[str] = set(source.key or ())
        for reader in readers.get(ident, []):
            if not isinstance(reader, Calc) or reader.reads is None:
                source.columns = None
                break
            used.update(reader.reads)
        else:
            source.columns = tuple(n for n in source.schema.names if n in used)
