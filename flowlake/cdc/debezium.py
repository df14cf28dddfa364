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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.cdc.change import Change, SourceInfo, position_of, short_repr, source_info
from flowlake.cdc.logical_types import (
    DecimalHandling,
    FieldDecoder,
    decoder_for_arrow,
    quote,
    struct_decoders,
)
from flowlake.changelog import KIND_COLUMN, RESERVED_COLUMNS, RowKind
from flowlake.errors import CdcDecodeError, CorruptRecordError, InvalidArgumentError

Message = bytes | bytearray | memoryview | str | None
"""One Kafka record value: JSON text as bytes or str, or ``None`` for a tombstone."""

_Step = tuple[RowKind, dict[str, Any], bool]
"""One change before it gets its source: (kind, row, before_complete)."""

_INSERT: Final = RowKind.INSERT
_UPDATE_BEFORE: Final = RowKind.UPDATE_BEFORE
_UPDATE_AFTER: Final = RowKind.UPDATE_AFTER
_DELETE: Final = RowKind.DELETE
_TX_STATUSES: Final = frozenset({"BEGIN", "END"})
_NOT_A_NUMBER: Final = re.compile(r"-?(?:NaN|Infinity)")
_BUILD_ERRORS: Final = (pa.ArrowException, CdcDecodeError, TypeError, ValueError, ArithmeticError)
"""What building an Arrow column from JSON values may raise (pa.array raises all of these)."""


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """A message that :func:`decode_batch` could not decode.

    Attributes:
        index: Position of the message in the input sequence.
        reason: What is wrong, naming the field and the source position where known.
    """

    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The changelog decoded from a batch of messages.

    Attributes:
        table: Row columns plus ``_kind`` (int8, :class:`RowKind` values), in message order.
        errors: One entry per message that failed, by message index; none of its rows are in ``table``.
        message_index: For each row of ``table``, the index of the message it came from (int32).
        incomplete_rows: Rows of ``table`` whose before-image is not known: ``+U`` rows emitted without
            a ``-U`` and key-only ``-D`` rows (``Change.before_complete`` is ``False`` for these).
        skipped: Messages that carry no row change: tombstones, transaction and logical messages.
        sources: With ``with_sources=True``, each message's source metadata (position, transaction
            id, table, …) by message index; ``None`` for tombstones and failed messages.
    """

    table: pa.Table
    errors: tuple[DecodeFailure, ...]
    message_index: pa.Array
    incomplete_rows: tuple[int, ...]
    skipped: int
    sources: tuple[SourceInfo | None, ...] = ()


@dataclass(frozen=True, slots=True)
class _KeyRule:
    """The primary key used to recognise key-only before-images (empty when not given)."""

    columns: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, primary_key: Sequence[str] | None) -> _KeyRule:
        if primary_key is None:
            return cls()
        if isinstance(primary_key, str) or not all(isinstance(c, str) for c in primary_key):
            raise InvalidArgumentError(f"primary_key must be a sequence of column names, got {primary_key!r}")
        return cls(tuple(primary_key), frozenset(primary_key))


# --- public API -------------------------------------------------------------------------------------


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
    key = _KeyRule.of(primary_key)
    payload: dict[str, Any] | None = None
    try:
        obj = _parse(message)
        if obj is None:
            return []
        payload, block = _unwrap(obj)
        if payload is None or _is_meta_event(payload):
            return []
        struct = _row_struct(block)
        width = _struct_width(struct) if struct is not None else (len(schema) if schema is not None else None)
        steps = _row_changes(payload, key, width)
        for kind, row, _ in steps if key.columns else ():
            for name in key.columns:
                if row.get(name) is None:
                    raise CorruptRecordError(_key_problem(name, row, kind, payload))
        decoders = _python_decoders(struct, schema, decimal_handling) if convert else None
        source = source_info(payload)
        return [Change(kind, _convert_row(row, decoders), source, complete) for kind, row, complete in steps]
    except CdcDecodeError as exc:
        where = _where(payload, offset)
        if not where:
            raise
        raise type(exc)(f"{exc} ({where})") from exc


def decode_batch(
    messages: Sequence[Message],
    schema: pa.Schema | None = None,
    *,
    primary_key: Sequence[str] | None = None,
    decimal_handling: DecimalHandling = "precise",
    parsed: Sequence[Any] | None = None,
    with_sources: bool = False,
) -> DecodedBatch:
    """Decode many Debezium JSON messages into one Arrow changelog table, in one pass.

    Bad messages do not raise: each is reported in ``errors`` (by index) and its rows are left out,
    so the caller can dead-letter it and go on.

    Args:
        messages: Record values of one table, in log order; ``None`` for tombstones.
        schema: The table's row schema (without ``_kind``). Columns are cast to these types, and a
            message with a column outside it is an error. ``None`` derives the columns from the
            schema blocks, else from the rows.
        primary_key: Key columns, used to recognise key-only before-images.
        decimal_handling: How a decimal column's JSON strings are read when only ``schema`` says the
            column is a decimal: base64 (``"precise"``) or decimal text.
        parsed: What ``orjson.loads`` already returned for each message (a caller that parsed the
            messages to route them need not pay for parsing twice), ``None`` where it did not parse
            one; ``messages`` are still used for tombstones and error messages.
        with_sources: Also read each message's source metadata into :attr:`DecodedBatch.sources`
            (position, transaction id, …) for ingestion; costs about a microsecond per message.

    Returns:
        The decoded batch: table, per-message errors, row→message index and incomplete rows.

    Raises:
        InvalidArgumentError: If ``schema`` names a reserved column or ``primary_key`` is not a
            sequence of names.
    """
    _check_schema(schema)
    if parsed is not None and len(parsed) != len(messages):
        raise InvalidArgumentError(f"parsed has {len(parsed)} items for {len(messages)} messages")
    with _gc_paused():
        batch = _decode_batch(messages, schema, _KeyRule.of(primary_key), decimal_handling, parsed)
    if not with_sources:
        return batch
    objs = (
        [_UNPARSED if o is None else o for o in parsed] if parsed is not None else [_UNPARSED] * len(messages)
    )
    failed = {e.index for e in batch.errors}
    infos = tuple(None if i in failed else _source_of(message, objs[i]) for i, message in enumerate(messages))
    return dataclasses.replace(batch, sources=infos)


def _source_of(message: Message, obj: Any) -> SourceInfo | None:
    """The source metadata of one message, or ``None`` for tombstones and unreadable metadata."""
    try:
        if obj is _UNPARSED:
            obj = _parse(message)
        unwrapped = _slow_payload(obj)
        return None if unwrapped is None else source_info(unwrapped[0])
    except CdcDecodeError:
        return None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch's rows are held.

    Decoding allocates hundreds of thousands of acyclic dicts and lists; each generation-2 pass
    traverses all of them, which costs more than the decoding itself. Nothing decoded here can form
    a reference cycle, so the pause only defers work. The previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _decode_batch(
    messages: Sequence[Message],
    schema: pa.Schema | None,
    key: _KeyRule,
    decimal_handling: DecimalHandling,
    parsed: Sequence[Any] | None,
) -> DecodedBatch:
    pending = _Pending()
    blocks = _BlockPlan()
    width = None if schema is None else len(schema)
    skipped = _scan(messages, pending, blocks, key, width, parsed)
    columns, fields = _assemble(pending, messages, schema, blocks.decoders, decimal_handling, key)
    kind_array = pa.array(pending.kinds, type=pa.int8())
    table = pa.Table.from_arrays(
        [*columns, kind_array], schema=pa.schema([*fields, pa.field(KIND_COLUMN, pa.int8(), nullable=False)])
    )
    errors = tuple(DecodeFailure(i, pending.errors[i]) for i in sorted(pending.errors))
    return DecodedBatch(
        table, errors, pa.array(pending.owners, type=pa.int32()), tuple(pending.incomplete), skipped
    )


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
    struct = _row_struct(block) if _is_envelope_block(block) else block
    decoders = struct_decoders(struct)
    return pa.schema([pa.field(d.name, d.arrow_type, nullable=d.nullable) for d in decoders])


# --- envelope -------------------------------------------------------------------------------------


def _parse(message: Message) -> dict[str, Any] | None:
    """Parse a message to its top-level object; ``None`` for a tombstone."""
    if message is None:
        return None
    if not isinstance(message, bytes | bytearray | memoryview | str):
        raise InvalidArgumentError(f"a message must be bytes, str or None, got {type(message).__name__}")
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        if _is_blank(message):
            return None
        raise CorruptRecordError(_json_error(message, exc)) from exc
    if obj is None:
        return None
    if type(obj) is not dict:
        raise CorruptRecordError(f"message must be a JSON object, got {type(obj).__name__} {short_repr(obj)}")
    return obj


def _json_error(message: bytes | bytearray | memoryview | str, exc: orjson.JSONDecodeError) -> str:
    """Say why a message is not JSON, naming invalid UTF-8 and NaN/Infinity tokens plainly."""
    try:
        text = message if isinstance(message, str) else bytes(message).decode("utf-8")
        text.encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as bad:
        where = "byte" if isinstance(bad, UnicodeDecodeError) else "character"
        return (
            f"message is not valid UTF-8 ({where} {bad.start} cannot be decoded); Debezium JSON is UTF-8 text"
        )
    start = exc.pos - 1 if 0 < exc.pos <= len(text) and text[exc.pos - 1] == "-" else exc.pos
    token = _NOT_A_NUMBER.match(text, start)
    if token is not None:
        return (
            f"message is not valid JSON: {token.group()} at character {start} is not a JSON number; "
            "the producer must send null (or the value as a string) instead"
        )
    return f"message is not valid JSON: {exc}"


def _is_blank(message: bytes | bytearray | memoryview | str) -> bool:
    if isinstance(message, str):
        return not message.strip()
    return not bytes(message).strip()


def _unwrap(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """Return (payload, schema block) of a message; payload ``None`` is a tombstone."""
    if "op" in obj or "payload" not in obj:
        return obj, None
    payload = obj["payload"]
    if payload is None:
        return None, None
    if type(payload) is not dict:
        raise CorruptRecordError(f"'payload' must be an object, got {short_repr(payload)}")
    return payload, obj.get("schema")


def _is_meta_event(payload: dict[str, Any]) -> bool:
    """Whether the payload is a transaction boundary or a logical-decoding message (no rows)."""
    op = payload.get("op")
    if op is None:
        status = payload.get("status")
        return type(status) is str and status in _TX_STATUSES
    return bool(op == "m")


def _key_problem(name: str, row: dict[str, Any], kind: int, payload: dict[str, Any] | None) -> str:
    """Why a change without its whole key cannot be applied (rule 5)."""
    image = "after" if kind in (_INSERT, _UPDATE_AFTER) else "before"
    src = payload.get("source") if payload is not None else None
    owner, table = (
        (src.get("schema") or src.get("db"), src.get("table")) if type(src) is dict else (None, None)
    )
    of = f" of a change to {quote(f'{owner}.{table}')}" if type(owner) is str and type(table) is str else ""
    return (
        f"primary-key field {quote(name)} is {'null' if name in row else 'missing'} in {image!r}{of}, "
        "so the changed row is unknown; fix the source or filter the record out"
    )


def _row_changes(payload: dict[str, Any], key: _KeyRule, width: int | None) -> tuple[_Step, ...]:
    """Apply rules 2-5 to one payload (the batch path checks the key of its rows when built)."""
    op = payload.get("op")
    if op in ("c", "r"):
        return ((_INSERT, _after(payload, op), True),)
    if op == "u":
        after = _after(payload, op)
        before = payload.get("before")
        if before is None or _key_only(_before(before, op), after, key, width):
            return ((_UPDATE_AFTER, after, False),)
        return ((_UPDATE_BEFORE, before, True), (_UPDATE_AFTER, after, True))
    if op == "d":
        before = payload.get("before")
        if before is None:
            raise CorruptRecordError("op 'd' has no 'before' image, so the deleted key is unknown")
        if _key_only(_before(before, op), None, key, width):
            return ((_DELETE, _key_row(before, key), False),)
        return ((_DELETE, before, True),)
    raise _bad_op(op)


def _after(payload: dict[str, Any], op: str) -> dict[str, Any]:
    after = payload.get("after")
    if type(after) is not dict:
        raise CorruptRecordError(f"op {op!r} needs an 'after' object, got {short_repr(after)}")
    return after


def _before(before: Any, op: str) -> dict[str, Any]:
    if type(before) is not dict:
        raise CorruptRecordError(f"op {op!r} has a 'before' that is not an object: {short_repr(before)}")
    return before


def _bad_op(op: Any) -> CdcDecodeError:
    if op == "t":
        return CdcDecodeError(
            "op 't' (truncate) cannot be applied as row changes; filter it upstream "
            "(skipped.operations=t) or dead-letter it and rebuild the table"
        )
    if op is None:
        return CorruptRecordError("field 'op' is missing; is this a Debezium change event?")
    return CorruptRecordError(f"field 'op' has unknown value {short_repr(op)}; expected one of r, c, u, d")


def _key_only(before: dict[str, Any], after: dict[str, Any] | None, key: _KeyRule, width: int | None) -> bool:
    """Whether ``before`` holds only key columns (rule 5)."""
    names = key.names
    if names:
        for name, value in before.items():
            if value is not None and name not in names:
                return False
        if width is not None and width > len(names):
            return True
        if any(name not in names for name in before):
            return True
        return after is not None and any(name not in names for name in after)
    if width is not None and len(before) < width:
        return True
    return after is not None and len(before) < len(after) and before.keys() < after.keys()


def _key_row(before: dict[str, Any], key: _KeyRule) -> dict[str, Any]:
    if not key.columns:
        return before
    row = {name: before.get(name) for name in key.columns}
    missing = [name for name, value in row.items() if value is None]
    if missing:
        raise CorruptRecordError(
            f"op 'd' has a key-only 'before' without key column(s) {missing}, so the deleted key is unknown"
        )
    return row


def _row_struct(block: Any) -> dict[str, Any] | None:
    """Find the row struct (``after``, else ``before``) in an envelope schema block."""
    if block is None:
        return None
    fields = block.get("fields") if type(block) is dict else None
    if type(fields) is not list:
        raise CorruptRecordError(
            f"'schema' must be a struct block with a 'fields' list, got {short_repr(block)}"
        )
    for name in ("after", "before"):
        for item in fields:
            if type(item) is dict and item.get("field") == name:
                return item
    raise CorruptRecordError("'schema' has no 'after' or 'before' field; is it a Debezium envelope schema?")


def _is_envelope_block(block: dict[str, Any]) -> bool:
    fields = block.get("fields")
    return type(fields) is list and any(type(f) is dict and f.get("field") == "op" for f in fields)


def _struct_width(struct: dict[str, Any]) -> int:
    fields = struct.get("fields")
    if type(fields) is not list:
        raise CorruptRecordError("schema block of the row: a struct needs a 'fields' list")
    return len(fields)


@functools.lru_cache(maxsize=64)
def _decoders_of(struct_json: bytes) -> dict[str, FieldDecoder]:
    return {d.name: d for d in struct_decoders(orjson.loads(struct_json))}


def _struct_decoders(struct: dict[str, Any]) -> dict[str, FieldDecoder]:
    """Decoders of a row struct, cached by the struct's JSON (schemas repeat in every message)."""
    try:
        return _decoders_of(orjson.dumps(struct, option=orjson.OPT_SORT_KEYS))
    except (RecursionError, orjson.JSONEncodeError):
        raise CorruptRecordError("the row's schema block is nested too deeply") from None


