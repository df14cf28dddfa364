"""Retraction-correct bytewax operators over changelog batches.

Every operator takes and returns streams of :class:`~flowlake.flow.batch.ChangeBatch`. Stateful ones
split each batch by a stable hash of their key into ``partitions`` key partitions (bytewax keys
``"0"``, ``"1"``, ...; keep the number fixed across resumes, it keys the recovery state) and update
state once per group per batch.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.dataflow import Dataflow, Stream, operator

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN
from flowlake.errors import TableNotFoundError
from flowlake.flow._aggstate import (
    AggregateState,
    condition_mask,
    late_schema,
    state_cache_bytes,
    with_watermarks,
)
from flowlake.flow._batchfold import fold_batches
from flowlake.flow._relational import (
    DedupState,
    JoinHow,
    JoinState,
    PairCondition,
    dedup_cache_bytes,
    filter_changes,
    lookup,
    map_changes,
)
from flowlake.flow._snapshot import Frozen, state_dir, thaw_or_new
from flowlake.flow._snapshot import inline_bytes as snapshot_inline_bytes
from flowlake.flow._topn import SortKey, TopNState, topn_cache_bytes
from flowlake.flow.aggs import Agg, Condition, Window
from flowlake.flow.batch import ChangeBatch, RowChange, coalesce, rows, split_by_partition
from flowlake.flow.lake import CatalogSpec, LakeSink, LakeSource, Start, open_catalog, position_key
from flowlake.runtime.observability import StateSizes, count_records
from flowlake.table.table import LakeTable


@operator
def lake_input(
    step_id: str,
    flow: Dataflow,
    table: str,
    start: Start = "earliest",
    catalog: CatalogSpec = None,
    stop: Literal["head"] | int | None = None,
    max_versions: int = 64,
    poll_interval: float = 0.5,
    columns: Sequence[str] | None = None,
    max_read_rows: int = 1_000_000,
) -> Stream[ChangeBatch]:
    """The changelog of a lake table (see :class:`~flowlake.flow.lake.LakeSource`); ``columns`` reads
    only those columns (plus ``_kind`` and ``_seq``); a backlog is read ``max_read_rows`` at a time.

    With ``stop="head"`` the flow ends once it has read up to the head it saw at start:

    >>> import flowlake as fl
    >>> from bytewax.testing import TestingSink, run_main
    >>> from flowlake.flow import lake_input, rows
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://lake-input-doc")
    >>> t = cat.create_table("ods.users", pa.schema([("id", pa.int64()), ("name", pa.string())]),
    ...                      primary_key=["id"])
    >>> _ = t.upsert(pa.table({"id": [1], "name": ["ann"]}))
    >>> _ = t.upsert(pa.table({"id": [1], "name": ["amy"]}))
    >>> flow = Dataflow("lake_input_doc")
    >>> out: list[ChangeBatch] = []
    >>> op.output("out", lake_input("users", flow, "ods.users", catalog=cat, stop="head"), TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["+I {'id': 1, 'name': 'ann'}", "-U {'id': 1, 'name': 'ann'}", "+U {'id': 1, 'name': 'amy'}"]
    """
    source = LakeSource(
        table, start=start, catalog=catalog, stop=stop, max_versions=max_versions,
        poll_interval=poll_interval, columns=columns, max_read_rows=max_read_rows,
    )  # fmt: skip
    return op.input("source", flow, source)


@operator
def lake_output(
    step_id: str, up: Stream[ChangeBatch], table: str, catalog: CatalogSpec = None, flow: str | None = None
) -> None:
    """Apply the stream's changes to a primary-key lake table, exactly once (one commit per epoch).

    >>> import flowlake as fl
    >>> from bytewax.testing import TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, from_rows, lake_output
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://lake-output-doc")
    >>> schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    >>> t = cat.create_table("dwd.users", schema, primary_key=["id"])
    >>> batch = from_rows([(0, {"id": 1, "name": "ann"}), (0, {"id": 2, "name": "bob"})], schema)
    >>> flow = Dataflow("lake_output_doc")
    >>> lake_output("users_out", op.input("in", flow, TestingSource([ChangeBatch(batch)])), "dwd.users",
    ...             catalog=cat)
    >>> run_main(flow)
    >>> t.read().sort_by("id").to_pylist()
    [{'id': 1, 'name': 'ann'}, {'id': 2, 'name': 'bob'}]

    Raises:
        TableNotFoundError: When the flow is built, if ``table`` does not exist (create it first).
    """
    if not open_catalog(catalog).table_exists(table):
        raise TableNotFoundError(table)
    keyed = op.map("route", up, lambda batch: (table, batch))
    op.output("sink", keyed, LakeSink(table, catalog=catalog, flow=flow))


@dataclass(frozen=True)
class AggregateOut:
    """Streams of :func:`aggregate`: the result changelog, and late changes (windows with a horizon).

    >>> from bytewax.testing import TestingSource
    >>> from flowlake.flow import ChangeBatch, aggregate, aggs, minutes
    >>> flow = Dataflow("aggregate_out_doc")
    >>> up = op.input("in", flow, TestingSource([]))
    >>> window = minutes(on="ts", horizon="1h")
    >>> out = aggregate("gmv", up, by=["shop"], aggs={"n": aggs.count()}, window=window)
    >>> [name for name in ("changes", "late") if isinstance(getattr(out, name), Stream)]
    ['changes', 'late']
    """

    changes: Stream[ChangeBatch]
    late: Stream[ChangeBatch]


@operator
def aggregate(
    step_id: str,
    up: Stream[ChangeBatch],
    by: Sequence[str],
    aggs: Mapping[str, Agg],
    window: Window | None = None,
    partitions: int = 4,
    chunks: str | os.PathLike[str] | None = None,
    inline_bytes: int | None = None,
    state_mb: float | None = None,
) -> AggregateOut:
    """Group and aggregate a changelog with retractions (Flink's group aggregation).

    Accepts ``+I/-U/+U/-D`` (a ``_weight`` column, :data:`~flowlake.flow.batch.WEIGHT_COLUMN`, makes
    a change count that many times; not with ``window``); folds each batch, then emits per changed
    group ``-U``/``+U``, ``+I`` for a new group and ``-D`` when its row count reaches zero. Fresh
    batches (see :attr:`~flowlake.flow.batch.ChangeBatch.fresh`) that reach a key partition together
    — a lake source behind its input hands over many versions a poll — are folded as one, so the
    fixed cost of a fold is paid once per poll instead of once per version.
    Retractions for groups never seen are dropped (counted in the state, logged). With ``window``
    the groups are also keyed by the window start (an updating window: late changes within the
    horizon update their old window); changes beyond the horizon go to ``late`` with a ``reason``
    column.

    With ``chunks`` (default ``$FLOWLAKE_STATE_DIR``; ``flowlake run -r DIR`` sets ``DIR/state``) each
    key partition's snapshot costs what changed in the epoch once its state is large: the changed
    groups go to an immutable chunk file under that folder and bytewax's snapshot holds only the list
    of chunks (see :class:`~flowlake.flow._snapshot.ChunkLog`). A partition whose whole pickle is
    below ``inline_bytes`` (default ``$FLOWLAKE_STATE_INLINE_BYTES``, else 1 MiB) snapshots as that
    pickle until it grows past it. Every worker that may resume a partition must see the folder.
    Without a folder, a snapshot is one pickle of the partition's whole state.

    With a folder, each key partition keeps its groups in about ``state_mb`` MiB of memory (default
    ``$FLOWLAKE_AGG_STATE_MB``, else 128; 0: no bound): past it, after a snapshot wrote them, the
    least recently changed groups are dropped from memory, and a change to one reads its record back
    from the chunk files (memory-mapped) before it is folded. Results do not depend on the bound.

    An update of an order moves its amount from one total to the other; the emptied group is deleted:

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, aggregate, aggs, from_rows, rows
    >>> schema = pa.schema([("shop", pa.string()), ("amount", pa.int64())])
    >>> first = from_rows([(0, {"shop": "a", "amount": 5}), (0, {"shop": "a", "amount": 7})], schema)
    >>> moved = from_rows([(1, {"shop": "a", "amount": 7}), (2, {"shop": "b", "amount": 7}),
    ...                    (3, {"shop": "a", "amount": 5})], schema)
    >>> flow = Dataflow("aggregate_doc")
    >>> up = op.input("in", flow, TestingSource([ChangeBatch(first), ChangeBatch(moved)]))
    >>> totals = aggregate("by_shop", up, by=["shop"], aggs={"n": aggs.count(), "gmv": aggs.sum("amount")})
    >>> out: list[ChangeBatch] = []
    >>> op.output("out", totals.changes, TestingSink(out))
    >>> run_main(flow)
    >>> for change in sorted(str(c) for b in out for c in rows(b)):
    ...     print(change)
    +I {'shop': 'a', 'n': 2, 'gmv': 12}
    +I {'shop': 'b', 'n': 1, 'gmv': 7}
    -D {'shop': 'a', 'n': 2, 'gmv': 12}
    """
    by_cols = tuple(by)
    spec = dict(aggs)
    if window is not None and window.horizon_us is not None:
        up = _with_watermarks(window.on, up)
    split = op.flat_map("split", up, lambda batch: split_by_partition(batch, by_cols, partitions))
    keyed = op.key_on("key", split, lambda item: item[0])
    values = op.map_value("unwrap", keyed, lambda item: item[1])
    emit_late = window is not None and window.horizon_us is not None
    sizes = StateSizes(step_id)
    root = state_dir(chunks)
    chunk_root = None if root is None else root / step_id
    threshold = snapshot_inline_bytes(inline_bytes)
    cache_bytes = state_cache_bytes(state_mb)

    def fold(
        state: AggregateState | Frozen | None, batches: list[ChangeBatch]
    ) -> tuple[AggregateState, list[tuple[str, ChangeBatch]]]:
        state = thaw_or_new(state, lambda: AggregateState(by_cols, spec, window))
        state.configure(by_cols, spec, window)
        if chunk_root is not None:
            state.keep_chunks(chunk_root, threshold)
            state.keep_in_memory(cache_bytes)
        items = []
        for batch in coalesce(batches):  # (fresh versions queued together: folded as one)
            out, late = state.apply(batch.data)
            items.append(("changes", _counted(step_id, batch, out)))
            if emit_late:
                if late is None:
                    late = _no_late_changes(batch.data.schema)
                items.append(("late", batch.with_data(late)))
        sizes.update(state, len(state.index))
        return state, items

    folded = fold_batches("fold", values, fold)
    tagged = op.key_rm("unkey", folded)
    branches = op.branch("route", tagged, lambda item: item[0] == "changes")
    return AggregateOut(
        op.map("changes", branches.trues, lambda item: item[1]),
        op.map("late", branches.falses, lambda item: item[1]),
    )


def _counted(step_id: str, batch: ChangeBatch, out: pa.Table) -> ChangeBatch:
    """``out``, what a stateful step made of ``batch``, with the input's positions (and the rows in
    and out counted for the step's metrics)."""
    count_records(step_id, "in", batch.data.num_rows)
    count_records(step_id, "out", out.num_rows)
    return batch.with_data(out)


@functools.lru_cache(maxsize=64)
def _no_late_changes(input_schema: pa.Schema) -> pa.Table:
    """The empty late-data output of an aggregate fed ``input_schema`` (built once per schema)."""
    return late_schema(input_schema).empty_table()


def _with_watermarks(on: str, up: Stream[ChangeBatch]) -> Stream[ChangeBatch]:
    """Stamp each row with the global event-time watermark, before the split into key partitions.

    One keyed step sees every batch in changelog order, so lateness depends neither on the number of
    partitions nor on how keys hash to them (a per-partition watermark did). Changes without an input
    sequence number (``_seq``: those a join derived) get one here, unique in this stream, to key the
    late-data table.
    """
    keyed = op.key_on("watermark_key", up, lambda _: "watermark")

    def stamp(
        state: tuple[int | None, int] | None, batch: ChangeBatch
    ) -> tuple[tuple[int | None, int], ChangeBatch]:
        previous, next_seq = state if state is not None else (None, 0)
        data, top = with_watermarks(batch.data, on, previous)
        if SEQ_COLUMN not in data.column_names:  # changes derived by a join: number them here
            seq = np.arange(next_seq, next_seq + data.num_rows, dtype=np.int64)
            data = data.append_column(SEQ_COLUMN, pa.array(seq))
            next_seq += data.num_rows
        return (top, next_seq), batch.with_data(data)

    return op.key_rm("watermark_unkey", op.stateful_map("watermark", keyed, stamp))


@operator
def join(
    step_id: str,
    left: Stream[ChangeBatch],
    right: Stream[ChangeBatch],
    on: Sequence[str],
    left_schema: pa.Schema,
    right_schema: pa.Schema,
    how: JoinHow = "inner",
    partitions: int = 4,
    condition: PairCondition | None = None,
    chunks: str | os.PathLike[str] | None = None,
    inline_bytes: int | None = None,
) -> Stream[ChangeBatch]:
    """A regular stream-stream equi-join with retractions on both sides (``inner`` or ``left``).

    Output columns: the left's, then the right's other than ``on``. A change on either side retracts
    or adds every joined row it affects; for a left join, the null-padded row of a left row is
    retracted when its first match arrives and restored when its last match goes. ``condition``
    (a :class:`~flowlake.flow.PairCondition` over output columns) is a further condition on matched
    pairs, applied inside the join: a pair that fails it is never built, and a left row none of whose
    partners passes it is null-padded.

    ``chunks`` and ``inline_bytes`` as for :func:`aggregate`: with a state folder, a large key
    partition's snapshot holds only the live rows of the join keys changed since the last one.

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, from_rows, join, rows
    >>> orders = pa.schema([("order_id", pa.int64()), ("shop", pa.string())])
    >>> shops = pa.schema([("shop", pa.string()), ("city", pa.string())])
    >>> flow = Dataflow("join_doc")
    >>> order = ChangeBatch(from_rows([(0, {"order_id": 1, "shop": "a"})], orders))
    >>> shop = ChangeBatch(from_rows([(0, {"shop": "a", "city": "Oslo"})], shops))
    >>> left = op.input("orders", flow, TestingSource([order]))
    >>> right = op.input("shops", flow, TestingSource([shop]))
    >>> out: list[ChangeBatch] = []
    >>> op.output("out", join("enrich", left, right, ["shop"], orders, shops, how="left"), TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)][-1]
    "+I {'order_id': 1, 'shop': 'a', 'city': 'Oslo'}"
    """
    keys = tuple(on)
    sizes = StateSizes(step_id)
    root = state_dir(chunks)
    chunk_root = None if root is None else root / step_id
    threshold = snapshot_inline_bytes(inline_bytes)

    def tag(side: str) -> Callable[[ChangeBatch], list[tuple[str, tuple[str, ChangeBatch]]]]:
        def split(batch: ChangeBatch) -> list[tuple[str, tuple[str, ChangeBatch]]]:
            return [(p, (side, b)) for p, b in split_by_partition(batch, keys, partitions)]

        return split

    lefts = op.flat_map("split_left", left, tag("left"))
    rights = op.flat_map("split_right", right, tag("right"))
    merged = op.merge("merge", lefts, rights)
    keyed = op.key_on("key", merged, lambda item: item[0])
    values = op.map_value("unwrap", keyed, lambda item: item[1])

    def fold(
        state: JoinState | Frozen | None, items: list[tuple[str, ChangeBatch]]
    ) -> tuple[JoinState, list[ChangeBatch]]:
        state = thaw_or_new(state, JoinState)
        if chunk_root is not None:
            state.keep_chunks(chunk_root, threshold)
        outs = []
        for side, run in itertools.groupby(items, key=lambda item: item[0]):  # (a side's run, in order)
            for batch in coalesce([b for _, b in run]):
                out = state.apply(
                    "left" if side == "left" else "right", batch.data, on=keys, how=how,
                    left_schema=left_schema, right_schema=right_schema, condition=condition,
                )  # fmt: skip
                outs.append(_counted(step_id, batch, out))
        sizes.update(state, len(state))
        return state, outs

    return op.key_rm("unkey", fold_batches("fold", values, fold))


class _DimCache:
    """A lake table's latest snapshot for lookups, re-read when the table has a new version."""

    def __init__(
        self, table: str, catalog: CatalogSpec, columns: Sequence[str], refresh_interval: float
    ) -> None:
        self._name = table
        self._catalog = catalog
        self._columns = list(columns)
        self._interval = refresh_interval
        self._lock = threading.Lock()
        self._table: LakeTable | None = None
        self._rows: pa.Table | None = None
        self._version = -1
        self._checked = 0.0

    def _current(self) -> tuple[LakeTable, int]:
        """The table and the version lookups use now (re-checked every ``refresh_interval``)."""
        now = time.monotonic()
        if self._table is None:
            self._table = open_catalog(self._catalog).load_table(self._name)
        if self._version < 0 or now - self._checked >= self._interval:
            self._checked = now
            self._version = self._table.refresh().version
        return self._table, self._version

    def by_key(self, on: Sequence[str]) -> bool:
        """Whether ``on`` is the table's whole primary key (then :meth:`rows_for` looks rows up)."""
        with self._lock:
            if self._table is None:
                self._table = open_catalog(self._catalog).load_table(self._name)
            return bool(self._table.primary_key) and set(on) == set(self._table.primary_key)

    def rows_for(self, data: pa.Table, on: Sequence[str]) -> tuple[pa.Table, int]:
        """The table's rows for the ``on`` values of ``data``, by point lookups at the current version.

        Nothing of the table is held but the lookups' per-file key indexes: the stateless lookup
        join of issue 17 (NULL keys never match, so they are not looked up).
        """
        with self._lock:
            table, version = self._current()
        wanted = data.select(list(on))
        for name in on:
            wanted = wanted.filter(pc.is_valid(wanted.column(name)))
        if wanted.num_rows:
            wanted = wanted.group_by(list(on), use_threads=False).aggregate([])
        if not wanted.num_rows:
            schema = pa.schema([table.schema.field(c) for c in self._columns])
            return schema.empty_table(), version
        return table.get(wanted, version=version, columns=self._columns), version

    def get(self) -> tuple[pa.Table, int]:
        with self._lock:
            now = time.monotonic()
            if self._table is None:
                self._table = open_catalog(self._catalog).load_table(self._name)
            if self._rows is None or now - self._checked >= self._interval:
                self._checked = now
                version = self._table.refresh().version
                if version != self._version or self._rows is None:
                    self._rows = self._table.read(version=version, columns=self._columns)
                    self._version = version
            return self._rows, self._version


@operator
def lookup_join(
    step_id: str,
    up: Stream[ChangeBatch],
    table: str,
    on: Sequence[str],
    columns: Sequence[str],
    catalog: CatalogSpec = None,
    refresh_interval: float = 1.0,
    rename: Mapping[str, str] | None = None,
) -> Stream[ChangeBatch]:
    """Enrich changes with ``columns`` of a lake table's latest snapshot, matched on ``on`` (left join).

    When ``on`` is the table's whole primary key, each batch's keys are looked up in the table
    (``LakeTable.get``, which reads only the row groups holding them) and nothing of the table is
    held; otherwise the snapshot is cached and re-read when the table has a new version. Either way
    the version is re-checked at most every ``refresh_interval`` seconds. Like Flink's lookup join,
    earlier outputs are not revised when the table changes; the version used is added to the
    batch's positions (lineage). ``rename`` names the table's columns in the output (see
    :func:`~flowlake.flow._relational.lookup`).

    >>> import flowlake as fl
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, from_rows, lookup_join, rows
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://lookup-join-doc")
    >>> shops = cat.create_table("ods.shops", pa.schema([("shop", pa.string()), ("city", pa.string())]),
    ...                          primary_key=["shop"])
    >>> _ = shops.upsert(pa.table({"shop": ["a"], "city": ["Oslo"]}))
    >>> orders = pa.schema([("order_id", pa.int64()), ("shop", pa.string())])
    >>> batch = from_rows([(0, {"order_id": 1, "shop": "a"}), (0, {"order_id": 2, "shop": "z"})], orders)
    >>> flow = Dataflow("lookup_join_doc")
    >>> up = op.input("in", flow, TestingSource([ChangeBatch(batch)]))
    >>> out: list[ChangeBatch] = []
    >>> enriched = lookup_join("city", up, "ods.shops", ["shop"], ["city"], catalog=cat)
    >>> op.output("out", enriched, TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["+I {'order_id': 1, 'shop': 'a', 'city': 'Oslo'}", "+I {'order_id': 2, 'shop': 'z', 'city': None}"]
    >>> out[0].positions
    {'table:ods.shops': 1}
    """
    keys = list(on)
    cache = _DimCache(table, catalog, [*keys, *[c for c in columns if c not in keys]], refresh_interval)
    by_key: list[bool] = []  # decided on first use, when the table can be opened

    def enrich(batch: ChangeBatch) -> ChangeBatch:
        if not by_key:
            by_key.append(cache.by_key(keys))
        dim, version = cache.rows_for(batch.data, keys) if by_key[0] else cache.get()
        positions = {**batch.positions, position_key(table): version}
        return ChangeBatch(lookup(batch.data, dim, keys, columns, rename), positions, batch.fresh)

    return op.map("enrich", up, enrich)


@operator
def dedup(
    step_id: str,
    up: Stream[ChangeBatch],
    keys: Sequence[str],
    keep: Literal["first", "last"] = "last",
    partitions: int = 4,
    chunks: str | os.PathLike[str] | None = None,
    inline_bytes: int | None = None,
    state_mb: float | None = None,
) -> Stream[ChangeBatch]:
    """One row per key: the first or latest, emitted as an exact changelog (repeats are dropped).

    ``chunks`` and ``inline_bytes`` as for :func:`aggregate`: with a state folder, a large key
    partition's snapshot holds only the keys whose row changed since the last one, and each key
    partition keeps its rows in about ``state_mb`` MiB of memory (default ``$FLOWLAKE_DEDUP_STATE_MB``,
    else 128; 0: no bound), reading the rows of the others back from its chunks when changes touch them.

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, dedup, from_rows, rows
    >>> schema = pa.schema([("id", pa.int64()), ("status", pa.string())])
    >>> events = from_rows([(0, {"id": 1, "status": "new"}), (0, {"id": 1, "status": "paid"})], schema)
    >>> flow = Dataflow("dedup_doc")
    >>> out: list[ChangeBatch] = []
    >>> up = op.input("in", flow, TestingSource([ChangeBatch(events)]))
    >>> op.output("out", dedup("latest", up, ["id"]), TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["+I {'id': 1, 'status': 'new'}", "-U {'id': 1, 'status': 'new'}", "+U {'id': 1, 'status': 'paid'}"]
    """
    cols = tuple(keys)
    split = op.flat_map("split", up, lambda batch: split_by_partition(batch, cols, partitions))
    keyed = op.key_on("key", split, lambda item: item[0])
    values = op.map_value("unwrap", keyed, lambda item: item[1])
    sizes = StateSizes(step_id)
    root = state_dir(chunks)
    chunk_root = None if root is None else root / step_id
    threshold = snapshot_inline_bytes(inline_bytes)

    cache_bytes = dedup_cache_bytes(state_mb)

    def fold(
        state: DedupState | Frozen | None, batches: list[ChangeBatch]
    ) -> tuple[DedupState, list[ChangeBatch]]:
        state = thaw_or_new(state, lambda: DedupState(keep))
        if chunk_root is not None:
            state.keep_chunks(chunk_root, threshold)
            state.keep_in_memory(cache_bytes)
        outs = [_counted(step_id, batch, state.apply(batch.data, cols)) for batch in coalesce(batches)]
        sizes.update(state, len(state.rows))
        return state, outs

    return op.key_rm("unkey", fold_batches("fold", values, fold))


@operator
def top_n(
    step_id: str,
    up: Stream[ChangeBatch],
    partition_by: Sequence[str],
    order_by: Sequence[SortKey],
    n: int,
    rank: str | None = None,
    partitions: int = 4,
    chunks: str | os.PathLike[str] | None = None,
    inline_bytes: int | None = None,
    state_mb: float | None = None,
) -> Stream[ChangeBatch]:
    """The first ``n`` rows of each partition in ``order_by`` order (``ROW_NUMBER() ... <= n``).

    Retraction-correct: a change that moves a row into or out of the top ``n`` emits exactly the
    difference. With ``rank`` the output has that column (1..n) and a rank whose row changes emits
    ``-U``/``+U``. Ties on every ``order_by`` column are broken by the other columns.

    ``chunks`` and ``inline_bytes`` as for :func:`aggregate`: with a state folder, a large key
    partition's snapshot holds only the rows of the partitions (``partition_by`` values) changed
    since the last one.

    With a folder, the rows beyond each partition's kept buffer go to memory-mapped files there, and
    each key partition keeps its partitions' kept rows (top ``n`` plus the buffer) in about
    ``state_mb`` MiB of memory (default ``$FLOWLAKE_TOPN_STATE_MB``, else 128; 0: no bound): past it,
    after a snapshot wrote them, the least recently changed partitions' kept rows are dropped from
    memory, and a change to one reads them back from the chunk files first. Results do not depend on
    the bound.

    >>> import bytewax.operators as op
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, SortKey, from_rows, rows, top_n
    >>> schema = pa.schema([("shop", pa.string()), ("amount", pa.int64())])
    >>> batch = from_rows([(0, {"shop": "a", "amount": a}) for a in (5, 9, 7)], schema)
    >>> flow = Dataflow("top_doc")
    >>> up = op.input("in", flow, TestingSource([ChangeBatch(batch)]))
    >>> best = top_n("best", up, ["shop"], [SortKey("amount", descending=True)], 2, rank="rn")
    >>> out: list[ChangeBatch] = []
    >>> op.output("out", best, TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["+I {'shop': 'a', 'amount': 9, 'rn': 1}", "+I {'shop': 'a', 'amount': 7, 'rn': 2}"]
    """
    part_cols, order = tuple(partition_by), tuple(order_by)
    split = op.flat_map("split", up, lambda batch: split_by_partition(batch, part_cols, partitions))
    keyed = op.key_on("key", split, lambda item: item[0])
    values = op.map_value("unwrap", keyed, lambda item: item[1])
    sizes = StateSizes(step_id)

    root = state_dir(chunks)
    chunk_root = None if root is None else root / step_id
    threshold = snapshot_inline_bytes(inline_bytes)
    cache_bytes = topn_cache_bytes(state_mb)

    def fold(
        state: TopNState | Frozen | None, batches: list[ChangeBatch]
    ) -> tuple[TopNState, list[ChangeBatch]]:
        state = thaw_or_new(state, lambda: TopNState(part_cols, order, n, rank))
        if chunk_root is not None:
            state.keep_chunks(chunk_root, threshold)
            state.keep_in_memory(cache_bytes)
        outs = [_counted(step_id, batch, state.apply(batch.data)) for batch in coalesce(batches)]
        sizes.update(state, len(state))
        return state, outs

    return op.key_rm("unkey", fold_batches("fold", values, fold))


@operator
def filter_rows(step_id: str, up: Stream[ChangeBatch], where: Condition) -> Stream[ChangeBatch]:
    """Keep rows passing ``where``; an update leaving or entering the filter becomes ``-D``/``+I``.

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, filter_rows, from_rows, rows
    >>> schema = pa.schema([("id", pa.int64()), ("status", pa.string())])
    >>> update = from_rows([(1, {"id": 1, "status": "new"}), (2, {"id": 1, "status": "paid"})], schema)
    >>> flow = Dataflow("filter_doc")
    >>> out: list[ChangeBatch] = []
    >>> up = op.input("in", flow, TestingSource([ChangeBatch(update)]))
    >>> op.output("out", filter_rows("paid", up, ("status", "==", "paid")), TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["+I {'id': 1, 'status': 'paid'}"]
    """
    return op.map("filter", up, lambda b: b.with_data(filter_changes(b.data, condition_mask(b.data, where))))


@operator
def map_rows(
    step_id: str, up: Stream[ChangeBatch], fn: Callable[[pa.Table], pa.Table]
) -> Stream[ChangeBatch]:
    """Transform rows with a vectorized function (row in, row out); kinds are kept.

    >>> import pyarrow.compute as pc
    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, from_rows, map_rows, rows
    >>> schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    >>> flow = Dataflow("map_doc")
    >>> out: list[ChangeBatch] = []
    >>> deleted = ChangeBatch(from_rows([(3, {"id": 1, "name": "ann"})], schema))
    >>> up = op.input("in", flow, TestingSource([deleted]))
    >>> upper = map_rows("upper", up, lambda t: t.set_column(1, "name", pc.utf8_upper(t["name"])))
    >>> op.output("out", upper, TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for b in out for change in rows(b)]
    ["-D {'id': 1, 'name': 'ANN'}"]
    """
    return op.map("map", up, lambda b: b.with_data(map_changes(b.data, fn)))


@operator
def to_rows(step_id: str, up: Stream[ChangeBatch]) -> Stream[RowChange]:
    """The friendly per-row view: one :class:`~flowlake.flow.batch.RowChange` per change.

    >>> from bytewax.testing import TestingSink, TestingSource, run_main
    >>> from flowlake.flow import ChangeBatch, from_rows, to_rows
    >>> schema = pa.schema([("id", pa.int64())])
    >>> flow = Dataflow("to_rows_doc")
    >>> out: list[RowChange] = []
    >>> batch = ChangeBatch(from_rows([(0, {"id": 1}), (3, {"id": 2})], schema))
    >>> up = op.input("in", flow, TestingSource([batch]))
    >>> op.output("out", to_rows("rows", up), TestingSink(out))
    >>> run_main(flow)
    >>> [str(change) for change in out]
    ["+I {'id': 1}", "-D {'id': 2}"]
    """
    return op.flat_map("rows", up, rows)


def drop_columns(batch: ChangeBatch, columns: Sequence[str]) -> ChangeBatch:
    """A batch without some columns (missing ones are ignored)."""
    present = [c for c in columns if c in batch.data.column_names]
    return batch.with_data(batch.data.drop_columns(present)) if present else batch


def late_rows(batch: ChangeBatch) -> ChangeBatch:
    """Late changes shaped for a late-data table: ``change_seq`` (the input ``_seq``) keys each row."""
    data = batch.data
    seq = data.column(SEQ_COLUMN) if SEQ_COLUMN in data.column_names else pa.nulls(data.num_rows, pa.int64())
    kind = data.column(KIND_COLUMN)
    body = data.drop_columns([c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names])
    body = body.append_column("change_kind", kind).append_column("change_seq", seq)
    return batch.with_data(body.append_column(KIND_COLUMN, pa.array(np.zeros(data.num_rows, np.int8))))
