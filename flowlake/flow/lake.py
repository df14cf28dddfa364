"""The lake source and the exactly-once lake sink: bytewax connectors over flowlake tables.

**Source.** :class:`LakeSource` reads a table's exact changelog (``t.changes``) and emits
:class:`~flowlake.flow.batch.ChangeBatch` items tagged with the version they reach. It has one
partition per table (not per bucket): a single reader gives the table's changes a total order, so
its resume state, its lineage and the sink's commit tokens are all one integer, the last version
consumed, and a bucket split changes nothing. Parallelism comes after the source: operators split
batches by a stable hash of their group key into key partitions that bytewax spreads over workers.
Reading Parquet change logs is not the bottleneck (far above a million changes/s per reader).

**Sink.** :class:`LakeSink` applies changelogs to a primary-key table with one commit per bytewax
epoch. Bytewax writes eagerly and calls ``snapshot()`` once an epoch is complete, so the sink buffers
the epoch and commits in ``snapshot()``. The commit carries ``sources`` (the input versions it
covers, e.g. ``{"table:dwd.orders_enriched": 12, "flow:<flow>": {...}}``) and a token derived from
those positions, ``"<flow>@table:dwd.orders_enriched=12"``. After a crash bytewax resumes from its last
durable snapshot and replays; replayed epochs need not split the input where the first run did, so
the sink compares positions instead of trusting epoch numbers: while the replay is behind the
positions the table already committed for this flow it *holds* the changes (they are older images
of rows the table already has); once it reaches them it commits everything held (the images of every
row touched since the resume point, which equal the table's rows or newer). A replay that stops at
exactly a committed position produces that commit's token, which the table skips. The source emits one
batch per input version, so no operator ever folds changes from both sides of a committed version
into one batch (where they could cancel and leave the committed row stale). Outputs are thus
exactly-once and never go backwards, whatever the epoch boundaries. A batch of a version newer than
the input's head when the source started is *fresh* (``ChangeBatch.fresh``): no sink can have
committed it, so a stateful operator may fold fresh batches that arrive together as one
(:func:`~flowlake.flow.batch.coalesce`) without that risk.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError, VersionCleanedError
from flowlake.flow._joinside import values_equal
from flowlake.flow._valuecounts import dense_codes
from flowlake.flow.batch import ChangeBatch, concat, dominates, kinds_of, merge_positions, weights
from flowlake.lake import Catalog, connect
from flowlake.runtime.observability import LAG, count_records
from flowlake.table.table import LakeTable

log = logging.getLogger("flowlake.flow")

CatalogSpec = Catalog | Callable[[], Catalog] | None
"""A catalog, a function that opens one, or None for ``flowlake.connect()`` (env / flowlake.toml)."""

Start = Literal["earliest", "latest"] | int
"""Where a new source starts: the first retained version, the head, or after a given version."""


def open_catalog(spec: CatalogSpec) -> Catalog:
    """Resolve a :data:`CatalogSpec`."""
    if spec is None:
        return connect()
    if isinstance(spec, Catalog):
        return spec
    return spec()


def position_key(table: str) -> str:
    """The lineage key of a table: ``"table:<namespace.table>"``."""
    return f"table:{table}"


FIRST_POLL_S: Final = 0.02
"""Seconds from a read that found changes to a caught-up source's next poll (see ``poll_wait``)."""
REGISTER_EVERY_S: Final = 5.0
"""How often a lake source moves its registered consumer position (which keeps the history it still
needs from being cleaned) as it reads on; a position registered later than it could be is only older."""