def _python_decoders(
    struct: dict[str, Any] | None, schema: pa.Schema | None, decimal_handling: DecimalHandling
) -> dict[str, FieldDecoder] | None:
    if struct is not None:
        return _struct_decoders(struct)
    if schema is not None:
        return {f.name: decoder_for_arrow(f.name, f.type, decimal_handling=decimal_handling) for f in schema}
    return None


def _convert_row(row: dict[str, Any], decoders: dict[str, FieldDecoder] | None) -> dict[str, Any]:
    if decoders is None:
        return row
    return {k: (d.python_value(v) if (d := decoders.get(k)) is not None else v) for k, v in row.items()}


def _where(payload: dict[str, Any] | None, offset: int | str | None) -> str:
    """Describe where a failing message sits: the caller's offset and the source position."""
    parts = [] if offset is None else [f"offset {offset}"]
    src = payload.get("source") if payload is not None else None
    position = position_of(src) if type(src) is dict else None
    if position is not None:
        parts.append(f"source position {position if len(position) <= 80 else position[:80] + '...'}")
    return ", ".join(parts)


# --- batch ------------------------------------------------------------------------------------------


def _check_schema(schema: pa.Schema | None) -> None:
    if schema is None:
        return
    if not isinstance(schema, pa.Schema):
        raise InvalidArgumentError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    reserved = RESERVED_COLUMNS.intersection(schema.names)
    if reserved:
        raise InvalidArgumentError(
            f"schema names reserved changelog column(s) {sorted(reserved)}; pass only the row columns"
        )


