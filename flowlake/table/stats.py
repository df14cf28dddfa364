"""Per-file column statistics and the filters that use them to skip files.

Every data file records, per orderable column, its min, max and null count. A read filter is either a
:class:`pyarrow.compute.Expression` (applied to rows, no file skipping) or filters in disjunctive normal
form, the convention of pyarrow and delta-rs::

    [("amount", ">", 100), ("status", "=", "paid")]            # AND of predicates
    [[("shop_id", "=", 1)], [("shop_id", "=", 2)]]             # OR of ANDs

Operators: ``=``/``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``, ``is null``,
``is not null``. DNF filters are also turned into an Expression for the rows that survive.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flowlake.errors import InvalidArgumentError

Predicate: TypeAlias = tuple[str, str, Any]
"""One ``(column, operator, value)`` test."""
Filter: TypeAlias = "pc.Expression | Sequence[Predicate] | Sequence[Sequence[Predicate]]"
"""What ``read(filter=...)`` accepts."""

_OPS = {"=", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "is not null"}


def _orderable(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_date(dtype)
        or pa.types.is_timestamp(dtype)
        or pa.types.is_decimal(dtype)
    )


def compute_stats(table: pa.Table) -> bytes:
    """Min, max and null count of each orderable column, serialized for the catalog."""
    names, mins, maxs, nulls = [], [], [], {}
    for field in table.schema:
        if field.name.startswith("_"):
            continue
        column = table.column(field.name)
        nulls[field.name] = column.null_count
        if not _orderable(field.type):
            continue
        mm = pc.min_max(column)
        names.append(field.name)
        mins.append(pa.array([mm["min"].as_py()], type=field.type))
        maxs.append(pa.array([mm["max"].as_py()], type=field.type))
    arrays = [pa.concat_arrays([lo, hi]) for lo, hi in zip(mins, maxs, strict=True)]
    return _serialized([table.schema.field(n) for n in names], arrays, nulls)


def _serialized(fields: list[pa.Field], bounds: list[pa.Array], nulls: dict[str, int]) -> bytes:
    """The catalog's form of stats: an IPC stream of ``[min, max]`` per orderable column, the null
    count of every column in the schema's metadata."""
    schema = pa.schema(fields, metadata={b"nulls": orjson.dumps(nulls)})
    stats = pa.Table.from_arrays(bounds, schema=schema) if bounds else schema.empty_table()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(stats)
    return bytes(sink.getvalue())


def compute_stats_many(tables: Sequence[pa.Table]) -> list[bytes]:
    """:func:`compute_stats` of each of ``tables`` (one schema, none empty), in one grouped pass:
    a commit's parts for many buckets cost one aggregation, not one per part.

    >>> parts = [pa.table({"k": [3, 1], "s": ["b", None]}), pa.table({"k": [7], "s": ["a"]})]
    >>> compute_stats_many(parts) == [compute_stats(t) for t in parts]
    True
    """
    if len(tables) < 4 or any(not t.num_rows for t in tables):
        return [compute_stats(t) for t in tables]
    schema = tables[0].schema
    names = [f.name for f in schema if not f.name.startswith("_")]
    ordered = [n for n in names if _orderable(schema.field(n).type)]
    sizes = [t.num_rows for t in tables]
    combined = pa.concat_tables([t.select(names) for t in tables])
    part = pa.array(np.repeat(np.arange(len(tables), dtype=np.int64), sizes))
    aggregations: list[Any] = [(n, "min_max") for n in ordered]
    aggregations += [(n, "count", pc.CountOptions(mode="only_null")) for n in names]
    grouped = (
        combined.append_column("__part", part).group_by("__part", use_threads=False).aggregate(aggregations)
    )
    order = np.argsort(grouped.column("__part").to_numpy())  # group i at row order[i]
    nulls_by_column = {n: grouped.column(f"{n}_count").to_numpy()[order].tolist() for n in names}
    count = len(tables)
    pairs = np.empty(2 * count, dtype=np.int64)  # part i's min at 2i, its max at 2i + 1
    pairs[0::2] = order
    pairs[1::2] = order + count
    bounds = []
    for n in ordered:
        column = grouped.column(f"{n}_min_max").combine_chunks()
        both = pa.concat_arrays([pc.struct_field(column, "min"), pc.struct_field(column, "max")])
        bounds.append(both.cast(schema.field(n).type).take(pa.array(pairs)))
    fields = [schema.field(n) for n in ordered]
    return [
        _serialized(fields, [b.slice(2 * i, 2) for b in bounds], {n: nulls_by_column[n][i] for n in names})
        for i in range(count)
    ]


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """What a file says about one column."""

    min: Any
    max: Any
    null_count: int


