"""Damage done to Debezium messages: structural mutations of a parsed message and byte-level
mutations of an encoded one."""

from __future__ import annotations

import random
import re
from typing import Any, Final

import orjson

from flowlake.cdc import logical_types as lt
from harness.fuzz._common import random_text
from harness.fuzz._debezium_messages import DebeziumTable, payload_of, row_images

# structural mutations of a parsed message ---------------------------------------------------------

_BAD_OPS: Final = ("x", "", "C", "t", "m", None, 1, ["c"], "cc", "d ")


def _random_node(rng: random.Random, obj: Any) -> tuple[Any, Any] | None:
    """A (container, key) pair found by a random walk down a JSON tree; ``None`` for a scalar."""
    node: tuple[Any, Any] | None = None
    while type(obj) in (dict, list) and obj and (node is None or rng.random() < 0.7):
        key = rng.choice(list(obj)) if type(obj) is dict else rng.randrange(len(obj))
        node, obj = (obj, key), obj[key]
    return node


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if roll < 0.12:
        return None
    if roll < 0.22:
        return rng.random() < 0.5
    if roll < 0.4:
        return rng.choice((0, -1, 2**31, -(2**63), 2**64 - 1, rng.randint(-(10**6), 10**6)))
    if roll < 0.5:
        return rng.choice((0.5, -0.0, 1e308, -1e-308, rng.uniform(-1e6, 1e6)))
    if roll < 0.75 or depth > 2:
        return random_text(rng)
    if roll < 0.87:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {random_text(rng, 4): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def mutate_tree(rng: random.Random, obj: Any, table: DebeziumTable) -> Any:
    """Apply one structural mutation to a parsed message (in place where possible)."""
    kind = rng.randrange(11)
    payload, images = payload_of(obj), row_images(obj)
    if kind < 4 and images:
        _mutate_image(rng, rng.choice(images), table, kind)
    elif kind == 4 and type(obj) is dict and type(obj.get("schema")) is dict:
        _mutate_schema_block(rng, obj["schema"])
    elif kind == 5 and payload is not None:
        payload["op"] = rng.choice((*_BAD_OPS, "c", "u", "d", "r"))
    elif kind == 6 and payload is not None:
        field_name = rng.choice(("before", "after", "source", "transaction", "ts_ms", "payload"))
        payload[field_name] = _random_json(rng)
    elif kind == 7 and type(obj) is dict:  # envelope damage
        return rng.choice(
            ({"schema": obj.get("schema"), "payload": None}, {"payload": [obj]}, [obj], payload)
        )
    elif (node := _random_node(rng, obj)) is not None:
        container, key = node
        if kind == 8 and type(container) is dict:
            del container[key]
        else:
            container[key] = _random_json(rng)
    return obj


def _mutate_image(rng: random.Random, image: dict[str, Any], table: DebeziumTable, kind: int) -> None:
    if kind < 2:  # an out-of-range or wrongly typed value of a known column (a private copy of it)
        column = rng.choice(table.columns)
        image[column.name] = orjson.loads(orjson.dumps(rng.choice(column.invalid)))
    elif kind == 2:  # a null or missing key
        if rng.random() < 0.5:
            image["id"] = None
        else:
            image.pop("id", None)
    else:  # a column the schema does not know, maybe a reserved name
        image[rng.choice(("zz_extra", "_kind", "_seq", "Id"))] = _random_json(rng)


def _mutate_schema_block(rng: random.Random, block: dict[str, Any]) -> None:
    fields = block.get("fields")
    if type(fields) is not list or not fields or rng.random() < 0.1:
        block["fields"] = rng.choice(([], "fields", None, [1]))
        return
    row = rng.choice(fields)
    inner = row.get("fields") if type(row) is dict else None
    if type(inner) is not list or not inner:
        return
    target = rng.choice(inner)
    if type(target) is not dict:
        return
    roll = rng.randrange(6)
    if roll == 0:
        target["type"] = rng.choice(("int64", "string", "bytes", "struct", "array", "unknown", 5, None))
    elif roll == 1:
        target["name"] = rng.choice((lt.DATE, lt.ZONED_TIMESTAMP, lt.DECIMAL, lt.TIME, "no.such.Type", 7))
    elif roll == 2:
        target["parameters"] = rng.choice(
            ({"scale": "x"}, {"scale": "-1"}, {"scale": 10**6}, {"connect.decimal.precision": "99"}, [1])
        )
    elif roll == 3:
        target["field"] = rng.choice((None, 5, "", "id"))
    elif roll == 4:
        target.pop("type", None)
    else:
        inner.append(dict(target))  # the same field twice


# byte-level mutations of an encoded message --------------------------------------------------------

_NUMBER: Final = re.compile(rb"(?<=[:\[,])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING: Final = re.compile(rb':"[^"\\]*"')
_BAD_NUMBERS: Final = (
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"18446744073709551616", b"-9223372036854775809",
    b"123456789012345678901234567890", b"1" + b"0" * 400, b"0.1e-400", b"01", b"1.", b"-", b"+1",
)  # fmt: skip


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Apply one byte-level mutation."""
    kind = rng.randrange(10)
    if kind == 0 and data:  # truncated
        return data[: rng.randrange(len(data))]
    if kind == 1 and data:  # flipped bytes
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(len(out))] = rng.randrange(256)
        return bytes(out)
    if kind == 2:  # duplicate keys (the last one wins in JSON parsers)
        key = rng.choice((b'"op":"d",', b'"after":null,', b'"payload":1,', b'"op":"c",', b'"schema":{},'))
        return data.replace(b"{", b"{" + key, 1)
    if kind == 3:
        return rng.choice((b"\xef\xbb\xbf" + data, b" \t" + data + b"\r\n", data + b"x", data + data))
    if kind == 4:
        return rng.choice(
            (rng.randbytes(rng.randint(0, 40)), b"", b"   ", b"null", b"[]", b"1", b'"x"', b"{}")
        )
    return _mutate_token(rng, data, kind) or data


def _mutate_token(rng: random.Random, data: bytes, kind: int) -> bytes | None:
    """Replace a number or extend a string of the message; ``None`` if it has none."""
    matches = list((_NUMBER if kind in (5, 6, 7) else _STRING).finditer(data))
    if not matches:
        return None
    m = rng.choice(matches)
    if kind in (5, 6):  # a number token JSON does not have, or that no column type holds
        return data[: m.start()] + rng.choice(_BAD_NUMBERS) + data[m.end() :]
    if kind == 7:  # deep nesting in place of a value
        depth = rng.choice((40, 300, 1100))
        return data[: m.start()] + b"[" * depth + b"1" + b"]" * depth + data[m.end() :]
    if kind == 8:  # invalid UTF-8, an unpaired surrogate or a NUL inside a string
        bad = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\ud800", b"\\udfff", b"\\ud83d x", b"\x00"))
        return data[: m.end() - 1] + bad + data[m.end() - 1 :]
    huge = rng.choice((b"x", "\U0001f600".encode(), b"\\u00e9")) * rng.choice((5_000, 60_000))
    return data[: m.end() - 1] + huge + data[m.end() - 1 :]
