"""Exact values from MySQL/MariaDB: binlog row images and snapshot chunks give the same Python value.

mysql-replication decodes row events itself, and a few of its decodings differ from what the server
returns to a ``SELECT`` (the snapshot's view). This module brings the stream to the snapshot's values:

- Text. The library decodes with Python's codec of the column's charset and raises on a byte that
  codec does not know, which stopped the stream for good. MySQL's ``latin1`` is cp1252 with the five
  bytes cp1252 leaves undefined (0x81, 0x8D, 0x8F, 0x90, 0x9D) mapped to U+0081 … U+009D, and its
  ``utf16``/``ucs2``/``utf32`` are big-endian. :func:`table_decoders` makes the library hand over text
  columns as bytes (an unknown codec name makes it keep the bytes) and :func:`fix_image` decodes them
  as the server does. A value that still cannot be decoded makes the change a dead letter
  (:class:`UndecodedRow`), never a stopped source.
- ``BIT(n)``: the library gives a string of ``'0'``/``'1'``; the server gives ``ceil(n/8)`` big-endian bytes.
- ``SET``: the library gives a Python set (unordered) and ``None`` for the empty set; the server
  gives the members in definition order joined by ``,``, and ``''``.
- ``BINARY(n)``: the binlog drops the trailing 0x00 padding that the server returns.
- ``YEAR``: the library adds 1900 to the stored byte, so year 0000 comes out as 1900 (which YEAR
  cannot hold otherwise: its range is 1901-2155).
- ``TIME(fsp)`` with a fraction, negative: the library negates the whole seconds and the fraction
  apart, giving ``-(s + 1) + f`` for ``-(s + f)`` (``-00:00:00.000001`` came out as ``-0.999999 s``).
- Zero dates (``0000-00-00``, ``2026-00-10``; allowed by non-strict SQL modes): ``DATE``/``DATETIME``
  become ``NULL`` in both paths (the library already gives ``None``; the snapshot's text protocol
  gives the raw string, see :func:`snapshot_converters`), and the zero ``TIMESTAMP``, which the library
  turns into 1970-01-01 00:00:00 (a value no TIMESTAMP can hold: its range starts one second later),
  becomes ``NULL`` too. A zero date has no value in Arrow; ``NULL`` keeps the row, where a dead
  letter would lose it.

``FLOAT`` in the snapshot: the text protocol prints 6 significant digits; :func:`select_list` reads
it as ``CAST(col AS DOUBLE)``, which is exact, and the float32 column then holds the stored value.
"""

from __future__ import annotations

import codecs
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import pyarrow as pa

from flowlake.cdc.batch import UndecodedRow
from flowlake.cdc.mysql_schema import quote
from flowlake.cdc.record_json import dump_record

UNDECODED_CHARSET: Final = "flowlake-undecoded"
"""Not a codec: a text column whose charset is set to it is handed over by mysql-replication as bytes."""

# mysql-replication's FIELD_TYPE numbers (pymysqlreplication.constants.FIELD_TYPE)
_TIMESTAMP, _YEAR, _VARCHAR, _BIT, _TIMESTAMP2, _TIME2 = 7, 13, 15, 16, 17, 19
_SET, _BLOB, _VAR_STRING, _STRING = 248, 252, 253, 254
_TEXT_TYPES: Final = frozenset({_VARCHAR, _BLOB, _VAR_STRING, _STRING})

_CP1252_UNDEFINED: Final = (0x81, 0x8D, 0x8F, 0x90, 0x9D)
_MYSQL_LATIN1: Final = "".join(
    chr(b) if b in _CP1252_UNDEFINED else bytes([b]).decode("cp1252") for b in range(256)
)
"""MySQL's latin1 → Unicode table (strings/ctype-latin1.c): cp1252 with the undefined bytes passed through."""

_BY_LIBRARY_ENCODING: Final[dict[str, str | None]] = {
    # mysql-replication's encoding name of a column → how MySQL decodes it (None: binary, keep bytes)
    "binary": None,
    "cp1252": "mysql-latin1",
    "utf8": "utf-8",
    "utf8mb4": "utf-8",
    "utf8mb3": "utf-8",
    "ucs2": "utf-16-be",
    "utf16": "utf-16-be",
    "utf16le": "utf-16-le",
    "utf32": "utf-32-be",
}

_EPOCH: Final = dt.datetime(1970, 1, 1)  # the library gives naive UTC values


def decode_text(raw: bytes, codec: str) -> str:
    """Decode ``raw`` as MySQL does for the column's charset (``codec`` from :class:`ColumnDecoder`).

    Raises:
        UnicodeDecodeError: If the bytes are not valid in that charset.
        LookupError: If Python has no codec for it.
    """
    if codec == "mysql-latin1":
        return codecs.charmap_decode(raw, "strict", _MYSQL_LATIN1)[0]
    return raw.decode(codec)


