"""Tagged JSON for records that become dead letters: every value comes back exactly as it was.

Plain JSON would lose what a row image holds (bytes, decimals, durations, datetimes, NaN, integers
beyond 64 bits, the difference between the string ``"1.5"`` and the decimal ``1.5``). A value that
JSON cannot carry as itself is written as a one-key object naming its type:
``{"$bytes": base64}``, ``{"$decimal": "1.50"}``, ``{"$duration_us": -3020399000000}``,
``{"$datetime": "2026-01-01T10:00:00.250000+00:00"}``, ``{"$date": "..."}``, ``{"$time": "..."}``,
``{"$float": "nan"}``, ``{"$int": "340282366920938463463374607431768211456"}``. Dict keys that start
with ``$`` are escaped as ``$$…``, so a row can hold any column name.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

_INT64: Final = 2**63


def dump_record(record: Any) -> bytes:
    """``record`` (dicts, lists and scalar values) as tagged JSON bytes; :func:`load_record` inverts it."""
    return orjson.dumps(_tag(record))


def load_record(raw: bytes | str) -> Any:
    """The record :func:`dump_record` wrote, with every value of its original type."""
    return _untag(orjson.loads(raw))


def to_json_value(value: Any) -> Any:
    """``value`` as plain JSON data (dicts, lists, str, numbers), tagged; :func:`from_json_value` inverts it.

    >>> from_json_value(to_json_value([b"\\x80", dt.timedelta(seconds=-0.5)]))
    [b'\\x80', datetime.timedelta(days=-1, seconds=86399, microseconds=500000)]
    """
    return _tag(value)


def from_json_value(data: Any) -> Any:
    """The value :func:`to_json_value` gave ``data`` for (plain JSON values come back as they are)."""
    return _untag(data)


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < 2**64 else {"$int": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Mapping):
        return {(f"${k}" if str(k).startswith("$") else str(k)): _tag(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.timedelta):
        return {"$duration_us": (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds}
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, set | frozenset):
        return [_tag(v) for v in sorted(value, key=repr)]
    return {"$repr": repr(value)}


_DECODERS: Final[dict[str, Callable[[Any], Any]]] = {
    "$bytes": base64.b64decode,
    "$decimal": decimal.Decimal,
    "$duration_us": lambda v: dt.timedelta(microseconds=int(v)),
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$float": float,
    "$int": int,
    "$repr": str,
}


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        decoder = _DECODERS.get(tag)
        if decoder is not None:
            return decoder(inner)
    return {(k[1:] if k.startswith("$$") else k): _untag(v) for k, v in value.items()}
