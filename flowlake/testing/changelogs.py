"""Building changelogs and lakes for a pipeline's tests: Arrow changelogs from rows, an in-memory lake.

>>> import pyarrow as pa
>>> schema = pa.schema([("id", pa.int64()), ("status", pa.string())])
>>> log = changelog(schema, [("+I", {"id": 1, "status": "new"}),
...                          *update({"id": 1, "status": "new"}, {"id": 1, "status": "paid"})])
>>> [RowKind(k).symbol for k in log.column("_kind").to_pylist()]
['+I', '-U', '+U']
>>> lake = memory_lake()
>>> t = lake.create_table("ods.orders", schema, primary_key=["id"], buckets=2)
>>> t.apply(log).version
1
>>> t.read().to_pylist()
[{'id': 1, 'status': 'paid'}]
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.lake import Catalog, connect

Change = tuple[RowKind | str | int, Mapping[str, Any]]
"""One change as ``(kind, row)``: the kind as a :class:`RowKind`, its symbol (``"+I"``) or its int."""


def _kind(kind: RowKind | str | int) -> RowKind:
    return RowKind.from_symbol(kind) if isinstance(kind, str) else RowKind(kind)


def changelog(schema: pa.Schema, changes: Iterable[Change]) -> pa.Table:
    """An Arrow changelog: the rows under ``schema`` plus ``_kind`` (int8), as tables take it.

    Args:
        schema: The table's columns (without ``_kind``).
        changes: ``(kind, row)`` pairs in order; a row may leave out nullable columns.
    """
    pairs = list(changes)
    rows = pa.Table.from_pylist([dict(row) for _, row in pairs], schema=schema)
    return rows.append_column(KIND_COLUMN, pa.array([int(_kind(k)) for k, _ in pairs], pa.int8()))


def insert(*rows: Mapping[str, Any]) -> list[Change]:
    """``+I`` changes of ``rows``."""
    return [(RowKind.INSERT, row) for row in rows]


def update(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """An update as the ``-U`` (old row), ``+U`` (new row) pair every consumer can retract."""
    return [(RowKind.UPDATE_BEFORE, before), (RowKind.UPDATE_AFTER, after)]


def delete(*rows: Mapping[str, Any]) -> list[Change]:
    """``-D`` changes of ``rows`` (the rows as they were)."""
    return [(RowKind.DELETE, row) for row in rows]


def memory_lake(*, principal: str = "tester") -> Catalog:
    """A fresh lake in memory: an in-memory SQLite catalog and a ``memory://`` warehouse of its own.

    Nothing touches the disk and two calls never share a table, so a test (or a pytest fixture
    that returns it) starts clean::

        @pytest.fixture
        def lake() -> fl.Catalog:
            return memory_lake()
    """
    return connect(catalog="sqlite://", warehouse=f"memory://lake-{uuid.uuid4().hex}", principal=principal)
