"""The sink's consolidation against its specification, written out row by row in Python.

``consolidate`` settles each key by its rows' net weights per identical image. It finds the images
of a key by coding each column's values (nested columns compared value by value instead); that must
give exactly what netting every image in Python gives, for any changelog (consistent or not), any
column types, NULLs in keys and values.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.flow.batch import from_rows
from flowlake.flow.lake import OMIT, consolidate

SCHEMA = pa.schema(
    [
        ("k1", pa.int64()),
        ("k2", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("note", pa.string()),
        ("score", pa.float64()),
        ("tags", pa.list_(pa.int32())),
        ("flag", pa.bool_()),
        ("big", pa.uint64()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)
KINDS = [RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE]


def reference(changes: list[tuple[RowKind, dict[str, Any]]], key: list[str], unchanged: Any) -> list[Any]:
    """Net every identical image per key; per key the image of highest (priority, last arrival)."""
    images: dict[tuple[Any, ...], dict[tuple[Any, ...], list[int]]] = {}
    for i, (kind, row) in enumerate(changes):
        image = tuple((name, repr(row[name])) for name in SCHEMA.names)
        held = images.setdefault(tuple(row[name] for name in key), {}).setdefault(image, [0, -1])
        held[0] += 1 if kind in (RowKind.INSERT, RowKind.UPDATE_AFTER) else -1
        held[1] = i
    picked: list[tuple[int, int]] = []  # (last arrival, priority)
    for per_image in images.values():
        ranked = []
        for total, last in per_image.values():
            added = changes[last][0] in (RowKind.INSERT, RowKind.UPDATE_AFTER)
            priority = 3 if total > 0 else 2 if total < 0 else 1 if added else 0
            ranked.append((priority, last))
        priority, last = max(ranked)
        picked.append((last, priority))
    out = []
    for last, priority in sorted(picked):
        if unchanged == OMIT and priority < 2:
            continue
        kind = RowKind.UPDATE_AFTER if priority in ((3, 1) if unchanged is None else (3,)) else RowKind.DELETE
        out.append((changes[last][1], kind))
    return out


def as_pairs(table: pa.Table) -> list[Any]:
    kinds = table.column(KIND_COLUMN).to_pylist()
    body = table.drop_columns([KIND_COLUMN]).to_pylist()
    return [(row, RowKind(kind)) for row, kind in zip(body, kinds, strict=True)]


values = st.fixed_dictionaries(
    {
        "k1": st.sampled_from([1, 2, 3, None]),
        "k2": st.sampled_from(["a", "b", None]),
        "amount": st.sampled_from([Decimal("1.00"), Decimal("2.50"), None]),
        "note": st.sampled_from(["x", "y", None]),
        "score": st.sampled_from([0.5, 1.5, None]),
        "tags": st.sampled_from([[1], [1, 2], None, []]),
        "flag": st.sampled_from([True, False, None]),
        "big": st.sampled_from([0, 2**64 - 1, 2**63]),
        "day": st.sampled_from([dt.date(2026, 1, 1), dt.date(1970, 1, 1)]),
        "at": st.sampled_from(
            [dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(1999, 1, 1, tzinfo=dt.UTC)]
        ),
    }
)
changelogs = st.lists(st.tuples(st.sampled_from(KINDS), values), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(changelogs, st.sampled_from([["k1"], ["k1", "k2"]]), st.sampled_from([None, OMIT]))
def test_consolidate_is_netting_every_image(
    changes: list[tuple[RowKind, dict[str, Any]]], key: list[str], unchanged: Any
) -> None:
    got = consolidate(from_rows(changes, SCHEMA), key, unchanged=unchanged)
    assert as_pairs(got) == reference(changes, key, unchanged)


def test_a_batch_of_repeated_keys_with_a_nested_column_settles() -> None:
    """A join's catch-up: each key arrives padded, is retracted and arrives joined; with a list
    column, which a group-by on every column (the way before) could not group at all."""
    n = 20_000
    empty: dict[str, Any] = {"k2": "s", "amount": None, "note": None, "score": None, "tags": None}
    empty.update(flag=None, big=1, day=dt.date(2026, 1, 1), at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    padded: list[dict[str, Any]] = [{"k1": i, **empty} for i in range(n)]
    joined = [{**row, "note": f"shop {i % 7}", "tags": [i % 3]} for i, row in enumerate(padded)]
    changes = (
        [(RowKind.INSERT, r) for r in padded]
        + [(RowKind.UPDATE_BEFORE, r) for r in padded]
        + [(RowKind.UPDATE_AFTER, r) for r in joined]
        + [(RowKind.UPDATE_BEFORE, r) for r in joined[:5]]
        + [(RowKind.UPDATE_AFTER, {**r, "tags": [9, 9]}) for r in joined[:5]]
    )
    got = consolidate(from_rows(changes, SCHEMA), ["k1"], unchanged=None)
    assert as_pairs(got) == reference(changes, ["k1"], None)
    assert got.column("tags").to_pylist() == [[i % 3] for i in range(5, n)] + [[9, 9]] * 5
