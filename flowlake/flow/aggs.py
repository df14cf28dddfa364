"""Aggregate functions for :func:`flowlake.flow.aggregate`, and tumbling windows.

```python
from flowlake.flow import aggs
aggs_spec = {
    "orders": aggs.count(),
    "paid_gmv": aggs.sum("amount", where=("status", "==", "paid"), default=0),
    "avg_amount": aggs.avg("amount"),
    "max_amount": aggs.max("amount"),
    "distinct_users": aggs.count_distinct("user_id"),
}
```

Every function is retraction-correct: ``count``/``sum``/``avg`` keep running totals with weights,
``min``/``max``/``count_distinct``/``first``/``last`` keep a count per value so a retracted value
disappears exactly when its last copy does. Results follow SQL: nulls are ignored, ``sum``/``avg``/
``min``/``max`` of no values is ``default`` (null unless given).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from flowlake.errors import InvalidArgumentError

AggFunc = Literal["count", "sum", "avg", "min", "max", "count_distinct", "first", "last"]
"""The aggregate functions."""

Condition = tuple[str, str, Any] | Callable[[pa.Table], "pa.Array | np.ndarray"]
"""A row filter: ``(column, op, value)`` with op in ``== != < <= > >= in``, or a vectorized callable."""

ADDITIVE: frozenset[str] = frozenset({"count", "sum", "avg"})


@dataclass(frozen=True, slots=True)
class Agg:
    """One aggregate: a function over a column (``None`` for ``count(*)``), optionally filtered.

    Made by the functions of this module, e.g. ``sum("amount")``:

    >>> Agg("sum", "amount") == sum("amount")
    True
    """

    func: AggFunc
    column: str | None = None
    where: Condition | None = None
    order_by: str | None = None
    default: Any = None


def count(column: str | None = None, *, where: Condition | None = None) -> Agg:
    """Rows (``count(*)``) or non-null values of ``column``.

    >>> count(), count("user_id", where=("status", "==", "paid"))
    (Agg(func='count', ...), Agg(func='count', column='user_id', where=('status', '==', 'paid'), ...))
    """
    return Agg("count", column, where)


def sum(column: str, *, where: Condition | None = None, default: Any = None) -> Agg:
    """Sum of non-null values (exact for integers and decimals); ``default`` when there are none.

    >>> sum("amount", default=0)
    Agg(func='sum', column='amount', where=None, order_by=None, default=0)
    """
    return Agg("sum", column, where, default=default)


def avg(column: str, *, where: Condition | None = None) -> Agg:
    """Mean of non-null values as float64.

    >>> avg("amount").func
    'avg'
    """
    return Agg("avg", column, where)


def min(column: str, *, where: Condition | None = None) -> Agg:
    """Smallest non-null value; retractable (a count per value).

    >>> min("amount").func
    'min'
    """
    return Agg("min", column, where)


def max(column: str, *, where: Condition | None = None) -> Agg:
    """Largest non-null value; retractable (a count per value).

    >>> max("amount", where=("status", "!=", "cancelled")).where
    ('status', '!=', 'cancelled')
    """
    return Agg("max", column, where)


def count_distinct(column: str, *, where: Condition | None = None) -> Agg:
    """Number of distinct non-null values; retractable.

    >>> count_distinct("user_id").column
    'user_id'
    """
    return Agg("count_distinct", column, where)


def first(column: str, *, order_by: str, where: Condition | None = None) -> Agg:
    """Value of the live row with the smallest ``order_by`` (rows with a null order are ignored).

    >>> first("status", order_by="updated_at").order_by
    'updated_at'
    """
    return Agg("first", column, where, order_by=order_by)


def last(column: str, *, order_by: str, where: Condition | None = None) -> Agg:
    """Value of the live row with the largest ``order_by``.

    >>> last("status", order_by="updated_at").func
    'last'
    """
    return Agg("last", column, where, order_by=order_by)


_DURATION = re.compile(r"^\s*(\d+)\s*(us|ms|s|m|min|h|d)\s*$")
_UNIT_US = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "min": 60_000_000, "h": 3_600_000_000}
_UNIT_US["d"] = 24 * _UNIT_US["h"]


def duration_us(value: str | dt.timedelta | int) -> int:
    """Microseconds of ``"90s"``, ``"2h"``, ``"1d"``, a timedelta, or an int (already microseconds).

    >>> duration_us("90s"), duration_us(dt.timedelta(milliseconds=5))
    (90000000, 5000)
    """
    if isinstance(value, dt.timedelta):
        return int(value / dt.timedelta(microseconds=1))
    if isinstance(value, int):
        return value
    match = _DURATION.match(value)
    if match is None:
        raise InvalidArgumentError(f"cannot read duration {value!r}; write e.g. '90s', '15m', '2h' or '1d'")
    return int(match.group(1)) * _UNIT_US[match.group(2)]


@dataclass(frozen=True, slots=True)
class Window:
    """Updating tumbling windows over an event-time column.

    >>> Window(60_000_000, on="created_at", column="minute") == minutes(on="created_at")
    True

    Groups are keyed by the window start (a timestamp column named ``column``). A change whose window
    ended at or before ``watermark - horizon`` (the watermark is the largest event time added so far)
    is *late*: it does not update the frozen window but goes to the late-data output with a reason.
    Window state is evicted once it can no longer change. ``horizon=None`` keeps every window open.
    """

    size_us: int
    on: str
    column: str
    horizon_us: int | None = None

    def __post_init__(self) -> None:
        if self.size_us <= 0:
            raise InvalidArgumentError(f"window size must be positive, got {self.size_us} us")
        if self.horizon_us is not None and self.horizon_us < 0:
            raise InvalidArgumentError(f"window horizon must not be negative, got {self.horizon_us} us")


def minutes(
    n: int = 1, *, on: str, horizon: str | dt.timedelta | None = None, column: str = "minute"
) -> Window:
    """``n``-minute updating windows on ``on``; changes older than ``horizon`` go to the late output.

    >>> minutes(5, on="created_at", horizon="2h")
    Window(size_us=300000000, on='created_at', column='minute', horizon_us=7200000000)
    """
    return Window(n * _UNIT_US["m"], on, column, None if horizon is None else duration_us(horizon))


def days(n: int = 1, *, on: str, horizon: str | dt.timedelta | None = None, column: str = "day") -> Window:
    """``n``-day updating windows (UTC days) on ``on``.

    >>> days(on="created_at").size_us == 24 * 3600 * 10**6
    True
    """
    return Window(n * _UNIT_US["d"], on, column, None if horizon is None else duration_us(horizon))
