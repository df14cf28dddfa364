"""Pure changelog logic behind the join, dedup, filter and map operators (no bytewax here)."""

from __future__ import annotations

import itertools
import logging
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow._grouplog import (
    HASH,
    IDENT,
    LIVE,
    TABLE,
    GroupChunkLog,
    ShedsToChunks,
    key_identities,
    memory_bound,
    resume_eagerly,
    sort_records,
)
from flowlake.flow._joinlog import SIDES, JoinChunkLog, restore_sides, side_records
from flowlake.flow._joinside import (
    SPILL_FOLDER,
    JoinSide,
    key_columns,
    key_types,
    no_nulls,
    rows_equal,
    table_hash,
)
from flowlake.flow._snapshot import (
    ChunkedSnapshot,
    ChunkedState,
    ChunkLog,
    Frozen,
    Manifest,
    PickledSnapshot,
    Records,
)
from flowlake.flow._stateform import from_state, to_state
from flowlake.flow.batch import kinds_of, weights

log = logging.getLogger("flowlake.flow")

JoinHow = Literal["inner", "left"]
"""Which rows a join keeps: only matches, or every left row (null-padded when unmatched)."""

_ADDS = (RowKind.INSERT, RowKind.UPDATE_AFTER)


def body_schema(schema: pa.Schema) -> pa.Schema:
    """A changelog schema without ``_kind`` and ``_seq``."""
    return pa.schema([f for f in schema if f.name not in (KIND_COLUMN, SEQ_COLUMN)])


