"""Changelog batches as they travel through a dataflow, and the vector helpers every operator shares.

An item of a flowlake dataflow is a :class:`ChangeBatch`: an Arrow table of changes (the columns plus
``_kind``, and ``_seq`` where the lake source provided it) together with the input *positions* it
reflects, ``{"table:ods.orders": 12}``. Operators carry positions from their input to their output
(also on empty outputs), so the sink knows exactly which input versions an epoch's commit covers.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import InvalidChangelogError
from flowlake.table.bucketing import key_hash

Positions = Mapping[str, int]
"""Input positions: ``"table:<namespace.table>"`` → the last version of that table reflected."""


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """A batch of changes (columns plus ``_kind``) and the input positions it reflects.

    >>> batch = ChangeBatch(from_rows([(0, {"id": 1})], pa.schema([("id", pa.int64())])), {"table:ods.t": 3})
    >>> batch.num_rows, batch.positions
    (1, {'table:ods.t': 3})
    """

    data: pa.Table
    positions: Positions = field(default_factory=dict)
    fresh: bool = False
    """Whether its input versions are newer than the input's head when its source started: no sink
    can have committed them, so the batch is no replay of committed output, and an operator may fold
    it together with the fresh batches next to it (see :func:`coalesce`)."""

    @property
    def num_rows(self) -> int:
        """Number of changes."""
        return int(self.data.num_rows)

    def with_data(self, data: pa.Table) -> ChangeBatch:
        """The same positions (and freshness) with other changes."""
        return ChangeBatch(data, self.positions, self.fresh)


@dataclass(frozen=True, slots=True)
class RowChange:
    """One change as Python values: the friendly, per-row view of a batch (not the hot path).

    >>> str(RowChange(RowKind.UPDATE_AFTER, {"id": 1, "status": "paid"}))
    "+U {'id': 1, 'status': 'paid'}"
    """

    kind: RowKind
    row: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.kind.symbol} {self.row}"


def rows(batch: ChangeBatch | pa.Table) -> list[RowChange]:
    """The changes of a batch as :class:`RowChange` values, in order (``_seq`` is left out).

    >>> [str(c) for c in rows(from_rows([(0, {"id": 1}), (3, {"id": 2})], pa.schema([("id", pa.int64())])))]
    ["+I {'id': 1}", "-D {'id': 2}"]
    """
    data = batch.data if isinstance(batch, ChangeBatch) else batch
    kinds = data.column(KIND_COLUMN).to_pylist()
    body = data.drop_columns([c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names])
    return [RowChange(RowKind(k), r) for k, r in zip(kinds, body.to_pylist(), strict=True)]


def from_rows(changes: Iterable[tuple[RowKind | int, Mapping[str, Any]]], schema: pa.Schema) -> pa.Table:
    """An Arrow changelog from ``(kind, row)`` pairs and the columns' schema.

    >>> from_rows([(RowKind.INSERT, {"id": 1})], pa.schema([("id", pa.int64())])).to_pylist()
    [{'id': 1, '_kind': 0}]
    """
    pairs = list(changes)
    table = pa.Table.from_pylist([dict(r) for _, r in pairs], schema=schema)
    return table.append_column(KIND_COLUMN, pa.array([int(k) for k, _ in pairs], pa.int8()))


def merge_positions(*parts: Positions) -> dict[str, int]:
    """The newest position of every input among ``parts``."""
    out: dict[str, int] = {}
    for part in parts:
        for key, version in part.items():
            if version > out.get(key, -1):
                out[key] = version
    return out


def dominates(a: Positions, b: Positions) -> bool:
    """Whether ``a`` is at or past ``b`` on every input ``b`` names."""
    return all(a.get(key, -1) >= version for key, version in b.items())


def kinds_of(data: pa.Table) -> np.ndarray:
    """The ``_kind`` column as an int8 numpy array (validated)."""
    if KIND_COLUMN not in data.column_names:
        raise InvalidChangelogError(
            f"a changelog batch needs a {KIND_COLUMN!r} column; got {data.column_names}"
        )
    kinds: np.ndarray = np.asarray(data.column(KIND_COLUMN).to_numpy(zero_copy_only=False), dtype=np.int8)
    if len(kinds) and (kinds.min() < 0 or kinds.max() > 3):
        raise InvalidChangelogError(
            f"{KIND_COLUMN!r} holds values outside 0..3: {sorted(set(kinds.tolist()))}"
        )
    return kinds


def weights(kinds: np.ndarray) -> np.ndarray:
    """``+1`` for ``+I``/``+U``, ``-1`` for ``-U``/``-D`` (int64)."""
    # -U (1) and -D (3) are the odd kinds: one pass, 1 - 2 * (kind & 1)
    out: np.ndarray = 1 - 2 * (kinds.astype(np.int64) & 1)
    return out


WEIGHT_COLUMN = "_weight"
"""An optional int64 column (each value >= 1) of a changelog batch that :func:`~flowlake.flow.aggregate`
reads: the change stands for that many equal changes (a batch combined before an aggregate)."""


def _zero(dtype: pa.DataType) -> pa.Scalar:
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return pa.scalar("", dtype)
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return pa.scalar(b"", dtype)
    if pa.types.is_boolean(dtype):
        return pa.scalar(False)
    if pa.types.is_decimal(dtype):  # an int64 zero cannot cast to a decimal of < 19 + scale digits
        return pa.scalar(decimal.Decimal(0), dtype)
    storage = pa.int32() if getattr(dtype, "bit_width", 64) == 32 else pa.int64()  # date32, time32
    return pa.scalar(0, storage).cast(dtype)


def partition_ids(data: pa.Table, columns: Sequence[str], partitions: int) -> np.ndarray:
    """A stable partition in ``0..partitions-1`` per row from the hash of ``columns`` (nulls allowed)."""
    if partitions == 1 or data.num_rows == 0:
        return np.zeros(data.num_rows, dtype=np.int64)
    cols = {}
    for name in columns:
        column = data.column(name)
        if column.null_count:
            column = pc.fill_null(column, _zero(column.type))
        cols[name] = column
    hashes = key_hash(pa.table(cols), list(columns))
    return (hashes % np.uint64(partitions)).astype(np.int64)


def split_by_partition(
    batch: ChangeBatch, columns: Sequence[str], partitions: int
) -> list[tuple[str, ChangeBatch]]:
    """Route a batch's rows to key partitions (``"0"``, ``"1"``, ...), keeping row order within each.

    Only non-empty partitions get a sub-batch; an empty batch still goes to partition ``"0"`` so its
    positions travel on to the sink.
    """
    data = batch.data
    if data.num_rows == 0:
        return [("0", batch)]
    ids = partition_ids(data, columns, partitions)
    if partitions == 1:
        return [("0", batch)]
    small = np.int16 if partitions <= np.iinfo(np.int16).max else ids.dtype
    order = np.argsort(ids.astype(small), kind="stable")  # (a radix sort on 16-bit ids)
    counts = np.bincount(ids, minlength=partitions)
    grouped = data.take(pa.array(order))  # one take, then zero-copy slices: one per partition
    out: list[tuple[str, ChangeBatch]] = []
    start = 0
    for p, n in enumerate(counts.tolist()):
        if n:
            out.append((str(p), batch.with_data(grouped.slice(start, n))))
        start += n
    return out


COALESCE_ROWS = 500_000
"""At most this many changes are folded as one by :func:`coalesce`."""


def coalesce(batches: Sequence[ChangeBatch], max_rows: int = COALESCE_ROWS) -> list[ChangeBatch]:
    """``batches`` (one key partition's, in order) with each run of consecutive fresh ones of one
    schema joined into one batch of at most ``max_rows`` changes (its positions the newest of each
    input); the others as they are.

    A stateful operator folds a batch at a time and pays a fixed cost per batch, so a source that
    hands over several versions at once (one that is behind) is folded at the cost of one. Only fresh
    batches are joined: on a replay after a crash, a batch spanning the version a sink last committed
    could net out changes on both sides of it, and the sink would never see the image that corrects
    its committed row (see :mod:`flowlake.flow.lake`); fresh ones are past any commit.

    >>> schema = pa.schema([("id", pa.int64())])
    >>> def b(v, fresh=True):
    ...     return ChangeBatch(from_rows([(0, {"id": v})], schema), {"table:t": v}, fresh)
    >>> [(c.num_rows, c.positions["table:t"], c.fresh) for c in coalesce([b(1, False), b(2), b(3), b(4)])]
    [(1, 1, False), (3, 4, True)]
    >>> [c.num_rows for c in coalesce([b(2), b(3), b(4), b(5), b(6, False), b(7)], max_rows=2)]
    [2, 2, 1, 1]
    """
    out: list[ChangeBatch] = []
    run: list[ChangeBatch] = []
    rows = 0

    def close() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            data = pa.concat_tables([b.data for b in run])
            out.append(ChangeBatch(data, merge_positions(*(b.positions for b in run)), fresh=True))
        run.clear()

    for batch in batches:
        joins = (
            batch.fresh
            and run
            and rows + batch.num_rows <= max_rows
            and batch.data.schema.equals(run[0].data.schema)
        )
        if not joins:
            close()
            rows = 0
        if batch.fresh:
            run.append(batch)
            rows += batch.num_rows
        else:
            out.append(batch)
    close()
    return out


def concat(tables: Sequence[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    """Concatenate changelog tables (promoting compatible schemas)."""
    if not tables:
        if schema is None:
            raise ValueError("concat of no tables needs a schema")
        return schema.empty_table()
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")
