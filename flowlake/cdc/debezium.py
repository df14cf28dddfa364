"""Decode Debezium JSON change events into flowlake changelogs.

Two entry points share one set of rules: :func:`decode` turns one message into
:class:`~flowlake.cdc.change.Change` values (the friendly API), and :func:`decode_batch` turns many
messages into one Arrow changelog table in a single pass (the hot path), reporting each message it
could not decode instead of raising, so the caller can dead-letter it and go on.

Rules
-----
1. Envelopes. A message is either the payload itself (``schemas.enable=false``) or
   ``{"schema": ..., "payload": ...}`` (schema-include); the latter is decoded from ``payload``.
2. Operations. ``op`` ``r`` (snapshot read) and ``c`` → ``+I``(after); ``u`` → ``-U``(before),
   ``+U``(after); ``d`` → ``-D``(before).
3. No output. A tombstone (``None``, empty or blank bytes, the JSON ``null``, or a schema-include
   envelope whose payload is ``null``), a transaction boundary event (``{"status": "BEGIN"|"END",
   ...}`` without ``op``) and a logical-decoding message (``op`` ``m``) produce no changes.
   Changes carry their transaction's id (``transaction.id``) in ``SourceInfo.transaction_id``.
4. Truncate. ``op`` ``t`` cannot be written as row changes; it raises :class:`CdcDecodeError`
   (a valid event this decoder will not apply) rather than being dropped, which would let the
   lake diverge silently. Filter it upstream (``skipped.operations=t``) or dead-letter it.
5. Incomplete before-images. A ``before`` is *key-only* when, with ``primary_key`` given, every
   column outside the key is absent or null while the table has columns outside the key (they
   appear in the schema, in ``before`` itself as nulls, or in ``after``); without ``primary_key``,
   when ``before`` has fewer fields than the schema block (or explicit schema) or a strict subset of
   ``after``'s fields. (A genuinely all-null row is thus treated as key-only: the safe side.)

   * ``u`` whose ``before`` is missing, ``null`` or key-only (Postgres ``REPLICA IDENTITY
     DEFAULT``): no ``-U`` is emitted, since a wrong retraction is worse than none; only
     ``+U``(after) is emitted with ``before_complete=False``, so the table can look up the old row.
   * ``d`` whose ``before`` is missing or ``null``: :class:`CorruptRecordError` (the key is unknown).
   * ``d`` whose ``before`` is key-only: ``-D`` with just the key columns (with ``primary_key``;
     else the fields ``before`` has) and ``before_complete=False``. A key column that is absent or
     null makes it a :class:`CorruptRecordError`.

   In a batch these rows are listed in :attr:`DecodedBatch.incomplete_rows`. With ``primary_key``,
   every change must carry the whole key: a key column that is absent or null in an image that
   becomes a change is a :class:`CorruptRecordError` naming the field (no table could apply it).
6. Malformed input (invalid JSON or UTF-8, NaN/Infinity tokens, not an object, missing or unknown
   ``op``, a missing or non-object ``after`` for ``c``/``r``/``u``, a non-object
   ``before``/``source``/``transaction``, a malformed schema block, a value of the wrong JSON type for
   its logical type or out of its range, bad base64) raises :class:`CorruptRecordError` whose message
   names the field and, where known, the caller's offset and the source position, and quotes input
   values cut short; never a bare ``KeyError``/``TypeError``/``ValueError``.
7. Values. Logical types are converted (see :mod:`flowlake.cdc.logical_types`) only when a schema
   block is present or an explicit Arrow schema is passed; a schema block, when present, decides how
   each value is read. Otherwise values stay as the JSON gives them. ``decode(convert=False)``
   always keeps the JSON values (the conformance form that peer test vectors use).
8. Batches. :func:`decode_batch` expects messages of one table (one topic). Its columns are the
   explicit schema's, else the schema block's, else the union of the rows' fields in order of first
   appearance (types inferred by Arrow, except that true/false never become numbers and integers
   a float column cannot hold exactly are refused); every column is nullable, because key-only
   deletes carry nulls. A message with a column outside an explicit schema, a column named like a reserved
   changelog column (``_kind``, ``_seq``), a value its column cannot hold, or a schema block that
   changes a column's type within the batch is reported in :attr:`DecodedBatch.errors` and all of
   its rows are left out. ``_seq`` is not produced; the table writer assigns commit order. The batch
   path does not read source metadata (``source``, ``ts_ms``, ``transaction``), so unlike
   :func:`decode` it does not reject a message for a malformed one.

Layout: this module holds :func:`decode`; :func:`decode_batch` lives in
:mod:`flowlake.cdc.debezium_batch` (its column building in :mod:`flowlake.cdc.batch_columns`) and the envelope
rules both share in :mod:`flowlake.cdc.envelope`. Every public name is importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from flowlake.cdc.batch_columns import Builder
from flowlake.cdc.change import Change, source_info
from flowlake.cdc.debezium_batch import DecodedBatch, DecodeFailure, decode_batch
from flowlake.cdc.envelope import (
    KeyRule,
    Message,
    is_envelope_block,
    is_meta_event,
    key_problem,
    parse_message,
    payload_changes,
    row_decoders,
    row_struct,
    struct_width,
    unwrap,
    where_in_source,
)
from flowlake.cdc.logical_types import DecimalHandling, FieldDecoder, decoder_for_arrow, struct_decoders
from flowlake.errors import CdcDecodeError, CorruptRecordError

__all__ = [
    "Builder",
    "DecodeFailure",
    "DecodedBatch",
    "Message",
    "debezium_schema_to_arrow",
    "decode",
    "decode_batch",
]


def decode(
    message: Message,
    *,
    convert: bool = True,
    schema: pa.Schema | None = None,
    primary_key: Sequence[str] | None = None,
    decimal_handling: DecimalHandling = "precise",
    offset: int | str | None = None,
) -> list[Change]:
    """Decode one Debezium JSON message into changes (see the module docstring for the rules).

    Args:
        message: The record value: JSON bytes or text; ``None``/empty for a tombstone.
        convert: Convert values by their logical types (dates, decimals, …). ``False`` keeps every
            value as the JSON gives it.
        schema: Arrow schema of the row, used to read values when the message has no schema block,
            and to recognise key-only before-images by their field count.
        primary_key: Key columns, used to recognise key-only before-images.
        decimal_handling: How a decimal column's JSON strings are read when only ``schema`` says the
            column is a decimal: base64 (``"precise"``) or decimal text.
        offset: The message's offset (Kafka offset, line number…), quoted in error messages.

    Returns:
        The changes in order; empty for tombstones, transaction and logical-message events.

    Raises:
        CorruptRecordError: If the message is malformed (rule 6).
        CdcDecodeError: If the message is valid but cannot be applied as row changes (truncate).
    """
    key = KeyRule.of(primary_key)
    payload: dict[str, Any] | None = None
    try:
        obj = parse_message(message)
        if obj is None:
            return []
        payload, block = unwrap(obj)
        if payload is None or is_meta_event(payload):
            return []
        struct = row_struct(block)
        width = struct_width(struct) if struct is not None else (len(schema) if schema is not None else None)
        steps = payload_changes(payload, key, width)
        for kind, row, _ in steps if key.columns else ():
            for name in key.columns:
                if row.get(name) is None:
                    raise CorruptRecordError(key_problem(name, row, kind, payload))
        decoders = _python_decoders(struct, schema, decimal_handling) if convert else None
        source = source_info(payload)
        return [Change(kind, _convert_row(row, decoders), source, complete) for kind, row, complete in steps]
    except CdcDecodeError as exc:
        where = where_in_source(payload, offset)
        if not where:
            raise
        raise type(exc)(f"{exc} ({where})") from exc


def debezium_schema_to_arrow(schema_block: Mapping[str, Any]) -> pa.Schema:
    """Map a Kafka Connect schema block to the Arrow schema of the rows it describes.

    Args:
        schema_block: The ``struct`` block of ``after``/``before``, or the whole envelope block
            (``{"type": "struct", "fields": [{"field": "before", ...}, {"field": "after", ...}, ...]}``),
            whose ``after`` struct is then used.

    Returns:
        One field per row column, with Arrow types from the logical types and nullability from
        ``optional``.

    Raises:
        CorruptRecordError: If the block is malformed.
    """
    block = dict(schema_block)
    struct = row_struct(block) if is_envelope_block(block) else block
    decoders = struct_decoders(struct)
    return pa.schema([pa.field(d.name, d.arrow_type, nullable=d.nullable) for d in decoders])


def _python_decoders(
    struct: dict[str, Any] | None, schema: pa.Schema | None, decimal_handling: DecimalHandling
) -> dict[str, FieldDecoder] | None:
    if struct is not None:
        return row_decoders(struct)
    if schema is not None:
        return {f.name: decoder_for_arrow(f.name, f.type, decimal_handling=decimal_handling) for f in schema}
    return None


def _convert_row(row: dict[str, Any], decoders: dict[str, FieldDecoder] | None) -> dict[str, Any]:
    if decoders is None:
        return row
    return {k: (d.python_value(v) if (d := decoders.get(k)) is not None else v) for k, v in row.items()}