class _SourcePartition(StatefulSourcePartition[ChangeBatch, int]):
    def __init__(
        self, source: LakeSource, consumer: str, resume: int | None
    ) -> None:  # fmt: skip
        self._source = source
        self._catalog = open_catalog(source.catalog)
        self._table = self._catalog.load_table(source.table)
        self._consumer = consumer
        self._key = position_key(source.table)
        self._awake: dt.datetime | None = None
        self._quiet_polls = 0
        """Polls in a row that found nothing new (the wait before the next one doubles with each)."""
        self._snapshot_from: int | None = None
        self._registered: tuple[int, float] = (-1, 0.0)  # version, time.monotonic() when registered
        head = self._table.refresh().version
        self._head_at_start = head
        """Versions after this one are fresh (see ChangeBatch.fresh): no sink can have committed them."""
        self._stop = head if source.stop == "head" else source.stop
        self._pending_snapshot = False
        if resume is not None:
            self._position = resume
        elif source.start == "latest":
            self._position = head
        elif source.start == "earliest":
            oldest = _oldest_version(self._table)
            self._position = 0
            if oldest > 0:
                self._position = oldest
                self._pending_snapshot = True
        elif isinstance(source.start, int) and 0 <= source.start <= head:
            self._position = source.start
        else:
            raise InvalidArgumentError(
                f"lake source on {source.table!r}: start must be 'earliest', 'latest' or a version "
                f"0..{head}, got {source.start!r}"
            )
        log.info(
            "source %r on %r starts after version %d (resume=%s)",
            consumer,
            source.table,
            self._position,
            resume,
        )
        self._register(self._position)

    def _register(self, version: int) -> None:
        self._registered = (version, time.monotonic())
        try:
            self._catalog.register_consumer(self._consumer, self._source.table, version)
        except Exception as exc:  # cleaning protection is best effort; reading still works
            log.warning("could not register consumer %r on %r: %s", self._consumer, self._source.table, exc)

    def next_batch(self) -> Iterable[ChangeBatch]:
        if self._pending_snapshot:
            self._pending_snapshot = False
            return self._snapshot_batches()
        if self._stop is not None and self._position >= self._stop:
            raise StopIteration
        head = self._table.refresh().version
        if head <= self._position:
            LAG.labels(self._consumer, self._source.table).set(0)
            self._awake = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.poll_wait())
            self._quiet_polls += 1
            return []
        self._awake, self._quiet_polls = None, 0
        end = min(head, self._position + self._source.max_versions)
        if self._stop is not None:
            end = min(end, self._stop)
        end = self._within_rows(end)
        changes = self._table.changes(self._position, end, columns=self._columns())
        start, self._position = self._position, end
        count_records(self._consumer, "in", changes.num_rows)
        LAG.labels(self._consumer, self._source.table).set(head - end)
        return self._per_version(changes, start, end)

    def poll_wait(self) -> float:
        """Seconds until the next poll of a caught-up source: :data:`FIRST_POLL_S` after a read that
        found changes, doubling with each poll that finds none, up to the source's ``poll_interval``.
        A table committed to every fraction of a second is seen tens of milliseconds after each
        commit (a poll is one catalog query, ~0.2 ms), an idle one is polled every ``poll_interval``."""
        interval = self._source.poll_interval
        return min(interval, FIRST_POLL_S * 2.0 ** min(self._quiet_polls, 30))

    def _within_rows(self, end: int) -> int:
        """``end``, or an earlier version so that one read holds at most ``max_read_rows`` changelog
        rows (by the catalog's counts; always at least one version, however large)."""
        if end - self._position <= 1:
            return end
        counts = self._table.change_rows(self._position, end)
        total = 0
        for version in range(self._position + 1, end + 1):
            total += counts.get(version, 0)
            if total > self._source.max_read_rows and version > self._position + 1:
                return version - 1
        return end

    def _per_version(self, changes: pa.Table, start: int, end: int) -> list[ChangeBatch]:
        """One batch per input version (sliced to ``max_rows``), tagged with that version.

        Stateful operators fold a batch at a time and emit only what changed across it. If a batch
        spanned versions, a replay after a crash could fold changes from both sides of the version the
        sink last committed into one batch, where they may cancel out, and the sink would never see the
        image that corrects the committed one. Batches that never span versions rule that out.
        """
        out: list[ChangeBatch] = []
        if changes.num_rows:
            versions = np.asarray(changes.column(SEQ_COLUMN).to_numpy(), dtype=np.int64) >> 32
            cuts = np.flatnonzero(np.diff(versions)) + 1
            bounds = [0, *cuts.tolist(), len(versions)]
            for lo, hi in itertools.pairwise(bounds):
                out += self._slices(changes.slice(lo, hi - lo), int(versions[lo]))
        if not out or out[-1].positions[self._key] < end:
            out.append(ChangeBatch(changes.schema.empty_table(), {self._key: end}, end > self._head_at_start))
        return out

    def _columns(self) -> list[str] | None:
        """The columns to read: the source's, those of them the table has (a column dropped from it is
        not asked for), or all."""
        if self._source.columns is None:
            return None
        have = set(self._table.schema.names)
        return [c for c in self._source.columns if c in have]

    def _snapshot_batches(self) -> list[ChangeBatch]:
        rows = self._table.read(version=self._position, columns=self._columns())
        n = rows.num_rows
        rows = rows.append_column(KIND_COLUMN, pa.array(np.full(n, RowKind.INSERT, np.int8)))
        seq = (np.int64(self._position) << np.int64(32)) + np.arange(n, dtype=np.int64)
        return self._slices(rows.append_column(SEQ_COLUMN, pa.array(seq)), self._position)

    def _slices(self, changes: pa.Table, version: int) -> list[ChangeBatch]:
        positions, fresh = {self._key: version}, version > self._head_at_start
        size = self._source.max_rows
        if changes.num_rows <= size:
            return [ChangeBatch(changes, positions, fresh)]
        return [
            ChangeBatch(changes.slice(i, size), positions, fresh) for i in range(0, changes.num_rows, size)
        ]

    def next_awake(self) -> dt.datetime | None:
        return self._awake

    def snapshot(self) -> int:
        # the consumer trails by one snapshot: a resume restarts from a snapshot that is durable; it
        # moves at most every REGISTER_EVERY_S (a catalog write per epoch costs a sub-second flow
        # ~8% of its CPU), which only keeps a little more history readable than needed
        durable, (registered, at) = self._snapshot_from, self._registered
        if durable is not None and durable != registered and time.monotonic() - at >= REGISTER_EVERY_S:
            self._register(durable)
        self._snapshot_from = self._position
        return self._position


