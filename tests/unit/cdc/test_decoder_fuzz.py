"""Fuzzing: no input makes the decoder raise anything but a FlowlakeError, and the batch path agrees
with the per-message path."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowlake.cdc import decode, decode_batch
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import FlowlakeError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ROW_FIELDS = [
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "field": "born"},
    {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "field": "seen"},
    {"type": "string", "optional": True, "name": "io.debezium.time.ZonedTimestamp", "field": "zoned"},
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "price",
    },
    {"type": "bytes", "optional": True, "field": "blob"},
]
ROW_STRUCT = {"type": "struct", "optional": True, "fields": ROW_FIELDS}
ENVELOPE = {
    "type": "struct",
    "fields": [
        {**ROW_STRUCT, "field": "before"},
        {**ROW_STRUCT, "field": "after"},
        {"type": "string", "field": "op"},
    ],
}
SOURCE = {
    "connector": "mysql",
    "db": "inventory",
    "table": "t",
    "file": "mysql-bin.000001",
    "pos": 4,
    "ts_ms": 1,
}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def rows(draw: st.DrawFn) -> dict[str, Any]:
    unscaled = draw(st.integers(-(10**9), 10**9))
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
    return {
        "id": draw(st.integers(0, 5)),
        "name": draw(st.none() | st.text(max_size=5)),
        "born": draw(st.integers(-1000, 30000)),
        "seen": draw(st.integers(0, 2**50)),
        "zoned": "2020-01-01T00:00:00Z",
        "price": base64.b64encode(raw).decode(),
        "blob": base64.b64encode(draw(st.binary(max_size=4))).decode(),
    }


@st.composite
def valid_payloads(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["r", "c", "u", "d"]))
    before: dict[str, Any] | None = draw(rows()) if op in "ud" else None
    shape = draw(st.sampled_from(["full", "full", "key-only", "key-with-nulls", "missing"]))
    if before is not None and shape == "key-only":
        before = {"id": before["id"]}
    elif before is not None and shape == "key-with-nulls":
        before = {name: (value if name == "id" else None) for name, value in before.items()}
    elif shape == "missing" and op == "u":
        before = None
    after = draw(rows()) if op != "d" else None
    payload: dict[str, Any] = {"before": before, "after": after, "source": SOURCE, "op": op, "ts_ms": 5}
    if draw(st.booleans()):
        payload["transaction"] = {"id": "tx1", "total_order": 1, "data_collection_order": 1}
    return payload


def mutate(payload: Any, path: list[Any], value: Any, delete: bool) -> Any:
    """Replace (or delete) the value at a path of dict keys / list indices; stop where it leads nowhere."""
    node = payload
    for step in path[:-1]:
        if (isinstance(node, dict) and step in node) or (
            isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
        ):
            node = node[step]
        else:
            return payload
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
        node[last] = value
    return payload


PATH_KEYS = [
    "op",
    "before",
    "after",
    "source",
    "transaction",
    "ts_ms",
    "id",
    "name",
    "born",
    "seen",
    "zoned",
    "price",
    "blob",
    "payload",
    "schema",
    "fields",
    "parameters",
    "scale",
    "type",
    "pos",
    "file",
    0,
    1,
    2,
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    payload = draw(valid_payloads())
    message: Any = {"schema": ENVELOPE, "payload": payload} if draw(st.booleans()) else payload
    message = orjson.loads(orjson.dumps(message))  # deep copy, so ENVELOPE stays intact
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.lists(st.sampled_from(PATH_KEYS), min_size=1, max_size=4))
        message = mutate(message, path, draw(json_values), draw(st.booleans()))
    data = orjson.dumps(message)
    if draw(st.integers(0, 4)) == 0:  # byte-level damage now and then
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=3)) + data[cut + 1 :]
    return data


def decode_or_error(message: bytes, **options: Any) -> list[Any] | FlowlakeError:
    try:
        return decode(message, **options)
    except FlowlakeError as exc:
        assert str(exc)
        return exc


def without_metadata(message: bytes) -> bytes:
    """The message minus ``source``/``ts_ms``/``transaction``, which only decode() reads and checks."""
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return message
    payload = obj.get("payload") if isinstance(obj, dict) and "op" not in obj else obj
    if isinstance(payload, dict):
        for name in ("source", "ts_ms", "transaction"):
            payload.pop(name, None)
    return orjson.dumps(obj)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_flowlake_errors(data: bytes) -> None:
    decode_or_error(data)
    decode_or_error(data, convert=False, primary_key=["id"])
    assert len(decode_batch([data]).errors) <= 1


@FUZZ
@given(st.lists(mutated_messages(), min_size=1, max_size=6), st.booleans())
def test_mutated_messages_raise_only_flowlake_errors_and_batch_agrees(
    messages: list[bytes], keyed: bool
) -> None:
    key = ["id"] if keyed else None
    batch = decode_batch(messages, primary_key=key)  # must not raise
    failed = {e.index for e in batch.errors}
    kinds = batch.table.column(KIND_COLUMN).to_pylist()
    owners = batch.message_index.to_pylist()
    for index, message in enumerate(messages):
        decode_or_error(message, primary_key=key)
        decode_or_error(message, convert=False, primary_key=key)
        single = decode_or_error(without_metadata(message), primary_key=key)
        if isinstance(single, FlowlakeError):
            assert index in failed, f"decode failed ({single}) but decode_batch accepted message {index}"
        elif index not in failed:  # the batch may still fail a message whose values break a column
            batch_kinds = [k for k, owner in zip(kinds, owners, strict=True) if owner == index]
            assert batch_kinds == [int(c.kind) for c in single]


@FUZZ
@given(st.lists(valid_payloads().map(orjson.dumps), max_size=8), st.booleans())
def test_batch_rows_equal_per_message_rows_for_schemaless_messages(
    messages: list[bytes], keyed: bool
) -> None:
    key = ["id"] if keyed else None
    batch = decode_batch(messages, primary_key=key)
    assert batch.errors == ()
    expected = [(int(c.kind), c.row, c.before_complete) for m in messages for c in decode(m, primary_key=key)]
    columns = [c for c in batch.table.column_names if c != KIND_COLUMN]
    expected = [(k, {c: row.get(c) for c in columns}, complete) for k, row, complete in expected]
    table_rows = batch.table.to_pylist()
    incomplete = set(batch.incomplete_rows)
    got = [(row.pop(KIND_COLUMN), row, i not in incomplete) for i, row in enumerate(table_rows)]
    assert got == expected
