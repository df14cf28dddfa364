"""Pure changelog logic behind the join, dedup, filter and map operators (no bytewax here)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow._snapshot import PickledSnapshot
from flowlake.flow._stateform import from_state, to_state
from flowlake.flow.batch import kinds_of

log = logging.getLogger("flowlake.flow")

JoinHow = Literal["inner", "left"]
"""Which rows a join keeps: only matches, or every left row (null-padded when unmatched)."""

_ADDS = (RowKind.INSERT, RowKind.UPDATE_AFTER)


def body_schema(schema: pa.Schema) -> pa.Schema:
    """A changelog schema without ``_kind`` and ``_seq``."""
    return pa.schema([f for f in schema if f.name not in (KIND_COLUMN, SEQ_COLUMN)])


def _tuples(data: pa.Table, names: Sequence[str], keys: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Rows as tuples in state form; ``keys`` columns stay Python values (they are matched across
    inputs whose types may differ, e.g. int32 against int64 or two decimal scales)."""
    if not data.num_rows:
        return []
    columns = [data.column(n).to_pylist() if n in keys else to_state(data.column(n)) for n in names]
    return list(zip(*columns, strict=True))


def _table(
    kinds: list[int], rows: list[tuple[Any, ...]], schema: pa.Schema, keys: Sequence[str] = ()
) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [
        pa.array(list(c), f.type) if f.name in keys else from_state(list(c), f.type)
        for c, f in zip(columns, schema, strict=True)
    ]
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table.append_column(KIND_COLUMN, pa.array(kinds, pa.int8()))


def join_schema(left: pa.Schema, right: pa.Schema, on: Sequence[str]) -> pa.Schema:
    """Left columns, then right columns other than the join keys (right ones nullable)."""
    left_body, right_body = body_schema(left), body_schema(right)
    clash = [f.name for f in right_body if f.name in left_body.names and f.name not in on]
    if clash:
        raise InvalidArgumentError(f"join: columns {clash} exist on both sides; rename them with map_changes")
    extra = [f.with_nullable(True) for f in right_body if f.name not in on]
    return pa.schema([*left_body, *extra])


class JoinState(PickledSnapshot):
    """Both sides of a regular stream-stream join for one key partition, as multisets of rows."""

    def __init__(self) -> None:
        self.left: dict[Any, dict[tuple[Any, ...], int]] = {}
        self.right: dict[Any, dict[tuple[Any, ...], int]] = {}
        self.dropped_retractions = 0

    def apply(
        self,
        side: Literal["left", "right"],
        data: pa.Table,
        *,
        on: Sequence[str],
        how: JoinHow,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
    ) -> pa.Table:
        """Fold one side's changes; returns the join's changes (``_kind`` kept from the cause)."""
        out_schema = join_schema(left_schema, right_schema, on)
        schema = body_schema(left_schema if side == "left" else right_schema)
        rows = _tuples(data, schema.names, on)
        kinds = kinds_of(data).tolist()
        key_idx = [schema.names.index(c) for c in on]
        right_body = body_schema(right_schema)
        right_keep = [i for i, n in enumerate(right_body.names) if n not in on]
        nulls = (None,) * len(right_keep)
        out = _Emitter()
        for kind, row in zip(kinds, rows, strict=True):
            key = tuple(row[i] for i in key_idx)
            if side == "left":
                self._left(out, kind, key, row, how, right_keep, nulls)
            elif not any(v is None for v in key):
                self._right(out, kind, key, row, how, right_keep, nulls)
        return _table(out.kinds, out.rows, out_schema, on)

    def _left(
        self, out: _Emitter, kind: int, key: Any, row: tuple[Any, ...], how: JoinHow,
        right_keep: list[int], nulls: tuple[None, ...],
    ) -> None:  # fmt: skip
        if not _update(self.left, key, row, kind in _ADDS):
            self.dropped_retractions += 1
            return
        matches = None if any(v is None for v in key) else self.right.get(key)
        if matches:
            for r, n in matches.items():
                out.emit(kind, row, tuple(r[i] for i in right_keep), n)
        elif how == "left":
            out.emit(kind, row, nulls, 1)

    def _right(
        self, out: _Emitter, kind: int, key: Any, row: tuple[Any, ...], how: JoinHow,
        right_keep: list[int], nulls: tuple[None, ...],
    ) -> None:  # fmt: skip
        add = kind in _ADDS
        before = sum(self.right.get(key, {}).values())
        if not _update(self.right, key, row, add):
            self.dropped_retractions += 1
            return
        lefts = self.left.get(key, {})
        part = tuple(row[i] for i in right_keep)
        if add and how == "left" and before == 0:
            for lrow, n in lefts.items():
                out.emit(RowKind.DELETE, lrow, nulls, n)
        for lrow, n in lefts.items():
            out.emit(kind, lrow, part, n)
        if not add and how == "left" and before == 1:
            for lrow, n in lefts.items():
                out.emit(RowKind.INSERT, lrow, nulls, n)


