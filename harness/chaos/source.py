"""The source: seeded shop transactions written as Debezium JSONL files, and read back as changes."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from harness.chaos.config import ChaosConfig

_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Key = tuple[Any, ...]
"""A primary-key value as a tuple of its columns' values."""
Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SourceChange:
    """One source change as ODS rows: ``op`` is Debezium's (``r``, ``c``, ``u``, ``d``)."""

    table: str
    key: Key
    op: str
    before: Row | None
    after: Row | None


def _ods_row(table: str, image: Mapping[str, Any]) -> Row:
    if table != "orders":
        return dict(image)
    row = dict(image)
    cents = int.from_bytes(base64.b64decode(row["amount"]), "big", signed=True)
    row["amount"] = decimal.Decimal(cents).scaleb(-2)
    for column in ("created_at", "updated_at"):
        row[column] = _EPOCH + dt.timedelta(microseconds=int(row[column]))
    return row


def parse_transaction(lines: Iterable[bytes]) -> list[SourceChange]:
    """Debezium JSON lines of the demo generator as :class:`SourceChange` values."""
    out = []
    for line in lines:
        event = orjson.loads(line)
        table = event["source"]["table"]
        before = _ods_row(table, event["before"]) if event["before"] else None
        after = _ods_row(table, event["after"]) if event["after"] else None
        image = after if after is not None else before
        assert image is not None
        key = (image["order_id"] if table == "orders" else image["shop_id"],)
        out.append(SourceChange(table, key, event["op"], before, after))
    return out


class SourceWriter(threading.Thread):
    """Write seeded source transactions as JSONL files (one per transaction, atomically) at a pace."""

    def __init__(self, folder: Path, config: ChaosConfig) -> None:
        super().__init__(name="chaos-source", daemon=True)
        from flowlake.demo.pipeline import ShopCdcGenerator

        self.folder, self.config = folder, config
        self.staging = folder.parent / (folder.name + "-staging")
        self.generator = ShopCdcGenerator(shops=config.shops, seed=config.seed)
        self.transactions: list[list[SourceChange]] = []
        """Transaction index → its changes; index 0 is the initial snapshot."""
        self.stop = threading.Event()
        self._last_now = _EPOCH

    def file_name(self, index: int) -> str:
        """The JSONL file of transaction ``index``."""
        return f"{index:08d}.jsonl"

    def _now(self) -> dt.datetime:
        now = max(dt.datetime.now(dt.UTC), self._last_now + dt.timedelta(milliseconds=1))
        self._last_now = now
        return now

    def _write(self, lines: list[bytes]) -> None:
        index = len(self.transactions)
        self.staging.mkdir(parents=True, exist_ok=True)
        tmp = self.staging / self.file_name(index)
        with tmp.open("wb") as f:
            f.write(b"\n".join(lines) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.folder / self.file_name(index))
        self.transactions.append(parse_transaction(lines))

    def write_snapshot(self) -> None:
        """Write the initial snapshot (every shop, ``initial_orders`` orders) as transaction 0."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write(self.generator.snapshot(self.config.initial_orders, self._now()))

    def run(self) -> None:
        """Write a transaction every ``1 / tx_per_second`` seconds until :attr:`stop` is set."""
        period = 1.0 / self.config.tx_per_second
        due = time.monotonic()
        while not self.stop.wait(max(0.0, due - time.monotonic())):
            tx = f"tx-{len(self.transactions)}"
            self._write(self.generator.transaction(self.config.changes_per_tx, self._now(), tx))
            due += period

    @property
    def changes(self) -> int:
        """Source changes written so far."""
        return sum(len(t) for t in self.transactions)
