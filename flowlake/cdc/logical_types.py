"""Debezium and Kafka Connect logical types: from JSON values to Python and Arrow values.

A Debezium JSON message carries each column as a plain JSON value; what the value means is told
by the Kafka Connect schema block (``{"schema": ..., "payload": ...}`` envelopes) or, when the
schema is excluded, by an Arrow schema that the caller passes. This module turns either of those
into one :class:`FieldDecoder` per column, which knows how to produce a Python value (the
friendly per-row API) and how to build an Arrow column from a list of JSON values (the batch path).

Mapping (JSON value → Python value → Arrow type):

================================================  ======================  ========================
Connect type / logical name                       JSON value              Arrow type
================================================  ======================  ========================
int8, int16, int32, int64                          integer                 int8 … int64
float, double                                      number                  float32, float64
boolean                                            true/false              bool
string, io.debezium.data.Json/Enum/EnumSet/Uuid   string (kept)           string
bytes, io.debezium.data.Bits                       base64 string           binary
io.debezium.time.Date, connect ``Date``            days since 1970-01-01   date32
io.debezium.time.Time, connect ``Time``            ms of the day           time32[ms]
io.debezium.time.MicroTime                         µs of the day           time64[us]
io.debezium.time.NanoTime                          ns of the day           time64[ns]
io.debezium.time.Timestamp, connect ``Timestamp``  ms since epoch          timestamp[ms] (naive)
io.debezium.time.MicroTimestamp                    µs since epoch          timestamp[us] (naive)
io.debezium.time.NanoTimestamp                     ns since epoch          timestamp[ns] (naive)
io.debezium.time.ZonedTimestamp                    ISO-8601 with offset    timestamp[us, tz=UTC]
org.apache.kafka.connect.data.Decimal             base64 two's-complement decimal128(p, scale)
io.debezium.data.VariableScaleDecimal             {"scale", "value"}      string (exact text)
struct, array, map                                 object, array           struct, list, map
================================================  ======================  ========================

Decimal precision comes from the ``connect.decimal.precision`` parameter, else
:data:`DEFAULT_DECIMAL_PRECISION` (38); above 38 digits the column is ``decimal256``. A
VariableScaleDecimal has no fixed scale, so its lossless Arrow form is its decimal text; pass an
explicit Arrow schema with a decimal type to get a numeric column. Python values of the
nanosecond types are truncated to microseconds (``datetime`` has no finer unit); Arrow keeps ns.

With ``decimal.handling.mode=string`` or ``double`` the schema block says ``string``/``double``;
such a column only becomes a decimal when an explicit Arrow schema says so. Then a JSON number is
taken as is (a float is rounded half-even to the column's scale), an object as a
VariableScaleDecimal, and a string as base64 bytes (``decimal_handling="precise"``, Debezium's
default) or as decimal text (``"string"``/``"double"``).

Every conversion checks the JSON type it is given and raises :class:`CorruptRecordError` (never a
bare ``TypeError``/``ValueError``); :meth:`FieldDecoder.python_value` adds the field name. The
Python values (:meth:`FieldDecoder.python_value`) and the Arrow columns
(:meth:`FieldDecoder.build_array`, nested values included) accept exactly the same values: dates and
timestamps in years 1-9999 (what ``datetime`` holds; ns timestamps within int64), decimals that fit
their column's precision and scale without rounding (a float is rounded to the scale first), and
numbers for float columns (never ``true``/``false``). A ``Decimal`` must sit on Connect ``bytes`` and
a ``VariableScaleDecimal`` on ``struct``, a struct may not name a field twice, and input quoted in
messages is cut short (:func:`quote`).

The per-value converters live in :mod:`flowlake.cdc.logical_values` and are re-exported here;
this module builds the per-column :class:`FieldDecoder` from a schema block or an Arrow type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from flowlake.cdc.logical_values import (
    CONNECT_DATE,
    CONNECT_TIME,
    CONNECT_TIMESTAMP,
    DATE,
    DECIMAL,
    DEFAULT_DECIMAL_PRECISION,
    MAX_DECIMAL_SCALE,
    MICRO_TIME,
    MICRO_TIMESTAMP,
    MICROS_OF_DAY,
    MILLIS_OF_DAY,
    NANO_TIME,
    NANO_TIMESTAMP,
    NANOS_OF_DAY,
    TIME,
    TIMESTAMP,
    UNIT_PER_SECOND,
    VARIABLE_SCALE_DECIMAL,
    ZONED_TIMESTAMP,
    Converter,
    DecimalHandling,
    any_to_decimal,
    as_int,
    base64_fitter,
    base64_to_bytes,
    base64_to_decimal,
    days_to_date,
    epoch_range,
    fit_decimal,
    identity,
    int_range,
    micros_to_time,
    micros_to_timestamp,
    millis_to_time,
    millis_to_timestamp,
    naive_timestamp,
    nanos_to_time,
    nanos_to_timestamp,
    number_to_decimal,
    quote,
    range_error,
    text_to_decimal,
    to_bool,
    to_float,
    to_str,
    unscaled_to_decimal,
    variable_scale_to_decimal,
    zoned_to_datetime,
    zoned_to_micros,
)
from flowlake.errors import CorruptRecordError

__all__ = [
    "CONNECT_DATE",
    "CONNECT_TIME",
    "CONNECT_TIMESTAMP",
    "DATE",
    "DECIMAL",
    "DEFAULT_DECIMAL_PRECISION",
    "MAX_DECIMAL_SCALE",
    "MICRO_TIME",
    "MICRO_TIMESTAMP",
    "NANO_TIME",
    "NANO_TIMESTAMP",
    "TIME",
    "TIMESTAMP",
    "VARIABLE_SCALE_DECIMAL",
    "ZONED_TIMESTAMP",
    "Converter",
    "DecimalHandling",
    "FieldDecoder",
    "any_to_decimal",
    "base64_to_bytes",
    "base64_to_decimal",
    "days_to_date",
    "decoder_for_arrow",
    "decoder_from_connect",
    "fit_decimal",
    "micros_to_time",
    "micros_to_timestamp",
    "millis_to_time",
    "millis_to_timestamp",
    "nanos_to_time",
    "nanos_to_timestamp",
    "number_to_decimal",
    "quote",
    "struct_decoders",
    "text_to_decimal",
    "unscaled_to_decimal",
    "variable_scale_to_decimal",
    "zoned_to_datetime",
    "zoned_to_micros",
]


# --- decoders -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldDecoder:
    """How to read one column's JSON values.

    Attributes:
        name: Column name (``parent.child`` for nested fields), used in error messages.
        arrow_type: Arrow type of the decoded column.
        to_python: Converts one non-null JSON value to its Python value; validates the JSON type.
        to_arrow: Converts one non-null JSON value to a value ``pa.array`` accepts for
            ``arrow_type``; ``None`` when the JSON value can be handed to Arrow as is.
        logical_name: The Connect/Debezium logical type name, if any.
        nullable: Whether the schema declared the field optional.
    """

    name: str
    arrow_type: pa.DataType
    to_python: Converter
    to_arrow: Converter | None = None
    logical_name: str | None = None
    nullable: bool = True

    def python_value(self, value: Any) -> Any:
        """Convert one JSON value (``None`` stays ``None``) to its Python value.

        Raises:
            CorruptRecordError: If the value has the wrong JSON type or is out of range; the
                message names the field and its logical type.
        """
        if value is None:
            return None
        try:
            return self.to_python(value)
        except CorruptRecordError as exc:
            raise CorruptRecordError(f"field {quote(self.name)}{self._label()}: {exc}") from exc

    def build_array(self, values: list[Any]) -> pa.Array:
        """Build this column from JSON values in one ``pa.array`` call.

        Raises:
            CorruptRecordError: If a converter rejects a value.
            pyarrow.ArrowException: If Arrow rejects a value (wrong type, overflow, lost digits).
        """
        conv = self.to_arrow
        if conv is not None:
            values = [None if v is None else conv(v) for v in values]
        storage = _INT_STORAGE.get(self.arrow_type)
        if storage is not None:
            return _build_from_ints(values, storage, self.arrow_type)
        if pa.types.is_floating(self.arrow_type):
            kinds = set(map(type, values))
            if bool in kinds:  # Arrow would take them as 1.0 and 0.0
                raise CorruptRecordError("expected a JSON number, got true or false")
            if int in kinds:  # rounded as float() does, where Arrow refuses inexact integers
                values = [float(v) if type(v) is int else v for v in values]
        return pa.array(values, type=self.arrow_type)

    def _label(self) -> str:
        label = self.logical_name or str(self.arrow_type)
        return f" ({label if len(label) <= 80 else label[:80] + '...'})"


_INT_STORAGE: Final[dict[pa.DataType, pa.DataType]] = {
    pa.int8(): pa.int8(),
    pa.int16(): pa.int16(),
    pa.int32(): pa.int32(),
    pa.int64(): pa.int64(),
    pa.uint8(): pa.uint8(),
    pa.uint16(): pa.uint16(),
    pa.uint32(): pa.uint32(),
    pa.uint64(): pa.uint64(),
    pa.date32(): pa.int32(),
    pa.time32("ms"): pa.int32(),
    pa.time32("s"): pa.int32(),
    **{pa.time64(u): pa.int64() for u in ("us", "ns")},
    **{pa.timestamp(u): pa.int64() for u in ("s", "ms", "us", "ns")},
    **{pa.timestamp(u, tz="UTC"): pa.int64() for u in ("s", "ms", "us", "ns")},
}
"""Types built from JSON integers: inferred, then checked and safely cast (no silent truncation)."""


def _build_from_ints(values: list[Any], storage: pa.DataType, target: pa.DataType) -> pa.Array:
    inferred = pa.array(values)
    kind = inferred.type
    if not (pa.types.is_integer(kind) or pa.types.is_null(kind)):
        raise CorruptRecordError(
            f"expected JSON integers for a {target} column, got {quote(str(kind))} values"
        )
    ints = inferred.cast(storage)
    bounds = epoch_range(target)
    if bounds is not None and len(ints) > ints.null_count:
        low, high = pc.min_max(ints).values()
        if low.as_py() < bounds[0] or high.as_py() > bounds[1]:
            outside = pc.or_(pc.less(ints, bounds[0]), pc.greater(ints, bounds[1]))
            raise range_error(target, ints[pc.index(outside, True).as_py()].as_py())
    return ints.cast(target)


_PLAIN: Final[dict[str, tuple[pa.DataType, Converter, Converter | None]]] = {
    "int8": (pa.int8(), int_range(8), None),
    "int16": (pa.int16(), int_range(16), None),
    "int32": (pa.int32(), int_range(32), None),
    "int64": (pa.int64(), int_range(64), None),
    "float": (pa.float32(), to_float, None),
    "float32": (pa.float32(), to_float, None),
    "double": (pa.float64(), to_float, None),
    "float64": (pa.float64(), to_float, None),
    "boolean": (pa.bool_(), to_bool, None),
    "string": (pa.string(), to_str, None),
    "bytes": (pa.binary(), base64_to_bytes, base64_to_bytes),
}
"""Connect base types: (Arrow type, to_python, to_arrow)."""

_FIXED_LOGICAL: Final[dict[str, tuple[frozenset[str], pa.DataType, Converter, Converter | None]]] = {
    DATE: (frozenset({"int32", "int64"}), pa.date32(), days_to_date, None),
    CONNECT_DATE: (frozenset({"int32", "int64"}), pa.date32(), days_to_date, None),
    TIME: (frozenset({"int32", "int64"}), pa.time32("ms"), millis_to_time, MILLIS_OF_DAY),
    CONNECT_TIME: (frozenset({"int32", "int64"}), pa.time32("ms"), millis_to_time, MILLIS_OF_DAY),
    MICRO_TIME: (frozenset({"int64"}), pa.time64("us"), micros_to_time, MICROS_OF_DAY),
    NANO_TIME: (frozenset({"int64"}), pa.time64("ns"), nanos_to_time, NANOS_OF_DAY),
    TIMESTAMP: (frozenset({"int64"}), pa.timestamp("ms"), millis_to_timestamp, None),
    CONNECT_TIMESTAMP: (frozenset({"int64"}), pa.timestamp("ms"), millis_to_timestamp, None),
    MICRO_TIMESTAMP: (frozenset({"int64"}), pa.timestamp("us"), micros_to_timestamp, None),
    NANO_TIMESTAMP: (frozenset({"int64"}), pa.timestamp("ns"), nanos_to_timestamp, None),
    ZONED_TIMESTAMP: (
        frozenset({"string"}),
        pa.timestamp("us", tz="UTC"),
        zoned_to_datetime,
        zoned_to_micros,
    ),
}
"""Logical types with a fixed Arrow type: (allowed Connect types, Arrow type, to_python, to_arrow)."""


_DECIMAL_BASE: Final = {DECIMAL: "bytes", VARIABLE_SCALE_DECIMAL: "struct"}
"""The Connect type each decimal logical type sits on."""


def _schema_error(name: str, problem: str) -> CorruptRecordError:
    return CorruptRecordError(f"schema block of field {quote(name)}: {problem}")


def _param_int(name: str, params: Mapping[str, Any], key: str) -> int | None:
    raw = params.get(key)
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise _schema_error(name, f"parameter {key!r} must be an integer, got {quote(raw)}") from None


def _decimal_type(precision: int | None, scale: int) -> pa.DataType:
    digits = max(precision if precision is not None else DEFAULT_DECIMAL_PRECISION, scale, 1)
    if digits <= 38:
        return pa.decimal128(digits, scale)
    if digits <= 76:
        return pa.decimal256(digits, scale)
    raise CorruptRecordError(f"decimal precision {digits} exceeds Arrow's maximum of 76 digits")


def _decimal_decoder(name: str, params: Mapping[str, Any], nullable: bool) -> FieldDecoder:
    scale = _param_int(name, params, "scale") or 0
    precision = _param_int(name, params, "connect.decimal.precision")
    if scale < 0:
        raise _schema_error(name, f"negative decimal scale {scale} is not supported")

    arrow_type = _decimal_type(precision, scale)
    convert = base64_fitter(int(arrow_type.precision), scale)
    return FieldDecoder(name, arrow_type, convert, convert, DECIMAL, nullable)


def _variable_scale_text(value: Any) -> str:
    return format(variable_scale_to_decimal(value), "f")


def decoder_from_connect(name: str, block: Any) -> FieldDecoder:
    """Build the decoder for one field of a Kafka Connect schema block.

    Args:
        name: Field name, used in error messages.
        block: The field's schema, e.g. ``{"type": "bytes", "name": "...Decimal", "parameters": {...}}``.

    Returns:
        The field's decoder; unknown logical names fall back to the Connect base type.

    Raises:
        CorruptRecordError: If the block is malformed or a logical type sits on the wrong base type.
    """
    if type(block) is not dict:
        raise _schema_error(name, f"expected an object, got {quote(block)}")
    ctype, logical, params = block.get("type"), block.get("name"), block.get("parameters") or {}
    bad_logical = logical is not None and type(logical) is not str
    if type(ctype) is not str or bad_logical or type(params) is not dict:
        raise _schema_error(name, "needs a string 'type', an optional string 'name' and object 'parameters'")
    nullable = block.get("optional", False) is not False
    if logical in _DECIMAL_BASE and ctype != _DECIMAL_BASE[logical]:
        raise _schema_error(name, f"logical type {logical} cannot sit on Connect type {quote(ctype)}")
    if logical == DECIMAL:
        return _decimal_decoder(name, params, nullable)
    if logical == VARIABLE_SCALE_DECIMAL:
        return FieldDecoder(
            name, pa.string(), variable_scale_to_decimal, _variable_scale_text, logical, nullable
        )
    fixed = _FIXED_LOGICAL.get(logical) if logical is not None else None
    if fixed is not None:
        allowed, arrow_type, to_python, to_arrow = fixed
        if ctype not in allowed:
            raise _schema_error(name, f"logical type {logical} cannot sit on Connect type {quote(ctype)}")
        return FieldDecoder(name, arrow_type, to_python, to_arrow, logical, nullable)
    return _plain_decoder(name, ctype, block, logical, nullable)


def _plain_decoder(
    name: str, ctype: str, block: dict[str, Any], logical: str | None, nullable: bool
) -> FieldDecoder:
    plain = _PLAIN.get(ctype)
    if plain is not None:
        arrow_type, to_python, to_arrow = plain
        return FieldDecoder(name, arrow_type, to_python, to_arrow, logical, nullable)
    if ctype == "struct":
        return _struct_decoder(name, block, logical, nullable)
    if ctype == "array":
        return _array_decoder(name, block, logical, nullable)
    if ctype == "map":
        return _map_decoder(name, block, logical, nullable)
    raise _schema_error(name, f"unknown Connect type {quote(ctype)}")


def struct_decoders(block: Any, *, prefix: str = "") -> tuple[FieldDecoder, ...]:
    """Build the decoders of every field of a Connect ``struct`` schema block, in order.

    Raises:
        CorruptRecordError: If the block is not a struct with a list of named fields.
    """
    fields = block.get("fields") if type(block) is dict else None
    if type(fields) is not list:
        raise CorruptRecordError(f"schema block {quote(prefix or 'row')}: a struct needs a 'fields' list")
    decoders = []
    seen: set[str] = set()
    for item in fields:
        field_name = item.get("field") if type(item) is dict else None
        if type(field_name) is not str:
            raise CorruptRecordError(
                f"schema block {quote(prefix or 'row')}: every field needs a string 'field'"
            )
        if field_name in seen:
            raise CorruptRecordError(
                f"schema block {quote(prefix or 'row')}: field {quote(field_name)} appears twice"
            )
        seen.add(field_name)
        decoders.append(decoder_from_connect(prefix + field_name, item))
    return tuple(decoders)


def _struct_decoder(name: str, block: dict[str, Any], logical: str | None, nullable: bool) -> FieldDecoder:
    children = struct_decoders(block, prefix=f"{name}.")
    by_name = {c.name[len(name) + 1 :]: c for c in children}
    arrow_type = pa.struct([pa.field(k, c.arrow_type, nullable=c.nullable) for k, c in by_name.items()])

    def to_python(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise CorruptRecordError(f"expected a JSON object, got {quote(value)}")
        return {k: (by_name[k].python_value(v) if k in by_name else v) for k, v in value.items()}

    arrow_children = {k: _nested_arrow(c) for k, c in by_name.items()}

    def to_arrow(value: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise CorruptRecordError(f"expected a JSON object, got {quote(value)}")
        return {k: (f(v) if v is not None and (f := arrow_children.get(k)) else v) for k, v in value.items()}

    return FieldDecoder(name, arrow_type, to_python, to_arrow if arrow_children else None, logical, nullable)


def _nested_arrow(decoder: FieldDecoder) -> Converter:
    """How a nested value (struct child, list item, map key or value) is made ready for Arrow.

    ``pa.array`` does not check nested values the way :meth:`FieldDecoder.build_array` checks a
    column (integers for integer types, ranges of dates and timestamps), so they are checked one by one.
    """
    if decoder.to_arrow is not None:
        return decoder.to_arrow
    bounds = epoch_range(decoder.arrow_type)
    if bounds is None:
        return decoder.to_python
    low, high, kind = bounds[0], bounds[1], decoder.arrow_type

    def check(value: Any) -> int:
        number = as_int(value, f"a {kind} value")
        if not low <= number <= high:
            raise range_error(kind, number)
        return number

    return check


def _array_decoder(name: str, block: dict[str, Any], logical: str | None, nullable: bool) -> FieldDecoder:
    item = decoder_from_connect(f"{name}[]", block.get("items"))

    def to_python(value: Any) -> list[Any]:
        if type(value) is not list:
            raise CorruptRecordError(f"expected a JSON array, got {quote(value)}")
        return [item.python_value(v) for v in value]

    item_arrow = _nested_arrow(item)

    def to_arrow(value: Any) -> list[Any]:
        if type(value) is not list:
            raise CorruptRecordError(f"expected a JSON array, got {quote(value)}")
        return [None if v is None else item_arrow(v) for v in value]

    return FieldDecoder(name, pa.list_(item.arrow_type), to_python, to_arrow, logical, nullable)


def _map_pairs(value: Any) -> list[tuple[Any, Any]]:
    if type(value) is dict:
        return list(value.items())
    if type(value) is list and all(type(p) is list and len(p) == 2 for p in value):
        return [(p[0], p[1]) for p in value]
    raise CorruptRecordError(f"expected a map as a JSON object or [[key, value], ...], got {quote(value)}")


def _map_decoder(name: str, block: dict[str, Any], logical: str | None, nullable: bool) -> FieldDecoder:
    key = decoder_from_connect(f"{name}.key", block.get("keys"))
    val = decoder_from_connect(f"{name}.value", block.get("values"))

    def to_python(value: Any) -> dict[Any, Any]:
        try:
            return {key.python_value(k): val.python_value(v) for k, v in _map_pairs(value)}
        except TypeError as exc:  # an unhashable converted key
            raise CorruptRecordError(f"map key cannot be used as a Python dict key: {exc}") from exc

    def to_arrow(value: Any) -> list[tuple[Any, Any]]:
        k_conv, v_conv = _nested_arrow(key), _nested_arrow(val)
        return [
            (None if k is None else k_conv(k), None if v is None else v_conv(v)) for k, v in _map_pairs(value)
        ]

    arrow_type = pa.map_(key.arrow_type, val.arrow_type)
    return FieldDecoder(name, arrow_type, to_python, to_arrow, logical, nullable)


# --- decoders for an explicit Arrow schema ----------------------------------------------------------


def decoder_for_arrow(
    name: str, arrow_type: pa.DataType, *, decimal_handling: DecimalHandling = "precise"
) -> FieldDecoder:
    """Build a decoder that reads JSON values into an Arrow type chosen by the caller.

    Integers for temporal types are taken in the type's own unit (``date32``: days;
    ``timestamp("ms")``: milliseconds, …); a string for a zone-aware timestamp is read as
    ISO-8601. Types without a JSON reading rule are passed to Arrow as is.
    """
    if pa.types.is_integer(arrow_type):
        return FieldDecoder(
            name, arrow_type, int_range(arrow_type.bit_width, signed=pa.types.is_signed_integer(arrow_type))
        )
    if pa.types.is_floating(arrow_type):
        return FieldDecoder(name, arrow_type, to_float)
    if pa.types.is_boolean(arrow_type):
        return FieldDecoder(name, arrow_type, to_bool)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return FieldDecoder(name, arrow_type, to_str)
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return FieldDecoder(name, arrow_type, base64_to_bytes, base64_to_bytes)
    if pa.types.is_decimal(arrow_type):
        return _arrow_decimal_decoder(name, arrow_type, decimal_handling)
    if arrow_type == pa.date32():
        return FieldDecoder(name, arrow_type, days_to_date)
    if pa.types.is_time(arrow_type) and arrow_type.unit in _TIME_BY_UNIT:
        to_python, to_arrow = _TIME_BY_UNIT[arrow_type.unit]
        return FieldDecoder(name, arrow_type, to_python, to_arrow)
    if pa.types.is_timestamp(arrow_type):
        return _arrow_timestamp_decoder(name, arrow_type)
    return FieldDecoder(name, arrow_type, identity)


_TIME_BY_UNIT: Final[dict[str, tuple[Converter, Converter]]] = {
    "ms": (millis_to_time, MILLIS_OF_DAY),
    "us": (micros_to_time, MICROS_OF_DAY),
    "ns": (nanos_to_time, NANOS_OF_DAY),
}


def _arrow_decimal_decoder(name: str, arrow_type: pa.DataType, handling: DecimalHandling) -> FieldDecoder:
    scale, precision = int(arrow_type.scale), int(arrow_type.precision)
    from_base64 = base64_fitter(precision, scale)

    def convert(value: Any) -> Decimal:
        if handling == "precise" and type(value) is str:
            fitted: Decimal = from_base64(value)
            return fitted
        return fit_decimal(any_to_decimal(value, scale, handling), precision, scale)

    return FieldDecoder(name, arrow_type, convert, convert)


def _arrow_timestamp_decoder(name: str, arrow_type: pa.DataType) -> FieldDecoder:
    per_second = UNIT_PER_SECOND[arrow_type.unit]
    zoned = arrow_type.tz is not None

    low, high = epoch_range(arrow_type) or (-(2**63), 2**63 - 1)

    def to_units(value: Any) -> int:
        if type(value) is str:
            units: int = zoned_to_micros(value) * per_second // 1_000_000
        else:
            units = as_int(value, f"{arrow_type.unit} since the epoch")
        if not low <= units <= high:
            raise range_error(arrow_type, units)
        return units

    def to_python(value: Any) -> dt.datetime:
        micros = to_units(value) * 1_000_000 // per_second
        naive = naive_timestamp(micros, micros, "µs")
        return naive.replace(tzinfo=dt.UTC) if zoned else naive

    return FieldDecoder(name, arrow_type, to_python, to_units)
