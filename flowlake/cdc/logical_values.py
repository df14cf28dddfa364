"""Debezium and Kafka Connect logical types, one JSON value at a time.

Each converter here takes one non-null JSON value of a column, checks its JSON type and range, and
returns the Python value (``days_to_date``, ``base64_to_decimal``, …) or a value that ``pa.array``
accepts for the column's Arrow type (the checked time-of-day integers, ``zoned_to_micros``, …). A
wrong value raises :class:`CorruptRecordError` (never a bare ``TypeError``/``ValueError``) that
quotes the input cut short (:func:`quote`). :mod:`flowlake.cdc.logical_types` combines these into
one decoder per column and re-exports the public names; import them from there.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Final, Literal

import pyarrow as pa

from flowlake.errors import CorruptRecordError

DecimalHandling = Literal["precise", "string", "double"]
"""How a decimal column's JSON strings are read: base64 bytes (``precise``) or decimal text."""

Converter = Callable[[Any], Any]
"""A function from one non-null JSON value to a Python or Arrow-ready value."""

DEFAULT_DECIMAL_PRECISION: Final = 38
"""Precision used for a Connect ``Decimal`` without ``connect.decimal.precision``."""

MAX_DECIMAL_SCALE: Final = 16_383
"""Largest decimal scale accepted (PostgreSQL's limit); guards against absurd scales in bad input."""

_EXACT: Final = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_EPOCH: Final = dt.datetime(1970, 1, 1)  # Debezium Timestamp is naive
_EPOCH_UTC: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROS_PER_DAY: Final = 86_400_000_000
_MIN_MICROS: Final = -62_135_596_800_000_000
"""0001-01-01 00:00 in µs since the epoch: the earliest instant a Python ``datetime`` holds."""
_MAX_MICROS: Final = 253_402_300_799_999_999
"""9999-12-31 23:59:59.999999 in µs since the epoch: the latest."""
_MIN_DAYS: Final = -719_162
_MAX_DAYS: Final = 2_932_896
_ONE_MICRO: Final = dt.timedelta(microseconds=1)
UNIT_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

DATE: Final = "io.debezium.time.Date"
TIME: Final = "io.debezium.time.Time"
MICRO_TIME: Final = "io.debezium.time.MicroTime"
NANO_TIME: Final = "io.debezium.time.NanoTime"
TIMESTAMP: Final = "io.debezium.time.Timestamp"
MICRO_TIMESTAMP: Final = "io.debezium.time.MicroTimestamp"
NANO_TIMESTAMP: Final = "io.debezium.time.NanoTimestamp"
ZONED_TIMESTAMP: Final = "io.debezium.time.ZonedTimestamp"
DECIMAL: Final = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL: Final = "io.debezium.data.VariableScaleDecimal"
CONNECT_DATE: Final = "org.apache.kafka.connect.data.Date"
CONNECT_TIME: Final = "org.apache.kafka.connect.data.Time"
CONNECT_TIMESTAMP: Final = "org.apache.kafka.connect.data.Timestamp"


# --- value conversions (each raises CorruptRecordError on a wrong JSON type or value) ---------------


def quote(value: Any, limit: int = 60) -> str:
    """``repr`` of a value from the input, cut to about ``limit`` characters (input can be huge)."""
    if type(value) is str and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    if type(value) is int and value.bit_length() > 200:
        return f"an integer of about {value.bit_length() * 3 // 10} digits"
    if type(value) in (list, dict) and len(value) > limit:
        return f"a {type(value).__name__} of {len(value)} items"
    try:
        text = repr(value)
    except RecursionError:
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise CorruptRecordError(f"expected {what} as a JSON integer, got {quote(value)}")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise CorruptRecordError(f"expected {what} as a JSON string, got {quote(value)}")
    return value


def days_to_date(value: Any) -> dt.date:
    """Convert ``io.debezium.time.Date`` (days since 1970-01-01) to a ``date``."""
    days = as_int(value, "days since 1970-01-01")
    try:
        return _EPOCH_DATE + dt.timedelta(days=days)
    except OverflowError as exc:
        raise range_error(pa.date32(), days) from exc


