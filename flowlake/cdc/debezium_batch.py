"""Decode many Debezium JSON messages of one table into one Arrow changelog table, in one pass.

:func:`decode_batch` is the hot path beside the per-message :func:`flowlake.cdc.debezium.decode`;
both follow the rules in :mod:`flowlake.cdc.debezium` (rule 8 is the batch's own). The scan inlines
the common messages and sends the others through the shared envelope rules; then the columns are
built, and a message with a value its column cannot hold, a column outside the schema or a row
without its key is reported in :attr:`DecodedBatch.errors` and all of its rows are left out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.cdc.batch_columns import (
    build_column,
    clip,
    column_builder,
    column_names,
    output_fields,
    rows_with_bad_columns,
)
from flowlake.cdc.change import SourceInfo, source_info
from flowlake.cdc.envelope import (
    KeyRule,
    Message,
    is_meta_event,
    key_problem,
    parse_message,
    payload_changes,
    row_decoders,
    row_struct,
    unwrap,
    where_in_source,
)
from flowlake.cdc.logical_types import DecimalHandling, FieldDecoder, quote
from flowlake.changelog import KIND_COLUMN, RESERVED_COLUMNS
from flowlake.errors import CdcDecodeError, InvalidArgumentError


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
        batch = _decode_batch(messages, schema, KeyRule.of(primary_key), decimal_handling, parsed)
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
            obj = parse_message(message)
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
    key: KeyRule,
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
        obj = parse_message(message)
        payload = unwrap(obj)[0] if obj is not None else None
    except CdcDecodeError:
        return reason
    where = where_in_source(payload, None)
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
        struct = row_struct(block)
        if struct is None:
            return None
        if struct == self.struct:
            return self.width
        decoders = row_decoders(struct)
        for name, decoder in decoders.items():
            known = self.decoders.get(name)
            if known is not None and (known.arrow_type, known.logical_name) != (
                decoder.arrow_type,
                decoder.logical_name,
            ):
                raise CdcDecodeError(
                    f"field {quote(name)} changes type within the batch "
                    f"({clip(str(known.arrow_type), 100)} -> {clip(str(decoder.arrow_type), 100)}); "
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
    key: KeyRule,
    width: int | None,
    parsed: Sequence[Any] | None = None,
) -> int:
    """Parse every message and collect its row changes; return how many carried none.

    The loop inlines the common cases (a plain payload whose images need no key-only check) and
    must agree with :func:`payload_changes`, to which every other message falls through.
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
"""Marks a message that the fast path could not parse (``parse_message`` then reports why)."""


def _scan_one(
    index: int,
    message: Message,
    obj: Any,
    pending: _Pending,
    blocks: _BlockPlan,
    key: KeyRule,
    width: int | None,
) -> int:
    """Decode one message the general way into ``pending``; return 1 if it carried no change."""
    payload: dict[str, Any] | None = None
    try:
        if obj is _UNPARSED:
            obj = parse_message(message)
        unwrapped = _slow_payload(obj)
        if unwrapped is None:
            return 1
        payload, block = unwrapped
        row_width = blocks.observe(block) if block is not None else None
        steps = payload_changes(payload, key, row_width if row_width is not None else width)
    except (CdcDecodeError, InvalidArgumentError) as exc:
        where = where_in_source(payload, None)
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
    payload, block = unwrap(obj)
    if payload is None or is_meta_event(payload):
        return None
    return payload, block


def _assemble(
    pending: _Pending,
    messages: Sequence[Message],
    schema: pa.Schema | None,
    decoders: dict[str, FieldDecoder],
    decimal_handling: DecimalHandling,
    key: KeyRule,
) -> tuple[list[pa.Array], list[pa.Field]]:
    """Build one Arrow column per field, dropping failing messages until every column builds."""
    while True:
        present: set[str] = set().union(*pending.rows)
        names = column_names(pending.rows, present, schema, decoders)
        bad = rows_with_bad_columns(pending.rows, present, names, schema)
        columns: list[pa.Array] = []
        for name in names if not bad else ():
            builder = column_builder(name, schema, decoders, decimal_handling)
            array, bad = build_column(name, [row.get(name) for row in pending.rows], builder)
            if bad:
                break
            columns.append(array)
        if not bad:
            bad = _rows_without_key(pending, dict(zip(names, columns, strict=True)), key, messages)
        if not bad:
            return columns, output_fields(names, columns, schema)
        pending.fail(bad, messages)


def _rows_without_key(
    pending: _Pending, columns: dict[str, pa.Array], key: KeyRule, messages: Sequence[Message]
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
                    obj = parse_message(messages[pending.owners[row]])
                    payload = unwrap(obj)[0] if obj is not None else None
                except CdcDecodeError:
                    payload = None
                bad[row] = key_problem(name, pending.rows[row], pending.kinds[row], payload)
    return bad