def read_stats(blob: bytes | None) -> dict[str, ColumnStats]:
    """Inverse of :func:`compute_stats`; columns without min/max get ``None`` bounds."""
    if not blob:
        return {}
    stats = pa.ipc.open_stream(pa.py_buffer(blob)).read_all()
    nulls: dict[str, int] = orjson.loads((stats.schema.metadata or {}).get(b"nulls", b"{}"))
    out = {name: ColumnStats(None, None, count) for name, count in nulls.items()}
    if stats.num_rows == 2:
        for name in stats.column_names:
            lo, hi = stats.column(name).to_pylist()
            out[name] = ColumnStats(lo, hi, nulls.get(name, 0))
    return out


def normalize_filter(filter_: Filter | None) -> list[list[Predicate]] | None:
    """Bring DNF filters into ``[[pred, ...], ...]`` form; Expressions and None give None."""
    if filter_ is None or isinstance(filter_, pc.Expression):
        return None
    items = list(filter_)
    if not items:
        return None
    if all(isinstance(p, tuple) for p in items):
        groups = [items]
    elif all(isinstance(g, list | tuple) and g and all(isinstance(p, tuple) for p in g) for g in items):
        groups = [list(g) for g in items]
    else:
        raise InvalidArgumentError(
            "filter must be a pyarrow Expression, a list of (column, op, value) tuples, "
            "or a list of such lists (OR of ANDs)"
        )
    for group in groups:
        for pred in group:
            if len(pred) != 3 or not isinstance(pred[0], str) or pred[1] not in _OPS:
                raise InvalidArgumentError(
                    f"bad filter predicate {pred!r}: expected (column, op, value) with op in {sorted(_OPS)}"
                )
    return groups


def fit_filter(table: str, filter_: Filter | None, schema: pa.Schema) -> Filter | None:
    """Check a filter against the table's schema, with each literal in its column's type.

    Integers and text compare with decimal columns, ISO text with dates and timestamps, and naive
    datetimes (or text without an offset) with a timestamp column that has a time zone are UTC; a column that
    does not exist or a value that cannot compare with its column is an ``InvalidArgumentError``
    naming both.
    """
    if filter_ is None:
        return None
    if isinstance(filter_, pc.Expression):
        groups = None
        expression = filter_
    else:
        groups = normalize_filter(filter_)
        if groups is None:
            return None
        groups = [[_fit_predicate(table, p, schema) for p in group] for group in groups]
        expression = to_expression(groups)
    try:
        schema.empty_table().filter(expression)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidArgumentError(f"table {table!r}: filter {filter_!r} cannot be applied: {exc}") from exc
    return groups if groups is not None else filter_


def _fit_predicate(table: str, pred: Predicate, schema: pa.Schema) -> Predicate:
    name, op, value = pred
    if name not in schema.names:
        raise InvalidArgumentError(
            f"table {table!r}: filter on column {name!r}, which it does not have; columns: {schema.names}"
        )
    if op in ("is null", "is not null"):
        return pred
    dtype = schema.field(name).type
    if op in ("in", "not in"):
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise InvalidArgumentError(f"table {table!r}: filter {pred!r} needs a list of values")
        return (name, op, [_fit_value(table, name, dtype, v) for v in value])
    return (name, op, _fit_value(table, name, dtype, value))