def _tuples(data: pa.Table, names: Sequence[str], keys: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Rows as tuples in state form; ``keys`` columns stay Python values (they are matched across
    inputs whose types may differ, e.g. int32 against int64 or two decimal scales)."""
    if not data.num_rows:
        return []
    columns = [data.column(n).to_pylist() if n in keys else to_state(data.column(n)) for n in names]
    return list(zip(*columns, strict=True))


@dataclass(frozen=True)
class PairCondition:
    """A condition on a join's matched pairs beyond the key equality (``B.ts BETWEEN A.ts AND A.exp``).

    Evaluated inside the join on the candidate pairs of a batch, so pairs that fail it are never
    built: ``test`` gets a table of ``columns`` (names of the join's output, from either side) with
    one row per candidate pair and returns a boolean per row (NULL counts as false). It must be
    deterministic: the join evaluates it again on the same pair when either side changes.

    >>> import pyarrow.compute as pc
    >>> cond = PairCondition(("a", "b"), lambda t: pc.fill_null(pc.less(t["a"], t["b"]), False).to_numpy())
    >>> cond.test(pa.table({"a": [1, 3], "b": [2, 2]})).tolist()
    [True, False]
    """

    columns: tuple[str, ...]
    test: Callable[[pa.Table], np.ndarray]


def join_schema(left: pa.Schema, right: pa.Schema, on: Sequence[str]) -> pa.Schema:
    """Left columns, then right columns other than the join keys (right ones nullable)."""
    left_body, right_body = body_schema(left), body_schema(right)
    clash = [f.name for f in right_body if f.name in left_body.names and f.name not in on]
    if clash:
        raise InvalidArgumentError(f"join: columns {clash} exist on both sides; rename them with map_changes")
    extra = [f.with_nullable(True) for f in right_body if f.name not in on]
    return pa.schema([*left_body, *extra])


class JoinState(ChunkedSnapshot):
    """Both sides of a regular stream-stream join for one key partition, as multisets of rows in Arrow.

    A batch of one side's changes is folded at once: its changes are netted per identical row (each
    row's changes applied in order from its count in the state, a retraction of a row that is not
    live being dropped and counted in ``dropped_retractions``), and each row whose count changed is
    joined with the live rows of the other side that have its key (see
    :class:`~flowlake.flow._joinside.JoinSide`). The output is the joined rows' net changes, each with
    the kind of its cause's last change (``+I``/``+U`` for a row added, ``-U``/``-D`` for one
    retracted), in the order of those causes (for a batch of right rows: per left row, in that
    order). NULL keys never match; right rows with a NULL key are ignored. For a left join, a left
    row is null-padded while no right row has its key: the padded rows are retracted (``-D``, before
    the left row's joined rows) when a key's right rows go from none to some in a batch, and restored
    (``+I``, after them) when they go back to none.

    With a :class:`PairCondition`, a pair matches when its keys are equal and the condition holds:
    failing pairs are dropped before the joined rows are built, and a left row is null-padded while
    none of its key's right rows passes with it (its padding retracted or restored per left row, as
    the rows that pass with it go from none to some or back).

    With a state folder (:meth:`keep_chunks`) a large state snapshots only the live rows of the join
    rows whose count changed since the last snapshot (see :mod:`flowlake.flow._joinlog`).
    """

    log_class = JoinChunkLog

    def __init__(self) -> None:
        self.sides: dict[str, JoinSide] = {}
        self.key_types: list[pa.DataType] = []
        self.dropped_retractions = 0
        self._marked: dict[str, list[np.ndarray]] = {side: [] for side in SIDES}
        """Per side, the hashes of the rows whose count changed since the last chunked snapshot (kept
        only while chunked)."""

    def __len__(self) -> int:
        """Live stored rows on both sides (the state-size gauge)."""
        return sum(len(side) for side in self.sides.values())

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("left"), dict):  # pickled by the former per-row JoinState
            state = {
                "sides": {}, "key_types": [], "dropped_retractions": state.get("dropped_retractions", 0),
                "legacy": {"left": state["left"], "right": state["right"]},
            }  # fmt: skip
        state.setdefault("_marked", {side: [] for side in SIDES})
        self.__dict__.update(state)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_marked": {side: [] for side in SIDES}}

    def keep_chunks(self, root: Path, inline_bytes: int = 0) -> None:
        """Snapshot in chunks under ``root`` (see :class:`ChunkedSnapshot`), and keep large chunks of
        rows on disk there, memory-mapped (see :data:`~flowlake.flow._joinside.SPILL_ROWS`)."""
        super().keep_chunks(root, inline_bytes)
        for side in self.sides.values():
            side.spill = self._spill

    @property
    def _spill(self) -> Path | None:
        """The folder the sides spill to: ``spill`` in the state folder (None without one)."""
        return None if self._chunk_root is None else self._chunk_root / SPILL_FOLDER

    def side(self, name: Literal["left", "right"]) -> JoinSide | None:
        """The state of one input (None before its first change)."""
        return self.sides.get(name)

    def apply(
        self,
        side: Literal["left", "right"],
        data: pa.Table,
        *,
        on: Sequence[str],
        how: JoinHow,
        left_schema: pa.Schema,
        right_schema: pa.Schema,
        condition: PairCondition | None = None,
    ) -> pa.Table:
        """Fold one side's changes; returns the join's changes (``_kind`` kept from the cause).

        ``condition``, if given, must be the same for every batch of the state (it is not stored).
        """
        out_schema = join_schema(left_schema, right_schema, on)
        left, right = self._sides(body_schema(left_schema), body_schema(right_schema), on)
        mine, other = (left, right) if side == "left" else (right, left)
        body = _conform(data, mine.schema)
        kinds = kinds_of(data)
        keys = key_columns(body, on, self.key_types)
        keyed = no_nulls(keys)
        if side == "right" and not keyed.all():  # a right row with a NULL key never matches: ignored
            body, keys, kinds = body.filter(keyed), keys.filter(keyed), kinds[keyed]
            keyed = keyed[keyed]
        if not body.num_rows:
            return _joined(
                out_schema, [], _taker(left.schema.empty_table()), _taker(right.schema.empty_table())
            )
        key_hash = table_hash(keys.columns, body.num_rows)
        net = self._net(mine, body, kinds)
        changed = np.flatnonzero(net.delta)
        rows = net.rows[changed]
        change = _Changed(
            rows, np.abs(net.delta[changed]), net.kinds[changed], net.causes[changed],
            keys if _is_range(rows, keys.num_rows) else keys.take(pa.array(rows)), key_hash[rows],
            keyed[rows],
        )  # fmt: skip
        per_key = side == "right" and how == "left" and condition is None
        before = self._key_totals(mine, change.keys, change.hashes) if per_key else None
        row_hash = net.row_hash
        if row_hash is None and self._log is not None:  # chunk records name rows by their hash
            row_hash = table_hash(body.columns, body.num_rows)
        self._store(mine, body, net, key_hash, keyed, row_hash)
        if self._log is not None and len(rows):  # the rows whose count changed, by row hash
            assert row_hash is not None
            self._marked[side].append(row_hash[rows])
        pairs = _Pairs(condition, left.schema.names)
        if side == "left":
            out = self._from_left(out_schema, body, change, other, how, pairs)
        else:
            out = self._from_right(out_schema, body, change, other, before, pairs, how)
        mine.compact()
        return out

    def _sides(self, left: pa.Schema, right: pa.Schema, on: Sequence[str]) -> tuple[JoinSide, JoinSide]:
        types = key_types(left, right, on)
        sides = []
        for name, schema in (("left", left), ("right", right)):
            state = self.sides.get(name)
            if state is None:
                state = self.sides[name] = JoinSide(schema, on)
                state.spill = self._spill
            elif state.schema != schema or types != self.key_types:
                state.rehash(schema, types)
                self._log = None  # every row hash changed: the next snapshot starts a new log
            sides.append(state)
        self.key_types = types
        if "legacy" in self.__dict__:
            self._adopt_legacy(*sides)
        return sides[0], sides[1]

    def _adopt_legacy(self, left: JoinSide, right: JoinSide) -> None:
        """Fold in the rows of a state pickled by the per-row JoinState (nothing is emitted)."""
        legacy: dict[str, dict[Any, dict[tuple[Any, ...], int]]] = self.__dict__.pop("legacy")
        for name, state in (("left", left), ("right", right)):
            buckets = legacy[name].values()
            rows = [row for bucket in buckets for row in bucket]
            counts = np.array([n for bucket in buckets for n in bucket.values()], np.int64)
            table = _rows_table(rows, state.schema, state.on)
            keys = key_columns(table, state.on, self.key_types)
            state.add(table, counts, table_hash(keys.columns, table.num_rows), no_nulls(keys))

    # -- snapshots (see ChunkedSnapshot) --------------------------------------------------------------

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        if "legacy" in self.__dict__:  # rows not folded in yet: only a whole pickle holds them
            return PickledSnapshot.__deepcopy__(self, memo)
        return super().__deepcopy__(memo)

    def _mark_all_changed(self) -> None:
        self._marked = {side: [] for side in SIDES}
        for name, side in self.sides.items():
            self._marked[name].append(side.row_hashes()[side.count > 0])

    def _changed_records(self) -> Records:
        """Per side, the live rows of the row hashes changed since the last snapshot."""
        records = {side: side_records(self.sides.get(side), self._marked[side]) for side in SIDES}
        self._marked = {side: [] for side in SIDES}
        return records

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        first = next(iter(self.sides.values()), None)
        scalars = {
            "on": () if first is None else first.on, "key_types": list(self.key_types),
            "dropped_retractions": self.dropped_retractions,
            "schemas": {name: side.schema for name, side in self.sides.items()},
        }  # fmt: skip
        return ChunkedState(restore_join, manifest, scalars)

    def _net(self, mine: JoinSide, body: pa.Table, kinds: np.ndarray) -> _Net:
        """Net the batch per identical row, each row's changes applied in order from its stored count.

        A batch without retractions needs no netting: each change adds a row (stored as it comes,
        identical rows included, without looking for them in the state).
        """
        n = body.num_rows
        w = weights(kinds)
        index = np.arange(n, dtype=np.int64)
        if (w > 0).all():
            none = np.zeros(0, np.int64)
            return _Net(index, np.zeros(n, np.int64), np.ones(n, np.int64), kinds, index, none, none)
        row_hash = table_hash(body.columns, n)
        order, starts = _group_rows(body, row_hash)
        firsts = np.flatnonzero(starts)
        sizes = np.diff(np.append(firsts, n))
        rows = order[firsts]  # each distinct row's first change
        query, ids = mine.find_rows(body.take(pa.array(rows)), row_hash[rows])
        start = np.bincount(query, weights=mine.count[ids], minlength=len(rows)).astype(np.int64)
        w = w[order]
        total = np.add.reduceat(w, firsts)
        running = np.cumsum(w)
        running -= np.repeat(running[firsts] - w[firsts], sizes)  # per row: the sum of its changes so far
        lowest = np.minimum.reduceat(running, firsts)
        drops = np.maximum(0, -(start + lowest))  # retractions that found no live row
        self.dropped_retractions += int(drops.sum())
        delta = total + drops
        last_add = np.maximum.reduceat(np.where(w > 0, index, -1), firsts)
        first_retraction = np.minimum.reduceat(np.where(w > 0, n, index), firsts)
        cause = order[np.clip(np.where(delta > 0, last_add, first_retraction), 0, n - 1)]
        return _Net(rows, start, delta, kinds[cause], cause, query, ids, row_hash)

    @staticmethod
    def _store(
        mine: JoinSide,
        body: pa.Table,
        net: _Net,
        key_hash: np.ndarray,
        keyed: np.ndarray,
        row_hash: np.ndarray | None = None,
    ) -> None:
        """Apply the net changes to the side's counts: retractions off a row's copies, additions onto
        its first copy, or a new stored row (with its hash from ``row_hash``, the batch's rows' hashes,
        if known)."""
        copies = np.zeros(len(net.rows), dtype=bool)
        copies[net.query] = True
        first = np.full(len(net.rows), -1, np.int64)
        leads = np.ones(len(net.query), dtype=bool)
        leads[1:] = net.query[1:] != net.query[:-1]
        first[net.query[leads]] = net.ids[leads]  # the lowest row id of each row's copies
        grow = copies & (net.delta > 0)
        mine.grow(first[grow], net.delta[grow])
        shrinks = net.delta[net.query] < 0
        mine.retract(net.query[shrinks], net.ids[shrinks], -net.delta)
        new = ~copies & (net.delta > 0)
        rows = net.rows[new]
        hashes = None if row_hash is None else row_hash[rows]
        mine.add(body.take(pa.array(rows)), net.delta[new], key_hash[rows], keyed[rows], row_hash=hashes)

    def _partners(self, left: JoinSide, lefts: np.ndarray, pairs: _Pairs) -> np.ndarray:
        """Per stored left row of ``lefts``: how many live right rows (with multiplicity) match it
        (equal keys and the condition)."""
        right = self.sides["right"]
        keys = key_columns(left.take(lefts, left.on), left.on, self.key_types)
        query, ids = right.find_keys(keys, left.key_hash[lefts], self.key_types)
        passed = pairs.passing(left.take, lefts[query], right.take, ids)
        query, ids = query[passed], ids[passed]
        return np.bincount(query, weights=right.count[ids], minlength=len(lefts)).astype(np.int64)

    def _key_totals(self, state: JoinSide, keys: pa.Table, hashes: np.ndarray) -> np.ndarray:
        """Per key of ``keys``: how many live rows (with multiplicity) ``state`` holds with it."""
        query, ids = state.find_keys(keys, hashes, self.key_types)
        return np.bincount(query, weights=state.count[ids], minlength=keys.num_rows).astype(np.int64)

    def _from_left(
        self,
        out_schema: pa.Schema,
        body: pa.Table,
        change: _Changed,
        right: JoinSide,
        how: JoinHow,
        pairs: _Pairs,
    ) -> pa.Table:
        """Left rows that changed, joined with the live right rows of their key that pass the
        condition (or null-padded)."""
        rows, times, kinds, causes = change.rows, change.times, change.kinds, change.causes
        matchable = np.flatnonzero(change.keyed)
        keys = change.keys if len(matchable) == len(rows) else change.keys.take(pa.array(matchable))
        query, ids = right.find_keys(keys, change.hashes[matchable], self.key_types)
        query = matchable[query]
        passed = pairs.passing(_taker(body), rows[query], right.take, ids)
        query, ids = query[passed], ids[passed]
        parts = [(rows[query], ids, times[query] * right.count[ids], kinds[query], causes[query])]
        if how == "left":
            alone = np.ones(len(rows), dtype=bool)
            alone[query] = False
            parts.append(
                (rows[alone], np.full(int(alone.sum()), -1), times[alone], kinds[alone], causes[alone])
            )
        return _joined(out_schema, parts, _taker(body), right.take)

    def _from_right(
        self,
        out_schema: pa.Schema,
        body: pa.Table,
        change: _Changed,
        left: JoinSide,
        before: np.ndarray | None,
        pairs: _Pairs,
        how: JoinHow,
    ) -> pa.Table:
        """Left rows of the changed right rows' keys, joined with them where the condition holds; for
        a left join, their null padding retracted or restored where their matching right rows went
        from none to some or back (per key, or per left row under a condition)."""
        rows, times, kinds, causes = change.rows, change.times, change.kinds, change.causes
        query, ids = left.find_keys(change.keys, change.hashes, self.key_types)
        passed = pairs.passing(left.take, ids, _taker(body), rows[query])
        query, ids = query[passed], ids[passed]
        parts = [(ids, rows[query], times[query] * left.count[ids], kinds[query], causes[query])]
        lefts = was = now = np.zeros(0, np.int64)
        if before is not None and len(ids):
            after = self._key_totals(self.sides["right"], change.keys, change.hashes)
            lefts, first = np.unique(ids, return_index=True)
            was, now = before[query[first]], after[query[first]]
        elif how == "left" and len(ids):
            lefts, inverse = np.unique(ids, return_inverse=True)
            sign = np.where(np.isin(kinds[query], _ADDS), 1, -1)
            delta = np.bincount(inverse, weights=sign * times[query], minlength=len(lefts)).astype(np.int64)
            now = self._partners(left, lefts, pairs)
            was = now - delta
        if len(lefts):
            none = np.full(len(lefts), -1)
            for mask, kind, at in (((was == 0) & (now > 0), RowKind.DELETE, -1),
                                   ((was > 0) & (now == 0), RowKind.INSERT, body.num_rows)):  # fmt: skip
                k = int(mask.sum())
                parts.append((lefts[mask], none[mask], left.count[lefts[mask]], np.full(k, kind, np.int8),
                              np.full(k, at, np.int64)))  # fmt: skip
        return _joined(out_schema, parts, left.take, _taker(body), by_left=True)


class _Pairs:
    """Evaluates a :class:`PairCondition` (or none: every pair passes) on (left, right) row pairs."""

    def __init__(self, condition: PairCondition | None, left_names: Sequence[str]) -> None:
        self.condition = condition
        if condition is not None:
            names = set(left_names)
            self.left = [c for c in condition.columns if c in names] or [left_names[0]]
            self.right = [c for c in condition.columns if c not in names]

    def passing(self, lefts: Taker, left_ids: np.ndarray, rights: Taker, right_ids: np.ndarray) -> np.ndarray:
        """Whether each pair ``(left_ids[i], right_ids[i])`` passes the condition."""
        if self.condition is None or not len(left_ids):
            return np.ones(len(left_ids), dtype=bool)
        left_part = lefts(np.asarray(left_ids, np.int64), self.left)
        right_part = rights(np.asarray(right_ids, np.int64), self.right)
        table = pa.Table.from_arrays(
            [*left_part.columns, *right_part.columns], names=[*self.left, *self.right]
        )
        mask = np.asarray(self.condition.test(table), dtype=bool)
        if mask.shape != (len(left_ids),):
            raise InvalidArgumentError(
                f"join: the pair condition returned {mask.shape} values for {len(left_ids)} pairs"
            )
        return mask


@dataclass(frozen=True, slots=True)
class _Changed:
    """The rows whose count a batch changed: batch index, how many times, kind and cause of the change,
    and their join keys (in the common key types), key hashes and whether the key has no NULL."""

    rows: np.ndarray
    times: np.ndarray
    kinds: np.ndarray
    causes: np.ndarray
    keys: pa.Table
    hashes: np.ndarray
    keyed: np.ndarray


@dataclass(frozen=True, slots=True)
class _Net:
    """A batch netted per distinct row: for each, its first change's index in the batch (``rows``), its
    count in the side's state before the batch (``start``), the net change of that count (``delta``),
    and the kind and batch index of the change that caused the net change; and the (row, row id)
    pairs of its stored copies (``query``, ``ids``)."""

    rows: np.ndarray
    start: np.ndarray
    delta: np.ndarray
    kinds: np.ndarray
    causes: np.ndarray
    query: np.ndarray
    ids: np.ndarray
    row_hash: np.ndarray | None = None
    """Every batch row's hash, where netting computed them."""