def _oldest_version(table: LakeTable) -> int:
    try:
        table.changes(0, 0)
    except VersionCleanedError as exc:
        return exc.oldest
    return 0


class LakeSource(FixedPartitionedSource[ChangeBatch, int]):
    """A lake table's changelog as a bytewax source (one partition; resume state = last version).

    Args:
        table: ``namespace.table`` to read.
        start: ``"earliest"`` (the whole retained history, as a snapshot of the oldest readable
            version then its changes), ``"latest"`` (only new commits) or a version to read after.
        catalog: See :data:`CatalogSpec`.
        stop: ``None`` polls forever, unless ``FLOWLAKE_FLOW_STOP`` is set (``flowlake run --once``
            sets it to ``head``); ``"head"`` stops at the head seen at start; an int stops there.
        poll_interval: The longest wait between two polls of the catalog when caught up: a source that
            has just read changes polls again after :data:`FIRST_POLL_S`, and doubles the wait each
            time it finds nothing new.
        max_versions: Versions read per poll (bounds memory on a backlog).
        max_rows: Rows per emitted batch.
        max_read_rows: Changelog rows read per poll (at least one version): a backlog of large
            commits (a first load) is read a few at a time, not all at once.
        columns: Only these columns (and ``_kind``/``_seq``) are read, from the Parquet files too;
            None reads every column.

    >>> import bytewax.operators as op
    >>> import flowlake as fl
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSink, run_main
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://lake-source-doc")
    >>> t = cat.create_table("ods.t", pa.schema([("id", pa.int64())]), primary_key=["id"])
    >>> _ = t.upsert(pa.table({"id": [1, 2]}))
    >>> flow = Dataflow("lake_source_doc")
    >>> out: list[ChangeBatch] = []
    >>> changes = op.input("in", flow, LakeSource("ods.t", catalog=cat, stop="head"))
    >>> op.output("out", changes, TestingSink(out))
    >>> run_main(flow)
    >>> sum(b.num_rows for b in out), out[-1].positions
    (2, {'table:ods.t': 1})
    """

    def __init__(
        self,
        table: str,
        *,
        start: Start = "earliest",
        catalog: CatalogSpec = None,
        stop: Literal["head"] | int | None = None,
        poll_interval: float = 0.5,
        max_versions: int = 64,
        max_rows: int = 100_000,
        columns: Sequence[str] | None = None,
        max_read_rows: int = 1_000_000,
    ) -> None:
        self.table = table
        self.columns = tuple(columns) if columns is not None else None
        self.start = start
        self.catalog = catalog
        self.stop = stop if stop is not None else stop_from_env()
        self.poll_interval = poll_interval
        self.max_versions = max(1, max_versions)
        self.max_rows = max(1, max_rows)
        self.max_read_rows = max(1, max_read_rows)

    def list_parts(self) -> list[str]:
        return [self.table]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _SourcePartition:
        return _SourcePartition(self, step_id, resume_state)


