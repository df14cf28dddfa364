"""Pure changelog logic behind the Top-N operator (``ROW_NUMBER() OVER (...) <= N``), no bytewax here.

Per partition key the state keeps every live row in sort order (a multiset: a row inserted twice is
there twice) and the top ``n`` rows it last emitted. After a batch, each touched partition's new top
``n`` is compared with what was emitted, and only the difference goes out: with a rank column, a rank
whose row changed becomes ``-U``/``+U`` (``+I`` or ``-D`` where the rank appears or disappears);
without one, rows leaving the top become ``-D`` and rows entering it ``+I``.

Ordering follows SQL and DuckDB: each ``ORDER BY`` column ascending or descending, NULLs last unless
``nulls_first``; rows that tie on every ``ORDER BY`` column are ranked by their remaining columns
(ascending), so the result does not depend on arrival order.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from flowlake.changelog import RowKind
from flowlake.flow._relational import _table, _tuples, body_schema
from flowlake.flow._snapshot import PickledSnapshot
from flowlake.flow.batch import kinds_of

_ADDS = (RowKind.INSERT, RowKind.UPDATE_AFTER)


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``ORDER BY`` column of a Top-N.

    >>> SortKey("amount", descending=True)
    SortKey(column='amount', descending=True, nulls_first=False)
    """

    column: str
    descending: bool = False
    nulls_first: bool = False


@functools.total_ordering
class _Reversed:
    """A value that sorts in reverse (for descending columns of any comparable type)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)

    def __reduce__(self) -> tuple[type[_Reversed], tuple[Any]]:
        return (_Reversed, (self.value,))


def _tie_break(row: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    return tuple((v is None, v) if v is not None else (True, 0) for v in row)


class TopNState(PickledSnapshot):
    """Live rows and emitted top rows of the partitions of one key partition of the stream."""

    def __init__(
        self, partition_by: Sequence[str], order_by: Sequence[SortKey], n: int, rank: str | None
    ) -> None:
        self.partition_by = tuple(partition_by)
        self.order_by = tuple(order_by)
        self.n = n
        self.rank = rank
        self.live: dict[tuple[Any, ...], list[tuple[Any, tuple[Any, ...]]]] = {}
        self.emitted: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        self.dropped_retractions = 0

    def _sort_key(self, row: tuple[Any, ...], names: Sequence[str]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for key in self.order_by:
            value = row[names.index(key.column)]
            null_rank = (0 if key.nulls_first else 1) if value is None else (1 if key.nulls_first else 0)
            if value is None:
                parts.append((null_rank, 0))
            else:
                parts.append((null_rank, _Reversed(value) if key.descending else value))
        parts.append(_tie_break(row))
        return tuple(parts)

    def apply(self, data: pa.Table) -> pa.Table:
        """Fold a changelog batch; return the changes of the top rows (with the rank column if any)."""
        schema = body_schema(data.schema)
        names = schema.names
        rows = _tuples(data, names)
        part_idx = [names.index(c) for c in self.partition_by]
        touched: dict[tuple[Any, ...], None] = {}
        for kind, row in zip(kinds_of(data).tolist(), rows, strict=True):
            part = tuple(row[i] for i in part_idx)
            entries = self.live.setdefault(part, [])
            entry = (self._sort_key(row, names), row)
            if kind in _ADDS:
                bisect.insort(entries, entry, key=lambda e: e[0])
            else:
                at = bisect.bisect_left(entries, entry[0], key=lambda e: e[0])
                if at < len(entries) and entries[at] == entry:
                    del entries[at]
                else:
                    self.dropped_retractions += 1
            touched[part] = None
        out_kinds: list[int] = []
        out_rows: list[tuple[Any, ...]] = []
        for part in touched:
            entries = self.live.get(part, [])
            new = [row for _, row in entries[: self.n]]
            old = self.emitted.get(part, [])
            self._diff(old, new, out_kinds, out_rows)
            if new:
                self.emitted[part] = new
            else:
                self.emitted.pop(part, None)
            if not entries:
                self.live.pop(part, None)
        out_schema = schema
        if self.rank is not None:
            out_schema = schema.append(pa.field(self.rank, pa.int64(), nullable=False))
        return _table(out_kinds, out_rows, out_schema)

    def _diff(
        self,
        old: list[tuple[Any, ...]],
        new: list[tuple[Any, ...]],
        kinds: list[int],
        rows: list[tuple[Any, ...]],
    ) -> None:
        if self.rank is not None:
            for i in range(max(len(old), len(new))):
                before = old[i] if i < len(old) else None
                after = new[i] if i < len(new) else None
                if before == after:
                    continue
                rank = i + 1
                if before is not None and after is not None:
                    kinds += [RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER]
                    rows += [(*before, rank), (*after, rank)]
                elif before is not None:
                    kinds.append(RowKind.DELETE)
                    rows.append((*before, rank))
                elif after is not None:
                    kinds.append(RowKind.INSERT)
                    rows.append((*after, rank))
            return
        remaining = list(new)
        gone: list[tuple[Any, ...]] = []
        for row in old:
            if row in remaining:
                remaining.remove(row)
            else:
                gone.append(row)
        for row in gone:
            kinds.append(RowKind.DELETE)
            rows.append(row)
        for row in remaining:
            kinds.append(RowKind.INSERT)
            rows.append(row)
