"""Plan nodes → bytewax operators of :mod:`flowlake.flow`, each step id derived from the view and node.

Step ids key bytewax's recovery state, so they depend only on the view file: the view's table name
and the node's place in the plan (``dws_shop_gmv__3_aggregate``). Changing a view's SQL changes its
plan and therefore its state: start such a flow with a fresh recovery directory.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from bytewax.dataflow import Dataflow, Stream
from sqlglot import exp

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.flow import PairCondition
from flowlake.flow.batch import WEIGHT_COLUMN, ChangeBatch, kinds_of, weights
from flowlake.flow.lake import CatalogSpec
from flowlake.flow.operators import aggregate, join, lake_input, lake_output, late_rows, lookup_join, top_n
from flowlake.flow.schemas import filter_changes
from flowlake.sql.evaluate import BatchQuery
from flowlake.sql.plan import (
    SERIES_END,
    SERIES_START,
    Aggregate,
    Calc,
    Join,
    Lookup,
    Node,
    Output,
    SeriesExplode,
    Source,
    TopN,
    Union,
    walk,
)
from flowlake.sql.relation import KEEP

_STEP_CHARS = re.compile(r"[^a-z0-9_]+")

log = logging.getLogger("flowlake.sql")


@dataclass(frozen=True)
class BuildOptions:
    """How the views' dataflow reads and writes."""

    catalog: CatalogSpec = None
    stop: Literal["head"] | int | None = None
    max_versions: int = 64
    poll_interval: float = 0.5
    partitions: int = 4


def step_prefix(table: str) -> str:
    """A view's table name as a step-id prefix (``dws.shop_gmv`` → ``dws_shop_gmv``)."""
    return _STEP_CHARS.sub("_", table.lower())


def calc_function(node: Calc, *, weighted: bool = False) -> Callable[[ChangeBatch], ChangeBatch]:
    """The batch function of a :class:`Calc`: one DuckDB query (for what is not a plain column), then
    the filter applied to kinds.

    ``weighted`` (a Calc with a :class:`SeriesExplode` that only an aggregate reads): equal rows of
    a batch are combined first, their net count in :data:`WEIGHT_COLUMN`, and each is then exploded
    once, as Flink's local aggregation combines a mini-batch before the global one.
    """
    if node.passthrough is not None:
        return _hybrid_calc(node, node.passthrough)
    if node.series is not None:
        return _series_calc(node, node.series, weighted=weighted)
    query = BatchQuery(node.sql)
    filtered = node.where is not None

    def apply(batch: ChangeBatch) -> ChangeBatch:
        out = query(batch.data)
        if node.explodes:
            # an update's -U and +U each became several rows: no longer pairs, so a delete and an insert
            out = out.set_column(out.schema.get_field_index(KIND_COLUMN), KIND_COLUMN, unpaired(out))
        elif SEQ_COLUMN in batch.data.column_names and out.num_rows == batch.data.num_rows:
            # a projection keeps each change's input sequence number (it keys late-data tables)
            out = out.append_column(SEQ_COLUMN, batch.data.column(SEQ_COLUMN))
        if filtered:
            keep = np.asarray(out.column(KEEP).to_numpy(zero_copy_only=False), dtype=bool)
            out = filter_changes(out.drop_columns([KEEP]), keep)
        return batch.with_data(out)

    return apply


