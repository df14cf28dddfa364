"""Conformance with the public Debezium JSON peer vectors (Flink debezium-json semantics).

Each ``NAME.jsonl`` beside ``NAME.expected.jsonl`` in ``/work/shared/peer-vectors/debezium`` must
decode to exactly the expected changelog: same kinds, same rows, same order. The vectors keep row
values exactly as the JSON gives them, so the comparison decodes with ``convert=False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowlake.cdc import decode, decode_batch
from flowlake.changelog import KIND_COLUMN, RowKind

VECTOR_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "peer-vectors" / "debezium"
REQUIRED = os.environ.get("FLOWLAKE_REQUIRE_SERVICES") == "1"


def vector_names() -> list[str]:
    if not VECTOR_DIR.is_dir():
        return []
    return sorted(
        p.name.removesuffix(".jsonl") for p in VECTOR_DIR.glob("*.jsonl") if ".expected." not in p.name
    )


NAMES = vector_names()


def require_vectors() -> None:
    if VECTOR_DIR.is_dir() and NAMES:
        return
    reason = f"Debezium peer vectors not found in {VECTOR_DIR}"
    if REQUIRED:
        pytest.fail(f"{reason} and FLOWLAKE_REQUIRE_SERVICES=1")
    pytest.skip(f"{reason}; set FLOWLAKE_REQUIRE_SERVICES=1 to make this a failure")


def read_vector(name: str) -> tuple[list[bytes], list[dict[str, Any]]]:
    lines = (VECTOR_DIR / f"{name}.jsonl").read_bytes().splitlines()
    expected = [
        orjson.loads(line) for line in (VECTOR_DIR / f"{name}.expected.jsonl").read_bytes().splitlines()
    ]
    return lines, expected


def test_vector_folder_is_present() -> None:
    require_vectors()
    assert len(NAMES) >= 3


@pytest.mark.parametrize("name", NAMES or ["<missing>"])
def test_decode_matches_expected_changelog(name: str) -> None:
    require_vectors()
    lines, expected = read_vector(name)
    got = [
        {"op": change.symbol, "row": change.row}
        for offset, line in enumerate(lines)
        for change in decode(line, convert=False, offset=offset)
    ]
    assert got == expected


@pytest.mark.parametrize("name", NAMES or ["<missing>"])
def test_decode_batch_matches_expected_changelog(name: str) -> None:
    require_vectors()
    lines, expected = read_vector(name)
    batch = decode_batch(lines)
    assert batch.errors == ()
    assert batch.incomplete_rows == ()
    columns = [c for c in batch.table.column_names if c != KIND_COLUMN]
    got = [{"op": RowKind(row.pop(KIND_COLUMN)).symbol, "row": row} for row in batch.table.to_pylist()]
    padded = [{"op": e["op"], "row": {c: e["row"].get(c) for c in columns}} for e in expected]
    assert got == padded
    assert batch.skipped == sum(1 for line in lines if not decode(line))


def test_flink_mysql_metadata_of_first_event() -> None:
    require_vectors()
    lines, _ = read_vector("flink-mysql-schema-include")
    source = decode(lines[0])[0].source
    assert (source.event_ts_ms, source.ts_ms, source.db, source.table) == (
        1589355606100,
        0,
        "inventory",
        "products",
    )


def test_flink_postgres_metadata_of_first_event() -> None:
    require_vectors()
    lines, _ = read_vector("flink-postgres-schema-exclude")
    source = decode(lines[0])[0].source
    assert (source.event_ts_ms, source.ts_ms, source.schema, source.table) == (
        1596001099434,
        1596001099434,
        "inventory",
        "products",
    )


def test_docs_transaction_id_is_carried() -> None:
    require_vectors()
    lines, _ = read_vector("debezium-docs-mysql-events")
    changes = [c for line in lines for c in decode(line)]
    assert changes[-1].source.transaction_id == "0e4d5dcd-a33b-11ea-80f1-02010a22a99e:10"
    assert changes[0].source.snapshot is True