@dataclass(frozen=True, slots=True)
class ColumnDecoder:
    """How to turn the library's value of one column into the server's."""

    name: str
    kind: Literal["text", "binary", "fixed_binary", "bit", "set", "year", "time", "timestamp"]
    codec: str = ""
    length: int = 0
    members: tuple[str, ...] = ()
    fsp: int = 0


class _Undecodable(ValueError):
    """A column value that cannot be decoded."""


def table_decoders(columns: Sequence[Any]) -> dict[str, ColumnDecoder]:
    """Decoders for a table map's columns (mysql-replication ``Column`` objects), by column name.

    Text columns are switched to :data:`UNDECODED_CHARSET`, so the library hands over their bytes;
    call this before the rows events of the table map are read.
    """
    decoders: dict[str, ColumnDecoder] = {}
    for column in columns:
        name, kind = str(column.name), int(column.type)
        decoder = _decoder(column, name, kind)
        if decoder is not None:
            decoders[name] = decoder
    return decoders


def _decoder(column: Any, name: str, kind: int) -> ColumnDecoder | None:
    if kind in _TEXT_TYPES and getattr(column, "character_set_name", None):
        encoding = str(column.character_set_name).lower()
        if encoding == UNDECODED_CHARSET:  # the same table map seen again
            return None
        codec = _BY_LIBRARY_ENCODING.get(encoding, encoding)
        column.character_set_name = UNDECODED_CHARSET
        if codec is not None:
            return ColumnDecoder(name, "text", codec=codec)
        if kind == _STRING:  # BINARY(n)
            return ColumnDecoder(name, "fixed_binary", length=int(getattr(column, "max_length", 0) or 0))
        return ColumnDecoder(name, "binary")
    if kind == _BIT:
        return ColumnDecoder(name, "bit", length=int(column.bytes))
    if kind == _SET:
        return ColumnDecoder(name, "set", members=tuple(getattr(column, "set_values", None) or ()))
    if kind == _YEAR:
        return ColumnDecoder(name, "year")
    if kind == _TIME2 and int(getattr(column, "fsp", 0) or 0) > 0:
        return ColumnDecoder(name, "time", fsp=int(column.fsp))
    if kind in (_TIMESTAMP, _TIMESTAMP2):
        return ColumnDecoder(name, "timestamp")
    return None


def fix_image(
    values: dict[str, Any], none_sources: Mapping[str, str], decoders: Mapping[str, ColumnDecoder]
) -> dict[str, Any]:
    """Bring one row image to the server's values, in place (see the module doc).

    Every column is fixed, also when one cannot be decoded: that one keeps its bytes, so that a dead
    letter holds the server's value of every other column (not the library's ``'0101'`` for a
    ``BIT``, an unordered set, a ``BINARY`` without its padding).

    Raises:
        ValueError: If a value cannot be decoded (after fixing the others); the message names the
            column(s) and the charset.
    """
    errors: list[str] = []
    for name, decoder in decoders.items():
        if name not in values:
            continue
        value = values[name]
        if value is None:
            if decoder.kind == "set" and none_sources.get(name) == "empty set":
                values[name] = ""
            continue
        try:
            values[name] = _FIXES[decoder.kind](value, decoder)
        except _Undecodable as exc:
            errors.append(str(exc))
    if errors:
        raise _Undecodable("; ".join(errors))
    return values


def _text(value: Any, decoder: ColumnDecoder) -> str:
    if isinstance(value, str):  # the library skips decoding an empty value
        return value
    try:
        return decode_text(bytes(value), decoder.codec)
    except (UnicodeDecodeError, LookupError) as exc:
        raise _Undecodable(
            f"column {decoder.name!r} holds bytes that its charset ({decoder.codec}) cannot decode: {exc}"
        ) from exc


def _binary(value: Any, decoder: ColumnDecoder) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _fixed_binary(value: Any, decoder: ColumnDecoder) -> bytes:
    return _binary(value, decoder).ljust(decoder.length, b"\x00")


def _bit(value: Any, decoder: ColumnDecoder) -> bytes:
    return int(value, 2).to_bytes(decoder.length, "big") if isinstance(value, str) else bytes(value)


def _set(value: Any, decoder: ColumnDecoder) -> str:
    if isinstance(value, str):
        return value
    return ",".join(m for m in decoder.members if m in value)


def _year(value: Any, decoder: ColumnDecoder) -> int:
    return 0 if value == 1900 else int(value)


