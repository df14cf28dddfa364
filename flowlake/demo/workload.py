"""A generated ``shop`` workload: orders with inserts, updates (status, amount) and deletes.

Everything is produced as Arrow batches with numpy, seeded, so runs are repeatable and cheap enough to
drive benchmarks of a million changes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind

ORDERS_SCHEMA = pa.schema(
    [
        pa.field("order_id", pa.int64(), nullable=False),
        ("shop_id", pa.int32()),
        ("user_id", pa.int64()),
        ("status", pa.string()),
        ("amount", pa.decimal128(12, 2)),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""``shop.orders``: the demo's source table."""

STATUSES = np.array(["created", "paid", "shipped", "done", "cancelled"])
_EPOCH_US = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)


def cents_to_decimal(cents: np.ndarray) -> pa.Array:
    """Integer cents as ``decimal128(12, 2)``."""
    whole = pa.array(cents, pa.int64()).cast(pa.decimal128(19, 0))
    return pc.divide(whole, pa.scalar(100, pa.decimal128(3, 0))).cast(pa.decimal128(12, 2), safe=False)


@dataclass
class OrdersWorkload:
    """Seeded generator of order rows and change batches over a growing key space."""

    seed: int = 7
    shops: int = 500
    users: int = 200_000
    rng: np.random.Generator = field(init=False)
    live: np.ndarray = field(init=False)
    next_id: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.live = np.empty(0, dtype=np.int64)

    def rows(self, ids: np.ndarray, *, minute_offset: int = 0) -> pa.Table:
        """Random order rows for ``ids``."""
        n, rng = len(ids), self.rng
        created = _EPOCH_US + (minute_offset * 60_000_000) + rng.integers(0, 3_600_000_000, n)
        return pa.table(
            {
                "order_id": pa.array(ids, pa.int64()),
                "shop_id": pa.array(rng.integers(0, self.shops, n), pa.int32()),
                "user_id": pa.array(rng.integers(0, self.users, n), pa.int64()),
                "status": pa.array(STATUSES[rng.integers(0, len(STATUSES), n)]),
                "amount": cents_to_decimal(rng.integers(100, 100_000, n)),
                "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
                "updated_at": pa.array(created + 1, pa.timestamp("us", tz="UTC")),
            },
            schema=ORDERS_SCHEMA,
        )

    def initial(self, count: int) -> pa.Table:
        """``count`` new orders (the snapshot a table starts from)."""
        ids = np.arange(self.next_id, self.next_id + count, dtype=np.int64)
        self.next_id += count
        self.live = np.concatenate([self.live, ids])
        return self.rows(ids)

    def changes(self, size: int, *, inserts: float = 0.60, updates: float = 0.35) -> pa.Table:
        """A changelog of ``size`` changes: new orders (+I), updates of live ones (+U), deletes (-D)."""
        n_ins = int(size * inserts)
        n_upd = min(int(size * updates), len(self.live))
        n_del = min(size - n_ins - n_upd, len(self.live) - n_upd)
        new_ids = np.arange(self.next_id, self.next_id + n_ins, dtype=np.int64)
        self.next_id += n_ins
        picks = self.rng.choice(len(self.live), n_upd + n_del, replace=False)
        upd_ids, del_ids = self.live[picks[:n_upd]], self.live[picks[n_upd:]]
        batch = self.rows(np.concatenate([new_ids, upd_ids, del_ids]))
        kinds = np.concatenate(
            [
                np.full(n_ins, RowKind.INSERT, np.int8),
                np.full(n_upd, RowKind.UPDATE_AFTER, np.int8),
                np.full(n_del, RowKind.DELETE, np.int8),
            ]
        )
        self.live = np.concatenate([np.delete(self.live, picks[n_upd:]), new_ids])
        return batch.append_column(KIND_COLUMN, pa.array(kinds))
