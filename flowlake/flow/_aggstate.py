"""Mini-batched, retraction-correct group aggregation state (no bytewax here; pure and testable).

One :class:`AggregateState` holds the groups of one key partition. ``apply`` folds a whole Arrow
changelog batch: its rows are coded by group key (Arrow's dictionary encoding), the distinct keys
are mapped to group ids (a :class:`~flowlake.flow._keyindex.KeyIndex`), weights (+1/-1 per kind) and
values are summed per group with numpy, the per-group state lives in numpy arrays indexed by the
group id (per-value counts for min/max/count distinct in a
:class:`~flowlake.flow._valuecounts.ValueCounts`), and it emits once per changed group: ``-U``/``+U``
when a group's result changed, ``+I`` for a new group, ``-D`` when its row count reaches zero.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import itertools
import logging
import pickle
import sys
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow._columns import (
    column_ints,
    decimal_array,
    is_valid,
    key_array,
    state_ints,
    temporal_us,
    unscaled_default,
    value_array,
)
from flowlake.flow._grouplog import (
    HASH,
    IDENT,
    LIVE,
    TABLE,
    WINDOW_START,
    GroupChunkLog,
    ShedsToChunks,
    key_identities,
    memory_bound,
    resume_eagerly,
    sort_records,
)
from flowlake.flow._keyindex import (
    EXACT_BELOW,
    IntKeys,
    KeyIndex,
    KeyStore,
    RowKeys,
    dense_row_codes,
    gather,
    int_hashes,
    int_row_codes,
    tuple_hashes,
)
from flowlake.flow._snapshot import ChunkLog, Manifest, Records
from flowlake.flow._stateform import _storage_type, from_state, to_state
from flowlake.flow._valuecounts import ValueCounts, row_codes, sum_by
from flowlake.flow.aggs import ADDITIVE, Agg, Condition, Window
from flowlake.flow.batch import WEIGHT_COLUMN, kinds_of, weights

log = logging.getLogger("flowlake.flow")

LATE_REASON = "reason"


def condition_mask(data: pa.Table, where: Condition | None) -> np.ndarray:
    """Evaluate a row filter to a boolean numpy mask (null → False)."""
    if where is None:
        return np.ones(data.num_rows, dtype=bool)
    if callable(where):
        mask = where(data)
        if isinstance(mask, np.ndarray):
            return mask.astype(bool)
        return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
    column, op, value = where
    col = data.column(column)
    if op == "in":
        result = pc.is_in(col, value_set=pa.array(list(value), col.type))
    elif op in _COMPARE:
        result = _COMPARE[op](col, _operand(value, col.type) if value is not None else None)
    else:
        raise InvalidArgumentError(f"unknown filter op {op!r}; use == != < <= > >= or in")
    if result.null_count:
        result = pc.fill_null(result, False)
    return np.asarray(result.to_numpy(zero_copy_only=False), dtype=bool)


def _operand(value: Any, type_: pa.DataType) -> pa.Scalar:
    """``value`` as a scalar of ``type_`` (made once per value and type: filters run every batch)."""
    try:
        return _typed_scalar(type(value).__name__, value, type_)  # (1, 1.0 and True hash alike)
    except TypeError:  # (an unhashable value)
        return pa.scalar(value).cast(type_)


@functools.lru_cache(maxsize=256)
def _typed_scalar(kind: str, value: Any, type_: pa.DataType) -> pa.Scalar:
    return pa.scalar(value).cast(type_)


_COMPARE = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal}  # fmt: skip


KEY_FORM = 1
"""How group keys are held: 1 = temporal and decimal values in their state form (plain ints, see
:mod:`flowlake.flow._stateform`); states saved before it held them as Python objects."""

WATERMARK_COLUMN = "_watermark"
"""Per-row event-time watermark (epoch us) a batch may carry into :class:`AggregateState`."""

_NO_MARK = np.iinfo(np.int64).min
_I32_MAX = np.iinfo(np.int32).max
_INSERT, _UPDATE_BEFORE, _UPDATE_AFTER, _DELETE = (
    int(RowKind.INSERT),
    int(RowKind.UPDATE_BEFORE),
    int(RowKind.UPDATE_AFTER),
    int(RowKind.DELETE),
)

LOG_FORM = 2
"""How chunk records are written: 2 = one Arrow table per chunk, sorted by key hash, readable by key
(:mod:`flowlake.flow._grouplog`); manifests without it hold Python records (read whole on resume)."""

STATE_MB_ENV = "FLOWLAKE_AGG_STATE_MB"
"""Environment variable: the memory (MiB) one key partition of an aggregate keeps groups in."""

DEFAULT_STATE_MB = 128.0
"""Past this (estimated, see :meth:`AggregateState.bytes_per_group`) a key partition with a state
folder keeps its least recently changed groups on disk only, after a snapshot wrote them there."""


def state_cache_bytes(max_mb: float | None = None) -> int:
    """The memory bound of one key partition's groups in bytes: ``max_mb``, else
    ``$FLOWLAKE_AGG_STATE_MB``, else :data:`DEFAULT_STATE_MB`; ``0`` or less: no bound (0).

    >>> state_cache_bytes(1.5), state_cache_bytes(0)
    (1572864, 0)
    """
    return memory_bound(max_mb, STATE_MB_ENV, DEFAULT_STATE_MB)


_DENSE_KEYS_PER_ROW, _DENSE_KEYS_MIN = 8, 4096
"""Integer group keys are grouped through a table of their key space (see
:func:`~flowlake.flow._keyindex.dense_row_codes`) while it has at most this many slots a row (plus
the minimum), else by sorting their hashes."""


def watermarks_before(
    event: np.ndarray, w: np.ndarray, previous: int | None
) -> tuple[np.ndarray, int | None]:
    """Each row's watermark (the largest event time of the additions before it) and the new maximum.

    Rows are judged in changelog order, so lateness depends on neither batch boundaries nor on
    how rows are partitioned when one watermark is computed before the split:

    >>> before, top = watermarks_before(np.array([5, 3, 9]), np.array([1, 1, 1]), None)
    >>> before.tolist() == [_NO_MARK, 5, 5], top
    (True, 9)
    """
    adds = np.where((w > 0) & (event != _NO_MARK), event, _NO_MARK)
    running = np.maximum.accumulate(adds) if len(adds) else adds
    before = np.concatenate([[_NO_MARK], running[:-1]]) if len(adds) else adds
    if previous is not None:
        before = np.maximum(before, previous)
    top = int(running[-1]) if len(running) else _NO_MARK
    if previous is not None:
        top = builtins.max(top, previous)
    return before, (None if top == _NO_MARK else top)


def watermark_after(before: np.ndarray, event: np.ndarray, w: np.ndarray) -> int | None:
    """The largest watermark these rows (with their given watermarks) have seen, or None."""
    adds = np.where((w > 0) & (event != _NO_MARK), event, _NO_MARK)
    top = int(builtins.max(before.max(), adds.max())) if len(adds) else _NO_MARK
    return None if top == _NO_MARK else top


def with_watermarks(data: pa.Table, on: str, previous: int | None) -> tuple[pa.Table, int | None]:
    """``data`` plus a :data:`WATERMARK_COLUMN` of each row's watermark, and the new maximum.

    The aggregate operator runs this once on the whole input before splitting it into key
    partitions, so every partition judges lateness against the same, global watermark.
    """
    event = temporal_us(data.column(on))
    before, top = watermarks_before(event, weights(kinds_of(data)), previous)
    return data.append_column(WATERMARK_COLUMN, pa.array(before, pa.int64())), top


def result_type(agg: Agg, schema: pa.Schema) -> pa.DataType:
    """The output type of one aggregate over ``schema``."""
    if agg.func in ("count", "count_distinct"):
        return pa.int64()
    if agg.func == "avg":
        return pa.float64()
    assert agg.column is not None
    source = schema.field(agg.column).type
    if agg.func == "sum":
        if pa.types.is_decimal(source):
            return pa.decimal128(38, source.scale)
        return pa.float64() if pa.types.is_floating(source) else pa.int64()
    return source


class AggregateState(ShedsToChunks):
    """Group state of one key partition: ids, running totals, per-value counts, window bookkeeping.

    With a state folder (:meth:`keep_chunks`) and a memory bound (:meth:`keep_in_memory`), a state
    whose groups outgrow the bound drops its least recently changed groups from memory right after a
    snapshot wrote them to its chunks (they are *cold*); a change to a cold group reads its record
    back from the chunks (:meth:`GroupChunkLog.find`) before it is folded, so results are exactly
    those of a state that kept everything (see :class:`~flowlake.flow._grouplog.ShedsToChunks`). A
    resume of a state that had cold groups, or of a large one, reads none back until changes touch them.
    """

    _out_schema: pa.Schema | None = None
    """:meth:`output_schema`, kept between batches (not pickled; reset by :meth:`configure`)."""

    def __init__(self, by: Sequence[str], aggs: Mapping[str, Agg], window: Window | None) -> None:
        self.by = tuple(by)
        self.aggs = dict(aggs)
        self.window = window
        self.keys: KeyStore = []
        self.index = KeyIndex(self.keys)
        self.free: list[int] = []
        self.rows = np.zeros(0, dtype=np.int64)
        self.sums: dict[str, np.ndarray] = {}
        self.nonnull: dict[str, np.ndarray | None] = {}
        """Per additive aggregate, its non-null values per group; None while that equals the group's
        rows (no filter, no NULL seen yet: 8 bytes a group saved), see :meth:`nonnull_of`."""
        self.values: dict[str, ValueCounts] = {}
        self.max_event: int | None = None
        self.window_groups: dict[int, set[int]] = {}
        self.dropped_retractions = 0
        self.late_changes = 0
        self.schema: pa.Schema | None = None
        self._capacity = 0
        self._dirty = np.zeros(0, dtype=bool)
        self._gone: set[Any] = set()
        self.key_form = KEY_FORM
        self._last_use = np.zeros(0, dtype=np.int32)
        """Per group id, the number of the last batch that changed the group (who is shed first)."""
        self._batches = 0
        self._cold = False
        """Whether groups may be on disk only (shed, or not read back on resume)."""

    def configure(self, by: Sequence[str], aggs: Mapping[str, Agg], window: Window | None) -> None:
        """Re-attach the configuration (it is not part of the pickled state: callables may not pickle)."""
        if (tuple(by), dict(aggs), window) != (self.by, self.aggs, self.window):  # (the operator
            self._out_schema = None  # re-attaches the same configuration before every batch)
        self.by, self.aggs, self.window = tuple(by), dict(aggs), window
        legacy = self.__dict__.pop("_legacy_counters", None)
        if legacy:  # per-group dicts of a state saved before ValueCounts: loaded now that aggs are known
            assert self.schema is not None
            for name, (gids, dicts) in legacy.items():
                counts = self.values[name] = _value_counts(self.aggs[name], self.schema)
                counts.grow(self._capacity)
                counts.load(gids, dicts)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["aggs"] = {}
        state["_dirty"], state["_gone"] = np.zeros(0, dtype=bool), set()
        del state["index"]  # rebuilt from the keys on unpickling
        state.pop("_out_schema", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_gone", set())  # states pickled before chunked snapshots lack these
        state.setdefault("_batches", 0)  # (and those before a memory bound, these)
        state.setdefault("_last_use", np.zeros(state.get("_capacity", 0), dtype=np.int32))
        state.setdefault("values", {})
        counters = state.pop("counters", None)  # (and those pickled before ValueCounts: loaded at configure)
        self.__dict__.update(state)  # (and those pickled before KeyIndex hold a dict index: replaced)
        if state.get("key_form") != KEY_FORM:  # keys saved as Python objects: into their state form
            if isinstance(self.keys, list):
                _keys_to_state(self.keys, self.schema, self.key_columns)
            self.key_form = KEY_FORM
        self._dirty = np.zeros(0, dtype=bool)
        self.index = KeyIndex.build(self.keys, self._live_ids())
        if counters:
            self._legacy_counters = {
                name: (list(range(len(dicts))), dicts) for name, dicts in counters.items()
            }

    def _live_ids(self) -> np.ndarray:
        """Ids of the live groups (those not free)."""
        live = np.ones(len(self.keys), dtype=bool)
        live[np.asarray(self.free, np.int64)] = False
        return live.nonzero()[0]

    # -- snapshots (see ChunkedSnapshot) --------------------------------------------------------

    def _mark_all_changed(self) -> None:
        self._dirty = np.zeros(self._capacity, dtype=bool)
        self._dirty[: len(self.keys)] = True
        self._gone = set()

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        return _Chunked(manifest, self._scalars())

    def bytes_per_group(self) -> int:
        """The estimated memory of one group: its slots in the per-group arrays and the key index, its
        key (sampled), and its share of the per-value counts' slots."""
        per = self.rows.itemsize + 1 + self._last_use.itemsize + 24  # (+ dirty flag, index entry)
        for name, sums in self.sums.items():
            per += sums.itemsize + (0 if self.nonnull[name] is None else 8)
        if isinstance(self.keys, IntKeys):
            per += 9
        else:
            first = (self.keys[i] for i in range(builtins.min(256, len(self.keys))))
            sample = [k for k in first if k is not None][:32]
            sizes = [sys.getsizeof(k) + (sum(map(sys.getsizeof, k)) if type(k) is tuple else 0)
                     for k in sample]  # fmt: skip
            per += 8 + (sum(sizes) // len(sizes) if sizes else 64)
        if self.index.shadow is not None and self.index.shadow.ndim == 2:
            per += 8 * self.index.shadow.shape[1]
        groups = builtins.max(1, len(self.index))
        for counts in self.values.values():
            per += 16 + (counts.slots * 40) // groups  # (per slot: group, value, count, index entry)
        return per

    def _held(self) -> int:
        return len(self.index)

    def _item_bytes(self) -> int:
        return self.bytes_per_group()

    def _shed(self, drop: int) -> None:
        """Drop the ``drop`` least recently changed groups from memory (a snapshot just wrote them)."""
        live = self._live_ids()
        victims = live[np.argpartition(self._last_use[live], drop - 1)[:drop]]
        self._release(np.sort(victims), shed=True)

    def load_cold(self) -> None:
        """Read every group held on disk only back into memory (a resume of a state that had none;
        tools and tests: a flow reads a cold group back when a change touches it)."""
        if self._log is None or not self._cold or not isinstance(self._log, GroupChunkLog):
            return
        self._cold = False
        self._log.expire = self._closed()
        table = self._log.load()[TABLE]
        if table is None:
            return
        keys = self._record_keys(table)
        missing = self.index.lookup(keys) < 0
        for i in missing.nonzero()[0].tolist():
            if keys[i] in self._gone:  # deleted since the last snapshot
                missing[i] = False
        rows = missing.nonzero()[0]
        gids = self.index.assign([keys[i] for i in rows.tolist()], self._create)
        self._fill(gids, table.take(pa.array(rows)))

    def _warm(self, keys: list[Any], gids: np.ndarray) -> None:
        """Read the records of those of the new groups ``gids`` (with ``keys``) that are cold."""
        assert isinstance(self._log, GroupChunkLog)
        probe = [i for i, key in enumerate(keys) if key not in self._gone]  # (a gone key's tombstone
        if not probe:  # is not written yet: its old record must not come back)
            return
        idents, hashes = key_identities([keys[i] for i in probe])
        found, records = self._log.find(idents.to_pylist(), hashes)
        if records is not None:
            self._fill(gids[np.asarray(probe, np.int64)[found]], records)

    def _fill(self, gids: np.ndarray, records: pa.Table) -> None:
        """Set the new groups ``gids`` to their chunk ``records`` (in that order)."""
        if not len(gids):
            return
        self.rows[gids] = records.column("rows").to_numpy()
        for name, sums in self.sums.items():
            sums[gids] = records.column(f"s:{name}").to_numpy()
            nonnull = records.column(f"n:{name}").to_numpy()
            if self.nonnull[name] is None and not np.array_equal(nonnull, self.rows[gids]):
                self.nonnull[name] = self.rows.copy()  # (no longer the rows: held from now on)
            held = self.nonnull[name]
            if held is not None:
                held[gids] = nonnull
        for name, counts in self.values.items():
            values = records.column(f"v:{name}").combine_chunks()
            flat = values.flatten()
            if not len(flat):
                continue
            lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
            numbers = records.column(f"c:{name}").combine_chunks().flatten().to_numpy()
            if counts.ordered:
                keys = flat.to_numpy()
            else:
                assert counts.codes is not None
                keys = counts.codes.encode([pickle.loads(v) for v in flat.to_pylist()])  # noqa: S301 - ours
            self.dropped_retractions += counts.apply(np.repeat(gids, lengths), keys, numbers)

    def _record_keys(self, table: pa.Table) -> list[Any]:
        """The group keys of chunk records, in state form."""
        columns = self.key_columns
        keys = table.select([f"k:{c}" for c in columns]).rename_columns(list(columns))
        return _state_values(keys, columns)

    def _key_types(self) -> list[pa.DataType]:
        assert self.schema is not None
        window = self.window.column if self.window is not None else None
        return [pa.int64() if c == window else self.schema.field(c).type for c in self.key_columns]

    def _group_table(self, keys: list[Any], gids: np.ndarray | None) -> pa.Table:
        """Chunk records (see :mod:`~flowlake.flow._grouplog`) of the groups ``gids`` with their
        ``keys``, or tombstones for ``keys`` (``gids`` None), in chunk order."""
        n = len(keys)
        idents, hashes = key_identities(keys)
        columns: dict[str, pa.Array] = {
            HASH: pa.array(hashes, pa.uint64()),
            IDENT: idents,
            LIVE: pa.array(np.full(n, gids is not None)),
        }
        if self.window is not None:
            columns[WINDOW_START] = pa.array(_window_starts(keys) if n else np.zeros(0, np.int64), pa.int64())
        types = self._key_types()
        for j, (column, type_) in enumerate(zip(self.key_columns, types, strict=True)):
            part = keys if len(types) == 1 else [k[j] for k in keys]
            columns[f"k:{column}"] = from_state(part, type_)

        def pick(array: np.ndarray) -> pa.Array:
            return pa.array(array[gids] if gids is not None else np.zeros(n, array.dtype))

        columns["rows"] = pick(self.rows)
        for name, sums in self.sums.items():
            columns[f"s:{name}"], columns[f"n:{name}"] = pick(sums), pick(self.nonnull_of(name))
        for name, counts in self.values.items():
            if gids is None:
                owner, values, numbers = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
            else:
                owner, values, numbers = counts.pairs(gids)
            offsets = pa.array(np.concatenate([[0], np.bincount(owner, minlength=n).cumsum()]), pa.int64())
            if counts.ordered:
                flat = pa.array(values, pa.int64())
            else:
                flat = pa.array([pickle.dumps(v, protocol=5) for v in values], pa.binary())
            columns[f"v:{name}"] = pa.LargeListArray.from_arrays(offsets, flat)
            columns[f"c:{name}"] = pa.LargeListArray.from_arrays(offsets, pa.array(numbers, pa.int64()))
        return pa.table(columns)

    def _scalars(self) -> dict[str, Any]:
        return {
            "by": self.by, "window": self.window, "max_event": self.max_event, "schema": self.schema,
            "dropped_retractions": self.dropped_retractions, "late_changes": self.late_changes,
            "dtypes": {n: a.dtype for n, a in self.sums.items()}, "counters": list(self.values),
            "value_funcs": {n: (v.func, v.ordered) for n, v in self.values.items()},
            "key_form": KEY_FORM, "log_form": LOG_FORM, "cold": self._cold,
        }  # fmt: skip

    def _changed_records(self) -> Records:
        """The groups changed since the last snapshot, and tombstones for those gone; resets both."""
        dirty = self._dirty.nonzero()[0]
        free = np.zeros(len(self._dirty), dtype=bool)
        free[np.asarray(self.free, np.int64)] = True
        dirty = dirty[~free[dirty]]  # (a live group's key may be None: a NULL key)
        table = self._group_table(gather(self.keys, dirty), dirty)
        maybe = list(self._gone)
        gone = [key for key, gid in zip(maybe, self.index.lookup(maybe).tolist(), strict=True) if gid < 0]
        if gone:
            table = pa.concat_tables([self._group_table(gone, None), table])
        self._dirty[:] = False
        self._gone = set()
        assert isinstance(self._log, GroupChunkLog)
        self._log.expire = self._closed()
        return {TABLE: sort_records(table)}

    def _closed(self) -> tuple[int, int] | None:
        """(window size, mark) where windows ending at or before the mark are closed, if any is."""
        window = self.window
        if window is None or window.horizon_us is None or self.max_event is None:
            return None
        return window.size_us, self.max_event - window.horizon_us

    # -- layout ---------------------------------------------------------------------------------

    def nonnull_of(self, name: str) -> np.ndarray:
        """The non-null values per group of the additive aggregate ``name``."""
        nonnull = self.nonnull[name]
        return self.rows if nonnull is None else nonnull

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Group key columns of the output, the window start last."""
        return (*self.by, self.window.column) if self.window else self.by

    def _init_schema(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._out_schema = None
        if not len(self.keys):
            self.keys = _key_store(schema, self.key_columns)
            self.index = KeyIndex(self.keys)
        for name, agg in self.aggs.items():
            if agg.func in ADDITIVE:
                floating = agg.column is not None and pa.types.is_floating(schema.field(agg.column).type)
                # a count has no sum (only its non-null count): its sums stay 0, in a byte each
                dtype = np.int8 if agg.func == "count" else np.float64 if floating else np.int64
                self.sums[name] = np.zeros(self._capacity, dtype=dtype)
                same = agg.where is None
                self.nonnull[name] = None if same else np.zeros(self._capacity, dtype=np.int64)
            else:
                self.values[name] = _value_counts(agg, schema)
                self.values[name].grow(self._capacity)

    def output_schema(self) -> pa.Schema:
        """Key columns then one column per aggregate."""
        if self._out_schema is not None:
            return self._out_schema
        assert self.schema is not None
        fields = [self.schema.field(c) for c in self.by]
        if self.window:
            on_type = self.schema.field(self.window.on).type
            tz = on_type.tz if pa.types.is_timestamp(on_type) else None
            fields.append(pa.field(self.window.column, pa.timestamp("us", tz=tz)))
        fields += [pa.field(n, result_type(a, self.schema)) for n, a in self.aggs.items()]
        self._out_schema = pa.schema(fields)
        return self._out_schema

    def _grow(self, need: int) -> None:
        if need <= self._capacity:
            return
        cap = builtins.max(need, self._capacity + self._capacity // 4, 64)  # (a quarter: less slack)
        extra = cap - self._capacity
        self.rows = np.concatenate([self.rows, np.zeros(extra, dtype=np.int64)])
        self._last_use = np.concatenate([self._last_use, np.zeros(extra, dtype=np.int32)])
        if self._log is not None:
            self._dirty = np.concatenate([self._dirty, np.zeros(extra, dtype=bool)])
        for name in self.sums:
            self.sums[name] = np.concatenate([self.sums[name], np.zeros(extra, self.sums[name].dtype)])
            nonnull = self.nonnull[name]
            if nonnull is not None:
                self.nonnull[name] = np.concatenate([nonnull, np.zeros(extra, np.int64)])
        for counts in self.values.values():
            counts.grow(cap)
        self._capacity = cap

    def _create(self, keys: list[Any]) -> np.ndarray:
        """New groups for ``keys``: free ids first (the last freed first), then new ones."""
        take = builtins.min(len(keys), len(self.free))
        reused = self.free[len(self.free) - take :][::-1]
        del self.free[len(self.free) - take :]
        for gid, key in zip(reused, keys, strict=False):
            self.keys[gid] = key
        start = len(self.keys)
        self.keys.extend(keys[take:])
        self._grow(len(self.keys))
        ids = np.concatenate([np.asarray(reused, np.int64), np.arange(start, len(self.keys), dtype=np.int64)])
        if self.window is not None:
            for start, members in _by_window(keys, ids):
                self.window_groups.setdefault(start, set()).update(members)
        if self._cold:  # some of them may be groups on disk only: read back
            self._warm(keys, ids)
        return ids

    def _release(self, gids: np.ndarray, *, shed: bool = False) -> None:
        """Free the groups ``gids`` (in this order): deleted ones, or (``shed``) ones whose newest
        record the chunks hold."""
        if not len(gids):
            return
        keys = gather(self.keys, gids)
        for key, gid in zip(keys, gids.tolist(), strict=True):
            self.index.discard(key, gid)
            self.keys[gid] = None
        if self._log is not None and not shed:
            self._gone.update(keys)
        if self.window is not None:
            for start, gone in _by_window(keys, gids):
                members = self.window_groups.get(start)
                if members is not None:
                    members.difference_update(gone)
                    if not members:
                        del self.window_groups[start]
        self.rows[gids] = 0
        for name in self.sums:
            self.sums[name][gids] = 0
            nonnull = self.nonnull[name]
            if nonnull is not None:
                nonnull[gids] = 0
        for counts in self.values.values():
            counts.clear(gids)
        self.free.extend(gids.tolist())

    @property
    def groups(self) -> int:
        """Live groups held."""
        return len(self.index)

    # -- one batch ------------------------------------------------------------------------------

    def apply(self, data: pa.Table) -> tuple[pa.Table, pa.Table | None]:
        """Fold a changelog batch; returns (result changes, late changes or None).

        A :data:`WATERMARK_COLUMN` in ``data`` (see :func:`with_watermarks`) gives each row's
        watermark; without it the state judges rows against the largest event time it has seen.
        """
        given: np.ndarray | None = None
        repeats: np.ndarray | None = None
        if WEIGHT_COLUMN in data.schema.names:  # each change stands for this many equal ones
            if self.window is not None:
                raise InvalidArgumentError(
                    f"a changelog with a {WEIGHT_COLUMN!r} column cannot feed the windowed aggregate by "
                    f"{list(self.by)}: lateness is judged change by change; leave the column out"
                )
            repeats = np.asarray(data.column(WEIGHT_COLUMN).to_numpy(), dtype=np.int64)
            data = data.drop_columns([WEIGHT_COLUMN])
        if WATERMARK_COLUMN in data.schema.names:
            given = np.asarray(data.column(WATERMARK_COLUMN).to_numpy(), dtype=np.int64)
            data = data.drop_columns([WATERMARK_COLUMN])
        if self.schema is None:
            self._init_schema(data.schema)
        kinds = kinds_of(data)
        w = weights(kinds) if repeats is None else weights(kinds) * repeats
        late: pa.Table | None = None
        keyed = data
        if self.window is not None:
            keyed, w, late = self._windowed(data, w, given)
        out = self._fold(keyed, w)
        if self.window is not None:
            self._evict()
        return out, late

    def _windowed(
        self, data: pa.Table, w: np.ndarray, given: np.ndarray | None
    ) -> tuple[pa.Table, np.ndarray, pa.Table | None]:
        window = self.window
        assert window is not None
        event = temporal_us(data.column(window.on))
        null = event == _NO_MARK
        start = np.where(null, 0, (event // window.size_us) * window.size_us)
        late_mask = np.zeros(len(event), dtype=bool)
        marks = start
        if len(event):
            if given is not None:
                before = given
                top = watermark_after(before, event, w)
            else:
                before, top = watermarks_before(event, w, self.max_event)
            if top is not None:
                self.max_event = top if self.max_event is None else builtins.max(self.max_event, top)
            if window.horizon_us is not None:
                has_mark = before > _NO_MARK
                marks = np.where(has_mark, before - window.horizon_us, _NO_MARK)
                late_mask = has_mark & ~null & (start + window.size_us <= marks)
        # window starts stay int64 microseconds inside the state (cheap Python keys); the output
        # column is a timestamp
        column = pa.array(start, pa.int64(), mask=null if null.any() else None)
        late: pa.Table | None = None
        if late_mask.any():
            rows = data.filter(pa.array(late_mask))
            horizon_us = window.horizon_us or 0
            horizon_s = horizon_us // 1_000_000
            reasons = [
                f"{window.column} window starting {_iso(int(st))} closed: watermark "
                f"{_iso(int(wm + horizon_us))} minus horizon {horizon_s}s passed its end"
                for st, wm in zip(start[late_mask].tolist(), marks[late_mask].tolist(), strict=True)
            ]
            late = rows.append_column(LATE_REASON, pa.array(reasons, pa.string()))
            self.late_changes += rows.num_rows
            keep = pa.array(~late_mask)
            data, column, w = data.filter(keep), column.filter(keep), w[~late_mask]
        return data.append_column(window.column, column), w, late

    def _evict(self) -> None:
        window = self.window
        assert window is not None
        if window.horizon_us is None or self.max_event is None:
            return
        mark = self.max_event - window.horizon_us
        closed = [s for s in self.window_groups if s + window.size_us <= mark]
        if closed:
            gids = np.sort(np.fromiter((g for s in closed for g in self.window_groups[s]), np.int64))
            self._release(gids)

    def _fold(self, data: pa.Table, w: np.ndarray) -> pa.Table:
        out_schema = self.output_schema()
        if data.num_rows == 0:
            return _empty_changes(out_schema)
        key_cols = self.key_columns
        codes, first, keys, hashes, exact, columns = _group_keys(data, key_cols)
        # the output's key columns: from the keys' int64 rows where they have them, else the rows
        distinct = None if isinstance(keys, RowKeys) else data.select(list(key_cols)).take(pa.array(first))
        gids = self.index.assign(keys, self._create, hashes, exact=exact, columns=columns)
        touched, at = np.unique(gids, return_inverse=True)  # (two codes may be one key: 0.0 and -0.0)
        self._batches += 1
        if self._batches == _I32_MAX:  # (halved: the order is what counts)
            self._last_use //= 2
            self._batches //= 2
        self._last_use[touched] = self._batches
        row_at = at[codes]  # each row's group, as a position in touched
        net = sum_by(row_at, w, len(touched))
        rows_before = self.rows[touched]
        underflow = rows_before + net < 0
        if underflow.any():  # retractions for groups never seen: dropped (and counted)
            drop = (w < 0) & underflow[row_at]
            dropped = int(drop.sum())
            self.dropped_retractions += dropped
            log.warning("aggregate dropped %d retraction(s) for groups it never saw", dropped)
            w = np.where(drop, 0, w)
            net = sum_by(row_at, w, len(touched))
        before = self._results(touched)
        ints: dict[str, np.ndarray] = {}  # (decimal columns as unscaled ints, read once a batch)
        contributions = self._contributions(data, w, ints)
        self.rows[touched] += net
        for name, column in contributions.items():
            total = sum_by(row_at, column, len(touched))
            if name.startswith("_n_"):
                nonnull = self.nonnull[name[3:]]
                assert nonnull is not None
                nonnull[touched] += total
            else:
                sums = self.sums[name[3:]]
                sums[touched] += total.astype(sums.dtype)
        if self.values:
            self._fold_values(data, w, touched[row_at], ints)
        rows_after = self.rows[touched]
        if self._log is not None:
            self._dirty[touched] = True
        after = self._results(touched)
        where = np.empty(len(touched), np.int64)
        where[at] = np.arange(len(at))
        key_rows = distinct.take(pa.array(where)) if distinct is not None else _rows_of(keys)[where]
        out = self._emit(key_rows, rows_before, rows_after, before, after, out_schema)
        gone = touched[rows_after <= 0]
        self.rows[gone] = 0
        self._release(gone)
        return out

    def _contributions(
        self, data: pa.Table, w: np.ndarray, ints: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Per row and additive aggregate: its weighted non-null count (``_n_``) and value (``_s_``);
        ``ints`` keeps decimal columns' unscaled values for the batch (see :func:`column_ints`)."""
        assert self.schema is not None
        cols: dict[str, np.ndarray] = {}
        for name, agg in self.aggs.items():
            if agg.func not in ADDITIVE:
                continue
            column = None if agg.column is None else data.column(agg.column)
            nulls = column is not None and column.null_count > 0
            valid = None  # (None: every row)
            if agg.where is not None or nulls:
                valid = condition_mask(data, agg.where)
                if nulls:
                    assert column is not None
                    valid &= is_valid(column)
            if self.nonnull[name] is None and valid is not None and not valid.all():  # no longer the
                self.nonnull[name] = self.rows.copy()  # rows: held from now on (before this batch's)
            if self.nonnull[name] is not None:
                cols[f"_n_{name}"] = w if valid is None else w * valid
            if column is None or agg.column is None or agg.func == "count":
                continue
            if pa.types.is_decimal(column.type):
                values = column_ints(data, agg.column, ints)
            else:
                values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
            dtype = np.float64 if self.sums[name].dtype == np.float64 else np.int64
            weighted = values * w
            cols[f"_s_{name}"] = (weighted if valid is None else np.where(valid, weighted, 0)).astype(dtype)
        return cols

    def _fold_values(
        self, data: pa.Table, w: np.ndarray, gids: np.ndarray, ints: dict[str, np.ndarray]
    ) -> None:
        """Add each row's value (with its weight) to the per-value counts of its group ``gids``."""
        weighted = bool(w.all())  # (no retraction dropped)
        for name, agg in self.aggs.items():
            if agg.func in ADDITIVE:
                continue
            assert agg.column is not None
            columns = [agg.column] if agg.order_by is None else [agg.order_by, agg.column]
            counts = self.values[name]
            nulls = any(data.column(column).null_count for column in columns)
            if agg.where is None and not nulls and weighted and counts.ordered:  # every row counts
                keys = column_ints(data, agg.column, ints)
                self.dropped_retractions += counts.apply(gids, keys, w)
                continue
            mask = condition_mask(data, agg.where) & (w != 0)
            for column in columns:
                if data.column(column).null_count:
                    mask &= is_valid(data.column(column))
            rows = mask.nonzero()[0]
            if counts.ordered:
                keys = column_ints(data, agg.column, ints)[rows]
            else:
                assert counts.codes is not None
                part = data.select(columns).take(pa.array(rows))
                codes, first = row_codes(part, columns)
                keys = counts.codes.encode(_state_values(part.take(pa.array(first)), columns))[codes]
            self.dropped_retractions += counts.apply(gids[rows], keys, w[rows])

    def _results(self, gids: np.ndarray) -> dict[str, Any]:
        """Current result values per aggregate for ``gids``: (sums, non-null counts) for additive
        ones, (values, valid) for the others (see :meth:`ValueCounts.results`)."""
        out: dict[str, Any] = {}
        for name, agg in self.aggs.items():
            if agg.func in ADDITIVE:
                out[name] = (self.sums[name][gids], self.nonnull_of(name)[gids])
            else:
                out[name] = self.values[name].results(gids)
        return out

    def _emit(
        self,
        key_rows: pa.Table | np.ndarray,
        rows_before: np.ndarray,
        rows_after: np.ndarray,
        before: dict[str, Any],
        after: dict[str, Any],
        schema: pa.Schema,
    ) -> pa.Table:
        existed, exists = rows_before > 0, rows_after > 0
        changed = existed != exists
        for name, agg in self.aggs.items():
            (s0, n0), (s1, n1) = before[name], after[name]
            if agg.func in ADDITIVE:
                changed |= (n0 != n1) if agg.func == "count" else (n0 != n1) | (s0 != s1)
            elif isinstance(s0, np.ndarray):
                changed |= (n0 != n1) | (s0 != s1)
            else:
                changed |= np.array([a != b for a, b in zip(s0, s1, strict=True)], bool)
        old, new = changed & existed, changed & exists
        sel = (old | new).nonzero()[0]
        if not len(sel):
            return _empty_changes(schema)
        # each changed group's retraction (if it existed) right before its new row (if it exists)
        per = old[sel].astype(np.int64) + new[sel]
        at = np.repeat(sel, per)
        is_old = np.zeros(len(at), bool)
        is_old[(per.cumsum() - per)[old[sel]]] = True
        kinds = np.where(
            is_old,
            np.where(exists[at], _UPDATE_BEFORE, _DELETE),
            np.where(existed[at], _UPDATE_AFTER, _INSERT),
        ).astype(np.int8)
        src = np.where(is_old, at, at + len(rows_before))  # into (before ++ after)
        values = {
            name: tuple(_pick(b, a, src, at, is_old) for b, a in zip(before[name], after[name], strict=True))
            for name in self.aggs
        }
        taken = key_rows[at] if isinstance(key_rows, np.ndarray) else key_rows.take(pa.array(at))
        table = self._table(taken, values, schema)
        return table.append_column(KIND_COLUMN, pa.array(kinds, pa.int8()))

    def _table(self, taken: pa.Table | np.ndarray, values: dict[str, Any], schema: pa.Schema) -> pa.Table:
        """The output rows: the key rows ``taken`` (a table, or the keys' int64 rows in state form) and
        per aggregate its (picked) state values."""
        if isinstance(taken, np.ndarray):
            arrays = [key_array(taken[:, j], schema.field(c).type) for j, c in enumerate(self.key_columns)]
        else:
            arrays = [taken.column(c).combine_chunks().cast(schema.field(c).type) for c in self.key_columns]
        assert self.schema is not None
        for name, agg in self.aggs.items():
            dtype = schema.field(name).type
            if agg.func not in ADDITIVE:
                held, valid = values[name]
                if agg.func == "count_distinct":
                    arrays.append(pa.array(held, pa.int64()))
                elif isinstance(held, np.ndarray):
                    arrays.append(value_array(held, valid, dtype))
                else:
                    arrays.append(from_state(held, dtype))
                continue
            sums, nonnull = values[name]
            source = None if agg.column is None else self.schema.field(agg.column).type
            arrays.append(_additive_array(agg, sums, nonnull, source, dtype))
        return pa.Table.from_arrays(arrays, schema=schema)


def _additive_array(
    agg: Agg, sums: np.ndarray, nonnull: np.ndarray, source: pa.DataType | None, dtype: pa.DataType
) -> pa.Array:
    """The output column of a count, sum or avg from its sums and non-null counts (``source``: the
    input column's type, ``dtype`` the output's)."""
    if agg.func == "count":
        return pa.array(nonnull, pa.int64())
    assert source is not None
    scale = source.scale if pa.types.is_decimal(source) else 0
    valid = nonnull > 0
    if agg.func == "avg":
        mean = sums.astype(np.float64) / np.where(valid, nonnull, 1) / (10.0**scale)
        return pa.array(mean, pa.float64(), mask=~valid)
    if pa.types.is_decimal(dtype):
        default = None if agg.default is None else unscaled_default(agg.default, dtype.scale)
        if default is not None:  # NULL → the default, in numpy
            return decimal_array(np.where(valid, sums, default), None, dtype)
        array = decimal_array(sums, valid, dtype)
        if agg.default is not None and not valid.all():
            array = pc.fill_null(array, pa.scalar(Decimal(agg.default)).cast(dtype))
        return array
    array = pa.array(sums, dtype, mask=~valid)
    if agg.default is not None and not valid.all():
        array = pc.fill_null(array, pa.scalar(agg.default).cast(dtype))
    return array


class _Chunked:
    """A chunked snapshot: unpickling it (:func:`~flowlake.flow._snapshot.thaw`) rebuilds the state."""

    def __init__(self, manifest: Manifest, scalars: dict[str, Any]) -> None:
        self.manifest, self.scalars = manifest, scalars

    def __reduce__(self) -> tuple[Any, tuple[Manifest, dict[str, Any]]]:
        return restore_chunked, (self.manifest, self.scalars)


def restore_chunked(manifest: Manifest, scalars: dict[str, Any]) -> AggregateState:
    """The state a chunked snapshot describes, its chunk log continuing from that snapshot: with
    every group in memory, or (a state that had shed groups, or a large one, see
    :func:`~flowlake.flow._grouplog.resume_eagerly`) with none until changes touch them."""
    if scalars.get("log_form") != LOG_FORM:
        return _restore_python_records(manifest, scalars)
    state = _restored_shell(scalars)
    for name, dtype in scalars["dtypes"].items():
        state.sums[name], state.nonnull[name] = np.zeros(0, dtype), None
    for name in scalars["counters"]:
        func, ordered = scalars["value_funcs"][name]
        state.values[name] = ValueCounts(func, ordered=ordered)
    state._log, state._cold = GroupChunkLog(manifest), True
    if resume_eagerly(manifest, scalars["cold"]):
        state.load_cold()
    return state


def _restored_shell(scalars: dict[str, Any]) -> AggregateState:
    """A state with a snapshot's scalars and no groups."""
    state = AggregateState(scalars["by"], {}, scalars["window"])
    state.schema, state.max_event = scalars["schema"], scalars["max_event"]
    state.dropped_retractions, state.late_changes = scalars["dropped_retractions"], scalars["late_changes"]
    state.keys = _key_store(scalars["schema"], state.key_columns)
    state.index = KeyIndex(state.keys)
    return state


def _restore_python_records(manifest: Manifest, scalars: dict[str, Any]) -> AggregateState:
    """A state from a manifest of Python records (before :data:`LOG_FORM`): read whole; its next
    snapshot starts a new log."""
    state = _restored_shell(scalars)
    log = ChunkLog(manifest)
    records = log.load()
    n = scalars["slots"]
    gids = np.asarray(records.get("gid", np.zeros(0, np.int64)), dtype=np.int64)
    state.free = list(scalars["free"])
    state.keys.extend([None] * n)
    for gid, key in zip(gids.tolist(), records["keys"], strict=True):
        state.keys[gid] = key
    if scalars.get("key_form") != KEY_FORM and isinstance(state.keys, list):  # keys saved as Python
        _keys_to_state(state.keys, state.schema, state.key_columns)  # objects: into their state form
    state.index = KeyIndex.build(state.keys, gids)
    state.rows = np.zeros(n, np.int64)
    state.rows[gids] = records.get("rows", 0)
    for name, dtype in scalars["dtypes"].items():
        state.sums[name], nonnull = np.zeros(n, dtype), np.zeros(n, np.int64)
        state.sums[name][gids] = records.get(f"s:{name}", 0)
        nonnull[gids] = records.get(f"n:{name}", 0)
        state.nonnull[name] = None if np.array_equal(nonnull, state.rows) else nonnull
    funcs = scalars.get("value_funcs")
    legacy = {}
    for name in scalars["counters"]:
        dicts = records.get(f"c:{name}", [])
        if funcs is None:  # a manifest written before ValueCounts: loaded at configure
            legacy[name] = (gids.tolist(), dicts)
            continue
        func, ordered = funcs[name]
        counts = state.values[name] = ValueCounts(func, ordered=ordered)
        counts.grow(n)
        counts.load(gids.tolist(), dicts)
    if legacy:
        state._legacy_counters = legacy
    state._capacity = n
    state._last_use = np.zeros(n, np.int32)
    if state.window is not None:
        for gid, key in zip(gids.tolist(), records["keys"], strict=True):
            state.window_groups.setdefault(_window_of(key), set()).add(gid)
    state._log = GroupChunkLog.create(Path(manifest.folder).parent)
    state._mark_all_changed()
    return state


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def _by_window(keys: Sequence[Any], gids: np.ndarray) -> list[tuple[int, list[int]]]:
    """The group ids ``gids`` of the window keys ``keys`` by window start (see :func:`_window_of`)."""
    if not len(keys):
        return []
    starts = _window_starts(keys)
    order = starts.argsort(kind="stable")
    starts, ids = starts[order], gids[order].tolist()
    bounds = [0, *((starts[1:] != starts[:-1]).nonzero()[0] + 1).tolist(), len(ids)]
    return [(int(starts[lo]), ids[lo:hi]) for lo, hi in itertools.pairwise(bounds)]


def _window_starts(keys: Sequence[Any]) -> np.ndarray:
    """:func:`_window_of` of each key, as int64 (one list comprehension where the keys are tuples
    of ints, the windowed keys' common form)."""
    if type(keys[0]) is tuple:
        try:
            return np.array([key[-1] for key in keys], np.int64)
        except (TypeError, IndexError, OverflowError):  # a NULL window start (or keys of mixed forms)
            pass
    return np.fromiter(map(_window_of, keys), np.int64, len(keys))


def _window_of(key: Any) -> int:
    start = key[-1] if isinstance(key, tuple) else key
    return 0 if start is None else int(start)


def _key_store(schema: pa.Schema | None, columns: Sequence[str]) -> KeyStore:
    """Where the group keys live: numpy for one integer key column (no window), else a list."""
    if schema is not None and len(columns) == 1 and columns[0] in schema.names:
        type_ = schema.field(columns[0]).type
        if pa.types.is_integer(type_) and type_ != pa.uint64():
            return IntKeys()
    return []


def _pick(before: Any, after: Any, src: np.ndarray, at: np.ndarray, old: np.ndarray) -> Any:
    """``before[i]`` where ``old``, else ``after[i]``, for each ``i`` of ``at`` (arrays or lists);
    ``src`` is the same as positions into ``before`` and ``after`` concatenated."""
    if isinstance(before, np.ndarray):
        return np.concatenate([before, after])[src]
    return [before[i] if o else after[i] for i, o in zip(at.tolist(), old.tolist(), strict=True)]


def _rows_of(keys: Sequence[Any]) -> np.ndarray:
    """The int64 rows of :class:`~flowlake.flow._keyindex.RowKeys` keys."""
    assert isinstance(keys, RowKeys)
    return keys.columns


def _ordered(type_: pa.DataType) -> bool:
    """Whether values of ``type_`` are held as int64 value keys in their order (see _valuecounts)."""
    return (pa.types.is_integer(type_) and type_ != pa.uint64()) or _storage_type(type_) is not None


def _value_counts(agg: Agg, schema: pa.Schema) -> ValueCounts:
    assert agg.column is not None
    ordered = agg.order_by is None and _ordered(schema.field(agg.column).type)
    return ValueCounts(agg.func, ordered=ordered)


def _group_keys(
    data: pa.Table, columns: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, Sequence[Any], np.ndarray | None, bool, np.ndarray | None]:
    """The rows of ``data`` grouped by the key ``columns``: a code per row, the first row of each code,
    and per code its key (as a Python value), Python hash (None: not computed), whether the hashes
    are the keys themselves (see :data:`~flowlake.flow._keyindex.EXACT_BELOW`) and, for keys of
    several integer columns, the keys as rows of an int64 array (for
    :meth:`~flowlake.flow._keyindex.KeyIndex.assign`).

    Integer key columns without NULLs (and temporal ones, as their state form's counts of units) are
    grouped in numpy, their hashes computed there, and only the keys the index has not seen become
    Python values; other keys go through Arrow's dictionary encoding and Python.
    """
    parts = []
    for name in columns:
        values = state_ints(data.column(name))
        if values is None:
            break
        parts.append(values)
    else:
        if parts:
            rows = np.stack(parts, axis=1)
            single = len(parts) == 1
            dense = dense_row_codes(rows, _DENSE_KEYS_PER_ROW * len(rows) + _DENSE_KEYS_MIN)
            if dense is not None:  # a small key space: grouped without a sort, only its keys hashed
                codes, first = dense
                rows = rows[first]
                hashes = int_hashes(rows[:, 0]) if single else tuple_hashes(rows)
            else:
                hashes = int_hashes(parts[0]) if single else tuple_hashes(rows)
                codes, first = int_row_codes(rows, hashes)
                rows, hashes = rows[first], hashes[first]
            exact = single and bool(rows.min() >= 0 and rows.max() < EXACT_BELOW)
            return codes, first, RowKeys(rows, single=single), hashes, exact, None if single else rows
    codes, first = row_codes(data, columns)
    keys = _state_values(data.select(list(columns)).take(pa.array(first)), columns)
    return codes, first, keys, None, False, None


def _keys_to_state(keys: list[Any], schema: pa.Schema | None, columns: Sequence[str]) -> None:
    """Turn group keys saved before they were held in state form (temporal and decimal values as
    Python objects) into that form, in place; ``None`` entries (free slots) stay."""
    types = [schema.field(c).type if schema is not None and c in schema.names else None for c in columns]
    if not any(t is not None and _storage_type(t) is not None for t in types):
        return
    at = [i for i, key in enumerate(keys) if key is not None]
    if not at:
        return
    if len(columns) == 1:
        values = to_state(pa.chunked_array([pa.array([keys[i] for i in at], types[0])]))
        for i, value in zip(at, values, strict=True):
            keys[i] = value
        return
    parts = [
        [keys[i][j] for i in at]
        if t is None
        else to_state(pa.chunked_array([pa.array([keys[i][j] for i in at], t)]))
        for j, t in enumerate(types)
    ]
    for i, key in zip(at, zip(*parts, strict=True), strict=True):
        keys[i] = key


def _state_values(table: pa.Table, columns: Sequence[str]) -> list[Any]:
    """Counter values in state form (see :mod:`flowlake.flow._stateform`)."""
    if len(columns) == 1:
        return to_state(table.column(columns[0]))
    return list(zip(*(to_state(table.column(c)) for c in columns), strict=True))


def _empty_changes(schema: pa.Schema) -> pa.Table:
    return schema.empty_table().append_column(KIND_COLUMN, pa.array([], pa.int8()))


def late_schema(input_schema: pa.Schema) -> pa.Schema:
    """Columns of the late-data output: the input change, its ``_kind``, ``_seq`` and the reason."""
    fields = [f for f in input_schema if f.name not in (KIND_COLUMN, SEQ_COLUMN)]
    return pa.schema([*fields, pa.field(KIND_COLUMN, pa.int8()), pa.field(SEQ_COLUMN, pa.int64()),
                      pa.field(LATE_REASON, pa.string())])  # fmt: skip
