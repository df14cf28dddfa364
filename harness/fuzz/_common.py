"""What every fuzzer shares: the seeded values it draws (dates and timestamps in years 1-9999,
integers that favour their bounds, awkward text), the equality its checks compare with, and the
cleanup of memory:// warehouses."""

from __future__ import annotations

import base64
import datetime as dt
import math
import random
from typing import Any, Final

DAY_MIN, DAY_MAX = -719_162, 2_932_896  # 0001-01-01 and 9999-12-31
US_MIN, US_MAX = -62_135_596_800_000_000, 253_402_300_799_999_999  # the same years, in µs
EPOCH: Final = dt.datetime(1970, 1, 1)
EPOCH_DATE: Final = dt.date(1970, 1, 1)
PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_ALPHABET: Final = (
    "aZ09 _-.,'\"\\/\t\n"
    + "\u00e9\u00fc\u00df\u4e2d\u6587\u0627\u05d0\u200f\u0301\ufeff\u0000\U0001f600\U0001d11e"
)


def boundary_biased_int(rng: random.Random, lo: int, hi: int) -> int:
    """An integer in [lo, hi], often a bound or a small number."""
    roll = rng.random()
    if roll < 0.05:
        return lo
    if roll < 0.1:
        return hi
    if roll < 0.35:
        return rng.randint(max(lo, -1000), min(hi, 1000))
    return rng.randint(lo, hi)


def random_text(rng: random.Random, longest: int = 12) -> str:
    """Up to ``longest`` characters, mixing ASCII, quotes, escapes, combining marks, NUL and emoji."""
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, longest)))


def b64_int(number: int) -> str:
    """Base64 of a signed big-endian integer, as Debezium encodes decimals."""
    return base64.b64encode(number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True)).decode()


def random_zoned_timestamp(rng: random.Random) -> str:
    """An ISO 8601 timestamp with a UTC offset (sometimes ``Z``), a day inside years 1-9999 either way."""
    moment = EPOCH + dt.timedelta(microseconds=rng.randint(US_MIN + 86_400_000_000, US_MAX - 86_400_000_000))
    minutes = rng.choice((0, 0, 330, -480, 840, -720))
    zone = dt.timezone(dt.timedelta(minutes=minutes))
    text = moment.replace(tzinfo=zone).isoformat()
    return text.replace("+00:00", "Z") if rng.random() < 0.5 else text


def same_value(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN, -0.0 equals 0.0 (as in Arrow) and a bool never equals a number."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is dict and type(b) is dict:
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if type(a) in (list, tuple) and type(b) in (list, tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is bool or type(b) is bool:
        return a is b
    return bool(a == b)


def drop_memory_warehouse(url: str) -> None:
    """Forget a memory:// warehouse (``rm`` of the memory filesystem is quadratic in its file count)."""
    from fsspec.implementations.memory import MemoryFileSystem

    prefix = "/" + url.removeprefix("memory://").strip("/")
    for key in [k for k in MemoryFileSystem.store if k == prefix or k.startswith(prefix + "/")]:
        del MemoryFileSystem.store[key]
    MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs if not d.startswith(prefix)]