def stop_from_env() -> Literal["head"] | int | None:
    """Where sources without an explicit ``stop`` end: ``$FLOWLAKE_FLOW_STOP`` (``head`` or a version)."""
    value = os.environ.get("FLOWLAKE_FLOW_STOP", "").strip()
    if not value:
        return None
    if value == "head":
        return "head"
    try:
        return int(value)
    except ValueError as exc:
        raise InvalidArgumentError(
            f"FLOWLAKE_FLOW_STOP must be 'head' or a table version, got {value!r}"
        ) from exc


def flow_key(flow: str) -> str:
    """The lineage key under which a sink records the positions its flow committed."""
    return f"flow:{flow}"


def commit_token(flow: str, positions: Mapping[str, int]) -> str:
    """The deterministic commit token of ``flow`` having consumed ``positions``."""
    return flow + "@" + ",".join(f"{k}={v}" for k, v in sorted(positions.items()))


StartRows = Callable[[pa.Table], pa.Table]
"""Given key columns, the live rows those keys had where a buffer of changes started."""

OMIT: Literal["omit"] = "omit"
"""``consolidate(unchanged=OMIT)``: the target holds the start state, so unchanged keys need no row."""


def consolidate(
    changes: pa.Table, key: Sequence[str], *, unchanged: StartRows | Literal["omit"] | None = OMIT
) -> pa.Table:
    """The final state of every key a changelog touches, whatever order its changes arrived in.

    Rows are weighed (``+I``/``+U`` +1, ``-U``/``-D`` -1) and netted per identical row. Upstream key
    partitions may deliver an update's ``-U`` after its ``+U`` (the update moved the row between
    partitions), so arrival order says little; the net weights say enough. In a changelog that is
    consistent per key (images alternate: added, retracted, added, ...):

    * a row with a positive net weight is the key's final image (``+U``);
    * else a row with a negative net weight was there at the start and is gone: the key is ``-D``;
    * else every change of the key cancelled out: the key ends as it started. Which that was, the
      changes cannot tell (``-R +R`` and ``+R -R`` net alike, and may arrive in either order), so
      ``unchanged`` decides: ``"omit"`` leaves such keys out (the target still holds the start
      state), a :data:`StartRows` function looks their start rows up (a replay, whose target holds a
      later state), and None keeps the key's last-arrived image if that arrival added it (a guess,
      for a start nobody can look up).

    >>> from flowlake.flow import from_rows
    >>> schema = pa.schema([("id", pa.int64()), ("city", pa.string())])
    >>> moved = from_rows([(2, {"id": 1, "city": None}), (1, {"id": 1, "city": None})], schema)
    >>> consolidate(moved, ["id"]).num_rows  # -U/+U of one image from two partitions: unchanged
    0
    >>> at_start = pa.table({"id": [1], "city": ["Oslo"]})  # a replay: the start row, looked up
    >>> consolidate(moved, ["id"], unchanged=lambda keys: at_start).to_pylist()
    [{'id': 1, 'city': 'Oslo', '_kind': 2}]
    """
    if changes.num_rows == 0:
        return changes
    n = changes.num_rows
    body = [c for c in changes.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
    w = weights(kinds_of(changes)).astype(np.int64, copy=False)
    codes = _key_codes(changes, list(key))
    repeated = np.bincount(codes)[codes] > 1
    if (w > 0).all() and not repeated.any():
        # only additions, each of another key: every row is its key's final image, in arrival order
        kinds = np.full(n, RowKind.UPDATE_AFTER, np.int8)
        return changes.select(body).append_column(KIND_COLUMN, pa.array(kinds, pa.int8()))
    rows, picked = _final_images(changes, body, list(key), w, codes, repeated)
    out = changes.select(body).take(pa.array(rows))
    if unchanged is None:
        kinds = np.where((picked == 3) | (picked == 1), RowKind.UPDATE_AFTER, RowKind.DELETE)
        return out.append_column(KIND_COLUMN, pa.array(kinds.astype(np.int8), pa.int8()))
    kinds = np.where(picked == 3, RowKind.UPDATE_AFTER, RowKind.DELETE).astype(np.int8)
    settled = picked >= 2
    result = out.filter(pa.array(settled)).append_column(KIND_COLUMN, pa.array(kinds[settled], pa.int8()))
    if unchanged == OMIT or settled.all():
        return result
    cancelled = out.filter(pa.array(~settled))
    restored = _start_images(cancelled, list(key), unchanged)
    return pa.concat_tables([result, restored.cast(result.schema)])


def _key_codes(changes: pa.Table, key: list[str]) -> np.ndarray:
    """A code per row for its key (equal keys alike, NULL a value), dense enough to count with
    ``np.bincount`` (below four times the rows)."""
    start = np.zeros(changes.num_rows, np.int64)
    codes, left_out = _combined_codes((changes.column(name) for name in key), start, 1)
    if left_out:
        raise InvalidArgumentError(
            f"a sink's primary key {key} has a column of type {left_out[0].type}, which cannot be a key"
        )
    if int(codes.max()) >= 4 * len(codes):
        codes = np.unique(codes, return_inverse=True)[1]
    return codes


def _final_images(
    changes: pa.Table,
    body: list[str],
    key: list[str],
    w: np.ndarray,
    codes: np.ndarray,
    repeated: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per key, the row that settles it (ascending row numbers) and its priority: 3 its final image,
    2 gone, 1 / 0 cancelled out with the last arrival an addition / a retraction (see
    :func:`consolidate`; ``codes`` are the rows' :func:`_key_codes`, ``repeated`` whether a row's
    key has other rows). A key with one change is settled by it; only the rows of keys with several
    are netted per identical image (:func:`_images`), so a wide row is never grouped on all its
    columns (any type, nested ones included)."""
    single = np.flatnonzero(~repeated)
    rows, priority = [single], [np.where(w[single] > 0, 3, 2)]
    several = np.flatnonzero(repeated)
    if len(several):
        values = [name for name in body if name not in key]  # (the key is in its codes)
        image, image_key = _images(changes, values, codes, several)
        order = np.argsort(image, kind="stable")
        at = np.flatnonzero(np.diff(image[order], prepend=-1))
        members = several[order]
        total = np.add.reduceat(w[members], at)
        last = np.maximum.reduceat(members, at)
        image_priority = np.where(total > 0, 3, np.where(total < 0, 2, np.where(w[last] > 0, 1, 0)))
        rank = image_priority * len(w) + last
        by_key = np.lexsort((rank, image_key))  # per key its images by rank: the last one wins
        winners = by_key[np.append(image_key[by_key][1:] != image_key[by_key][:-1], True)]
        rows.append(last[winners])
        priority.append(image_priority[winners])
    every, ranks = np.concatenate(rows), np.concatenate(priority)
    order = np.argsort(every, kind="stable")
    return every[order], ranks[order]


def _value_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """A code per value in ``0..k-1`` (equal codes for equal values, NULL a value of its own) and
    ``k``: an integer or temporal column without NULLs is its own code (offset by its minimum) where
    its span is below 2**31; others are dictionary-encoded (a hash table per distinct value)."""
    type_ = column.type
    plain = pa.types.is_integer(type_) and not pa.types.is_uint64(type_)  # (uint64 may pass int64)
    if not column.null_count and (plain or pa.types.is_temporal(type_)):
        narrow = pa.types.is_date32(type_) or pa.types.is_time32(type_)
        ints = column.cast(pa.int32() if narrow else pa.int64()) if not plain else column
        values = np.asarray(ints.to_numpy(), np.int64)
        low, high = int(values.min()), int(values.max())
        if high - low < 1 << 31:
            return values - low, high - low + 1
    return dense_codes(column)


def _combined_codes(
    columns: Iterable[pa.ChunkedArray], start: np.ndarray, size: int
) -> tuple[np.ndarray, list[pa.ChunkedArray]]:
    """Rows coded by their values in ``columns``, after the codes ``start`` (``0..size-1``): equal
    codes for equal rows (non-negative, below 2**62, not dense), and the columns left out because
    Arrow cannot code them (nested ones: the caller compares their values)."""
    group, left_out = start, []
    for column in columns:
        try:
            codes, k = _value_codes(column)
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):
            left_out.append(column)
            continue
        if size * k >= 1 << 62:  # re-densify before the mixed radix could overflow
            distinct, group = np.unique(group, return_inverse=True)
            size = len(distinct)
        group, size = group * k + codes, size * k
    return group, left_out


def _images(
    changes: pa.Table, body: list[str], codes: np.ndarray, several: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``several`` grouped by identical image: an image id per row (ids ``0..g-1`` in no
    particular order) and each image's key code (``codes``: one per row of ``changes``).

    Columns Arrow can dictionary-encode are coded value by value (exactly; NULL is a value) and the
    codes combined; columns it cannot (nested ones) are compared value by value instead: rows that
    differ from their group's first are grouped again among themselves until every row equals it.
    """
    key_codes, rows = codes[several], pa.array(several)
    columns = (changes.column(name).take(rows) for name in body)  # one at a time
    group, compared = _combined_codes(columns, key_codes, int(key_codes.max()) + 1)
    image = np.empty(len(several), np.int64)
    image_key: list[np.ndarray] = []
    pending, next_image = np.arange(len(several)), 0
    while len(pending):
        pending = pending[np.argsort(group[pending], kind="stable")]
        starts = np.append(True, group[pending][1:] != group[pending][:-1])
        at = np.flatnonzero(starts)
        leaders = pending[at]
        same = np.ones(len(pending), bool)
        if compared:
            firsts = pa.array(np.repeat(leaders, np.diff(np.append(at, len(pending)))))
            placed = pa.array(pending)
            for column in compared:
                same &= values_equal(column.take(firsts), column.take(placed), nulls=True)
        image[pending[same]] = next_image + np.cumsum(starts)[same] - 1
        image_key.append(key_codes[leaders])
        next_image += len(at)
        pending = pending[~same]
    return image, np.concatenate(image_key)


def _rows_at(table: LakeTable, keys: pa.Table, version: int) -> pa.Table:
    """The rows of ``keys`` at ``version``, pinned while they are read: a clean that runs meanwhile
    keeps the version (the pin fails with ``VersionCleanedError`` if one already removed it; a TTL
    drops the pin of a sink killed while holding it)."""
    with table.pin(version, ttl_seconds=600):
        return table.get(keys, version=version)


def _start_images(cancelled: pa.Table, key: list[str], start_rows: StartRows) -> pa.Table:
    """``+U`` start rows of keys whose changes cancelled out, ``-D`` for those absent at the start."""
    found = start_rows(cancelled.select(key)).select(cancelled.column_names)
    if found.num_rows:
        present = found.select(key).append_column("__flowlake_found", pa.array(np.ones(found.num_rows, bool)))
        marked = cancelled.join(present, keys=key, join_type="left outer", use_threads=False)
        absent = marked.filter(pc.is_null(marked.column("__flowlake_found"))).select(cancelled.column_names)
    else:
        absent = cancelled
    images = found.append_column(
        KIND_COLUMN, pa.array(np.full(found.num_rows, RowKind.UPDATE_AFTER, np.int8))
    )
    gone = absent.append_column(KIND_COLUMN, pa.array(np.full(absent.num_rows, RowKind.DELETE, np.int8)))
    return pa.concat_tables([images.cast(gone.schema), gone])


class _SinkPartition(StatefulSinkPartition[ChangeBatch, dict[str, Any]]):
    def __init__(self, sink: LakeSink, flow: str, resume: dict[str, Any] | None) -> None:
        self._table: LakeTable = open_catalog(sink.catalog).load_table(sink.table)
        self._flow = flow
        self._seen: dict[str, int] = dict(resume["seen"]) if resume else {}
        held = resume.get("held") if resume else None
        self._buffer: list[pa.Table] = [held] if held is not None else []
        # the positions where the buffer starts (None: unknown, a held buffer of an older snapshot)
        start = resume.get("start", None if held is not None else self._seen) if resume else {}
        self._start: dict[str, int] | None = None if start is None else dict(start)
        self._flushed: dict[str, int] | None = None
        committed = self._table.source_position(flow_key(flow))
        self._committed: dict[str, int] | None = dict(committed) if committed else None
        self.commits = 0
        self._failed = False
        log.info("sink %r built: resume seen=%s held=%s committed=%s", flow, self._seen,
                 0 if held is None else held.num_rows, self._committed)  # fmt: skip

    def write_batch(self, values: list[ChangeBatch]) -> None:
        for value in values:
            self._seen = merge_positions(self._seen, value.positions)
            if value.num_rows:
                self._buffer.append(value.data)

    def _changes(self) -> pa.Table:
        columns = [*self._table.schema.names, KIND_COLUMN]
        tables = [t.select(columns) for t in self._buffer]
        schema = pa.schema([*self._table.schema, pa.field(KIND_COLUMN, pa.int8())])
        changes, key = concat(tables, schema), self._table.primary_key
        try:
            return consolidate(changes, key, unchanged=self._start_rows())
        except VersionCleanedError:  # the start commit was cleaned before the lookup could pin it
            log.warning("sink %r: the commit at %s was cleaned; keys whose changes cancelled out keep "
                        "their last image", self._flow, self._start)  # fmt: skip
            return consolidate(changes, key, unchanged=None)

    def _start_rows(self) -> StartRows | Literal["omit"] | None:
        """How to settle keys whose buffered changes cancelled out (see :func:`consolidate`)."""
        if self._start is None:
            return None
        if (self._committed or {}) == self._start:
            return OMIT  # the table holds what this flow committed where the buffer starts
        table, flow_at = self._table, flow_key(self._flow)
        if not self._start:  # the buffer starts before this flow's first commit: nothing was there
            return lambda keys: table.schema.empty_table()
        for commit in reversed(table.history()):
            if (commit.summary.get("sources") or {}).get(flow_at) == self._start:
                version = commit.version
                return lambda keys: _rows_at(table, keys, version)
        log.warning("sink %r: the commit at %s was cleaned; keys whose changes cancelled out keep their "
                    "last image", self._flow, self._start)  # fmt: skip
        return None

    def _flush(self) -> None:
        if not self._seen:
            if self._buffer:  # items without positions: no lineage, so at-least-once only
                log.warning(
                    "sink %r: changes without input positions are committed without a token", self._flow
                )
                self._table.apply(self._changes())
                self._buffer = []
            return
        if self._seen == self._flushed and not self._buffer:
            return
        if self._committed is not None and not dominates(self._seen, self._committed):
            log.info("sink %r: replay at %s is behind the committed %s; holding", self._flow, self._seen,
                     self._committed)  # fmt: skip
            self._compact_held()
            return  # replaying behind what the table already has: hold
        log.info(
            "sink %r commit at %s (%d buffered)",
            self._flow,
            self._seen,
            sum(t.num_rows for t in self._buffer),
        )
        sources: dict[str, Any] = dict(self._seen)
        sources[flow_key(self._flow)] = dict(self._seen)
        changes = self._changes()
        self._buffer = [changes]  # the same net changes (see _compact_held): the batches are freed
        self._table.apply(changes, token=commit_token(self._flow, self._seen), sources=sources)
        count_records(self._flow, "out", changes.num_rows)
        self.commits += 1
        self._committed = dict(self._seen)
        self._flushed = dict(self._seen)
        self._start = dict(self._seen)
        self._buffer = []

    def _compact_held(self) -> None:
        if sum(t.num_rows for t in self._buffer) > 100_000:
            self._buffer = [self._changes()]

    def snapshot(self) -> dict[str, Any]:
        self._failed = True  # until the flush returns: close() must not flush again after an error
        self._flush()
        self._failed = False
        held = concat(self._buffer) if self._buffer else None
        return {"seen": dict(self._seen), "held": held, "start": self._start}

    def close(self) -> None:
        # bytewax closes a partition while it unwinds from an error too; a second error there would
        # abort the process (a panic in a destructor) and hide the first one
        if not self._failed:
            self._flush()


class LakeSink(FixedPartitionedSink[ChangeBatch, dict[str, Any]]):
    """Apply changelog batches to a primary-key lake table, exactly once (see the module docs).

    One partition per table: commits to a table are serialized by the catalog anyway, so parallel
    writers would only conflict and retry.

    Args:
        table: The target ``namespace.table``; it must have a primary key.
        catalog: See :data:`CatalogSpec`.
        flow: Identity for tokens and lineage; defaults to the output step's id.

    A replayed epoch carries positions the table already committed, so it writes nothing:

    >>> import bytewax.operators as op
    >>> import flowlake as fl
    >>> from bytewax.dataflow import Dataflow
    >>> from bytewax.testing import TestingSource, run_main
    >>> from flowlake.flow import from_rows
    >>> cat = fl.connect(catalog="sqlite://", warehouse="memory://lake-sink-doc")
    >>> schema = pa.schema([("id", pa.int64()), ("n", pa.int64())])
    >>> t = cat.create_table("dws.t", schema, primary_key=["id"])
    >>> batch = ChangeBatch(from_rows([(0, {"id": 1, "n": 5})], schema), {"table:ods.x": 3})
    >>> for attempt in range(2):
    ...     flow = Dataflow("lake_sink_doc")
    ...     up = op.map("route", op.input("in", flow, TestingSource([batch])), lambda b: ("dws.t", b))
    ...     op.output("out", up, LakeSink("dws.t", catalog=cat, flow="doc"))
    ...     run_main(flow)
    >>> t.refresh().version, t.read().to_pylist()
    (1, [{'id': 1, 'n': 5}])
    """

    def __init__(self, table: str, *, catalog: CatalogSpec = None, flow: str | None = None) -> None:
        self.table = table
        self.catalog = catalog
        self.flow = flow

    def list_parts(self) -> list[str]:
        return [self.table]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, Any] | None) -> _SinkPartition:
        return _SinkPartition(self, self.flow or step_id, resume_state)