def _hybrid_calc(node: Calc, passthrough: dict[str, str]) -> Callable[[ChangeBatch], ChangeBatch]:
    """A :class:`Calc` whose plain columns are the batch's own arrays (no copy) and whose other
    columns and filter come from one DuckDB query over the columns they read (row for row)."""
    query = BatchQuery(node.computed_sql) if node.computed_sql is not None else None
    target = node.schema.append(pa.field(KIND_COLUMN, pa.int8()))

    def apply(batch: ChangeBatch) -> ChangeBatch:
        data = batch.data
        splits: dict[tuple[str, str], list[pa.ListArray]] = {}
        for call in node.arrow_calls:
            data = data.append_column(call.name, call(data, splits))
        computed = query(data) if query is not None else None
        arrays = []
        for f in node.schema:
            source = passthrough.get(f.name)
            column = data.column(source) if source is not None else computed.column(f.name)  # type: ignore[union-attr]
            arrays.append(column if column.type == f.type else column.cast(f.type))
        arrays.append(data.column(KIND_COLUMN))
        out = pa.Table.from_arrays(arrays, schema=target)
        if SEQ_COLUMN in data.column_names:
            out = out.append_column(SEQ_COLUMN, data.column(SEQ_COLUMN))
        if WEIGHT_COLUMN in data.column_names:  # (a projection of weighted changes: weighted alike)
            out = out.append_column(WEIGHT_COLUMN, data.column(WEIGHT_COLUMN))
        if computed is not None and node.where is not None:
            keep = np.asarray(computed.column(KEEP).to_numpy(zero_copy_only=False), dtype=bool)
            out = filter_changes(out, keep)
        return batch.with_data(out)

    return apply


