"""Binlog row images decoded by columns: a precompiled decoder per table map, no dict per row.

mysql-replication parses every row of a rows event into a dict, value by value, in Python; for a
table of plain columns that parsing is most of the binlog source's cost. :func:`plan_table` looks at a
table map once and, when every column is of a kind decoded here (integers of every width, signed or
not, ``FLOAT``/``DOUBLE``, ``DECIMAL``, ``DATE``, ``DATETIME``/``TIMESTAMP`` with any fractional
seconds, and ``CHAR``/``VARCHAR``/``TEXT``/``BINARY``/``VARBINARY``/``BLOB`` with a charset
:mod:`flowlake.cdc.mysql_values` knows), returns a :class:`TablePlan`; :func:`decode_event`
then reads a rows event's image bytes straight into one Python list per column, giving the same
values as mysql-replication plus :func:`flowlake.cdc.mysql_values.fix_image` (the server's values).

It only ever *declines*: a table with another column type has no plan, and an event it cannot read
exactly (a row image without every column, a text value its charset cannot decode, bytes that do not
add up) returns ``None`` without consuming the event, so that mysql-replication reads it as before
and the usual dead-letter rules apply.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from flowlake.cdc.mysql_values import ColumnDecoder, decode_text

# mysql-replication's FIELD_TYPE numbers (pymysqlreplication.constants.FIELD_TYPE)
_TINY, _SHORT, _LONG, _FLOAT, _DOUBLE, _LONGLONG, _INT24 = 1, 2, 3, 4, 5, 8, 9
_DATE, _VARCHAR, _TIMESTAMP2, _DATETIME2, _NEWDECIMAL, _BLOB, _STRING = 10, 15, 17, 18, 246, 252, 254
_EPOCH: Final = dt.datetime(1970, 1, 1)  # mysql-replication's TIMESTAMP values: naive UTC
_DECIMAL_GROUP_BYTES: Final = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
"""Bytes of a packed group of 0-9 decimal digits (MySQL's binary DECIMAL: 9 digits per 4 bytes)."""
_CACHED_VALUES: Final = 4096
"""Values a decimal or temporal column's reader remembers by their bytes (then it forgets them all)."""

_INTS: Final[dict[tuple[int, bool], struct.Struct]] = {
    (_TINY, False): struct.Struct("<b"),
    (_TINY, True): struct.Struct("<B"),
    (_SHORT, False): struct.Struct("<h"),
    (_SHORT, True): struct.Struct("<H"),
    (_LONG, False): struct.Struct("<i"),
    (_LONG, True): struct.Struct("<I"),
    (_LONGLONG, False): struct.Struct("<q"),
    (_LONGLONG, True): struct.Struct("<Q"),
    (_FLOAT, False): struct.Struct("<f"),
    (_DOUBLE, False): struct.Struct("<d"),
}

Reader = Callable[[bytes, int], tuple[Any, int]]
"""Reads one value at an offset of the image bytes: (value, offset after it)."""


Layout = tuple[Any, ...]
"""One column's shape for the compiled reader: ``("fixed", struct format)``, ``("int24", signed)``,
``("string", length bytes, decoder kind, codec, fixed length)``, ``("decimal", precision, scale)``,
``("date",)``, ``("datetime2", fsp)`` or ``("timestamp2", fsp)``."""


@dataclass(frozen=True, slots=True)
class TablePlan:
    """How to read the row images of one table map: its column names, one reader per column, and
    the same compiled into one function for the whole image (:func:`compile_images`)."""

    names: tuple[str, ...]
    readers: tuple[Reader, ...]
    layouts: tuple[Layout, ...] = ()
    read: Callable[[bytes, tuple[int, ...]], DecodedEvent] | None = None
    read_into: Callable[[bytes, tuple[int, ...], DecodedEvent], None] | None = None
    """What ``read`` does, appending to a :class:`DecodedEvent`'s lists (see :func:`compile_images`)."""


def plan_table(columns: Sequence[Any], decoders: dict[str, ColumnDecoder]) -> TablePlan | None:
    """A plan for a table map's columns (mysql-replication ``Column`` objects), or ``None`` when a
    column is of a kind this module does not read; ``decoders`` from :func:`table_decoders`.

    >>> from types import SimpleNamespace as Column
    >>> columns = [Column(name="id", type=8, unsigned=False), Column(name="v", type=15, max_length=40)]
    >>> plan = plan_table(columns, {"v": ColumnDecoder("v", "text", codec="utf-8")})
    >>> plan.names
    ('id', 'v')
    >>> plan_table([Column(name="j", type=245)], {}) is None  # JSON: left to mysql-replication
    True
    """
    readers: list[Reader] = []
    layouts: list[Layout] = []
    for column in columns:
        layout = _layout(column, decoders.get(str(column.name)))
        if layout is None or not column.name:
            return None
        layouts.append(layout)
        readers.append(_reader(layout))
    names = tuple(str(c.name) for c in columns)
    read_into = compile_images(tuple(layouts), into=True)
    return TablePlan(names, tuple(readers), tuple(layouts), compile_images(tuple(layouts)), read_into)


def _layout(column: Any, decoder: ColumnDecoder | None) -> Layout | None:
    kind = int(column.type)
    unsigned = bool(getattr(column, "unsigned", False)) and kind not in (_FLOAT, _DOUBLE)
    fixed = _INTS.get((kind, unsigned))
    if fixed is not None and decoder is None:
        return ("fixed", fixed.format)
    if kind == _INT24 and decoder is None:
        return ("int24", not unsigned)
    if kind == _NEWDECIMAL and decoder is None:
        return ("decimal", int(column.precision), int(column.decimals))
    if kind == _DATE and decoder is None:
        return ("date",)
    if kind == _DATETIME2 and decoder is None:
        return ("datetime2", int(getattr(column, "fsp", 0) or 0))
    if kind == _TIMESTAMP2 and (decoder is None or decoder.kind == "timestamp"):
        return ("timestamp2", int(getattr(column, "fsp", 0) or 0))
    if decoder is None or decoder.kind not in ("text", "binary", "fixed_binary"):
        return None
    if kind in (_VARCHAR, _STRING):  # (mysql-replication reads VAR_STRING as None: not here)
        size = 2 if int(getattr(column, "max_length", 0) or 0) > 255 else 1
    elif kind == _BLOB:
        size = int(getattr(column, "length_size", 0) or 0)
    else:
        return None
    if size not in (1, 2, 3, 4):
        return None
    return ("string", size, decoder.kind, decoder.codec, decoder.length)


def _reader(layout: Layout) -> Reader:
    if layout[0] == "fixed":
        return _fixed(struct.Struct(layout[1]))
    if layout[0] == "int24":
        return _int24(not layout[1])
    if layout[0] in _TEMPORAL_OR_DECIMAL:
        return _converting_reader(layout)
    _, size, kind, codec, length = layout
    return _string(size, ColumnDecoder("", kind, codec=codec, length=length))


def _fixed(layout: struct.Struct) -> Reader:
    unpack, width = layout.unpack_from, layout.size

    def read(data: bytes, at: int) -> tuple[Any, int]:
        return unpack(data, at)[0], at + width

    return read


def _int24(unsigned: bool) -> Reader:
    def read(data: bytes, at: int) -> tuple[Any, int]:
        return int.from_bytes(data[at : at + 3], "little", signed=not unsigned), at + 3

    return read


def _string(size: int, decoder: ColumnDecoder) -> Reader:
    codec, kind, length = decoder.codec, decoder.kind, decoder.length

    def read(data: bytes, at: int) -> tuple[Any, int]:
        n = int.from_bytes(data[at : at + size], "little")
        start = at + size
        end = start + n
        if end > len(data):
            raise _Short
        raw = data[start:end]
        if kind == "text":
            return decode_text(raw, codec), end  # raises UnicodeDecodeError: the event declines
        if kind == "fixed_binary":
            return raw.ljust(length, b"\x00"), end
        return raw, end

    return read


class _Short(ValueError):
    """The image bytes end inside a value."""


def _cached(size: int, convert: Callable[[bytes], Any]) -> Reader:
    """A reader of ``size``-byte values through ``convert``, remembering the last values it met:
    prices, stamps of one statement (``NOW()``), dates repeat within a rows event, and converting in
    Python costs microseconds a value where a dict lookup costs a tenth of one."""
    seen: dict[bytes, Any] = {}

    def read(data: bytes, at: int) -> tuple[Any, int]:
        raw = data[at : at + size]
        value = seen.get(raw, seen)
        if value is seen:
            if len(raw) < size:
                raise _Short
            if len(seen) >= _CACHED_VALUES:
                seen.clear()
            value = seen[raw] = convert(raw)
        return value, at + size

    return read


def _decimal(precision: int, scale: int) -> Reader:
    """MySQL's binary ``DECIMAL(precision, scale)``, as mysql-replication reads it (the same
    :class:`~decimal.Decimal`, scale and sign of zero included).

    The digits come in big-endian groups (9 digits in 4 bytes, a partial group in fewer) of the
    whole part then of the fraction; the sign bit of the first byte is inverted, and a negative
    number's bytes are inverted as well. The conversion is compiled per column shape (one
    ``struct`` call, no loop): it runs for every value the reader has not met yet.
    """
    whole_groups, whole_rest = divmod(precision - scale, 9)
    part_groups, part_rest = divmod(scale, 9)
    head, tail = _DECIMAL_GROUP_BYTES[whole_rest], _DECIMAL_GROUP_BYTES[part_rest]
    full = whole_groups + part_groups
    widths = [head] * bool(head) + [4] * full + [tail] * bool(tail)
    limits = [10**whole_rest] * bool(head) + [10**9] * full + [10**part_rest] * bool(tail)
    size = sum(widths)
    names = [f"g{i}" for i in range(len(widths))]
    env: dict[str, Any] = {"Decimal": Decimal, "ValueError": ValueError}
    lines = ["def convert(raw):", "    negative = not raw[0] & 0x80"]
    if all(width in (1, 2, 4) for width in widths):  # unsigned big-endian groups in one call
        env["unpack"] = struct.Struct(">" + "".join({1: "B", 2: "H", 4: "I"}[w] for w in widths)).unpack
        lines.append(f"    {', '.join(names)}, = unpack(raw)")
    else:  # a 3-byte group (5 or 6 digits) has no struct code
        at = 0
        for name, width in zip(names, widths, strict=True):
            lines.append(f"    {name} = int.from_bytes(raw[{at}:{at + width}], 'big')")
            at += width
    lines.append(f"    g0 ^= {1 << (8 * widths[0] - 1)}")  # the sign bit
    lines.append("    if negative:")
    lines += [
        f"        {name} = {(1 << (8 * w)) - 1} - {name}" for name, w in zip(names, widths, strict=True)
    ]
    checks = " and ".join(f"{name} < {limit}" for name, limit in zip(names, limits, strict=True))
    lines += [
        f"    if not ({checks}):",
        f"        raise ValueError('not a binary DECIMAL({precision},{scale})')",
    ]
    value = names[0]
    for name, limit in zip(names[1:], limits[1:], strict=True):
        value = f"({value}) * {limit} + {name}"
    lines.append(f"    unscaled = {value}")
    lines.append(f'    return Decimal(f"-{{unscaled}}E-{scale}" if negative else f"{{unscaled}}E-{scale}")')
    exec("\n".join(lines), env)  # noqa: S102 - our own code, from the column's precision and scale only
    return _cached(size, env["convert"])


def _fraction(fsp: int) -> tuple[int, Callable[[int], int]]:
    """The bytes of a temporal value's fractional seconds and how they become microseconds."""
    size = (fsp + 1) // 2
    scale = 10 ** (6 - fsp)
    if fsp % 2:
        return size, lambda raw: int(raw / 10) * scale
    return size, lambda raw: raw * scale


def _date() -> Reader:
    def convert(raw: bytes) -> dt.date | None:
        packed = int.from_bytes(raw, "little")
        year, month, day = packed >> 9 & 0x7FFF, packed >> 5 & 0xF, packed & 0x1F
        if not (year and month and day):
            return None  # a zero date or a zero part: NULL, as the library reads it
        return dt.date(year, month, day)  # raises ValueError (as the library) for Feb 31

    return _cached(3, convert)


def _datetime2(fsp: int) -> Reader:
    size, micros = _fraction(fsp)

    def convert(raw: bytes) -> dt.datetime | None:
        packed = int.from_bytes(raw[:5], "big")
        fraction = micros(int.from_bytes(raw[5:], "big", signed=True)) if size else 0
        year_month = packed >> 22 & 0x1FFFF
        try:
            value = dt.datetime(
                year_month // 13, year_month % 13, packed >> 17 & 0x1F, packed >> 12 & 0x1F,
                packed >> 6 & 0x3F, packed & 0x3F,
            )  # fmt: skip
        except ValueError:
            return None  # a zero or impossible date: NULL, as the library reads it
        return value.replace(microsecond=fraction) if fraction > 0 else value

    return _cached(5 + size, convert)


def _timestamp2(fsp: int) -> Reader:
    size, micros = _fraction(fsp)

    def convert(raw: bytes) -> dt.datetime | None:
        seconds = int.from_bytes(raw[:4], "big", signed=True)
        fraction = micros(int.from_bytes(raw[4:], "big", signed=True)) if size else 0
        if not 0 <= fraction < 1_000_000:
            raise ValueError("fractional seconds out of range")
        if seconds == 0 and fraction == 0:
            return None  # the zero timestamp: NULL, as mysql_values.fix_image makes it
        return _EPOCH + dt.timedelta(0, seconds, fraction)

    return _cached(4 + size, convert)


_TEMPORAL_OR_DECIMAL: Final[dict[str, Callable[..., Reader]]] = {
    "decimal": _decimal,
    "date": _date,
    "datetime2": _datetime2,
    "timestamp2": _timestamp2,
}


@functools.lru_cache(maxsize=256)
def _converting_reader(layout: Layout) -> Reader:
    """The one reader of a decimal or temporal column shape: every plan of a table map (and each of
    its compiled forms) shares it, so a decimal's conversion is compiled once and the values met are
    remembered once."""
    return _TEMPORAL_OR_DECIMAL[layout[0]](*layout[1:])


def compile_images(layouts: tuple[Layout, ...], *, into: bool = False) -> Callable[..., Any]:
    """One function reading a rows event's images of a table of these column ``layouts``: what
    :func:`read_images` does, without a call per value, and with consecutive fixed-width columns of a
    row without nulls read by one ``struct`` call. It is called with the images and the kinds of the
    images of one row (``(0,)``, ``(3,)`` or ``(1, 2)``) and raises as :func:`read_images` does.

    With ``into``, the function takes a third argument, a :class:`DecodedEvent` whose lists it
    appends the values and kinds to (returning ``None``), so that many small events can share one;
    when it raises, it may have appended part of the event (the caller cuts the lists back).

    >>> read = compile_images((("fixed", "<q"), ("string", 1, "text", "utf-8", 0)))
    >>> image = bytes([0b00]) + (7).to_bytes(8, "little") + bytes([2]) + b"hi"
    >>> read(image + bytes([0b10]) + (8).to_bytes(8, "little"), (0,))
    DecodedEvent(kinds=[0, 0], columns=[[7, 8], ['hi', None]])
    >>> shared = DecodedEvent([3], [[6], ['x']])
    >>> compile_images((("fixed", "<q"), ("string", 1, "text", "utf-8", 0)), into=True)(image, (0,), shared)
    >>> shared
    DecodedEvent(kinds=[3, 0], columns=[[6, 7], ['x', 'hi']])
    """
    n = len(layouts)
    nullbytes = (n + 7) // 8
    env: dict[str, Any] = {"DecodedEvent": DecodedEvent, "_Short": _Short, "decode_text": decode_text}
    if into:
        lines = ["def read(data, image_kinds, out):", "    kinds = out.kinds"]
        lines += [f"    {', '.join(f'c{i}' for i in range(n))}, = out.columns"] if n else []
    else:
        lines = ["def read(data, image_kinds):", "    kinds = []"]
        lines += [f"    c{i} = []" for i in range(n)]
    lines += [f"    a{i} = c{i}.append" for i in range(n)]
    lines += ["    add_kind = kinds.append", "    at, end = 0, len(data)"]
    lines += ["    while at < end:"]
    lines += ["        for kind in image_kinds:"]
    if nullbytes == 1:
        lines += ["            nulls = data[at]", "            at += 1"]
    else:
        lines += [f"            nulls = int.from_bytes(data[at:at + {nullbytes}], 'little')"]
        lines += [f"            at += {nullbytes}"]
    lines += ["            if not nulls:"]
    lines += ["                " + line for line in _no_null_lines(layouts, env)]
    lines += ["            else:"]
    for i, layout in enumerate(layouts):
        lines += [f"                if nulls >> {i} & 1:", f"                    a{i}(None)"]
        lines += ["                else:"]
        lines += ["                    " + line for line in _value_lines(i, layout, env)]
        lines += [f"                    a{i}(v{i})"]
    lines += ["            add_kind(kind)", "        if at > end:", "            raise _Short"]
    if not into:
        lines += [f"    return DecodedEvent(kinds, [{', '.join(f'c{i}' for i in range(n))}])"]
    exec("\n".join(lines), env)  # noqa: S102 - our own code, from column layouts only
    read: Callable[..., Any] = env["read"]
    return read


def _no_null_lines(layouts: tuple[Layout, ...], env: dict[str, Any]) -> list[str]:
    """A row's values without nulls: runs of fixed-width columns through one ``struct`` each."""
    lines: list[str] = []
    i = 0
    while i < len(layouts):
        if layouts[i][0] != "fixed":
            lines += _value_lines(i, layouts[i], env)
            lines.append(f"a{i}(v{i})")
            i += 1
            continue
        j = i
        while j < len(layouts) and layouts[j][0] == "fixed":
            j += 1
        layout = struct.Struct("<" + "".join(str(layouts[k][1])[1:] for k in range(i, j)))
        env[f"run{i}"] = layout.unpack_from
        targets = "".join(f"v{k}, " for k in range(i, j))
        lines += [f"{targets}= run{i}(data, at)", f"at += {layout.size}"]
        lines += [f"a{k}(v{k})" for k in range(i, j)]
        i = j
    return lines


def _value_lines(i: int, layout: Layout, env: dict[str, Any]) -> list[str]:
    """Read column ``i``'s value into ``v{i}`` at ``at`` and move ``at`` past it."""
    if layout[0] == "fixed":
        env[f"fixed{i}"] = struct.Struct(layout[1]).unpack_from
        return [f"v{i} = fixed{i}(data, at)[0]", f"at += {struct.calcsize(layout[1])}"]
    if layout[0] == "int24":
        return [f"v{i} = int.from_bytes(data[at:at + 3], 'little', signed={bool(layout[1])})", "at += 3"]
    if layout[0] in _TEMPORAL_OR_DECIMAL:
        env[f"read{i}"] = _converting_reader(layout)
        return [f"v{i}, at = read{i}(data, at)"]
    _, size, kind, codec, length = layout
    head = "n = data[at]" if size == 1 else f"n = int.from_bytes(data[at:at + {size}], 'little')"
    lines = [head, f"at += {size}", "if at + n > end:", "    raise _Short"]
    lines += [f"v{i} = data[at:at + n]", "at += n"]
    if kind == "text" and codec == "mysql-latin1":
        lines.append(f"v{i} = decode_text(v{i}, {codec!r})")
    elif kind == "text":  # what decode_text does for every other codec
        lines.append(f"v{i} = v{i}.decode({codec!r})")
    elif kind == "fixed_binary":
        lines.append(f"v{i} = v{i}.ljust({int(length)}, b'\\x00')")
    return lines


@dataclass(slots=True)
class DecodedEvent:
    """The changes of one rows event: kinds (0 +I, 1 -U, 2 +U, 3 -D) and one value list per column."""

    kinds: list[int]
    columns: list[list[Any]]


def rows_bytes(event: Any) -> bytes | None:
    """The row images of a rows event mysql-replication has read the header of, without consuming them
    (``None`` if the library's packet is not laid out as expected)."""
    wrapper = getattr(event, "packet", None)
    packet = getattr(wrapper, "packet", None)
    data = getattr(packet, "_data", None)
    position = getattr(packet, "_position", None)
    buffered = getattr(wrapper, "_BinLogPacketWrapper__data_buffer", None)
    read = getattr(wrapper, "read_bytes", None)
    size = getattr(event, "event_size", None)
    if not isinstance(data, bytes | bytearray) or not isinstance(position, int):
        return None
    if not isinstance(buffered, bytes) or not isinstance(read, int) or not isinstance(size, int):
        return None
    remaining = size - read
    if remaining < 0:
        return None
    head = buffered[:remaining]
    tail = bytes(data[position : position + remaining - len(head)])
    out = head + tail
    return out if len(out) == remaining else None


def decode_event(plan: TablePlan, event: Any, kind: str) -> DecodedEvent | None:
    """Read a rows event's images by columns, or ``None`` (nothing consumed) to leave it to the library.

    ``kind`` is ``"insert"``, ``"update"`` or ``"delete"``.
    """
    ncols = len(plan.names)
    full = b"\xff" * (ncols // 8) + (bytes([(1 << (ncols % 8)) - 1]) if ncols % 8 else b"")
    bitmaps = [getattr(event, "columns_present_bitmap", None)]
    if kind == "update":
        bitmaps.append(getattr(event, "columns_present_bitmap2", None))
    if getattr(event, "number_of_columns", None) != ncols or any(b != full for b in bitmaps):
        return None  # not a FULL row image of every column
    data = rows_bytes(event)
    if data is None:
        return None
    try:
        return read_images(plan, data, kind)
    except (ValueError, struct.error, LookupError, IndexError):  # _Short, UnicodeDecodeError among them
        return None


def read_images(plan: TablePlan, data: bytes, kind: str) -> DecodedEvent:
    """Read the row images ``data`` of a rows event of ``kind`` (every column present).

    Raises:
        ValueError: If the bytes end inside a value, or a text value is not valid in its charset.

    >>> from types import SimpleNamespace as Column
    >>> columns = [Column(name="id", type=8, unsigned=False), Column(name="v", type=15, max_length=40)]
    >>> plan = plan_table(columns, {"v": ColumnDecoder("v", "text", codec="utf-8")})
    >>> image = bytes([0b00]) + (7).to_bytes(8, "little") + bytes([2]) + b"hi"  # null bitmap, id, v
    >>> read_images(plan, image + bytes([0b10]) + (8).to_bytes(8, "little"), "insert")
    DecodedEvent(kinds=[0, 0], columns=[[7, 8], ['hi', None]])
    """
    readers = plan.readers
    ncols = len(readers)
    nullbytes = (ncols + 7) // 8
    columns: list[list[Any]] = [[] for _ in readers]
    appends = [c.append for c in columns]
    kinds: list[int] = []
    images = 2 if kind == "update" else 1
    image_kinds = (1, 2) if kind == "update" else ((3,) if kind == "delete" else (0,))
    at, end = 0, len(data)
    while at < end:
        for image in range(images):
            nulls = int.from_bytes(data[at : at + nullbytes], "little")
            at += nullbytes
            for i in range(ncols):
                if nulls >> i & 1:
                    appends[i](None)
                else:
                    value, at = readers[i](data, at)
                    appends[i](value)
            kinds.append(image_kinds[image])
        if at > end:
            raise _Short
    return DecodedEvent(kinds, columns)
