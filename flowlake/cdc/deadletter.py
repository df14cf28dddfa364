"""The dead-letter append table ``<namespace>._dead_letter``: records that could not be ingested."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import orjson
import pyarrow as pa

from flowlake.cdc.source import DeadLetter

if TYPE_CHECKING:
    from flowlake.lake import Catalog
    from flowlake.table.table import LakeTable

DEAD_LETTER_TABLE: Final = "_dead_letter"

DEAD_LETTER_SCHEMA: Final = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("source_table", pa.string()),
        pa.field("position", pa.string()),
        pa.field("error", pa.string()),
        pa.field("raw", pa.binary()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Columns of a dead-letter table: the source's key, ``db.table``, position (JSON), error, raw bytes."""


def dead_letter_table(catalog: Catalog, namespace: str) -> LakeTable:
    """Open (creating if needed) the namespace's dead-letter append table."""
    return catalog.create_table(
        f"{namespace}.{DEAD_LETTER_TABLE}",
        DEAD_LETTER_SCHEMA,
        primary_key=None,
        buckets=1,
        exist_ok=True,
    )


def dead_letter_batch(source: str, letters: Sequence[DeadLetter]) -> pa.Table:
    """The rows to append for ``letters``."""
    now = dt.datetime.now(dt.UTC)
    return pa.table(
        {
            "source": pa.array([source] * len(letters), pa.string()),
            "source_table": pa.array([d.source_table for d in letters], pa.string()),
            "position": pa.array([_json(d.position) for d in letters], pa.string()),
            "error": pa.array([d.error for d in letters], pa.string()),
            "raw": pa.array([d.raw for d in letters], pa.binary()),
            "ingested_at": pa.array([now] * len(letters), pa.timestamp("us", tz="UTC")),
        },
        schema=DEAD_LETTER_SCHEMA,
    )


def _json(position: Mapping[str, Any]) -> str:
    return orjson.dumps(position, default=str, option=orjson.OPT_SORT_KEYS).decode()


def count_dead_letters(catalog: Catalog, namespace: str) -> dict[str, int]:
    """Dead letters per source table (``"?"`` when the table is unknown); empty if there are none."""
    name = f"{namespace}.{DEAD_LETTER_TABLE}"
    if not catalog.table_exists(name):
        return {}
    rows = catalog.load_table(name).read(columns=["source_table"]).column("source_table").to_pylist()
    counts: dict[str, int] = {}
    for value in rows:
        key = value or "?"
        counts[key] = counts.get(key, 0) + 1
    return counts