def _series_calc(
    node: Calc, series: SeriesExplode, *, weighted: bool
) -> Callable[[ChangeBatch], ChangeBatch]:
    """A :class:`Calc` that unnests a series: DuckDB computes each row's other columns, bounds and
    filter once; numpy repeats the row once per element and makes the elements (start + i * step)."""
    query = BatchQuery(series.sql)
    target = node.schema.append(pa.field(KIND_COLUMN, pa.int8()))
    if weighted:
        target = target.append(pa.field(WEIGHT_COLUMN, pa.int64()))
    type_ = node.schema.field(series.column).type
    groups = [f.name for f in node.schema if f.name != series.column] + [SERIES_START, SERIES_END]

    def apply(batch: ChangeBatch) -> ChangeBatch:
        out = query(batch.data)
        net: np.ndarray | None = None
        if weighted:
            out, net = _combined(out, groups, node.where is not None)
        start, end = _bound(out.column(SERIES_START)), _bound(out.column(SERIES_END))
        valid = ~(start.mask | end.mask)
        if node.where is not None and not weighted:
            valid &= np.asarray(out.column(KEEP).to_numpy(zero_copy_only=False), dtype=bool)
        span = np.where(valid, end.data - start.data, -1)
        if series.exclusive:  # range: ceil(span / step) elements
            counts = np.where(span > 0, (span + series.step - 1) // series.step, 0)
        else:  # generate_series: the end included
            counts = np.where(span >= 0, span // series.step + 1, 0)
        rows = np.repeat(np.arange(len(counts)), counts)
        firsts = np.cumsum(counts) - counts
        elements = start.data[rows] + (np.arange(len(rows)) - firsts[rows]) * series.step
        taken = pa.array(rows, pa.int64())
        arrays = []
        for f in node.schema:
            if f.name == series.column:
                arrays.append(pa.array(elements, pa.int64()).cast(type_))
            else:
                column = out.column(f.name).take(taken)
                arrays.append(column if column.type == f.type else column.cast(f.type))
        if net is None:
            kinds = unpaired(out).to_numpy()[rows]  # an update's -U and +U became several rows each
            arrays.append(pa.array(kinds, pa.int8()))
        else:
            kinds = np.where(net > 0, RowKind.INSERT, RowKind.DELETE).astype(np.int8)[rows]
            arrays += [pa.array(kinds, pa.int8()), pa.array(np.abs(net)[rows], pa.int64())]
        return batch.with_data(pa.Table.from_arrays(arrays, schema=target))

    return apply


def _combined(out: pa.Table, groups: list[str], filtered: bool) -> tuple[pa.Table, np.ndarray]:
    """The rows of ``out`` (that pass the filter) combined by the values of ``groups``: one row each
    with its net weight (+1 an insertion, -1 a retraction), those netting to zero left out."""
    if filtered:
        out = out.filter(pc.fill_null(out.column(KEEP), False))
    w = pa.array(weights(kinds_of(out)), pa.int64())
    grouped = out.select(groups).append_column("__w", w).group_by(groups, use_threads=False)
    summed = grouped.aggregate([("__w", "sum")])
    net = np.asarray(summed.column("__w_sum").to_numpy(), dtype=np.int64)
    keep = net != 0
    return summed.filter(pa.array(keep)), net[keep]


def _bound(column: pa.ChunkedArray) -> np.ma.MaskedArray:
    """A series bound as int64 (a timestamp's microseconds), masked where NULL."""
    ints = column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column
    data = np.asarray(pc.fill_null(ints, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.ma.MaskedArray(data, mask=np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool))


def pair_condition(node: Join) -> PairCondition | None:
    """The :class:`PairCondition` of a join's condition: one DuckDB query over the candidate pairs,
    or Arrow compute where the condition is comparisons of columns (see :func:`arrow_condition`)."""
    if node.condition is None:
        return None
    query = BatchQuery(f"SELECT coalesce({node.condition}, false) AS {KEEP} FROM batch")
    arrow = arrow_condition(node.condition)
    use_arrow = [arrow is not None]

    def test(pairs: pa.Table) -> np.ndarray:
        floats = any(pa.types.is_floating(pairs.column(c).type) for c in pairs.column_names)
        if use_arrow[0] and arrow is not None and not floats:
            try:
                return arrow(pairs)
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
                use_arrow[0] = False  # types Arrow does not compare like DuckDB: DuckDB from now on
        return np.asarray(query(pairs).column(KEEP).to_numpy(zero_copy_only=False), dtype=bool)

    return PairCondition(node.condition_columns, test)


_COMPARE: dict[type[exp.Expr], Callable[..., Any]] = {
    exp.GTE: pc.greater_equal, exp.GT: pc.greater, exp.LTE: pc.less_equal, exp.LT: pc.less,
    exp.EQ: pc.equal, exp.NEQ: pc.not_equal,
}  # fmt: skip


def arrow_condition(condition: str) -> Callable[[pa.Table], np.ndarray] | None:
    """``condition`` (DuckDB SQL over column names) in Arrow compute, with SQL's NULL logic and NULL
    as false, where it is ``AND``/``OR``/``NOT`` over comparisons and ``BETWEEN`` of plain columns;
    else None. (Callers keep floating-point columns in DuckDB, which orders NaN above every number.)

    >>> test = arrow_condition('"b" BETWEEN "a" AND "c" AND NOT "a" = "c"')
    >>> test(pa.table({"a": [1, 1, None, 2], "b": [2, 0, 1, 2], "c": [3, 3, 3, 2]})).tolist()
    [True, False, False, False]
    """
    tree = sqlglot.parse_one(condition, read="duckdb")
    Test = Callable[[pa.Table], Any]

    def column(node: exp.Expr) -> Test | None:
        if isinstance(node, exp.Column) and not node.table:
            name = node.name
            return lambda t: t.column(name)
        return None

    def compare(node: exp.Expr) -> Test | None:
        func = next((f for kind, f in _COMPARE.items() if type(node) is kind), None)
        if func is None:
            return None
        left, right = column(node.this), column(node.expression)
        if left is None or right is None:
            return None
        return lambda t: func(left(t), right(t))

    def between(node: exp.Between) -> Test | None:
        if node.args.get("symmetric"):
            return None
        x, low, high = column(node.this), column(node.args["low"]), column(node.args["high"])
        if x is None or low is None or high is None:
            return None
        return lambda t: pc.and_kleene(pc.greater_equal(x(t), low(t)), pc.less_equal(x(t), high(t)))

    def build(node: exp.Expr) -> Test | None:
        if isinstance(node, exp.Paren):
            return build(node.this)
        if isinstance(node, exp.Between):
            return between(node)
        if isinstance(node, exp.And | exp.Or):
            left, right = build(node.this), build(node.expression)
            if left is None or right is None:
                return None
            func = pc.and_kleene if isinstance(node, exp.And) else pc.or_kleene
            return lambda t: func(left(t), right(t))
        if isinstance(node, exp.Not):
            inner = build(node.this)
            return None if inner is None else (lambda t: pc.invert(inner(t)))
        return compare(node)

    top = build(tree)
    if top is None:
        return None

    def test(pairs: pa.Table) -> np.ndarray:
        verdict = pc.fill_null(top(pairs), False)
        return np.asarray(verdict.to_numpy(zero_copy_only=False), dtype=bool)

    return test


def unpaired(data: pa.Table) -> pa.Array:
    """The ``_kind`` column with ``-U`` as ``-D`` and ``+U`` as ``+I`` (the same weights, no pairs)."""
    kinds = kinds_of(data)
    kinds = np.where(kinds == RowKind.UPDATE_BEFORE, RowKind.DELETE, kinds)
    kinds = np.where(kinds == RowKind.UPDATE_AFTER, RowKind.INSERT, kinds)
    return pa.array(kinds.astype(np.int8), pa.int8())


def cast_function(schema: pa.Schema) -> Callable[[ChangeBatch], ChangeBatch]:
    """Rename (by position) and cast a batch's columns to ``schema``, keeping ``_kind``."""
    target = schema.append(pa.field(KIND_COLUMN, pa.int8()))

    def cast(batch: ChangeBatch) -> ChangeBatch:
        data = batch.data
        body = [c for c in data.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
        columns = [data.column(c) for c in body[: len(schema)]] + [data.column(KIND_COLUMN)]
        renamed = pa.Table.from_arrays(columns, names=target.names)
        return batch.with_data(renamed if renamed.schema.equals(target) else renamed.cast(target))

    return cast


def output_function(node: Output) -> Callable[[ChangeBatch], ChangeBatch]:
    """Cast to the view table's schema and leave out changes of rows whose primary key is NULL.

    A lake table cannot hold a NULL key (as Flink's upsert sinks cannot): such rows of the SELECT's
    result are not stored, and verify leaves them out of its comparison the same way.
    """
    cast = cast_function(node.schema)
    key = list(node.key or ())

    def apply(batch: ChangeBatch) -> ChangeBatch:
        out = cast(batch)
        data = out.data
        if not key or not any(data.column(k).null_count for k in key):
            return out
        valid = pc.is_valid(data.column(key[0]))
        for k in key[1:]:
            valid = pc.and_(valid, pc.is_valid(data.column(k)))
        dropped = data.num_rows - int(pc.sum(valid).as_py() or 0)
        log.debug("view %s: %d change(s) of rows with a NULL primary key not stored", node.table, dropped)
        return out.with_data(data.filter(valid))

    return apply


class Builder:
    """Adds the operators of planned views to a dataflow, sharing inputs and common sub-plans."""

    def __init__(self, flow: Dataflow, options: BuildOptions) -> None:
        self.flow = flow
        self.options = options
        self._streams: dict[int, Stream[ChangeBatch]] = {}
        self._placed: dict[int, tuple[Calc, str, int]] = {}
        """Calc nodes an aggregate may read weighted (see :func:`calc_function`) with their step
        prefix and index: built as they are only once another node reads them."""
        self._weighted: dict[int, Stream[ChangeBatch]] = {}
        self._steps: set[str] = set()

    def _step(self, prefix: str, index: int, kind: str) -> str:
        step = f"{prefix}__{index}_{kind}"
        self._steps.add(step)
        return step

    def add(self, output: Output, late_table: str | None = None) -> Stream[ChangeBatch]:
        """Build ``output``'s operators (and its late-data output); return the stream it writes."""
        prefix = step_prefix(output.table)
        stream: Stream[ChangeBatch] | None = None
        for index, node in enumerate(walk([output])):
            if id(node) in self._streams or id(node) in self._placed:
                continue
            if isinstance(node, Calc) and (
                node.series is not None
                or (not node.explodes and node.passthrough is not None and id(node.input) in self._placed)
            ):  # a series' elements, or a projection of them
                self._placed[id(node)] = (node, prefix, index)
                continue
            stream = self._build(node, prefix, index, late_table)
            self._streams[id(node)] = stream
        assert stream is not None
        return stream

    def _input(self, node: Node) -> Stream[ChangeBatch]:
        if id(node) not in self._streams and id(node) in self._placed:
            calc, prefix, index = self._placed[id(node)]
            step = self._step(prefix, index, "calc")
            self._streams[id(node)] = op.map(step, self._input(calc.input), calc_function(calc))
        return self._streams[id(node)]

    def _weighted_input(self, node: Calc) -> Stream[ChangeBatch]:
        """``node``'s changes with equal rows of a batch combined (a :data:`WEIGHT_COLUMN`): a series
        Calc combines before it explodes, projections of it carry the weights."""
        if id(node) not in self._weighted:
            _, prefix, index = self._placed[id(node)]
            step = self._step(prefix, index, "calc_weighted")
            if node.series is not None:
                up = self._input(node.input)
            else:
                assert isinstance(node.input, Calc)
                up = self._weighted_input(node.input)
            self._weighted[id(node)] = op.map(step, up, calc_function(node, weighted=True))
        return self._weighted[id(node)]

    def _aggregate_input(self, node: Aggregate) -> Stream[ChangeBatch]:
        """An aggregate's input: weighted where it is a series or a projection of one (see
        :func:`calc_function`); a windowed aggregate judges lateness change by change, so not there."""
        if node.window is None and id(node.input) in self._placed:
            assert isinstance(node.input, Calc)
            return self._weighted_input(node.input)
        return self._input(node.input)

    def _build(self, node: Node, prefix: str, index: int, late_table: str | None) -> Stream[ChangeBatch]:
        o = self.options
        if isinstance(node, Source):
            step = self._step(step_prefix(node.table), 0, "source")
            return lake_input(
                step, self.flow, node.table, catalog=o.catalog, stop=o.stop, max_versions=o.max_versions,
                poll_interval=o.poll_interval, columns=node.columns,
            )  # fmt: skip
        if isinstance(node, Calc):
            return op.map(self._step(prefix, index, "calc"), self._input(node.input), calc_function(node))
        if isinstance(node, Aggregate):
            up = self._aggregate_input(node)
            result = aggregate(
                self._step(prefix, index, "aggregate"), up, by=list(node.by), aggs=node.aggs,
                window=node.window, partitions=o.partitions,
            )  # fmt: skip
            if node.late_table is not None:
                late = op.map(self._step(prefix, index, "late_rows"), result.late, late_rows)
                lake_output(self._step(prefix, index, "late_out"), late, node.late_table, catalog=o.catalog)
            return result.changes
        if isinstance(node, Join):
            return join(
                self._step(prefix, index, "join"), self._input(node.left), self._input(node.right),
                on=list(node.on), left_schema=node.left.schema, right_schema=node.right.schema,
                how="left" if node.how == "left" else "inner", partitions=o.partitions,
                condition=pair_condition(node),
            )  # fmt: skip
        if isinstance(node, Lookup):
            return lookup_join(
                self._step(prefix, index, "lookup"), self._input(node.input), node.table, list(node.on),
                list(node.columns), catalog=o.catalog, refresh_interval=o.poll_interval, rename=node.rename,
            )  # fmt: skip
        if isinstance(node, TopN):
            return top_n(
                self._step(prefix, index, "top_n"), self._input(node.input), node.partition_by, node.order_by,
                node.n, rank=node.rank, partitions=o.partitions,
            )  # fmt: skip
        if isinstance(node, Union):
            parts = [
                op.map(self._step(prefix, index, f"cast_{i}"), self._input(p), cast_function(node.schema))
                for i, p in enumerate(node.parts)
            ]
            merged = parts[0]
            for i, part in enumerate(parts[1:], start=1):
                merged = op.merge(self._step(prefix, index, f"merge_{i}"), merged, part)
            return merged
        if isinstance(node, Output):
            cast = op.map(self._step(prefix, index, "cast"), self._input(node.input), output_function(node))
            lake_output(self._step(prefix, index, "out"), cast, node.table, catalog=o.catalog)
            return cast
        raise TypeError(f"unknown plan node {node!r}")  # pragma: no cover
