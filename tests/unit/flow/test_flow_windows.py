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


def late_ids_with(partitions: int, batches: list[list[tuple[RowKind, dict[str, object]]]]) -> list[int]:
    """The ids the aggregate operator sends to its late output, run with ``partitions`` partitions."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from flowlake.flow import ChangeBatch, aggregate

    flow = Dataflow(f"late_{partitions}")
    up = op.input("in", flow, TestingSource([ChangeBatch(from_rows(b, SCHEMA)) for b in batches]))
    out = aggregate("agg", up, by=["shop"], aggs={"n": aggs.count()},
                    window=aggs.minutes(1, on="at", horizon="10m"), partitions=partitions)  # fmt: skip
    late: list[ChangeBatch] = []
    op.output("late", out.late, TestingSink(late))
    run_main(flow)  # type: ignore[no-untyped-call]
    return sorted(i for b in late for i in b.data.column("id").to_pylist())


def test_lateness_does_not_depend_on_the_number_of_partitions() -> None:
    # shop 1 sees a change at 12:30 first; shop 2's change at 12:05 comes after it in the changelog.
    # With a watermark per key partition, shop 2's partition had seen nothing and kept the change.
    batch = [(RowKind.INSERT, order(1, 30, shop=s)) for s in (1, 3, 5, 7)]
    batch += [(RowKind.INSERT, order(9, 5, shop=s)) for s in (2, 4, 6, 8)]
    assert late_ids_with(1, [batch]) == late_ids_with(4, [batch]) == [9, 9, 9, 9]
    assert late_ids_with(4, [batch[:4], batch[4:]]) == [9, 9, 9, 9]


def test_a_watermark_column_overrides_the_state_s_own() -> None:
    from flowlake.flow._aggstate import WATERMARK_COLUMN, with_watermarks

    s = state()
    data, top = with_watermarks(from_rows([(RowKind.INSERT, order(1, 3))], SCHEMA), "at", None)
    assert top is not None and WATERMARK_COLUMN in data.column_names
    # the stream's watermark (12:30, from other partitions) makes 12:03 late here
    stamped = data.set_column(data.schema.get_field_index(WATERMARK_COLUMN), WATERMARK_COLUMN,
                              pa.array([top + 27 * 60_000_000], pa.int64()))  # fmt: skip
    out, late = s.apply(stamped)
    assert late is not None and late.column("id").to_pylist() == [1]
    assert WATERMARK_COLUMN not in late.column_names and out.num_rows == 0