_Part = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Joined changes: left row index, right row index (-1: NULL padding), times, kind, cause (order)."""


Taker = Callable[[np.ndarray, Sequence[str] | None], pa.Table]
"""Rows by index (of some columns, default all): a batch's or a join side's (``JoinSide.take``)."""


def _taker(table: pa.Table) -> Taker:
    def take(ids: np.ndarray, columns: Sequence[str] | None = None) -> pa.Table:
        chosen = table if columns is None else table.select(list(columns))
        return chosen.take(pa.array(ids, pa.int64()))

    return take


def _joined(
    out_schema: pa.Schema, parts: list[_Part], lefts: Taker, rights: Taker, *, by_left: bool = False
) -> pa.Table:
    """The joined changes of ``parts``, each repeated its number of times, in the order of their causes
    (``by_left``: by left row, then cause).

    Ordering by left row lets the left rows (a join side's stored rows) be taken in storage order,
    several times faster than in the causes' order for a large side. Changes of one output row, and
    a left row's null padding before or after its joined rows, keep their order either way.
    """
    if parts:
        left_idx, right_idx, times, kinds, causes = (np.concatenate(p) for p in zip(*parts, strict=True))
    else:
        left_idx = right_idx = times = causes = np.zeros(0, np.int64)
        kinds = np.zeros(0, np.int8)
    times = np.asarray(times, np.int64)
    order = np.lexsort((causes, left_idx)) if by_left else np.argsort(causes, kind="stable")
    order = np.repeat(order, times[order])
    left_part = lefts(np.asarray(left_idx, np.int64)[order], None)
    right_at = np.asarray(right_idx, np.int64)[order]
    padded = right_at < 0
    extra = [f.name for f in out_schema][left_part.num_columns :]
    right_part = rights(right_at[~padded], extra)
    if padded.any():  # NULL padding: a take with NULL indices
        spread = np.cumsum(~padded) - 1
        right_part = right_part.take(pa.array(spread, pa.int64(), mask=padded))
    columns = [*left_part.columns, *right_part.columns]
    arrays = [c if c.type == f.type else c.cast(f.type) for c, f in zip(columns, out_schema, strict=True)]
    arrays.append(pa.chunked_array([np.asarray(kinds, np.int8)[order]], pa.int8()))
    return pa.Table.from_arrays(arrays, schema=out_schema.append(pa.field(KIND_COLUMN, pa.int8())))


def _is_range(rows: np.ndarray, n: int) -> bool:
    """Whether ``rows`` is ``0, 1, ..., n - 1``."""
    return len(rows) == n and bool((rows == np.arange(n)).all())


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """``data``'s columns of ``schema``, in its order and types (``_kind``/``_seq`` left out)."""
    columns = [data.column(f.name) for f in schema]
    columns = [c if c.type == f.type else c.cast(f.type) for c, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(columns, schema=schema)


def _group_rows(body: pa.Table, row_hash: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An order of the batch's changes in which identical rows are adjacent (each row's changes in
    batch order), and where each distinct row starts in it."""
    n = body.num_rows
    order = np.lexsort((np.arange(n), row_hash))
    hashes = row_hash[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = hashes[1:] != hashes[:-1]
    repeats = np.flatnonzero(~starts)
    if len(repeats):
        same = rows_equal(body.take(pa.array(order[repeats])), body.take(pa.array(order[repeats - 1])))
        if not same.all():  # two different rows with one hash in the batch: group by value instead
            ids: dict[str, int] = {}
            group = np.array([ids.setdefault(repr(tuple(r.values())), len(ids)) for r in body.to_pylist()])
            order = np.lexsort((np.arange(n), group))
            starts[0], starts[1:] = True, group[order][1:] != group[order][:-1]
    return order, starts


def _rows_table(rows: list[tuple[Any, ...]], schema: pa.Schema, keys: Sequence[str] = ()) -> pa.Table:
    """Rows held as tuples in state form (``keys`` columns as plain Python values) as an Arrow table."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = []
    for values, f in zip(columns, schema, strict=True):
        if f.name in keys:
            arrays.append(pa.array(list(values), f.type))
            continue
        try:
            arrays.append(from_state(list(values), f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # pickled before state form: Python values
            arrays.append(pa.array(list(values), f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def restore_join(manifest: Manifest, scalars: dict[str, Any]) -> JoinState:
    """The join state a chunked snapshot describes, its chunk log continuing from that snapshot."""
    state = JoinState()
    state.key_types = list(scalars["key_types"])
    state.dropped_retractions = scalars["dropped_retractions"]
    log = JoinChunkLog(manifest)
    chunks = [log.read(name) for name, _ in log.chunks]
    spill = Path(manifest.folder).parent / SPILL_FOLDER  # the step's folder, as keep_chunks names it
    state.sides = restore_sides(chunks, scalars["schemas"], scalars["on"], state.key_types, spill=spill)
    state._log = log
    return state


DEDUP_MB_ENV = "FLOWLAKE_DEDUP_STATE_MB"
"""Environment variable: the memory (MiB) one key partition of a dedup keeps rows in."""

DEFAULT_DEDUP_MB = 128.0
"""Past this (estimated from sampled rows) a dedup key partition with a state folder keeps its least
recently changed keys on disk only, after a snapshot wrote them there."""

_DEDUP_LOG_FORM = 2
"""How dedup chunks are written: 2 = :data:`_ROW_COLUMNS` tables; manifests without it hold Python records."""

_ROW_COLUMNS = pa.schema([
    (HASH, pa.uint64()), (IDENT, pa.binary()), (LIVE, pa.bool_()), ("key", pa.binary()), ("row", pa.binary()),
])  # fmt: skip
"""A dedup chunk (see :mod:`~flowlake.flow._grouplog`): each key (pickled) with its row (pickled; NULL for
a tombstone)."""


class DedupState(ShedsToChunks):
    """Latest (or first) row per key: turns repeated rows into an exact upsert changelog.

    With a state folder (:meth:`keep_chunks`) a large state snapshots only the keys whose row changed
    since the last snapshot (a key that was deleted is a tombstone), into chunks readable by key (see
    :class:`~flowlake.flow._grouplog.GroupChunkLog`); with a memory bound (:meth:`keep_in_memory`),
    right after a snapshot it drops its least recently changed keys from memory, and reads a key's row
    back from the chunks when a change touches it, as the aggregate does (see
    :class:`~flowlake.flow._grouplog.ShedsToChunks`).
    """

    def __init__(self, keep: Literal["first", "last"] = "last") -> None:
        self.keep = keep
        self.rows: dict[Any, tuple[Any, ...]] = {}
        """Key → row, least recently changed first (a changed key moves to the end)."""
        self._changed: set[Any] = set()
        """Keys whose row changed since the last chunked snapshot (kept only while chunked)."""
        self._cold = False
        """Whether keys may be on disk only (shed, or not read back on resume)."""

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_changed": set()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_changed", set())
        self.__dict__.update(state)

    def apply(self, data: pa.Table, keys: Sequence[str]) -> pa.Table:
        """Fold changes; duplicates that change nothing are dropped, updates become ``-U``/``+U``."""
        schema = body_schema(data.schema)
        rows = _tuples(data, schema.names, keys)
        key_idx = [schema.names.index(c) for c in keys]
        row_keys = [tuple(row[i] for i in key_idx) for row in rows]
        if self._cold:
            self._warm(row_keys)
        out_kinds: list[int] = []
        out_from: list[int] = []  # per output row: the input row it is (>= 0), or ~ its old row's place
        olds: list[tuple[Any, ...]] = []  # rows the state held that go out as retractions
        changed = self._changed if self._log is not None else None
        held = self.rows
        for i, (kind, row, key) in enumerate(zip(kinds_of(data).tolist(), rows, row_keys, strict=True)):
            old = held.get(key)
            if kind in _ADDS:
                if old is None:
                    held[key] = row
                    out_kinds.append(RowKind.INSERT)
                    out_from.append(i)
                elif self.keep == "last" and old != row:
                    del held[key]  # (to the end: the most recently changed)
                    held[key] = row
                    out_kinds += [RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER]
                    out_from += [~len(olds), i]
                    olds.append(old)
                else:
                    continue
            elif kind == RowKind.DELETE and old is not None:
                del held[key]
                out_kinds.append(RowKind.DELETE)
                out_from.append(~len(olds))
                olds.append(old)
            else:
                continue
            if changed is not None:
                changed.add(key)
        # the new rows are the input's (taken in Arrow); only the retracted ones are built from tuples
        where = np.asarray(out_from, np.int64)
        fresh = where >= 0
        body = data.select(schema.names).take(pa.array(where[fresh]))
        both = pa.concat_tables([body, _rows_table(olds, schema, keys)]) if olds else body
        place = np.empty(len(where), np.int64)
        place[fresh] = np.arange(int(fresh.sum()))
        place[~fresh] = int(fresh.sum()) + ~where[~fresh]
        out = both.take(pa.array(place)) if len(where) else body
        return out.append_column(KIND_COLUMN, pa.array(out_kinds, pa.int8()))

    def _warm(self, keys: list[tuple[Any, ...]]) -> None:
        """Read back the rows of those of ``keys`` that are on disk only (not held, not changed since
        the last snapshot: a deleted key's tombstone is not written yet)."""
        assert isinstance(self._log, GroupChunkLog)
        wanted = [k for k in dict.fromkeys(keys) if k not in self.rows and k not in self._changed]
        if not wanted:
            return
        idents, hashes = key_identities(wanted)
        found, records = self._log.find(idents.to_pylist(), hashes)
        if records is None:
            return
        for i, blob in zip(found.tolist(), records.column("row").to_pylist(), strict=True):
            self.rows[wanted[i]] = pickle.loads(blob)  # noqa: S301 - a chunk this flow wrote

    def load_cold(self) -> None:
        """Read every key held on disk only back into memory (tools and tests: a flow reads a key back
        when a change touches it)."""
        if not self._cold or not isinstance(self._log, GroupChunkLog):
            return
        self._cold = False
        table = self._log.load()[TABLE]
        if table is None:
            return
        for key_blob, row_blob in zip(
            table.column("key").to_pylist(), table.column("row").to_pylist(), strict=True
        ):
            key = pickle.loads(key_blob)  # noqa: S301 - a chunk this flow wrote
            if key not in self.rows and key not in self._changed:
                self.rows[key] = pickle.loads(row_blob)  # noqa: S301 - a chunk this flow wrote

    def bytes_per_key(self) -> int:
        """The estimated memory of one key's entry: its key and row tuples (sampled) and the dict's slot."""
        sample = list(itertools.islice(self.rows.items(), 32))
        if not sample:
            return 200
        sizes = [sys.getsizeof(k) + sys.getsizeof(r) + sum(map(sys.getsizeof, r)) for k, r in sample]
        return 100 + sum(sizes) // len(sizes)

    def _held(self) -> int:
        return len(self.rows)

    def _item_bytes(self) -> int:
        return self.bytes_per_key()

    def _shed(self, drop: int) -> None:
        for key in list(itertools.islice(self.rows, drop)):  # the least recently changed
            del self.rows[key]

    # -- snapshots (see ChunkedSnapshot) --------------------------------------------------------------

    def _mark_all_changed(self) -> None:
        self._changed = set(self.rows)

    def _changed_records(self) -> Records:
        """The keys changed since the last snapshot with their rows (``live`` False: deleted)."""
        keys = list(self._changed)
        self._changed = set()
        rows = [self.rows.get(k) for k in keys]
        idents, hashes = key_identities(keys)
        table = pa.Table.from_arrays(
            [
                pa.array(hashes, pa.uint64()), idents, pa.array([r is not None for r in rows], pa.bool_()),
                pa.array([pickle.dumps(k, protocol=5) for k in keys], pa.binary()),
                pa.array([None if r is None else pickle.dumps(r, protocol=5) for r in rows], pa.binary()),
            ],
            schema=_ROW_COLUMNS,
        )  # fmt: skip
        return {TABLE: sort_records(table)}

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        scalars = {"keep": self.keep, "log_form": _DEDUP_LOG_FORM, "cold": self._cold}
        return ChunkedState(restore_dedup, manifest, scalars)


def dedup_cache_bytes(max_mb: float | None = None) -> int:
    """The memory bound of one dedup key partition: ``max_mb``, else ``$FLOWLAKE_DEDUP_STATE_MB``, else
    :data:`DEFAULT_DEDUP_MB`; 0 or less: none (0)."""
    return memory_bound(max_mb, DEDUP_MB_ENV, DEFAULT_DEDUP_MB)


def restore_dedup(manifest: Manifest, scalars: dict[str, Any]) -> DedupState:
    """The dedup state a chunked snapshot describes, its chunk log continuing from that snapshot: every
    row in memory, or (a state that had shed keys, or a large one) none until changes touch them."""
    state = DedupState(scalars["keep"])
    if scalars.get("log_form") != _DEDUP_LOG_FORM:  # Python records: read whole, then a new log
        records = ChunkLog(manifest).load()
        state.rows = dict(zip(records["keys"], records["row"], strict=True))
        state._log = GroupChunkLog.create(Path(manifest.folder).parent)
        state._mark_all_changed()
        return state
    state._log, state._cold = GroupChunkLog(manifest), True
    if resume_eagerly(manifest, bool(scalars.get("cold"))):
        state.load_cold()
    return state


def filter_changes(data: pa.Table, mask: np.ndarray) -> pa.Table:
    """Keep the changes whose row passes ``mask``, fixing kinds of update pairs.

    An update whose old row passed and new row fails becomes a ``-D``; one whose old row failed and
    new row passes becomes a ``+I``. A ``-U`` is paired with the ``+U`` right after it.
    """
    kinds = kinds_of(data).copy()
    mask = np.asarray(mask, dtype=bool)
    n = len(kinds)
    if n == 0:
        return data
    is_before = kinds == RowKind.UPDATE_BEFORE
    nxt = np.concatenate([kinds[1:], [-1]])
    paired = is_before & (nxt == RowKind.UPDATE_AFTER)
    pair_after = np.concatenate([[False], paired[:-1]])
    next_mask = np.concatenate([mask[1:], [False]])
    prev_mask = np.concatenate([[False], mask[:-1]])
    kinds[paired & mask & ~next_mask] = RowKind.DELETE
    kinds[pair_after & mask & ~prev_mask] = RowKind.INSERT
    out = data.set_column(data.schema.get_field_index(KIND_COLUMN), KIND_COLUMN, pa.array(kinds, pa.int8()))
    return out.filter(pa.array(mask))


def map_changes(data: pa.Table, fn: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Apply a vectorized row function to a changelog's rows, keeping each row's kind (and ``_seq``)."""
    extra = [c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names]
    mapped = fn(data.drop_columns(extra))
    if mapped.num_rows != data.num_rows:
        raise InvalidArgumentError(
            f"map_changes: the function returned {mapped.num_rows} rows for {data.num_rows}; "
            "it must map row to row (use filter_changes to drop rows)"
        )
    for c in extra:
        mapped = mapped.append_column(c, data.column(c))
    return mapped


def lookup(
    data: pa.Table,
    dim: pa.Table,
    on: Sequence[str],
    columns: Iterable[str],
    rename: Mapping[str, str] | None = None,
) -> pa.Table:
    """Enrich each change with ``columns`` of the ``dim`` row that has the same ``on`` values (left join).

    ``rename`` gives dimension columns other names in the output; a renamed ``on`` column is output
    too (NULL where no dimension row matched), as a SQL LEFT JOIN shows the right side's key.
    """
    names = dict(rename or {})
    wanted = [c for c in columns if c not in on or c in names]
    outputs = [names.get(c, c) for c in wanted]
    clash = [c for c in outputs if c in data.column_names]
    if clash:
        raise InvalidArgumentError(f"lookup_join: columns {clash} exist on both sides")
    pos = "__flowlake_pos"
    left = data.append_column(pos, pa.array(np.arange(data.num_rows, dtype=np.int64)))
    right = pa.Table.from_arrays(
        [dim.column(c) for c in on] + [dim.column(c) for c in wanted], names=[*on, *outputs]
    )
    joined = left.join(right, keys=list(on), join_type="left outer", use_threads=False)
    joined = joined.sort_by(pos).drop_columns([pos])
    order = [*[c for c in data.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)], *outputs]
    order += [c for c in (KIND_COLUMN, SEQ_COLUMN) if c in data.column_names]
    return joined.select(order)
