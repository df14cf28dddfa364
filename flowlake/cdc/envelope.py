"""Debezium envelopes, one message at a time: parsing, routing and the rules that turn a payload into
row changes.

The one envelope parser of the package: :func:`flowlake.cdc.debezium.decode`,
:func:`flowlake.cdc.debezium_batch.decode_batch` and the JSONL source (:mod:`flowlake.cdc.jsonl`)
all use it (rules 1-6 of :mod:`flowlake.cdc.debezium`): parsing a message to its top-level object
(tombstones, invalid JSON and UTF-8, NaN tokens), unwrapping a schema-include envelope, routing a
payload to its source table, recognising transaction and logical-message events, applying an
operation to its before and after images (key-only before-images included), finding the row struct
of a schema block (with its decoders, cached), and saying where a failing message sits in the source.

>>> line = b'{"op": "c", "after": {"id": 1}, "source": {"db": "shop", "table": "orders"}}'
>>> payload, block = unwrap(parse_message(line))
>>> route(payload), block is None, payload_changes(payload, KeyRule.of(["id"]), None)
('shop.orders', True, ((<RowKind.INSERT: 0>, {'id': 1}, True),))
>>> unwrap(parse_message(b'{"schema": {}, "payload": null}'))
(None, None)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from flowlake.cdc.change import position_of
from flowlake.cdc.logical_types import FieldDecoder, quote, struct_decoders
from flowlake.changelog import RowKind
from flowlake.errors import CdcDecodeError, CorruptRecordError, InvalidArgumentError, short_repr

Message = bytes | bytearray | memoryview | str | None
"""One Kafka record value: JSON text as bytes or str, or ``None`` for a tombstone."""

Step = tuple[RowKind, dict[str, Any], bool]
"""One change before it gets its source: (kind, row, before_complete)."""

_INSERT: Final = RowKind.INSERT
_UPDATE_BEFORE: Final = RowKind.UPDATE_BEFORE
_UPDATE_AFTER: Final = RowKind.UPDATE_AFTER
_DELETE: Final = RowKind.DELETE
_TX_STATUSES: Final = frozenset({"BEGIN", "END"})
_NOT_A_NUMBER: Final = re.compile(r"-?(?:NaN|Infinity)")


@dataclass(frozen=True, slots=True)
class KeyRule:
    """The primary key used to recognise key-only before-images (empty when not given)."""

    columns: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, primary_key: Sequence[str] | None) -> KeyRule:
        if primary_key is None:
            return cls()
        if isinstance(primary_key, str) or not all(isinstance(c, str) for c in primary_key):
            raise InvalidArgumentError(f"primary_key must be a sequence of column names, got {primary_key!r}")
        return cls(tuple(primary_key), frozenset(primary_key))


def parse_message(message: Message) -> dict[str, Any] | None:
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


def unwrap(obj: Any) -> tuple[dict[str, Any] | None, Any]:
    """Return (payload, schema block) of a parsed message; payload ``None`` is a tombstone.

    Raises:
        CorruptRecordError: If the message or its ``payload`` is not a JSON object.

    >>> unwrap({"schema": {"type": "struct"}, "payload": {"op": "d"}})
    ({'op': 'd'}, {'type': 'struct'})
    >>> unwrap([1, 2])
    Traceback (most recent call last):
    ...
    flowlake.errors.CorruptRecordError: message must be a JSON object, got list [1, 2]
    """
    if obj is None:
        return None, None
    if type(obj) is not dict:
        raise CorruptRecordError(f"message must be a JSON object, got {type(obj).__name__} {short_repr(obj)}")
    if "op" in obj or "payload" not in obj:
        return obj, None
    payload = obj["payload"]
    if payload is None:
        return None, None
    if type(payload) is not dict:
        raise CorruptRecordError(f"'payload' must be an object, got {short_repr(payload)}")
    return payload, obj.get("schema")


def route(payload: dict[str, Any]) -> str:
    """The source table of a payload: ``<source.schema or source.db>.<source.table>``.

    Raises:
        CdcDecodeError: If the ``source`` block does not name the table.

    >>> route({"source": {"db": "shop", "schema": "public", "table": "orders"}})
    'public.orders'
    """
    src = payload.get("source")
    if type(src) is not dict:
        raise CdcDecodeError("message has no 'source' block, so its table is unknown")
    table = src.get("table")
    owner = src.get("schema") or src.get("db")
    if type(table) is not str or type(owner) is not str or not table:
        raise CdcDecodeError(
            "message's 'source' block lacks 'db'/'schema' or 'table', so its table is unknown"
        )
    return f"{owner}.{table}"


def transaction_of(payload: dict[str, Any]) -> str | None:
    """The ``transaction.id`` of a change as text, or ``None`` (no block, or no id); never raises.

    >>> transaction_of({"op": "c", "transaction": {"id": 42}}), transaction_of({"op": "c"})
    ('42', None)
    """
    block = payload.get("transaction")
    if type(block) is not dict:
        return None
    value = block.get("id")
    return None if value is None else str(value)


def transaction_status(payload: dict[str, Any]) -> str | None:
    """``"BEGIN"`` or ``"END"`` for a transaction boundary event (a payload without ``op``), else ``None``.

    >>> transaction_status({"status": "BEGIN", "id": "t1"}), transaction_status({"op": "c", "status": "END"})
    ('BEGIN', None)
    """
    status = payload.get("status")
    if "op" in payload or type(status) is not str or status not in _TX_STATUSES:
        return None
    return status


def is_meta_event(payload: dict[str, Any]) -> bool:
    """Whether the payload is a transaction boundary or a logical-decoding message (no rows)."""
    op = payload.get("op")
    if op is None:
        status = payload.get("status")
        return type(status) is str and status in _TX_STATUSES
    return bool(op == "m")


def key_problem(name: str, row: dict[str, Any], kind: int, payload: dict[str, Any] | None) -> str:
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


def payload_changes(payload: dict[str, Any], key: KeyRule, width: int | None) -> tuple[Step, ...]:
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


def _key_only(before: dict[str, Any], after: dict[str, Any] | None, key: KeyRule, width: int | None) -> bool:
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


def _key_row(before: dict[str, Any], key: KeyRule) -> dict[str, Any]:
    if not key.columns:
        return before
    row = {name: before.get(name) for name in key.columns}
    missing = [name for name, value in row.items() if value is None]
    if missing:
        raise CorruptRecordError(
            f"op 'd' has a key-only 'before' without key column(s) {missing}, so the deleted key is unknown"
        )
    return row


def row_struct(block: Any) -> dict[str, Any] | None:
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


def is_envelope_block(block: dict[str, Any]) -> bool:
    fields = block.get("fields")
    return type(fields) is list and any(type(f) is dict and f.get("field") == "op" for f in fields)


def struct_width(struct: dict[str, Any]) -> int:
    fields = struct.get("fields")
    if type(fields) is not list:
        raise CorruptRecordError("schema block of the row: a struct needs a 'fields' list")
    return len(fields)


@functools.lru_cache(maxsize=64)
def _decoders_of(struct_json: bytes) -> dict[str, FieldDecoder]:
    return {d.name: d for d in struct_decoders(orjson.loads(struct_json))}


def row_decoders(struct: dict[str, Any]) -> dict[str, FieldDecoder]:
    """Decoders of a row struct, cached by the struct's JSON (schemas repeat in every message)."""
    try:
        return _decoders_of(orjson.dumps(struct, option=orjson.OPT_SORT_KEYS))
    except (RecursionError, orjson.JSONEncodeError):
        raise CorruptRecordError("the row's schema block is nested too deeply") from None


def where_in_source(payload: dict[str, Any] | None, offset: int | str | None) -> str:
    """Describe where a failing message sits: the caller's offset and the source position."""
    parts = [] if offset is None else [f"offset {offset}"]
    src = payload.get("source") if payload is not None else None
    position = position_of(src) if type(src) is dict else None
    if position is not None:
        parts.append(f"source position {position if len(position) <= 80 else position[:80] + '...'}")
    return ", ".join(parts)
