"""Debezium JSON lines parsed in bulk into Arrow changelogs: the fast path of :mod:`flowlake.cdc.jsonl`.

A read window of complete lines is parsed by ``pyarrow.json`` (C++, no Python object per value) when
every line is a plain payload-only change (``op`` ``c``/``r``/``u``/``d``, routed by
``source.db``/``schema`` and ``table``, no schema block, no transaction event). Once the ingester has
said which ODS columns a table has (:func:`parse_hint`), the window is parsed with those columns'
types given explicitly (no type inference; a value of another type fails the parse, and the window
is parsed again with inference). The source then turns each group's images of a table into an Arrow
changelog in the ODS columns with Arrow kernels (:func:`changelog_batch`).

The fast path only ever *declines*: a window it is not sure about (a line that is not an object, a
blank or over-long line, a ``NaN``/``Infinity`` token or a 20-digit number that ``orjson`` would
refuse but ``pyarrow.json`` accepts, an integer a float column would round, an envelope, an event, a
table the filter skips) goes through the per-line path unchanged, and a group whose values do not map
exactly onto the ODS columns (another type, a new column, a key-only before-image, a null key) goes
to the ingester as a ``messages`` batch for the per-message decoder (:meth:`MessageBatch.messages`).
Dead letters and positions are therefore exactly those of the per-line path;
``tests/unit/cdc/test_jsonl_bulk.py`` checks that both paths agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from flowlake.cdc.batch import ChangeBatch
from flowlake.cdc.source import TableSpec
from flowlake.changelog import KIND_COLUMN

_TOP_LEVEL: Final = frozenset({"op", "before", "after", "source", "transaction", "ts_ms", "ts_us", "ts_ns"})
_OPS: Final = pa.array(["c", "r", "u", "d"])
_BEYOND_INT: Final = 18446744073709551615.0
"""``orjson`` refuses integers beyond uint64, which ``pyarrow.json`` reads as doubles; a window with
a double this large (or a float column nested in a list) goes through the per-line path."""
_BELOW_INT: Final = -9223372036854775808.0
"""Nor integers below int64."""
_PARSE: Final = pj.ParseOptions(unexpected_field_behavior="infer")
_EXACT_FLOAT: Final = 9007199254740992.0
"""2**53: a JSON integer this large in a column parsed as float64 may have been rounded (the
per-message path refuses such a value for a float column, or keeps it as an integer)."""
_READ: Final = pj.ReadOptions(block_size=1 << 20)
MIN_LINES: Final = 64
"""Fewer lines than this are not worth a bulk parse."""


@dataclass(frozen=True, slots=True)
class BulkWindow:
    """A window of lines parsed in bulk: per line its end offset (relative), table and transaction."""

    data: bytes
    starts: np.ndarray[Any, Any]
    ends: np.ndarray[Any, Any]
    tables: list[str]
    table_of_line: pa.Array | None
    txids: list[str | None] | None
    op: pa.Array
    before: pa.Array | None
    after: pa.Array | None

    def __len__(self) -> int:
        return len(self.op)

    def raw(self, line: int) -> bytes:
        """The line as the per-line path sees it (without its line break)."""
        return self.data[int(self.starts[line]) : int(self.ends[line])].rstrip(b"\r\n")

    def batch(self, start: int, stop: int, table: str) -> MessageBatch:
        """The messages of ``table`` among lines ``[start, stop)``."""
        if self.table_of_line is None:
            count = stop - start
            return MessageBatch(
                self.op.slice(start, count),
                None if self.before is None else self.before.slice(start, count),
                None if self.after is None else self.after.slice(start, count),
                np.arange(start, stop),
                self.raw,
            )
        else:
            mask = pc.equal(self.table_of_line.slice(start, stop - start), table)
            lines = np.flatnonzero(mask.to_numpy(zero_copy_only=False)) + start
        index = pa.array(lines)
        return MessageBatch(
            pc.take(self.op, index),
            None if self.before is None else pc.take(self.before, index),
            None if self.after is None else pc.take(self.after, index),
            lines,
            self.raw,
        )


@dataclass(frozen=True, slots=True)
class MessageBatch:
    """Parsed messages of one table: ``op`` and the ``before``/``after`` struct images, in order."""

    op: pa.Array
    before: pa.Array | None
    after: pa.Array | None
    lines: np.ndarray[Any, Any]
    raw_of: Callable[[int], bytes]

    def __len__(self) -> int:
        return len(self.op)

    def messages(self) -> list[tuple[bytes, Any]]:
        """The messages as the per-line path hands them over: ``(line, orjson.loads(line))``."""
        out = []
        for line in self.lines:
            raw = self.raw_of(int(line))
            out.append((raw, orjson.loads(raw)))
        return out


def parse_hint(specs: Iterable[TableSpec]) -> pa.Schema | None:
    """The explicit parse schema for windows of these ODS tables: ``op`` and ``before``/``after``
    structs of their columns whose JSON form ``pyarrow.json`` reads exactly (integers, floats, text,
    booleans). A column two tables type differently is left to inference."""
    columns: dict[str, pa.DataType | None] = {}
    for spec in specs:
        for f in spec.schema:
            parse = _PARSE_AS.get(f.type) or (pa.int64() if pa.types.is_integer(f.type) else None)
            if f.name in columns and columns[f.name] != parse:
                parse = None
            columns[f.name] = parse
    fields = [(name, kind) for name, kind in columns.items() if kind is not None]
    if not fields:
        return None
    row = pa.struct(fields)
    return pa.schema([("op", pa.string()), ("before", row), ("after", row)])


_PARSE_AS: Final[dict[pa.DataType, pa.DataType]] = {
    pa.float64(): pa.float64(),
    pa.string(): pa.string(),
    pa.bool_(): pa.bool_(),
}


def _read(data: bytes, hint: pa.Schema | None) -> pa.Table | None:
    """Parse with ``hint``'s types given (else, or when a value has another type, by inference)."""
    if hint is not None:
        options = pj.ParseOptions(explicit_schema=hint, unexpected_field_behavior="infer")
        try:
            parsed = pj.read_json(pa.py_buffer(data), read_options=_READ, parse_options=options)
        except (pa.ArrowException, ValueError, UnicodeDecodeError):
            parsed = None
        if parsed is not None and not _rounded(parsed, hint):
            return parsed
    try:
        return pj.read_json(pa.py_buffer(data), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowException, ValueError, UnicodeDecodeError):
        return None