class _Emitter:
    def __init__(self) -> None:
        self.kinds: list[int] = []
        self.rows: list[tuple[Any, ...]] = []

    def emit(self, kind: int, left_row: tuple[Any, ...], right_part: tuple[Any, ...], times: int) -> None:
        for _ in range(times):
            self.kinds.append(kind)
            self.rows.append(left_row + right_part)


def _update(side: dict[Any, dict[tuple[Any, ...], int]], key: Any, row: tuple[Any, ...], add: bool) -> bool:
    bucket = side.get(key)
    if add:
        if bucket is None:
            bucket = side[key] = {}
        bucket[row] = bucket.get(row, 0) + 1
        return True
    if bucket is None or row not in bucket:
        return False
    if bucket[row] == 1:
        del bucket[row]
        if not bucket:
            del side[key]
    else:
        bucket[row] -= 1
    return True


class DedupState(PickledSnapshot):
    """Latest (or first) row per key: turns repeated rows into an exact upsert changelog."""

    def __init__(self, keep: Literal["first", "last"] = "last") -> None:
        self.keep = keep
        self.rows: dict[Any, tuple[Any, ...]] = {}

    def apply(self, data: pa.Table, keys: Sequence[str]) -> pa.Table:
        """Fold changes; duplicates that change nothing are dropped, updates become ``-U``/``+U``."""
        schema = body_schema(data.schema)
        rows = _tuples(data, schema.names, keys)
        key_idx = [schema.names.index(c) for c in keys]
        out_kinds: list[int] = []
        out_rows: list[tuple[Any, ...]] = []
        for kind, row in zip(kinds_of(data).tolist(), rows, strict=True):
            key = tuple(row[i] for i in key_idx)
            old = self.rows.get(key)
            if kind in _ADDS:
                if old is None:
                    self.rows[key] = row
                    out_kinds.append(RowKind.INSERT)
                    out_rows.append(row)
                elif self.keep == "last" and old != row:
                    self.rows[key] = row
                    out_kinds += [RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER]
                    out_rows += [old, row]
            elif kind == RowKind.DELETE and old is not None:
                del self.rows[key]
                out_kinds.append(RowKind.DELETE)
                out_rows.append(old)
        return _table(out_kinds, out_rows, schema, keys)


def filter_changes(data: pa.Table, mask: np.ndarray) -> pa.Table:
    """Keep the changes whose row passes ``mask``, fixing kinds of update pairs.

    An update whose old row passed and new row fails becomes a ``-D``; one whose old row failed and
    new row passes becomes a ``+I``. A ``-U`` is paired with the ``+U`` right after it.
    """
    kinds = kinds_of(data).copy()
    mask = np.asarray(mask, dtype=bool)
    n = len(kinds)
    if n == 0:
        return data
    is_before = kinds == RowKind.UPDATE_BEFORE
    nxt = np.concatenate([kinds[1:], [-1]])
    paired = is_before & (nxt == RowKind.UPDATE_AFTER)
    pair_after = np.concatenate([[False], paired[:-1]])
    next_mask = np.concatenate([mask[1:], [False]])
    prev_mask = np.concatenate([[False], mask[:-1]])
    kinds[paired & mask & ~next_mask] = RowKind.DELETE
    kinds[pair_after & mask & ~prev_mask] = RowKind.INSERT
    out = data.set_column(data.schema.get_field_index(KIND_COLUMN), KIND_COLUMN, pa.array(kinds, pa.int8()))
    return out.filter(pa.array(mask))


def map_changes(data: pa.Table, fn: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Apply a vectorized row function to a changelog's rows, keeping each row's kind (and ``_seq``)."""
    extra = [c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names]
    mapped = fn(data.drop_columns(extra))
    if mapped.num_rows != data.num_rows:
        raise InvalidArgumentError(
            f"map_changes: the function returned {mapped.num_rows} rows for {data.num_rows}; "
            "it must map row to row (use filter_changes to drop rows)"
        )
    for c in extra:
        mapped = mapped.append_column(c, data.column(c))
    return mapped


def lookup(
    data: pa.Table,
    dim: pa.Table,
    on: Sequence[str],
    columns: Iterable[str],
    rename: Mapping[str, str] | None = None,
) -> pa.Table:
    """Enrich each change with ``columns`` of the ``dim`` row that has the same ``on`` values (left join).

    ``rename`` gives dimension columns other names in the output; a renamed ``on`` column is output
    too (NULL where no dimension row matched), as a SQL LEFT JOIN shows the right side's key.
    """
    names = dict(rename or {})
    wanted = [c for c in columns if c not in on or c in names]
    outputs = [names.get(c, c) for c in wanted]
    clash = [c for c in outputs if c in data.column_names]
    if clash:
        raise InvalidArgumentError(f"lookup_join: columns {clash} exist on both sides")
    pos = "__flowlake_pos"
    left = data.append_column(pos, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    right = pa.Table.from_arrays(
        [dim.column(c) for c in on] + [dim.column(c) for c in wanted], names=[*on, *outputs]
    )
    joined = left.join(right, keys=list(on), join_type="left outer", use_threads=False)
    joined = joined.sort_by(pos).drop_columns([pos])
    order = [*[c for c in data.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)], *outputs]
    order += [c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names]
    return joined.select(order)
