"""String functions of SQL views evaluated in Arrow compute, with DuckDB's results.

A Calc's computed columns run as one DuckDB query per batch. Some string functions cost DuckDB
more than Arrow (copying the strings in, splitting and matching them); when a call's first argument
is a string column and its other arguments are constants, the planner takes it out of the query as
an :class:`ArrowCall`: its result becomes a column that Arrow computes before the query runs, and
the query (if anything is left for it) reads that column instead of the call. The results are
DuckDB's, including NULLs, empty strings and out-of-range indexes:

- ``split_part(s, delimiter, i)`` (a non-empty delimiter): the ``i``-th part (1-based; negative
  counts from the end), ``''`` when ``i`` is 0 or out of range, NULL for a NULL ``s``.
- ``regexp_extract(s, pattern[, group])``: group ``group`` (0: the whole match) of the first match,
  ``''`` when nothing matches. Both engines use RE2; Arrow needs every capturing group named, so the
  pattern's unnamed groups get names (a pattern whose groups cannot be told apart safely stays in
  DuckDB).
- ``lower(s)``, ``upper(s)``: Arrow's ASCII case mapping for a batch whose strings are all ASCII;
  any other batch goes to DuckDB for that call (the two engines' Unicode tables differ in a few
  dozen recent code points).

>>> import pyarrow as pa
>>> part = ArrowCall("p", "split_part", "url", text="/", index=-1)
>>> part(pa.table({"url": ["a/b/c", None, ""]})).to_pylist()
['c', None, '']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from flowlake.errors import SqlError
from flowlake.sql.evaluate import BatchQuery, constant_value, quote
from flowlake.sql.statements import DIALECT

Func = Literal["split_part", "regexp_extract", "lower", "upper"]
"""The functions Arrow evaluates."""

_STRING = (pa.string(), pa.large_string())
_GROUP = "__flowlake_g"
"""Prefix of the names given to a pattern's unnamed groups."""


@dataclass(frozen=True)
class ArrowCall:
    """One call of a string function over a column, as Arrow computes it.

    Args:
        name: The column its result becomes.
        func: Which function.
        column: The string column it reads.
        text: ``split_part``'s delimiter, or ``regexp_extract``'s pattern with every group named.
        index: ``split_part``'s part (1-based, negative from the end), or the position of
            ``regexp_extract``'s group among the named pattern's groups.
    """

    name: str
    func: Func
    column: str
    text: str = ""
    index: int = 0

    def __call__(
        self, table: pa.Table, splits: dict[tuple[str, str], list[pa.ListArray]] | None = None
    ) -> pa.ChunkedArray:
        """The call's result for each row of ``table``.

        ``splits`` keeps the split lists of each (column, delimiter) for the other ``split_part``
        calls over the same batch.
        """
        column = table.column(self.column)
        if self.func == "split_part":
            splits = {} if splits is None else splits
            lists = splits.get((self.column, self.text))
            if lists is None:
                lists = [pc.split_pattern(chunk, self.text) for chunk in column.chunks]
                splits[(self.column, self.text)] = lists
            parts = [_split_part(c, split, self.index) for c, split in zip(column.chunks, lists, strict=True)]
            return pa.chunked_array(parts, pa.string())
        if self.func == "regexp_extract":
            found = [_regexp_extract(chunk, self.text, self.index) for chunk in column.chunks]
            return pa.chunked_array(found, pa.string())
        if pc.all(pc.string_is_ascii(column)).as_py() is not False:
            return pc.ascii_lower(column) if self.func == "lower" else pc.ascii_upper(column)
        query = BatchQuery(f"SELECT {self.func}({quote(self.column)}) AS v FROM batch")
        return query(table.select([self.column])).column("v")

    def describe(self) -> str:
        """The call (for the plan text)."""
        if self.func == "split_part":
            return f"{self.name} = split_part({self.column}, {self.text!r}, {self.index})"
        if self.func == "regexp_extract":
            return f"{self.name} = regexp_extract({self.column}, {self.text!r}) named group #{self.index + 1}"
        return f"{self.name} = {self.func}({self.column})"


