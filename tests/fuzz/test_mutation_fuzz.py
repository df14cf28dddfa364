"""Seeded mutation fuzzing at CI scale (see :mod:`harness.fuzz` for what each input checks).

The seed comes from ``FLOWLAKE_FUZZ_SEED`` (default below) and is printed with every failure, so a
failing run is reproduced with ``FLOWLAKE_FUZZ_SEED=<seed> pytest tests/fuzz/test_mutation_fuzz.py``.
``benchmarks/fuzz.py`` runs the same fuzzers at 100k inputs each.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

import flowlake as fl
from flowlake.cdc import deadletter, ingest
from harness import fuzz
from harness.fuzz import FuzzReport, fuzz_decoder, fuzz_ingest, fuzz_table_api

SEED = int(os.environ.get("FLOWLAKE_FUZZ_SEED", "20261125"))
DECODER_INPUTS = 100_000
TABLE_INPUTS = 20_000
INGEST_INPUTS = 20_000
VECTOR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "peer-vectors" / "debezium"


def peer_vectors() -> list[list[bytes]]:
    """Each peer-vector file's messages (the decoder fuzzer's corpus besides generated envelopes)."""
    if not VECTOR_DIR.is_dir():
        return []
    files = sorted(p for p in VECTOR_DIR.glob("*.jsonl") if ".expected." not in p.name)
    return [p.read_bytes().splitlines() for p in files]


def check(report: FuzzReport, inputs: int) -> None:
    print(f"\n{report.target} fuzz (seed {report.seed}): {report.figures()}")
    report.raise_for_failures()
    assert report.inputs >= inputs, report.describe()


@pytest.mark.slow
def test_decoder_at_100k_inputs() -> None:
    corpus = peer_vectors()
    if not corpus and os.environ.get("FLOWLAKE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"Debezium peer vectors not found in {VECTOR_DIR}")
    report = fuzz_decoder(DECODER_INPUTS, SEED, corpus=corpus)
    check(report, DECODER_INPUTS)
    assert report.accepted > DECODER_INPUTS // 3 and sum(report.rejected.values()) > DECODER_INPUTS // 10


@pytest.mark.slow
def test_table_api() -> None:
    report = fuzz_table_api(TABLE_INPUTS, SEED)
    check(report, TABLE_INPUTS)
    assert report.commits > TABLE_INPUTS // 6, "too few accepted commits to say much"
    assert {"SchemaMismatchError", "NullKeyError", "InvalidChangelogError", "InvalidArgumentError"} <= set(
        report.rejected
    )


@pytest.mark.slow
def test_ingest_dead_letters_bad_records_and_keeps_good_ones() -> None:
    report = fuzz_ingest(INGEST_INPUTS, SEED)
    check(report, INGEST_INPUTS)
    assert report.dead_letters == sum(report.rejected.values()) > INGEST_INPUTS // 5


def test_runs_are_reproducible_from_the_seed() -> None:
    first, second = fuzz_decoder(2_000, SEED), fuzz_decoder(2_000, SEED)
    assert (first.accepted, first.rejected) == (second.accepted, second.rejected)
    first, second = fuzz_table_api(300, SEED), fuzz_table_api(300, SEED)
    assert (first.accepted, first.rejected, first.commits) == (
        second.accepted,
        second.rejected,
        second.commits,
    )


# --- the fuzzers can fail: each finds a bug planted in the code it checks --------------------------------


def test_decoder_fuzzer_finds_a_batch_path_that_skips_range_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowlake.cdc.logical_types.epoch_range", lambda arrow_type: None)
    report = fuzz_decoder(4_000, SEED)
    assert report.crashes and any(
        "decode_batch accepts what decode rejects" in f.check for f in report.failures
    )


def test_table_fuzzer_finds_unchecked_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowlake.table.schema._check_values", lambda *args: None)
    report = fuzz_table_api(600, SEED)
    assert report.crashes and any(
        "UnicodeDecodeError" in f.check or "1-9999" in f.detail for f in report.failures
    )


def test_ingest_fuzzer_finds_a_lost_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    batch = deadletter.dead_letter_batch  # ingest imports it from there
    monkeypatch.setattr(ingest, "dead_letter_batch", lambda source, letters: batch(source, letters[1:]))
    report = fuzz_ingest(400, SEED)
    assert any("dead letters differ" in f.check for f in report.failures)


# --- bugs the fuzzers found in code outside this change: kept visible until fixed --------------------------


def test_delete_with_a_key_column_twice_raises_a_flowlake_error(catalog: fl.Catalog) -> None:
    table = catalog.create_table("ods.t", pa.schema([("id", pa.int64())]), primary_key=["id"])
    batch = pa.table([pa.array([1]), pa.array([1])], names=["id", "id"])
    with pytest.raises(fl.SchemaMismatchError, match="'id'"):
        table.delete(batch)


def test_jsonl_line_whose_status_is_an_object_is_a_dead_letter() -> None:
    good = orjson.dumps({"op": "c", "after": {"id": 1}, "source": {"db": "shop", "table": "items"}})
    result = fuzz._ingest([b'{"status":{"x":1},"id":"a"}', good], "fuzz-status-object")
    assert [d["raw"] for d in result.dead] == [b'{"status":{"x":1},"id":"a"}']