def _time_of_day(micros: int, raw: int, unit: str) -> dt.time:
    if not 0 <= micros < _MICROS_PER_DAY:
        raise CorruptRecordError(f"{raw} {unit} is not a time of day (0 <= t < 24h)")
    seconds, micro = divmod(micros, 1_000_000)
    minutes, second = divmod(seconds, 60)
    return dt.time(minutes // 60, minutes % 60, second, micro)


def millis_to_time(value: Any) -> dt.time:
    """Convert ``io.debezium.time.Time`` (milliseconds of the day) to a ``time``."""
    millis = as_int(value, "milliseconds of the day")
    return _time_of_day(millis * 1_000, millis, "ms")


def micros_to_time(value: Any) -> dt.time:
    """Convert ``io.debezium.time.MicroTime`` (microseconds of the day) to a ``time``."""
    micros = as_int(value, "microseconds of the day")
    return _time_of_day(micros, micros, "µs")


def nanos_to_time(value: Any) -> dt.time:
    """Convert ``io.debezium.time.NanoTime`` to a ``time``, truncated to microseconds."""
    nanos = as_int(value, "nanoseconds of the day")
    return _time_of_day(nanos // 1_000, nanos, "ns")


def _checked_time_of_day(per_day: int, unit: str) -> Converter:
    """A to_arrow converter that checks a time-of-day integer and passes it on unchanged."""

    def check(value: Any) -> int:
        number = as_int(value, f"{unit} of the day")
        if not 0 <= number < per_day:
            raise CorruptRecordError(f"{number} {unit} is not a time of day (0 <= t < 24h)")
        return number

    return check


MILLIS_OF_DAY: Final = _checked_time_of_day(86_400_000, "ms")
MICROS_OF_DAY: Final = _checked_time_of_day(_MICROS_PER_DAY, "µs")
NANOS_OF_DAY: Final = _checked_time_of_day(_MICROS_PER_DAY * 1_000, "ns")


def naive_timestamp(micros: int, raw: int, unit: str) -> dt.datetime:
    try:
        return _EPOCH + dt.timedelta(microseconds=micros)
    except OverflowError as exc:
        raise CorruptRecordError(
            f"{raw} {unit} since the epoch is outside the supported timestamps (years 1-9999)"
        ) from exc


def epoch_range(arrow_type: pa.DataType) -> tuple[int, int] | None:
    """The values of a date or timestamp type that fall in years 1-9999 (what ``decode`` can return)."""
    if arrow_type == pa.date32():
        return _MIN_DAYS, _MAX_DAYS
    if not pa.types.is_timestamp(arrow_type):
        return None
    per = UNIT_PER_SECOND[arrow_type.unit]
    low = -((-_MIN_MICROS * per) // 1_000_000)
    high = ((_MAX_MICROS + 1) * per - 1) // 1_000_000
    return max(low, -(2**63)), min(high, 2**63 - 1)


def range_error(arrow_type: pa.DataType, value: int) -> CorruptRecordError:
    if arrow_type == pa.date32():
        return CorruptRecordError(
            f"{value} days since 1970-01-01 is outside the supported dates (years 1-9999)"
        )
    unit = "µs" if arrow_type.unit == "us" else arrow_type.unit
    return CorruptRecordError(
        f"{value} {unit} since the epoch is outside the supported timestamps (years 1-9999)"
    )


def millis_to_timestamp(value: Any) -> dt.datetime:
    """Convert ``io.debezium.time.Timestamp`` (ms since the epoch, no zone) to a naive ``datetime``."""
    millis = as_int(value, "milliseconds since the epoch")
    return naive_timestamp(millis * 1_000, millis, "ms")


def micros_to_timestamp(value: Any) -> dt.datetime:
    """Convert ``io.debezium.time.MicroTimestamp`` (µs since the epoch) to a naive ``datetime``."""
    micros = as_int(value, "microseconds since the epoch")
    return naive_timestamp(micros, micros, "µs")


def nanos_to_timestamp(value: Any) -> dt.datetime:
    """Convert ``io.debezium.time.NanoTimestamp`` to a naive ``datetime``, truncated to microseconds."""
    nanos = as_int(value, "nanoseconds since the epoch")
    if not -(2**63) <= nanos < 2**63:
        raise range_error(pa.timestamp("ns"), nanos)
    return naive_timestamp(nanos // 1_000, nanos, "ns")


def zoned_to_datetime(value: Any) -> dt.datetime:
    """Convert ``io.debezium.time.ZonedTimestamp`` (ISO-8601 with offset) to an aware UTC ``datetime``."""
    text = _str(value, "an ISO-8601 timestamp with offset")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise CorruptRecordError(f"{quote(text)} is not an ISO-8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise CorruptRecordError(f"{quote(text)} has no zone offset; ZonedTimestamp needs one (e.g. 'Z')")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError as exc:
        raise CorruptRecordError(f"{quote(text)} is outside the supported timestamps (years 1-9999)") from exc


def zoned_to_micros(value: Any) -> int:
    """Convert ``io.debezium.time.ZonedTimestamp`` to microseconds since the epoch (UTC)."""
    return (zoned_to_datetime(value) - _EPOCH_UTC) // _ONE_MICRO


def base64_to_bytes(value: Any) -> bytes:
    """Decode a Connect ``bytes`` value (standard base64 text)."""
    text = _str(value, "base64 bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptRecordError(f"{quote(text, 40)} is not valid base64") from exc


def unscaled_to_decimal(unscaled: int, scale: int) -> Decimal:
    """Build ``unscaled * 10**-scale`` exactly (no context rounding).

    Raises:
        CorruptRecordError: If ``|scale|`` exceeds :data:`MAX_DECIMAL_SCALE`.
    """
    if not -MAX_DECIMAL_SCALE <= scale <= MAX_DECIMAL_SCALE:
        raise CorruptRecordError(f"decimal scale {scale} is outside ±{MAX_DECIMAL_SCALE}")
    return Decimal(unscaled).scaleb(-scale, _EXACT)


def base64_to_decimal(value: Any, scale: int) -> Decimal:
    """Decode a Connect ``Decimal``: base64 of the big-endian two's-complement unscaled integer."""
    return unscaled_to_decimal(_base64_unscaled(value), scale)


def _base64_unscaled(value: Any) -> int:
    raw = base64_to_bytes(value)
    if not raw:
        raise CorruptRecordError("a Decimal needs at least one byte of unscaled value, got ''")
    return int.from_bytes(raw, "big", signed=True)


def base64_fitter(precision: int, scale: int) -> Converter:
    """``fit_decimal(base64_to_decimal(value, scale), precision, scale)``, checked on the integer."""
    limit = 10**precision

    def fitted(value: Any) -> Decimal:
        unscaled = _base64_unscaled(value)
        if -limit < unscaled < limit:
            return unscaled_to_decimal(unscaled, scale)
        return fit_decimal(unscaled_to_decimal(unscaled, scale), precision, scale)  # raises, naming it

    return fitted


def variable_scale_to_decimal(value: Any) -> Decimal:
    """Decode ``io.debezium.data.VariableScaleDecimal``: ``{"scale": int, "value": base64}``."""
    if type(value) is not dict:
        raise CorruptRecordError(
            f"expected a VariableScaleDecimal object {{scale, value}}, got {quote(value)}"
        )
    scale = as_int(value.get("scale"), "VariableScaleDecimal 'scale'")
    return base64_to_decimal(value.get("value"), scale)


def text_to_decimal(value: Any) -> Decimal:
    """Parse a decimal sent as text (``decimal.handling.mode=string``); NaN and infinities are refused."""
    text = _str(value, "decimal text")
    try:
        result = Decimal(text)
    except InvalidOperation as exc:
        raise CorruptRecordError(f"{quote(text, 40)} is not a decimal number") from exc
    if not result.is_finite():
        raise CorruptRecordError(f"{quote(text)} cannot be stored in a decimal column")
    return result


def number_to_decimal(value: Any, scale: int | None) -> Decimal:
    """Convert a JSON number to ``Decimal``; a float is rounded half-even to ``scale`` digits."""
    if type(value) is int:
        return Decimal(value)
    if type(value) is not float:
        raise CorruptRecordError(f"expected a decimal as a JSON number, got {quote(value)}")
    result = Decimal(repr(value))
    if not result.is_finite():
        raise CorruptRecordError(f"{value!r} cannot be stored in a decimal column")
    return result if scale is None else result.quantize(Decimal(1).scaleb(-scale), ROUND_HALF_EVEN, _EXACT)


def fit_decimal(value: Decimal, precision: int, scale: int) -> Decimal:
    """Check that ``value`` fits ``decimal(precision, scale)`` without rounding, as Arrow requires.

    Raises:
        CorruptRecordError: If it has more digits before or after the point than the type holds.
    """
    if value.is_zero():
        return Decimal(0).scaleb(-scale)
    if value.adjusted() >= precision - scale:
        raise CorruptRecordError(
            f"{quote(value)} does not fit decimal({precision}, {scale}): "
            f"more than {precision - scale} digits before the point"
        )
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -scale:
        fitted = value.quantize(Decimal(1).scaleb(-scale), ROUND_HALF_EVEN, _EXACT)
        if fitted != value:
            raise CorruptRecordError(
                f"{quote(value)} does not fit decimal({precision}, {scale}): "
                f"more than {scale} digits after the point"
            )
        return fitted
    return value


def any_to_decimal(value: Any, scale: int | None, handling: DecimalHandling) -> Decimal:
    """Read a decimal that may arrive as base64/text string, number or VariableScaleDecimal object."""
    if type(value) is str:
        if handling == "precise":
            return base64_to_decimal(value, scale if scale is not None else 0)
        return text_to_decimal(value)
    if type(value) is dict:
        return variable_scale_to_decimal(value)
    return number_to_decimal(value, scale)


# --- plain Connect types ---------------------------------------------------------------------------


def int_range(bits: int, *, signed: bool = True) -> Converter:
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)

    def convert(value: Any) -> int:
        number = as_int(value, f"a {bits}-bit integer")
        if not low <= number <= high:
            raise CorruptRecordError(f"{number} does not fit in {bits} bits")
        return number

    return convert


def to_float(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise CorruptRecordError(f"expected a JSON number, got {quote(value)}")


def to_bool(value: Any) -> bool:
    if type(value) is not bool:
        raise CorruptRecordError(f"expected true or false, got {quote(value)}")
    return value


def to_str(value: Any) -> str:
    return _str(value, "a string")


def identity(value: Any) -> Any:
    return value