def _rounded(parsed: pa.Table, hint: pa.Schema) -> bool:
    """Whether a column parsed as float64 by the hint holds a number beyond 2**53 (maybe rounded)."""
    for image in ("before", "after"):
        if image not in parsed.column_names:
            continue
        column = parsed.column(image).combine_chunks()
        for f in hint.field(image).type:
            if f.type == pa.float64():
                bounds = pc.min_max(pc.abs(pc.struct_field(column, f.name)))
                high = bounds["max"].as_py()
                if high is not None and high >= _EXACT_FLOAT:
                    return True
    return False


def parse_window(
    data: bytes, max_line_bytes: int, accept: Callable[[str], bool], hint: pa.Schema | None = None
) -> BulkWindow | None:
    """Parse complete lines ``data`` (ending in a newline) in bulk, or ``None`` to read them one by one.

    ``hint`` (from :func:`parse_hint`) gives the types of the image columns the ingester knows.
    """
    if len(data) < MIN_LINES * 16 or not data.endswith(b"\n"):
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buffer == 10) + 1
    if len(ends) < MIN_LINES:
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    if (buffer[starts] != ord("{")).any() or int((ends - starts).max()) - 1 > max_line_bytes:
        return None  # a blank or non-object line (pyarrow.json crashes on a bare null), or a long one
    parsed = _read(data, hint)
    if parsed is None or parsed.num_rows != len(ends) or not set(parsed.column_names) <= _TOP_LEVEL:
        return None
    if any(_huge_numbers(column.type, column) for column in parsed.columns):
        return None
    routed = _route(parsed)
    if routed is None:
        return None
    tables, table_of_line = routed
    if not all(accept(t) for t in tables):
        return None
    usable, txids = _txids(parsed)
    if not usable:
        return None
    op = parsed.column("op").combine_chunks() if "op" in parsed.column_names else None
    if op is None or op.type != pa.string() or not pc.all(pc.is_in(op, value_set=_OPS)).as_py():
        return None
    return BulkWindow(
        data,
        starts,
        ends,
        tables,
        table_of_line,
        txids,
        op,
        _image(parsed, "before"),
        _image(parsed, "after"),
    )


