"""The binlog's binary DECIMAL, DATE, DATETIME2 and TIMESTAMP2 values read by columns
(flowlake.cdc.mysql_rows) against encoders written from MySQL's documented formats: every packed-digit
group width, every fractional-seconds width, signs, zero dates. (The integration test
test_cdc_mariadb_columns.py compares them with mysql-replication on a real server.)"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowlake.cdc.mysql_rows import _date, _datetime2, _decimal, _timestamp2

GROUP_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


def encode_decimal(unscaled: int, precision: int, scale: int) -> bytes:
    """MySQL's decimal2bin of ``unscaled`` times 10^-scale: digit groups big-endian, sign bit flipped,
    negatives inverted."""
    sign = unscaled < 0
    text = str(abs(unscaled)).rjust(precision, "0")
    whole, part = text[: precision - scale], text[precision - scale :]
    out = bytearray()
    head = len(whole) % 9
    if head:
        out += int(whole[:head]).to_bytes(GROUP_BYTES[head], "big")
    for i in range(head, len(whole), 9):
        out += int(whole[i : i + 9]).to_bytes(4, "big")
    for i in range(0, len(part) - len(part) % 9, 9):
        out += int(part[i : i + 9]).to_bytes(4, "big")
    if len(part) % 9:
        rest = part[len(part) - len(part) % 9 :]
        out += int(rest).to_bytes(GROUP_BYTES[len(rest)], "big")
    if sign:
        out = bytearray(b ^ 0xFF for b in out)
    out[0] ^= 0x80
    return bytes(out)


@st.composite
def decimals(draw: st.DrawFn) -> tuple[int, int, int]:
    precision = draw(st.integers(1, 65))
    scale = draw(st.integers(0, min(precision, 30)))
    return draw(st.integers(-(10**precision) + 1, 10**precision - 1)), precision, scale


@given(decimals())
def test_decimals_read_back_with_their_scale(case: tuple[int, int, int]) -> None:
    unscaled, precision, scale = case
    value = Decimal(f"{unscaled}E-{scale}")
    raw = encode_decimal(unscaled, precision, scale)
    read, at = _decimal(precision, scale)(b"\x00" + raw + b"\x00", 1)
    assert at == 1 + len(raw)
    assert read == value and read.as_tuple().exponent == -scale
    assert str(read) == str(Decimal(f"{value:f}"))  # what the library's digit text parses to


def test_decimal_zero_keeps_its_scale_and_bytes_that_are_no_decimal_decline() -> None:
    assert str(_decimal(12, 2)(encode_decimal(0, 12, 2), 0)[0]) == "0.00"
    broken = bytes([0x80]) + (10**9).to_bytes(4, "big") + bytes([1])  # a 9-digit group beyond 999999999
    with pytest.raises(ValueError, match="DECIMAL"):
        _decimal(12, 2)(broken, 0)


def fraction_bytes(micros: int, fsp: int) -> bytes:
    size = (fsp + 1) // 2
    stored = micros // 10 ** (6 - fsp) * (10 if fsp % 2 else 1)
    return stored.to_bytes(size, "big") if size else b""


@given(st.integers(1, 2**31 - 1), st.integers(0, 999_999), st.integers(0, 6))
def test_timestamps_are_naive_utc_with_their_fraction(seconds: int, micros: int, fsp: int) -> None:
    kept = micros // 10 ** (6 - fsp) * 10 ** (6 - fsp)
    raw = seconds.to_bytes(4, "big") + fraction_bytes(micros, fsp)
    value, at = _timestamp2(fsp)(raw, 0)
    assert at == len(raw)
    assert value == dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds, microseconds=kept)


def test_the_zero_timestamp_is_null() -> None:
    assert _timestamp2(3)(bytes(6), 0) == (None, 6)


@given(st.datetimes(dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)), st.integers(0, 6))
def test_datetimes_read_back(value: dt.datetime, fsp: int) -> None:
    packed = ((value.year * 13 + value.month) << 22 | value.day << 17 | value.hour << 12
              | value.minute << 6 | value.second) | 1 << 39  # fmt: skip
    raw = packed.to_bytes(5, "big") + fraction_bytes(value.microsecond, fsp)
    kept = value.microsecond // 10 ** (6 - fsp) * 10 ** (6 - fsp)
    assert _datetime2(fsp)(raw, 0) == (value.replace(microsecond=kept), len(raw))


def test_zero_and_impossible_dates_are_null() -> None:
    assert _datetime2(0)((1 << 39).to_bytes(5, "big"), 0) == (None, 5)  # 0000-00-00 00:00:00
    feb30 = ((2026 * 13 + 2) << 22 | 30 << 17) | 1 << 39
    assert _datetime2(0)(feb30.to_bytes(5, "big"), 0) == (None, 5)
    assert _date()(bytes(3), 0) == (None, 3)
    assert _date()((2026 << 9 | 12 << 5 | 7).to_bytes(3, "little"), 0) == (dt.date(2026, 12, 7), 3)