def _fit_value(table: str, column: str, dtype: pa.DataType, value: Any) -> Any:
    if value is None:
        return None
    try:
        numeric = isinstance(value, int | float | str) and not isinstance(value, bool)
        if pa.types.is_decimal(dtype) and numeric:
            return decimal.Decimal(repr(value) if isinstance(value, float) else value)
        if pa.types.is_timestamp(dtype) and isinstance(value, str | dt.datetime):
            return _fit_timestamp(table, column, dtype, value)
        temporal = pa.types.is_date(dtype) or pa.types.is_time(dtype)
        if temporal and isinstance(value, str):
            return pa.scalar(value).cast(dtype).as_py()
    except (decimal.InvalidOperation, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidArgumentError(
            f"table {table!r}: filter value {value!r} cannot compare with column {column!r} ({dtype})"
        ) from exc
    return value


def _fit_timestamp(table: str, column: str, dtype: pa.TimestampType, value: str | dt.datetime) -> Any:
    """A time for a timestamp column: ISO text or a datetime; a naive one is UTC for a column with a
    time zone (as ``as_of`` takes it), an aware one cannot compare with a column without."""
    if isinstance(value, str):
        try:
            return pa.scalar(value).cast(dtype).as_py()
        except pa.ArrowInvalid:
            if dtype.tz is None:
                raise
            moment: dt.datetime = pa.scalar(value).cast(pa.timestamp(dtype.unit)).as_py()  # no offset
    else:
        moment = value
    if moment.tzinfo is None and dtype.tz is not None:
        return moment.replace(tzinfo=dt.UTC)
    if moment.tzinfo is not None and dtype.tz is None:
        raise InvalidArgumentError(
            f"table {table!r}: filter value {value!r} has a time zone but column {column!r} ({dtype}) "
            "has none; compare it with a naive datetime or text without an offset"
        )
    return value


def filter_columns(filter_: Filter | None) -> set[str]:
    """The columns a DNF filter reads (empty for Expressions, which are applied after the merge)."""
    groups = normalize_filter(filter_)
    return {p[0] for g in groups for p in g} if groups else set()


def _predicate_expression(pred: Predicate) -> pc.Expression:
    name, op, value = pred
    field = pc.field(name)
    if op in ("=", "=="):
        return field == value
    if op == "!=":
        return field != value
    if op == "<":
        return field < value
    if op == "<=":
        return field <= value
    if op == ">":
        return field > value
    if op == ">=":
        return field >= value
    if op == "in":
        return field.isin(list(value))
    if op == "not in":
        return ~field.isin(list(value))
    if op == "is null":
        return field.is_null()
    return field.is_valid()


def to_expression(filter_: Filter) -> pc.Expression:
    """The row filter for any accepted filter form."""
    if isinstance(filter_, pc.Expression):
        return filter_
    groups = normalize_filter(filter_)
    if groups is None:
        return pc.scalar(True)
    result: pc.Expression | None = None
    for group in groups:
        conj = _predicate_expression(group[0])
        for pred in group[1:]:
            conj = conj & _predicate_expression(pred)
        result = conj if result is None else result | conj
    assert result is not None
    return result


def _predicate_may_match(pred: Predicate, stats: dict[str, ColumnStats], rows: int) -> bool:
    name, op, value = pred
    col = stats.get(name)
    if col is None:
        return True
    try:
        if op == "is null":
            return col.null_count > 0
        if op == "is not null":
            return col.null_count < rows
        if col.min is None or col.max is None:
            # no bounds: the column is all null (then comparisons never match) or not orderable
            return not (col.null_count == rows and op not in ("!=", "not in"))
        if op in ("=", "=="):
            return bool(col.min <= value <= col.max)
        if op == "<":
            return bool(col.min < value)
        if op == "<=":
            return bool(col.min <= value)
        if op == ">":
            return bool(col.max > value)
        if op == ">=":
            return bool(col.max >= value)
        if op == "in":
            return any(col.min <= v <= col.max for v in value)
    except TypeError:  # values not comparable with the stats (e.g. naive vs aware datetimes)
        return True
    return True  # "!=" and "not in" rarely prune; keep the file


def may_match(filter_: Filter | None, stats: dict[str, ColumnStats], rows: int) -> bool:
    """False only if no row of a file with these stats can satisfy the filter."""
    groups = normalize_filter(filter_)
    if groups is None:
        return True
    return any(all(_predicate_may_match(p, stats, rows) for p in group) for group in groups)


def row_group_stats(metadata: pq.FileMetaData, index: int) -> dict[str, ColumnStats]:
    """What a Parquet file's footer says about the columns of row group ``index`` (columns written
    without statistics are left out, so they never rule the group out)."""
    group = metadata.row_group(index)
    out: dict[str, ColumnStats] = {}
    for j in range(group.num_columns):
        chunk = group.column(j)
        stats = chunk.statistics if chunk.is_stats_set else None
        if stats is None or not stats.has_null_count:
            continue
        bounds = (stats.min, stats.max) if stats.has_min_max else (None, None)
        out[chunk.path_in_schema] = ColumnStats(bounds[0], bounds[1], stats.null_count)
    return out


def matching_row_groups(filter_: Filter | None, metadata: pq.FileMetaData) -> list[int] | None:
    """The row groups of a file whose footer statistics may satisfy a DNF filter; None: all of them
    (no filter, an Expression, or no statistics to go by)."""
    if normalize_filter(filter_) is None or metadata.num_row_groups == 0:
        return None
    if not any(metadata.row_group(0).column(j).is_stats_set for j in range(metadata.num_columns)):
        return None
    return [
        i
        for i in range(metadata.num_row_groups)
        if may_match(filter_, row_group_stats(metadata, i), metadata.row_group(i).num_rows)
    ]
