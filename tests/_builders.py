"""Row builders for the tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal

import pyarrow as pa
from conftest import ORDERS

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def order(
    order_id: int, shop: str = "s1", amount: str = "10.00", qty: int = 1, paid: bool = False
) -> dict[str, object]:
    """One orders row."""
    return {
        "order_id": order_id,
        "shop": shop,
        "amount": Decimal(amount),
        "qty": qty,
        "paid": paid,
        "created_at": T0 + dt.timedelta(minutes=order_id),
    }


def orders_table(rows: Iterable[dict[str, object]]) -> pa.Table:
    """An Arrow table of orders rows."""
    return pa.Table.from_pylist(list(rows), schema=ORDERS)


def changelog(rows: Iterable[tuple[int, dict[str, object]]]) -> pa.Table:
    """An Arrow changelog from ``(kind, row)`` pairs."""
    pairs = list(rows)
    table = orders_table(r for _, r in pairs)
    return table.append_column("_kind", pa.array([k for k, _ in pairs], pa.int8()))
