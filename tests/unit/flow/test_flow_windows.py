"""Updating minute windows: late changes within the horizon update their old minute, beyond it they go
to the late output with a reason; closed windows are evicted."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from flowlake.changelog import RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow import aggs
from flowlake.flow._aggstate import AggregateState
from flowlake.flow.batch import from_rows, rows

SCHEMA = pa.schema([("id", pa.int64()), ("shop", pa.int32()), ("amount", pa.decimal128(12, 2)),
                    ("at", pa.timestamp("us", tz="UTC")), ("_seq", pa.int64())])  # fmt: skip
T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)


def order(i: int, minute: float, amount: str = "1.00", shop: int = 1) -> dict[str, object]:
    return {
        "id": i,
        "shop": shop,
        "amount": Decimal(amount),
        "at": T0 + dt.timedelta(minutes=minute),
        "_seq": i,
    }


def state(horizon: str | None = "10m") -> AggregateState:
    spec = {"n": aggs.count(), "gmv": aggs.sum("amount")}
    return AggregateState(["shop"], spec, aggs.minutes(1, on="at", horizon=horizon))


def test_changes_are_bucketed_by_minute() -> None:
    s = state()
    out, late = s.apply(from_rows([(RowKind.INSERT, order(1, 0.1)), (RowKind.INSERT, order(2, 0.9)),
                                   (RowKind.INSERT, order(3, 1.5))], SCHEMA))  # fmt: skip
    assert late is None
    got = {(c.row["minute"], c.row["n"]) for c in rows(out)}
    assert got == {(T0, 2), (T0 + dt.timedelta(minutes=1), 1)}


def test_late_within_horizon_updates_old_minute_as_upsert() -> None:
    s = state()
    s.apply(from_rows([(RowKind.INSERT, order(1, 0)), (RowKind.INSERT, order(2, 9))], SCHEMA))
    out, late = s.apply(from_rows([(RowKind.INSERT, order(3, 0.5))], SCHEMA))
    assert late is None
    assert [(c.kind, c.row["minute"], c.row["n"]) for c in rows(out)] == [
        (RowKind.UPDATE_BEFORE, T0, 1),
        (RowKind.UPDATE_AFTER, T0, 2),
    ]


def test_beyond_horizon_goes_to_late_output_with_reason() -> None:
    s = state()
    s.apply(from_rows([(RowKind.INSERT, order(1, 0)), (RowKind.INSERT, order(2, 30))], SCHEMA))
    assert s.groups == 1  # the minute-0 window closed (30 - 10 > 1) and was evicted
    moved = order(1, 31)
    out, late = s.apply(
        from_rows([(RowKind.UPDATE_BEFORE, order(1, 0)), (RowKind.UPDATE_AFTER, moved)], SCHEMA)
    )
    assert late is not None and late.num_rows == 1
    assert late.column("_kind").to_pylist() == [RowKind.UPDATE_BEFORE]
    assert "closed" in late.column("reason")[0].as_py()
    assert [(c.kind, c.row["minute"]) for c in rows(out)] == [(RowKind.INSERT, T0 + dt.timedelta(minutes=31))]
    assert s.late_changes == 1


def test_lateness_does_not_depend_on_batch_boundaries() -> None:
    changes = [(RowKind.INSERT, order(i, m)) for i, m in enumerate([0, 5, 40, 1, 2, 41, 20, 35])]
    whole = state()
    _, late_whole = whole.apply(from_rows(changes, SCHEMA))
    split = state()
    late_ids: list[int] = []
    for change in changes:
        _, late = split.apply(from_rows([change], SCHEMA))
        late_ids += [] if late is None else late.column("id").to_pylist()
    assert late_whole is not None
    assert sorted(late_whole.column("id").to_pylist()) == sorted(late_ids) == [3, 4, 6]


def test_no_horizon_keeps_every_window_open() -> None:
    s = state(horizon=None)
    s.apply(from_rows([(RowKind.INSERT, order(1, 0)), (RowKind.INSERT, order(2, 600))], SCHEMA))
    out, late = s.apply(from_rows([(RowKind.INSERT, order(3, 0.2))], SCHEMA))
    assert late is None
    assert [c.row["n"] for c in rows(out)] == [1, 2]


def test_durations_parse_and_reject_nonsense() -> None:
    assert aggs.duration_us("2h") == 2 * 3600 * 1_000_000
    assert aggs.duration_us(dt.timedelta(seconds=3)) == 3_000_000
    with pytest.raises(InvalidArgumentError, match="cannot read duration"):
        aggs.duration_us("two hours")
    with pytest.raises(InvalidArgumentError):
        aggs.Window(0, "at", "minute")