def _time(value: Any, decoder: ColumnDecoder) -> dt.timedelta:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    whole, fraction = divmod(micros, 1_000_000)
    if micros >= 0 or fraction == 0:
        return value  # type: ignore[no-any-return]
    return dt.timedelta(microseconds=whole * 1_000_000 + (1_000_000 - fraction))  # -(s+1)+f → -(s+f)


def _timestamp(value: Any, decoder: ColumnDecoder) -> dt.datetime | None:
    return None if value == _EPOCH else value


_FIXES: Final[dict[str, Callable[[Any, ColumnDecoder], Any]]] = {
    "text": _text,
    "binary": _binary,
    "fixed_binary": _fixed_binary,
    "bit": _bit,
    "set": _set,
    "year": _year,
    "time": _time,
    "timestamp": _timestamp,
}


def row_changes(
    table: str, event: Any, kind: Literal["insert", "update", "delete"], decoders: Mapping[str, ColumnDecoder]
) -> list[tuple[int, dict[str, Any]]]:
    """The ``(kind, image)`` changes of a rows event, fixed by ``decoders``.

    An image that cannot be decoded makes its change (for an update both images) :class:`UndecodedRow`
    values; a rows event the library cannot parse at all becomes one :class:`UndecodedRow` holding the
    raw event.
    """
    try:
        rows = event.rows
    except Exception as exc:  # the library raises anything; the source must go on
        raw = dump_record({"table": table, "event": _raw_event(event)})
        error = f"cannot decode a binlog rows event of {table} ({type(exc).__name__}: {exc})"
        return [(0, UndecodedRow({}, raw=raw, error=error))]
    out: list[tuple[int, dict[str, Any]]] = []
    for r in rows:
        if kind == "update":
            before, after = r["before_values"], r["after_values"]
            errors = []
            for image, sources in ((before, "before_none_sources"), (after, "after_none_sources")):
                try:  # both images, also when the first cannot be decoded: the letter holds both fixed
                    fix_image(image, r.get(sources, {}), decoders)
                except _Undecodable as exc:
                    errors.append(str(exc))
            if errors:
                raw = dump_record({"table": table, "kind": "update", "before": before, "after": after})
                error = errors[0] if len(errors) == 1 or errors[0] == errors[1] else "; ".join(errors)
                before, after = (
                    UndecodedRow(before, raw=raw, error=error),
                    UndecodedRow(after, raw=raw, error=error),
                )
            out += [(1, before), (2, after)]
            continue
        image = r["values"]
        try:
            fix_image(image, r.get("none_sources", {}), decoders)
        except _Undecodable as exc:
            raw = dump_record({"table": table, "kind": kind, "values": image})
            image = UndecodedRow(image, raw=raw, error=str(exc))
        out.append((3 if kind == "delete" else 0, image))
    return out


def _raw_event(event: Any) -> bytes:
    packet = getattr(getattr(event, "packet", None), "packet", None)
    get_all = getattr(packet, "get_all_data", None)
    return bytes(get_all()) if callable(get_all) else b""


# --- the snapshot ------------------------------------------------------------------------------------


def select_list(schema: pa.Schema) -> str:
    """The chunk SELECT's column list: ``FLOAT`` (float32) columns read exactly through ``DOUBLE``."""
    return ", ".join(
        f"CAST({quote(f.name)} AS DOUBLE) AS {quote(f.name)}" if f.type == pa.float32() else quote(f.name)
        for f in schema
    )


def text_bound_keys(schema: pa.Schema, key: Sequence[str]) -> list[str]:
    """The key columns whose chunk bound is the server's text (``CAST(k AS CHAR)``, read beside the
    row): dates and timestamps. Such a value as read is ``None`` for a zero date (``0000-00-00``,
    allowed by non-strict modes), and ``WHERE (key) > (NULL, ...)`` matches nothing: the chunks after
    it were lost."""
    return [
        k
        for k in key
        if pa.types.is_date(schema.field(k).type) or pa.types.is_timestamp(schema.field(k).type)
    ]


def snapshot_converters(base: Mapping[int, Any]) -> dict[int, Any]:
    """PyMySQL converters (``conv=``) from ``base`` with zero dates read as ``None``, like the stream.

    PyMySQL returns the text of a ``DATE``/``DATETIME``/``TIMESTAMP`` it cannot turn into a value (a
    zero or partly zero date) unchanged.
    """
    conv = dict(base)
    for field_type in (7, 10, 12):  # TIMESTAMP, DATE, DATETIME
        if field_type in conv:
            conv[field_type] = _none_if_text(conv[field_type])
    return conv


def _none_if_text(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def converter(text: Any) -> Any:
        value = convert(text)
        return None if isinstance(value, str | bytes) else value

    return converter
