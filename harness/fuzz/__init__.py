"""Seeded mutation fuzzers for the Debezium decoder, the table API and CDC ingestion.

Hypothesis shrinks failures well but costs milliseconds per example. These fuzzers start from valid
inputs and mutate them with one ``random.Random(seed)``, so a run of 100k inputs takes seconds to a
minute and its seed reproduces it exactly. The suite (``tests/fuzz``) and ``benchmarks/fuzz.py`` share
them. Every input is checked:

* :func:`fuzz_decoder`: valid Debezium messages (the caller's corpus, such as the peer vectors, plus
  generated envelopes with every logical type the decoder reads) with structural damage: dropped,
  duplicated and retyped fields, wrong ops and schema blocks, truncated JSON, random bytes, invalid
  UTF-8, deep nesting, huge numbers and strings, NaN/Infinity tokens, out-of-range values, null keys.
  ``decode`` raises nothing but a ``FlowlakeError`` with a short message, and an undamaged message
  decodes; ``convert=False`` fails only where ``convert=True`` does; ``decode_batch`` rejects every
  message that ``decode`` rejects alone, and every message it accepts yields exactly the rows it
  yields alone (with typed messages, it accepts every message ``decode`` accepts, barring the
  documented batch-only reasons).
* :func:`fuzz_table_api`: Arrow batches for ``upsert``, ``delete``, ``apply``, ``update_columns`` and
  ``append`` on tables of every column type, valid or with one defect (missing, extra, duplicate or
  wrongly typed columns, null and NaN keys, values out of range, invalid UTF-8, bad ``_kind``, not a
  table at all). A defect raises the ``FlowlakeError`` subclass it calls for and commits nothing;
  anything else commits exactly the changes a dict oracle predicts, and reads (also after
  compaction) equal the oracle.
* :func:`fuzz_ingest`: JSONL files mixing good Debezium records with records that are bad by
  construction, through :class:`~flowlake.cdc.ingest.OdsIngester`. Ingestion never stops; every bad
  record is in ``<ns>._dead_letter`` with a reason naming what is wrong and its file offset; the ODS
  table equals both a run with only the good records and a dict oracle of them.

A violation does not stop a run: the report counts it in :attr:`FuzzReport.crashes` and keeps the
first ones, with the input, in :attr:`FuzzReport.failures`.
"""

from __future__ import annotations

from harness.fuzz._debezium_messages import DEBEZIUM_COLUMNS
from harness.fuzz.decoder import fuzz_decoder
from harness.fuzz.ingest import _ingest as _ingest  # private; tests/fuzz calls it directly
from harness.fuzz.ingest import fuzz_ingest
from harness.fuzz.report import MAX_MESSAGE_CHARS, FuzzFailure, FuzzReport
from harness.fuzz.table_api import fuzz_table_api

__all__ = [
    "DEBEZIUM_COLUMNS",
    "MAX_MESSAGE_CHARS",
    "FuzzFailure",
    "FuzzReport",
    "fuzz_decoder",
    "fuzz_ingest",
    "fuzz_table_api",
]