def _huge_numbers(kind: pa.DataType, values: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a parsed column holds a double beyond uint64, a ``NaN``/``Infinity`` (or doubles inside
    a list or map)."""
    if pa.types.is_floating(kind):
        if pc.all(pc.is_finite(values)).as_py() is False:
            return True  # NaN or Infinity: tokens pyarrow.json reads but orjson (the per-line path) refuses
        bounds = pc.min_max(values)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        return low is not None and (high >= _BEYOND_INT or low <= _BELOW_INT)
    if pa.types.is_struct(kind):
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        return any(
            _huge_numbers(kind.field(i).type, pc.struct_field(array, i)) for i in range(kind.num_fields)
        )
    if pa.types.is_nested(kind):
        return "double" in str(kind)
    return False


def _image(parsed: pa.Table, name: str) -> pa.Array | None:
    if name not in parsed.column_names:
        return None
    return parsed.column(name).combine_chunks()


def _route(parsed: pa.Table) -> tuple[list[str], pa.Array | None] | None:
    """``owner.table`` of every line (``source.schema`` or else ``source.db``), as the per-line path."""
    if "source" not in parsed.column_names:
        return None
    src = parsed.column("source").combine_chunks()
    if not pa.types.is_struct(src.type) or src.null_count:
        return None
    names = {src.type.field(i).name for i in range(src.type.num_fields)}
    if "table" not in names or not ({"db", "schema"} & names):
        return None
    children = {n: pc.struct_field(src, n) for n in ("db", "schema", "table") if n in names}
    if any(c.type not in (pa.string(), pa.null()) for c in children.values()):
        return None
    table = children["table"]
    if table.type != pa.string() or table.null_count:
        return None
    if not pc.all(pc.greater(pc.utf8_length(table), 0)).as_py():
        return None
    owner = children.get("db")
    schema = children.get("schema")
    if schema is not None and schema.type == pa.string():
        use = pc.fill_null(pc.greater(pc.utf8_length(schema), 0), False)
        owner = schema if owner is None or owner.type != pa.string() else pc.if_else(use, schema, owner)
    if owner is None or owner.type != pa.string() or owner.null_count:
        return None
    full = pc.binary_join_element_wise(owner, table, ".")
    unique = pc.unique(full).to_pylist()
    return [str(t) for t in unique], (None if len(unique) == 1 else full)


def _txids(parsed: pa.Table) -> tuple[bool, list[str | None] | None]:
    """Each line's transaction id as text (``None`` without one; no list if no line has one), and
    whether the ids can be read as the per-line path reads them."""
    if "transaction" not in parsed.column_names:
        return True, None
    block = parsed.column("transaction").combine_chunks()
    if block.type == pa.null():
        return True, None
    if not pa.types.is_struct(block.type):
        return False, None
    if block.type.get_field_index("id") < 0:
        return True, None
    ids = pc.struct_field(block, "id")
    if ids.type == pa.null():
        return True, None
    if ids.type == pa.int64():
        ids = ids.cast(pa.string())
    elif ids.type != pa.string():
        return False, None
    if ids.null_count == len(ids):
        return True, None
    values: list[str | None] = ids.to_pylist()
    return True, values


def groups_of(window: BulkWindow, loose: int) -> list[tuple[int, int, str | None]] | None:
    """Split lines into groups as the per-line path does: runs of one transaction id, runs of lines
    without one cut every ``loose`` lines. The last run is left out when it has a transaction id (it
    may go on in lines not read yet); ``None`` when that leaves nothing."""
    n = len(window)
    txids = window.txids
    if txids is None:
        return [(a, min(a + loose, n), None) for a in range(0, n, loose)]
    runs: list[tuple[int, int, str | None]] = []
    start, current, count = 0, txids[0], 0
    for i, txid in enumerate(txids):
        if i > start and (txid != current or (txid is None and count >= loose)):
            runs.append((start, i, current))
            start, current, count = i, txid, 0
        count += 1
    runs.append((start, n, current))
    if runs[-1][2] is not None:
        runs.pop()
    return runs or None


# --- changelogs ------------------------------------------------------------------------------------


_CASTABLE: Final[dict[pa.DataType, Callable[[pa.DataType], bool]]] = {
    pa.int64(): lambda t: pa.types.is_integer(t) or t == pa.float64(),
    pa.float64(): lambda t: t == pa.float64(),
    pa.string(): lambda t: t == pa.string(),
    pa.bool_(): lambda t: t == pa.bool_(),
}
"""Parsed JSON type → ODS column types it goes into exactly (a checked cast, no other conversion)."""


def changelog_batch(batch: MessageBatch, schema: pa.Schema, key: Sequence[str]) -> ChangeBatch | None:
    """The changes of ``batch`` in ``schema``'s columns plus ``_kind``, or ``None`` when any message
    needs the per-message decoder (see the module doc)."""
    n = len(batch)
    is_u = pc.equal(batch.op, "u").to_numpy(zero_copy_only=False)
    is_d = pc.equal(batch.op, "d").to_numpy(zero_copy_only=False)
    images = {"before": batch.before, "after": batch.after}
    if not _images_usable(images, is_u, is_d, set(schema.names)):
        return None
    counts = 1 + is_u.astype(np.int64)
    msg = np.repeat(np.arange(n), counts)
    kinds = np.where(is_d, 3, np.where(is_u, 1, 0)).astype(np.int8)[msg]
    if is_u.any():
        kinds[np.cumsum(counts)[is_u] - 1] = 2
    # row r takes the before-image (message msg[r], at msg[r]) or the after-image (at n + msg[r])
    take = pa.array(np.where((kinds == 1) | (kinds == 3), msg, msg + n))
    key_set = set(key)
    nonkey_all_null = np.ones(n, dtype=bool)
    columns: list[pa.Array] = []
    for f in schema:
        before, after = (_child(images[name], f, n) for name in ("before", "after"))
        if before is None or after is None:
            return None
        if f.name not in key_set:
            nonkey_all_null &= _nulls(before)
        column = pc.take(pa.concat_arrays([before, after]), take)
        if f.name in key_set and column.null_count:
            return None  # a change without its key: the per-message path names it
        columns.append(column)
    if len(schema) > len(key_set) and (nonkey_all_null & (is_u | is_d)).any():
        return None  # a key-only before-image (REPLICA IDENTITY DEFAULT): rule 5 of the decoder
    out = pa.schema([*(f.with_nullable(True) for f in schema), pa.field(KIND_COLUMN, pa.int8())])
    changes = pa.Table.from_arrays([*columns, pa.array(kinds)], schema=out)
    return ChangeBatch(changes, batch.lines[msg], batch.raw_of)


def _images_usable(
    images: dict[str, pa.Array | None],
    is_u: np.ndarray[Any, Any],
    is_d: np.ndarray[Any, Any],
    columns: set[str],
) -> bool:
    """Whether every image a change needs is there, as a struct of known columns only."""
    for name, image in images.items():
        if image is not None and image.type != pa.null():
            if not pa.types.is_struct(image.type):
                return False
            if {image.type.field(i).name for i in range(image.type.num_fields)} - columns:
                return False  # a new column: the per-message path evolves the table
        needs = (is_u | is_d) if name == "before" else ~is_d
        if needs.any() and (image is None or image.type == pa.null() or _nulls(image)[needs].any()):
            return False  # a missing image: the per-message path says why (or emits +U alone)
    return True


def _child(image: pa.Array | None, f: pa.Field, n: int) -> pa.Array | None:
    """Column ``f`` of a struct image in the ODS type, or ``None`` if it does not map exactly."""
    if image is None or not pa.types.is_struct(image.type) or image.type.get_field_index(f.name) < 0:
        return pa.nulls(n, f.type)
    child = pc.struct_field(image, f.name)
    if child.type == pa.null():
        return pa.nulls(n, f.type)
    fits = _CASTABLE.get(child.type)
    if fits is None or not fits(f.type):
        return None
    try:
        return child.cast(f.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _nulls(array: pa.Array) -> np.ndarray[Any, Any]:
    if not array.null_count:
        return np.zeros(len(array), dtype=bool)
    return np.asarray(pc.is_null(array).to_numpy(zero_copy_only=False), dtype=bool)
