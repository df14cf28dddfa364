"""File statistics and the filters that skip files by them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flowlake.errors import InvalidArgumentError
from flowlake.table.stats import compute_stats, may_match, normalize_filter, read_stats, to_expression

DATA = pa.table(
    {
        "n": pa.array([3, 7, None], pa.int32()),
        "s": ["b", "d", "c"],
        "d": pa.array([Decimal("1.50"), Decimal("9.99"), None], pa.decimal128(5, 2)),
        "t": pa.array([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC")),
        "flag": [True, False, None],
        "_kind": pa.array([0, 0, 0], pa.int8()),
    }
)


def test_stats_round_trip() -> None:
    stats = read_stats(compute_stats(DATA))
    assert (stats["n"].min, stats["n"].max, stats["n"].null_count) == (3, 7, 1)
    assert (stats["s"].min, stats["s"].max) == ("b", "d")
    assert stats["d"].max == Decimal("9.99")
    assert stats["flag"].min is None and stats["flag"].null_count == 1
    assert "_kind" not in stats


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ([("n", "=", 5)], True),
        ([("n", "=", 8)], False),
        ([("n", ">", 7)], False),
        ([("n", ">=", 7)], True),
        ([("n", "<", 3)], False),
        ([("n", "<=", 3)], True),
        ([("n", "in", [1, 2, 9])], False),
        ([("n", "in", [1, 4])], True),
        ([("n", "is null", None)], True),
        ([("s", "is null", None)], False),
        ([("s", "is not null", None)], True),
        ([("s", ">", "d")], False),
        ([("d", "<", Decimal("1.00"))], False),
        ([("n", "=", 5), ("s", "=", "z")], False),
        ([[("n", "=", 99)], [("s", "=", "c")]], True),
        ([[("n", "=", 99)], [("s", "=", "z")]], False),
        ([("n", "!=", 3)], True),
        ([("t", ">", "not comparable")], True),  # incomparable values never prune
        ([("missing", "=", 1)], True),
    ],
)
def test_may_match(flt: list[object], expected: bool) -> None:
    assert may_match(flt, read_stats(compute_stats(DATA)), DATA.num_rows) is expected


def test_all_null_column_never_matches_comparisons() -> None:
    stats = read_stats(compute_stats(pa.table({"n": pa.array([None, None], pa.int64())})))
    assert not may_match([("n", "=", 1)], stats, 2)
    assert may_match([("n", "is null", None)], stats, 2)


def test_expression_matches_pruning_semantics() -> None:
    flt = [[("n", ">=", 5)], [("s", "in", ["b"])]]
    assert DATA.filter(to_expression(flt))["n"].to_pylist() == [3, 7]
    expr = pc.field("n") > 4
    assert to_expression(expr) is expr
    assert normalize_filter(expr) is None
    assert normalize_filter(None) is None


def test_malformed_filters() -> None:
    with pytest.raises(InvalidArgumentError):
        normalize_filter([("n", "like", 1)])
    with pytest.raises(InvalidArgumentError):
        normalize_filter([("n", "=")])