def _split_part(strings: pa.Array, lists: pa.ListArray, index: int) -> pa.Array:
    """``split_part`` over one chunk (split into ``lists``): one take from the parts and a ``''``."""
    offsets = np.asarray(lists.offsets.to_numpy(zero_copy_only=False), np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    at = starts + index - 1 if index > 0 else ends + index
    values = lists.values
    if lists.offset or len(values) != offsets[-1]:  # a sliced chunk: its parts from offsets[0] on
        values = values.slice(0, int(offsets[-1]))
    empty = len(values)
    at = np.where((index != 0) & (at >= starts) & (at < ends), at, empty)
    parts = pa.concat_arrays([values.cast(pa.string()), pa.array([""], pa.string())])
    mask = np.asarray(strings.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return parts.take(pa.array(at, pa.int64(), mask=mask if mask.any() else None))


def _regexp_extract(strings: pa.Array, pattern: str, index: int) -> pa.Array:
    """``regexp_extract`` over one chunk: the group's text, ``''`` where nothing matched."""
    group = pc.struct_field(pc.extract_regex(strings, pattern), [index])
    filled = pc.fill_null(group, "")
    if not strings.null_count:
        return filled
    return pc.if_else(pc.is_null(strings), pa.scalar(None, pa.string()), filled)


def name_groups(pattern: str) -> tuple[str, list[str]] | None:
    """``pattern`` with its unnamed capturing groups named, and every capturing group's name in order
    (as RE2 numbers them); None where the pattern has constructs this does not follow."""
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            if pattern.startswith("\\Q", i):
                return None  # quoted text: parentheses in it are literal; left to DuckDB
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[":
            end = _class_end(pattern, i)
            if end is None:
                return None
            out.append(pattern[i:end])
            i = end
            continue
        if char == "(":
            if pattern.startswith("(?", i):
                named = re.match(r"\(\?P?<([A-Za-z0-9_]+)>", pattern[i:])
                if named:
                    names.append(named.group(1))
                elif not re.match(r"\(\?[imsU-]*[:)]", pattern[i:]):
                    return None
                out.append(char)
                i += 1
                continue
            name = f"{_GROUP}{len(names) + 1}"
            names.append(name)
            out.append(f"(?P<{name}>")
            i += 1
            continue
        out.append(char)
        i += 1
    if len(set(names)) != len(names):
        return None
    return "".join(out), names


def _class_end(pattern: str, start: int) -> int | None:
    """Where the character class starting at ``start`` (a ``[``) ends (just past its ``]``)."""
    i = start + 1
    if pattern.startswith("^", i):
        i += 1
    if pattern.startswith("]", i):
        i += 1  # a leading ] is a literal
    while i < len(pattern):
        if pattern[i] == "\\":
            i += 2
        elif pattern.startswith("[:", i):
            close = pattern.find(":]", i + 2)
            if close < 0:
                return None
            i = close + 2
        elif pattern[i] == "]":
            return i + 1
        else:
            i += 1
    return None


def _regexp_call(name: str, column: str, pattern: Any, group: Any) -> ArrowCall | None:
    if not isinstance(pattern, str) or not isinstance(group, int) or isinstance(group, bool) or group < 0:
        return None
    named = name_groups(pattern)
    if named is None:
        return None
    text, names = named
    if group == 0:
        whole = f"{_GROUP}0"
        if whole in names:
            return None
        text, index = f"(?P<{whole}>{text})", 0
    elif group <= len(names):
        index = group - 1
    else:
        return None
    try:
        pc.extract_regex(pa.array([], pa.string()), text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return ArrowCall(name, "regexp_extract", column, text=text, index=index)


def arrow_call(
    node: exp.Expr, name: str, string_column: Callable[[exp.Expr], str | None]
) -> ArrowCall | None:
    """``node`` as an :class:`ArrowCall` named ``name``, if it is a call Arrow evaluates like DuckDB:
    one of the functions over a string column (``string_column`` gives its name, or None) with
    constant other arguments."""
    if not isinstance(node, exp.SplitPart | exp.RegexpExtract | exp.Lower | exp.Upper):
        return None
    column = string_column(node.this)
    if column is None:
        return None
    if isinstance(node, exp.Lower | exp.Upper):
        return ArrowCall(name, "lower" if isinstance(node, exp.Lower) else "upper", column)
    if isinstance(node, exp.SplitPart):
        delimiter = _constant(node.args.get("delimiter"))
        index = _constant(node.args.get("part_index"))
        if not isinstance(delimiter, str) or not delimiter or not isinstance(index, int):
            return None
        if isinstance(index, bool):
            return None
        return ArrowCall(name, "split_part", column, text=delimiter, index=index)
    if node.args.get("parameters") is not None or node.args.get("position") is not None:
        return None
    group = node.args.get("group")
    return _regexp_call(name, column, _constant(node.expression), 0 if group is None else _constant(group))


_NOT_CONSTANT = object()


def _constant(node: exp.Expr | None) -> Any:
    """The value DuckDB gives a constant expression (no columns), else a marker that is no value."""
    if node is None or any(True for _ in node.find_all(exp.Column)):
        return _NOT_CONSTANT
    try:
        return constant_value(node.sql(dialect=DIALECT))
    except SqlError:
        return _NOT_CONSTANT


def take_arrow_calls(
    expr: exp.Expr, types: Mapping[str, pa.DataType], resolve: Callable[[exp.Column], str | None],
    fresh: Callable[[], str], known: dict[tuple[Any, ...], str],
) -> tuple[exp.Expr, list[ArrowCall]]:  # fmt: skip
    """``expr`` with the calls Arrow evaluates replaced by columns (innermost first, so a call over
    another's result is one too), and the new calls in evaluation order.

    ``types`` are the input columns' types, ``resolve`` gives a column reference's input column, and
    ``known`` the calls taken so far (from other expressions of the same Calc): a call made before
    is the same column.
    """
    calls: list[ArrowCall] = []
    produced: dict[str, pa.DataType] = dict.fromkeys(known.values(), pa.string())

    def string_column(arg: exp.Expr) -> str | None:
        if not isinstance(arg, exp.Column):
            return None
        name = arg.name if not arg.table and arg.name in produced else resolve(arg)
        if name is None:
            return None
        dtype = produced.get(name, types.get(name))
        return name if dtype in _STRING else None

    def rewrite(node: exp.Expr) -> exp.Expr:
        for key, value in list(node.args.items()):
            if isinstance(value, exp.Expr):
                node.set(key, rewrite(value))
            elif isinstance(value, list):
                node.set(key, [rewrite(v) if isinstance(v, exp.Expr) else v for v in value])
        call = arrow_call(node, "", string_column)
        if call is None:
            return node
        same = (call.func, call.column, call.text, call.index)
        if same not in known:
            known[same] = fresh()
            calls.append(ArrowCall(known[same], call.func, call.column, text=call.text, index=call.index))
            produced[known[same]] = pa.string()
        return exp.column(known[same])

    return rewrite(expr.copy()), calls
