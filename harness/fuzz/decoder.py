"""The decoder fuzzer: :func:`fuzz_decoder` feeds valid and damaged Debezium messages to ``decode``
(with and without conversion) and ``decode_batch``, and checks them against each other."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa

from flowlake.cdc import logical_types as lt
from flowlake.cdc.change import Change
from flowlake.cdc.debezium import DecodedBatch, decode, decode_batch
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import FlowlakeError
from harness.fuzz._common import EPOCH_DATE, PER_SECOND, same_value
from harness.fuzz._debezium_messages import (
    DEBEZIUM_COLUMNS,
    DebeziumTable,
    RowPools,
    message_object,
    new_debezium_table,
    payload_of,
    row_images,
)
from harness.fuzz._debezium_mutations import mutate_bytes, mutate_tree
from harness.fuzz.report import MAX_MESSAGE_CHARS, FuzzReport, check_error_message, clip

_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# inputs: messages from the corpus or generated, damaged or not -------------------------------------


def _strip_metadata(obj: Any) -> Any:
    """The message without ``source``/``ts_ms``/``transaction``, which only ``decode`` reads."""
    payload = payload_of(obj)
    if payload is not None:
        for name in ("source", "ts_ms", "transaction"):
            payload.pop(name, None)
    return obj


@dataclass(slots=True)
class _Message:
    """One fuzz input of the decoder."""

    raw: bytes
    damaged: bool
    stripped: bytes | None
    """``raw`` without metadata (``raw`` itself if it is not JSON; ``None`` if too deep to rewrite)."""
    obj: Any = None
    """What ``raw`` parses to, without metadata; ``None`` if it does not parse."""


def _finish(raw: bytes, damaged: bool) -> _Message:
    try:
        obj = _strip_metadata(orjson.loads(raw))  # what the checks read of it is not metadata
    except orjson.JSONDecodeError:
        return _Message(raw, damaged, raw)
    try:
        stripped: bytes | None = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        try:
            stripped = json.dumps(obj, ensure_ascii=False).encode()
        except RecursionError:
            stripped = None
    return _Message(raw, damaged, stripped, obj)


def _generated_batch(
    rng: random.Random, table: DebeziumTable, size: int, seq: int, pools: RowPools
) -> list[_Message]:
    messages = []
    for i in range(size):
        obj: Any = message_object(rng, table, seq + i, pools)
        damage = 0 if rng.random() < 0.45 else rng.choice((1, 1, 1, 2, 3))
        if damage:
            obj = orjson.loads(orjson.dumps(obj))  # mutations work in place: never on shared blocks
        for _ in range(damage):
            obj = mutate_tree(rng, obj, table)
        raw = orjson.dumps(obj)
        if damage and rng.random() < 0.35:
            raw = mutate_bytes(rng, raw)
        messages.append(_finish(raw, damage > 0))
    return messages


def _corpus_batch(rng: random.Random, group: Sequence[bytes], size: int) -> list[_Message]:
    table = DebeziumTable((DEBEZIUM_COLUMNS[0],), with_block=False)
    messages = []
    for _ in range(size):
        raw = rng.choice(group)
        if rng.random() < 0.45:
            messages.append(_finish(raw, False))
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            messages.append(_finish(mutate_bytes(rng, raw), True))
            continue
        for _ in range(rng.choice((1, 1, 2))):
            obj = mutate_tree(rng, obj, table)
        data = orjson.dumps(obj)
        messages.append(_finish(mutate_bytes(rng, data) if rng.random() < 0.3 else data, True))
    return messages


# comparing what decode and decode_batch produce ----------------------------------------------------


def _canon_arrow(array: pa.Array) -> list[Any]:
    """Python values of an Arrow array, with temporal values as integers (µs, or days for dates)."""
    kind = array.type
    if pa.types.is_timestamp(kind) or pa.types.is_time(kind):
        per = PER_SECOND[kind.unit]
        ints = array.cast(pa.int32() if kind.bit_width == 32 else pa.int64()).to_pylist()
        return [None if v is None else v * 1_000_000 // per for v in ints]
    if pa.types.is_date32(kind):
        return list(array.cast(pa.int32()).to_pylist())
    if pa.types.is_struct(kind):
        children = {kind.field(i).name: _canon_arrow(child) for i, child in enumerate(array.flatten())}
        valid = array.is_valid().to_pylist()
        return [{k: v[i] for k, v in children.items()} if valid[i] else None for i in range(len(array))]
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        values = _canon_arrow(array.flatten())
        out: list[Any] = []
        start = 0
        for length in array.value_lengths().to_pylist():
            if length is None:
                out.append(None)
            else:
                out.append(values[start : start + length])
                start += length
        return out
    if pa.types.is_map(kind):
        return [None if v is None else [(k, x) for k, x in v] for v in array.to_pylist()]
    return list(array.to_pylist())


def _canon_python(value: Any, kind: pa.DataType) -> Any:
    """A value from ``decode`` in the form :func:`_canon_arrow` gives for a column of ``kind``."""
    if value is None:
        return None
    if pa.types.is_timestamp(kind) and isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return (aware - _EPOCH_UTC) // dt.timedelta(microseconds=1)
    if pa.types.is_time(kind) and isinstance(value, dt.time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    if pa.types.is_date32(kind) and isinstance(value, dt.date):
        return (value - EPOCH_DATE).days
    if pa.types.is_floating(kind) and type(value) in (int, float):
        if kind == pa.float32():
            with np.errstate(over="ignore"):
                return float(np.float32(value))
        return float(value)
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) and isinstance(value, Decimal):
        return format(value, "f")
    if pa.types.is_struct(kind) and type(value) is dict:
        return {f.name: _canon_python(value.get(f.name), f.type) for f in kind}
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and type(value) is list:
        return [_canon_python(v, kind.value_type) for v in value]
    if pa.types.is_map(kind) and type(value) is dict:
        return [(_canon_python(k, kind.key_type), _canon_python(v, kind.item_type)) for k, v in value.items()]
    return value


def _outcome(
    report: FuzzReport, index: int, message: bytes, check: str, **options: Any
) -> list[Change] | FlowlakeError | None:
    """``decode`` the message: its changes, the FlowlakeError it raised, or ``None`` after a crash."""
    try:
        return decode(message, **options)
    except FlowlakeError as exc:
        check_error_message(report, index, exc, message)
        return exc
    except Exception as exc:  # anything else is what the fuzzer hunts
        report.fail(index, f"{check} raised {type(exc).__name__}", str(exc), message)
        return None


@dataclass(frozen=True, slots=True)
class _BatchCase:
    """How a batch is decoded: with an explicit schema or not, with a primary key or not."""

    schema: pa.Schema | None
    key: tuple[str, ...] | None


_BATCH_ONLY_REASONS: Final = ("changes type within the batch", "not in the given schema", "reserved")
"""Why decode_batch may reject a message that decode accepts alone (see the debezium module docs)."""


_BLOCK_NAMES: dict[bytes, frozenset[str] | None] = {}


def _block_names(block: Any) -> frozenset[str] | None:
    """The row fields a schema block declares (``None`` if the block is malformed), cached."""
    try:
        key = orjson.dumps(block)
    except orjson.JSONEncodeError:  # nested too deeply to write (the row struct may still be fine)
        key = b""
    if key not in _BLOCK_NAMES:
        if len(_BLOCK_NAMES) > 256:
            _BLOCK_NAMES.clear()
        names = _row_struct_names(block)
        if not key:
            return names
        _BLOCK_NAMES[key] = names
    return _BLOCK_NAMES[key]


def _row_struct_names(block: Any) -> frozenset[str] | None:
    """The fields of the row struct (``after``, else ``before``) of an envelope block, as decode finds it."""
    fields = block.get("fields") if type(block) is dict else None
    for name in ("after", "before"):
        for item in fields if type(fields) is list else ():
            if type(item) is dict and item.get("field") == name:
                try:
                    return frozenset(d.name for d in lt.struct_decoders(item))
                except FlowlakeError:
                    return None
    return None


def _typed(message: _Message, case: _BatchCase) -> bool:
    """Whether every row field of the message is read by a known type (its schema block, or the schema)."""
    obj = message.obj
    images = row_images(obj)
    if not images:
        return True
    block = obj.get("schema") if type(obj) is dict and "op" not in obj else None
    if block is not None:
        if case.schema is not None:
            return False
        names = _block_names(block)
        if names is None:
            return True  # the message fails on its block anyway
    elif case.schema is not None:
        names = frozenset(case.schema.names)
    else:
        return False
    return all(set(image) <= names for image in images)


@dataclass(frozen=True, slots=True)
class _Batch:
    """What decode_batch made of a batch: its reasons by message, its rows by message."""

    failed: dict[int, str]
    rows: dict[int, list[tuple[int, dict[str, Any], bool]]]
    schema: pa.Schema


def _check_batch(
    report: FuzzReport,
    first: int,
    messages: list[_Message],
    case: _BatchCase,
    blocks: bool,
    decoded: Sequence[list[Change] | FlowlakeError | None],
) -> None:
    """Check decode_batch against decode of each message alone (``decoded``: what it gave by default)."""
    raws = [m.raw for m in messages]
    try:
        result = decode_batch(raws, case.schema, primary_key=case.key)
    except Exception as exc:  # decode_batch reports bad messages; it raises only for bad arguments
        report.fail(first, f"decode_batch raised {type(exc).__name__}", str(exc), raws)
        return
    batch = _Batch({e.index: e.reason for e in result.errors}, _rows_by_message(result), result.table.schema)
    for i, reason in batch.failed.items():
        if not reason.strip() or len(reason) > MAX_MESSAGE_CHARS:
            detail = f"{len(reason)} chars: {reason[:300]!r}"
            report.fail(first + i, "unclear decode_batch reason", detail, raws[i])
    for i, message in enumerate(messages):
        known = decoded[i] if case.schema is None and case.key is None else None
        if isinstance(known, list):
            _check_in_batch(report, (first, i), message, known, case, blocks, batch)
        elif message.stripped is not None:
            options: dict[str, Any] = {"schema": case.schema, "primary_key": case.key}
            alone = _outcome(report, first + i, message.stripped, "decode", **options)
            _check_in_batch(report, (first, i), message, alone, case, blocks, batch)


def _check_in_batch(
    report: FuzzReport,
    where: tuple[int, int],
    message: _Message,
    alone: list[Change] | FlowlakeError | None,
    case: _BatchCase,
    blocks: bool,
    batch: _Batch,
) -> None:
    """One message of a batch against what decode made of it alone (``where``: first input, position)."""
    index, reason = sum(where), batch.failed.get(where[1])
    if alone is None:
        return
    if isinstance(alone, FlowlakeError):
        if reason is None:
            report.fail(index, "decode_batch accepts what decode rejects", str(alone), message.raw)
        return
    typed = (blocks or case.schema is not None) and _typed(message, case)
    if reason is not None:
        if typed and not any(r in reason for r in _BATCH_ONLY_REASONS):
            report.fail(index, "decode_batch rejects what decode accepts", reason, message.raw)
    elif typed or (not blocks and case.schema is None):
        _compare_rows(report, index, message, alone, batch.rows.get(where[1], []), batch.schema)


def _rows_by_message(batch: DecodedBatch) -> dict[int, list[tuple[int, dict[str, Any], bool]]]:
    table = batch.table
    columns = {name: _canon_arrow(table.column(name).combine_chunks()) for name in table.column_names}
    kinds = columns.pop(KIND_COLUMN)
    incomplete = set(batch.incomplete_rows)
    out: dict[int, list[tuple[int, dict[str, Any], bool]]] = {}
    for row, owner in enumerate(batch.message_index.to_pylist()):
        values = {name: column[row] for name, column in columns.items()}
        out.setdefault(owner, []).append((kinds[row], values, row not in incomplete))
    return out


def _compare_rows(
    report: FuzzReport,
    index: int,
    message: _Message,
    changes: list[Change],
    rows: list[tuple[int, dict[str, Any], bool]],
    schema: pa.Schema,
) -> None:
    names = [f for f in schema if f.name != KIND_COLUMN]
    expected = [
        (int(c.kind), {f.name: _canon_python(c.row.get(f.name), f.type) for f in names}, c.before_complete)
        for c in changes
    ]
    if len(expected) != len(rows) or not all(
        e[0] == r[0] and e[2] == r[2] and same_value(e[1], r[1]) for e, r in zip(expected, rows, strict=False)
    ):
        detail = f"alone: {clip(expected, 600)}; in the batch: {clip(rows, 600)}"
        report.fail(index, "decode_batch rows differ from decode", detail, message.raw)


def _check_message_alone(
    report: FuzzReport, index: int, message: _Message
) -> list[Change] | FlowlakeError | None:
    """decode with and without conversion: only FlowlakeError, and consistent with each other."""
    converted = _outcome(report, index, message.raw, "decode")
    raw = _outcome(report, index, message.raw, "decode(convert=False)", convert=False)
    if converted is None or raw is None:
        return converted
    if isinstance(converted, FlowlakeError):
        report.reject(converted)
        if not message.damaged:
            report.fail(index, "decode rejects an undamaged message", str(converted), message.raw)
        return converted
    report.accepted += 1
    if isinstance(raw, FlowlakeError):
        report.fail(index, "convert=False rejects what convert=True accepts", str(raw), message.raw)
    elif [(c.kind, c.before_complete) for c in raw] != [(c.kind, c.before_complete) for c in converted]:
        report.fail(index, "convert=False changes the kinds", f"{raw!r} vs {converted!r}", message.raw)
    return converted


def fuzz_decoder(n: int, seed: int, *, corpus: Sequence[Sequence[bytes]] = ()) -> FuzzReport:
    """Fuzz :func:`~flowlake.cdc.decode` and :func:`~flowlake.cdc.decode_batch` with ``n`` messages.

    Args:
        n: Messages to try (each is decoded alone, in two ways, and within a batch).
        seed: Seed of the run.
        corpus: Valid messages to start from, one sequence per source table (e.g. each peer-vector
            file); generated envelopes are used besides.

    Returns:
        The report; ``crashes`` is 0 when every check held.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible fuzzing, not cryptography
    report = FuzzReport("decoder", seed)
    groups = [list(g) for g in corpus if g]
    pools: RowPools = {}
    started = time.perf_counter()
    while report.inputs < n:
        size = min(n - report.inputs, rng.choice((1, 3, 8, 16, 32, 48)))
        case = _BatchCase(None, None)
        if groups and rng.random() < 0.3:
            messages = _corpus_batch(rng, rng.choice(groups), size)
            blocks = any(type(m.obj) is dict and "schema" in m.obj for m in messages)
        else:
            table = new_debezium_table(rng)
            messages = _generated_batch(rng, table, size, report.inputs, pools)
            blocks = table.with_block
            schema = table.arrow_schema() if not blocks and rng.random() < 0.6 else None
            case = _BatchCase(schema, ("id",) if rng.random() < 0.5 else None)
        decoded = [_check_message_alone(report, report.inputs + i, m) for i, m in enumerate(messages)]
        _check_batch(report, report.inputs, messages, case, blocks, decoded)
        report.inputs += len(messages)
    report.seconds = time.perf_counter() - started
    return report
