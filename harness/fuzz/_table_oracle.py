"""The tables the table-API fuzzer writes to, and the dict oracle of what each of them must hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa

from harness.fuzz._common import same_value


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A fuzzed table: its schema and key (none for the append table)."""

    name: str
    schema: pa.Schema
    key: tuple[str, ...]


_MAIN_SCHEMA: Final = pa.schema([
    ("id", pa.int64()), ("name", pa.string()), ("amount", pa.decimal128(12, 2)), ("ratio", pa.float64()),
    ("at", pa.timestamp("us", tz="UTC")), ("flag", pa.bool_()), ("qty", pa.int32()), ("day", pa.date32()),
    ("blob", pa.binary()),
])  # fmt: skip
_PAIR_SCHEMA: Final = pa.schema([
    ("region", pa.string()), ("seq", pa.int32()), ("v", pa.float32()), ("ts", pa.timestamp("ms")),
    ("d", pa.decimal128(38, 10)),
])  # fmt: skip
_LOG_SCHEMA: Final = pa.schema([("k", pa.string()), ("v", pa.int64()), ("at", pa.timestamp("us"))])
FUZZ_TABLES: Final = (
    TableSpec("fuzz.main", _MAIN_SCHEMA, ("id",)),
    TableSpec("fuzz.pair", _PAIR_SCHEMA, ("region", "seq")),
    TableSpec("fuzz.log", _LOG_SCHEMA, ()),
)
"""A table of every column type, one with a two-column key, and an append table (partitioned)."""


def same_row(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two rows (or two missing rows) are equal by :func:`same_value`."""
    if a is None or b is None:
        return a is b
    return all(same_value(a[k], b[k]) for k in a)


@dataclass(slots=True)
class TableOracle:
    """What a table should hold: rows by key (keyed tables) or a list of rows (the append table)."""

    spec: TableSpec
    rows: dict[Any, dict[str, Any]] = field(default_factory=dict)
    appended: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    """The table's version as the oracle knows it (rejected calls must leave it)."""
    checked: int = 0
    """The input after which the version was last confirmed."""

    def key(self, row: dict[str, Any]) -> Any:
        return row[self.spec.key[0]] if len(self.spec.key) == 1 else tuple(row[k] for k in self.spec.key)

    def write(self, changes: list[tuple[bool, dict[str, Any]]]) -> dict[str, int]:
        """Apply (is_delete, row) changes in order; return the changelog counts the commit must have."""
        before: dict[Any, dict[str, Any] | None] = {}
        for _, row in changes:
            key = self.key(row)
            before.setdefault(key, self.rows.get(key))
        for delete, row in changes:
            if delete:
                self.rows.pop(self.key(row), None)
            else:
                self.rows[self.key(row)] = dict(row)
        counts = {"+I": 0, "-U": 0, "+U": 0, "-D": 0}
        for key, old in before.items():
            new = self.rows.get(key)
            if old is None and new is not None:
                counts["+I"] += 1
            elif old is not None and new is None:
                counts["-D"] += 1
            elif not same_row(old, new):
                counts["-U"] += 1
                counts["+U"] += 1
        return counts

    def patch(self, rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, int]:
        """update_columns: each row's columns over the key's current row (nulls for a new key)."""
        empty = dict.fromkeys(self.spec.schema.names)
        names = (*self.spec.key, *columns)
        merged = [{**(self.rows.get(self.key(r)) or empty), **{c: r[c] for c in names}} for r in rows]
        last = {self.key(row): row for row in merged}  # every row of a batch reads the same old rows
        return self.write([(False, row) for row in last.values()])