class _Pending:
    """Rows decoded so far, with their kinds, owning messages and the per-message errors."""

    __slots__ = ("errors", "incomplete", "kinds", "owners", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.kinds: list[int] = []
        self.owners: list[int] = []
        self.incomplete: list[int] = []
        self.errors: dict[int, str] = {}

    def fail(self, row_reasons: Mapping[int, str], messages: Sequence[Message]) -> None:
        """Record the owners of the given rows as failed, and drop every row of those messages."""
        for row, reason in row_reasons.items():
            owner = self.owners[row]
            if owner not in self.errors:
                self.errors[owner] = _with_position(reason, messages[owner])
        failed = self.errors
        keep = [i for i, owner in enumerate(self.owners) if owner not in failed]
        incomplete = set(self.incomplete)
        self.rows = [self.rows[i] for i in keep]
        self.kinds = [self.kinds[i] for i in keep]
        self.owners = [self.owners[i] for i in keep]
        self.incomplete = [new for new, old in enumerate(keep) if old in incomplete]


def _with_position(reason: str, message: Message) -> str:
    try:
        obj = _parse(message)
        payload = _unwrap(obj)[0] if obj is not None else None
    except CdcDecodeError:
        return reason
    where = _where(payload, None)
    return f"{reason} ({where})" if where else reason


class _BlockPlan:
    """Decoders of the schema blocks seen in a batch; a field may not change type mid-batch."""

    __slots__ = ("decoders", "struct", "width")

    def __init__(self) -> None:
        self.decoders: dict[str, FieldDecoder] = {}
        self.struct: dict[str, Any] | None = None
        self.width: int | None = None

    def observe(self, block: Any) -> int | None:
        """Take in a message's schema block; return its row width (``None`` without a block)."""
        struct = _row_struct(block)
        if struct is None:
            return None
        if struct == self.struct:
            return self.width
        decoders = _struct_decoders(struct)
        for name, decoder in decoders.items():
            known = self.decoders.get(name)
            if known is not None and (known.arrow_type, known.logical_name) != (
                decoder.arrow_type,
                decoder.logical_name,
            ):
                raise CdcDecodeError(
                    f"field {quote(name)} changes type within the batch "
                    f"({_clip(str(known.arrow_type), 100)} -> {_clip(str(decoder.arrow_type), 100)}); "
                    "decode the messages before and after the schema change in separate batches"
                )
        for name, decoder in decoders.items():
            self.decoders.setdefault(name, decoder)
        self.struct, self.width = struct, len(decoders)
        return self.width


def _scan(
    messages: Sequence[Message],
    pending: _Pending,
    blocks: _BlockPlan,
    key: _KeyRule,
    width: int | None,
    parsed: Sequence[Any] | None = None,
) -> int:
    """Parse every message and collect its row changes; return how many carried none.

    The loop inlines the common cases (a plain payload whose images need no key-only check) and
    must agree with :func:`_row_changes`, to which every other message falls through.
    """
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    add_row, add_kind, add_owner = pending.rows.append, pending.kinds.append, pending.owners.append
    simple = not key.names and width is None
    skipped = 0
    for index, message in enumerate(messages):
        obj: Any = _UNPARSED
        if parsed is not None and parsed[index] is not None:
            obj = parsed[index] if message else _UNPARSED
        elif message:
            try:
                obj = loads(message)
            except (decode_error, TypeError):
                obj = _UNPARSED
        if obj is not _UNPARSED:  # noqa: SIM102 - keeps the fast path flat
            if simple and type(obj) is dict:
                op = obj.get("op")
                if op == "u":
                    before, after = obj.get("before"), obj.get("after")
                    if type(before) is dict and type(after) is dict and len(before) >= len(after):
                        add_row(before)
                        add_row(after)
                        add_kind(1)
                        add_kind(2)
                        add_owner(index)
                        add_owner(index)
                        continue
                elif op in ("c", "r"):
                    after = obj.get("after")
                    if type(after) is dict:
                        add_row(after)
                        add_kind(0)
                        add_owner(index)
                        continue
                elif op == "d":
                    before = obj.get("before")
                    if type(before) is dict:
                        add_row(before)
                        add_kind(3)
                        add_owner(index)
                        continue
        skipped += _scan_one(index, message, obj, pending, blocks, key, width)
    return skipped


_UNPARSED: Final = object()
"""Marks a message that the fast path could not parse (``_parse`` then reports why)."""


def _scan_one(
    index: int,
    message: Message,
    obj: Any,
    pending: _Pending,
    blocks: _BlockPlan,
    key: _KeyRule,
    width: int | None,
) -> int:
    """Decode one message the general way into ``pending``; return 1 if it carried no change."""
    payload: dict[str, Any] | None = None
    try:
        if obj is _UNPARSED:
            obj = _parse(message)
        unwrapped = _slow_payload(obj)
        if unwrapped is None:
            return 1
        payload, block = unwrapped
        row_width = blocks.observe(block) if block is not None else None
        steps = _row_changes(payload, key, row_width if row_width is not None else width)
    except (CdcDecodeError, InvalidArgumentError) as exc:
        where = _where(payload, None)
        pending.errors[index] = f"{exc} ({where})" if where else str(exc)
        return 0
    rows = pending.rows
    for kind, row, complete in steps:
        if not complete:
            pending.incomplete.append(len(rows))
        rows.append(row)
        pending.kinds.append(kind)
        pending.owners.append(index)
    return 0


def _slow_payload(obj: Any) -> tuple[dict[str, Any], Any] | None:
    """Handle what the fast path does not: non-objects, tombstones, envelopes and meta events."""
    if obj is None:
        return None
    if type(obj) is not dict:
        raise CorruptRecordError(f"message must be a JSON object, got {type(obj).__name__} {short_repr(obj)}")
    payload, block = _unwrap(obj)
    if payload is None or _is_meta_event(payload):
        return None
    return payload, block


def _assemble(
    pending: _Pending,
    messages: Sequence[Message],
    schema: pa.Schema | None,
    decoders: dict[str, FieldDecoder],
    decimal_handling: DecimalHandling,
    key: _KeyRule,
) -> tuple[list[pa.Array], list[pa.Field]]:
    """Build one Arrow column per field, dropping failing messages until every column builds."""
    while True:
        present: set[str] = set().union(*pending.rows)
        names = _column_names(pending.rows, present, schema, decoders)
        bad = _rows_with_bad_columns(pending.rows, present, names, schema)
        columns: list[pa.Array] = []
        for name in names if not bad else ():
            builder = _builder(name, schema, decoders, decimal_handling)
            array, bad = _build_column(name, [row.get(name) for row in pending.rows], builder)
            if bad:
                break
            columns.append(array)
        if not bad:
            bad = _rows_without_key(pending, dict(zip(names, columns, strict=True)), key, messages)
        if not bad:
            return columns, _output_fields(names, columns, schema)
        pending.fail(bad, messages)


def _rows_without_key(
    pending: _Pending, columns: dict[str, pa.Array], key: _KeyRule, messages: Sequence[Message]
) -> dict[int, str]:
    """Rows with a null or missing key column, found on the built columns (rule 5)."""
    bad: dict[int, str] = {}
    for name in key.columns:
        column = columns.get(name)
        if column is not None and not column.null_count:
            continue
        rows = (
            range(len(pending.rows)) if column is None else pc.indices_nonzero(pc.is_null(column)).to_pylist()
        )
        for row in rows:
            if row not in bad:
                try:
                    obj = _parse(messages[pending.owners[row]])
                    payload = _unwrap(obj)[0] if obj is not None else None
                except CdcDecodeError:
                    payload = None
                bad[row] = _key_problem(name, pending.rows[row], pending.kinds[row], payload)
    return bad


def _column_names(
    rows: list[dict[str, Any]], present: set[str], schema: pa.Schema | None, decoders: dict[str, FieldDecoder]
) -> list[str]:
    if schema is not None:
        return list(schema.names)
    names = dict.fromkeys(decoders)
    extra = present.difference(names)
    if extra:  # in order of first appearance
        for row in rows:
            for name in row:
                if name in extra:
                    names[name] = None
    return list(names)


def _rows_with_bad_columns(
    rows: list[dict[str, Any]], present: set[str], names: list[str], schema: pa.Schema | None
) -> dict[int, str]:
    """Rows that hold a reserved column, or (with an explicit schema) a column outside it."""
    unwanted = present - set(names) if schema is not None else present & RESERVED_COLUMNS
    if not unwanted:
        return {}
    bad: dict[int, str] = {}
    for i, row in enumerate(rows):
        for name in row:
            if name in unwanted:
                bad[i] = (
                    f"column {quote(name)} is reserved for the changelog; rename it upstream"
                    if name in RESERVED_COLUMNS
                    else f"column {quote(name)} is not in the given schema; "
                    "evolve the schema or drop it upstream"
                )
                break
    return bad


Builder = Callable[[list[Any]], pa.Array]
"""Builds one Arrow column from JSON values; raises one of ``_BUILD_ERRORS`` on a bad value."""


def _infer_array(values: list[Any]) -> pa.Array:
    array = pa.array(values)
    kind = array.type
    if kind == pa.float64():
        mixed = bool in set(map(type, values))
    else:
        mixed = _holds_float(kind) and any(_bool_as_number(v, kind) for v in values)
    if mixed:  # Arrow's inference turns them into 1.0 and 0.0
        raise CorruptRecordError("true/false where the batch has numbers")
    return array


def _holds_float(kind: pa.DataType) -> bool:
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_list(kind):
        return _holds_float(kind.value_type)
    return bool(pa.types.is_struct(kind)) and any(_holds_float(f.type) for f in kind)


def _bool_as_number(value: Any, kind: pa.DataType) -> bool:
    """Whether a JSON value puts a boolean where ``kind`` (inferred from the batch) has a float."""
    if type(value) is bool:
        return bool(pa.types.is_floating(kind))
    if type(value) is list and pa.types.is_list(kind):
        return any(_bool_as_number(v, kind.value_type) for v in value)
    if type(value) is dict and pa.types.is_struct(kind):
        return any(_bool_as_number(value.get(f.name), f.type) for f in kind)
    return False


def _builder(
    name: str, schema: pa.Schema | None, decoders: dict[str, FieldDecoder], decimal_handling: DecimalHandling
) -> Builder:
    target = schema.field(name).type if schema is not None else None
    decoder = decoders.get(name)
    if decoder is None and target is not None:
        decoder = decoder_for_arrow(name, target, decimal_handling=decimal_handling)
    if decoder is None:
        return _infer_array
    build = decoder.build_array
    if target is None or target == decoder.arrow_type:
        return build

    def build_and_cast(values: list[Any]) -> pa.Array:
        return build(values).cast(target)

    return build_and_cast


def _build_column(name: str, values: list[Any], builder: Builder) -> tuple[pa.Array, dict[int, str]]:
    """Build a column; on failure find the rows whose values cannot be held (by bisection)."""
    try:
        return builder(values), {}
    except _BUILD_ERRORS as exc:
        failure = exc
    if builder is _infer_array:
        builder = _majority_builder(values)
        with contextlib.suppress(*_BUILD_ERRORS):
            return builder(values), {}  # a mix Arrow's inference refuses, such as big integers and floats
    bad: dict[int, str] = {}
    _bisect(values, builder, 0, len(values), bad)
    if not bad:
        raise CdcDecodeError(f"column {quote(name)} cannot be built from this batch: {failure}") from failure
    return pa.array([]), {row: f"field {quote(name)}: {_clip(reason)}" for row, reason in bad.items()}


def _clip(reason: str, limit: int = 300) -> str:
    """Arrow's own messages may quote a whole value or type: keep them short."""
    return reason if len(reason) <= limit else reason[:limit] + "..."


def _majority_builder(values: list[Any]) -> Builder:
    """For an inferred column of mixed types: build with the type of the most common kind of value."""
    counts: dict[type, int] = {}
    first: dict[type, Any] = {}
    for value in values:
        if value is not None:
            kind = float if type(value) is int else type(value)
            counts[kind] = counts.get(kind, 0) + 1
            first.setdefault(kind, value)
    majority = max(counts, key=counts.__getitem__)
    sample = first[majority]
    try:
        target = pa.float64() if majority is float else pa.array([sample]).type
    except _BUILD_ERRORS:
        target = pa.string()

    def build(chunk: list[Any]) -> pa.Array:
        for value in chunk:
            if value is not None and (float if type(value) is int else type(value)) is not majority:
                raise CorruptRecordError(
                    f"{short_repr(value)} does not match the column's type {_clip(str(target), 100)} "
                    "(inferred from the batch)"
                )
        if majority is float:  # Arrow refuses some mixes of big integers and floats: convert them here
            chunk = [_exact_float(v) if type(v) is int else v for v in chunk]
        elif _holds_float(target) and any(_bool_as_number(v, target) for v in chunk):
            raise CorruptRecordError("true/false where the batch has numbers")
        return pa.array(chunk, type=target)

    return build


def _exact_float(value: int) -> float:
    number = float(value)
    if number != value:
        raise CorruptRecordError(
            f"{quote(value)} cannot be held exactly by a column of floats (inferred from the batch)"
        )
    return number


def _bisect(values: list[Any], builder: Builder, lo: int, hi: int, bad: dict[int, str]) -> None:
    if lo >= hi:
        return
    try:
        builder(values[lo:hi])
        return
    except _BUILD_ERRORS as exc:
        if hi - lo == 1:
            bad[lo] = str(exc)
            return
    mid = (lo + hi) // 2
    _bisect(values, builder, lo, mid, bad)
    _bisect(values, builder, mid, hi, bad)


def _output_fields(names: Iterable[str], columns: list[pa.Array], schema: pa.Schema | None) -> list[pa.Field]:
    if schema is not None:
        return [schema.field(name).with_nullable(True) for name in names]
    return [pa.field(name, column.type) for name, column in zip(names, columns, strict=True)]
