"""Per-(group, value) counts for retractable ``min``/``max``/``count_distinct``/``first``/``last``,
held in numpy columns instead of a Python dict per group.

A retraction of a group's current maximum must find the next one, so these aggregates keep a count
per value of each group. :class:`ValueCounts` keeps every (group id, value key) pair in a *slot*
(three int64 columns: group, value key, count) and finds a pair's slot through a sorted index of
pair hashes whose high 32 bits are the group id and low 32 bits a mix of the value key: one
``searchsorted`` per batch finds the batch's pairs, and the pairs of a group are one contiguous range
of the index, so the next maximum of the groups whose maximum was retracted is found for all of them
at once. Per group it keeps the number of distinct live values and the current extreme.

Value keys are int64. Columns whose state form is an integer (integers, decimals of precision <= 18,
dates, times, timestamps: see :mod:`flowlake.flow._stateform`) use it directly, so keys order like
the values and extremes are numpy reductions. Other values (strings, floats, ``first``/``last``'s
``(order, value)`` tuples) get a code from a :class:`ValueDict` (value → code, a code per distinct
live value, freed when no group holds it) and are compared in Python, only for the groups whose
extreme may have changed.

Hits are checked against the slot's group and value, so a hash shared by two pairs (a 32-bit mix
collision within one group) is exact too: the second pair goes to a small overflow dict. A pair whose
count reaches zero stays indexed (a tombstone, revived if the value comes back) until tombstones
outnumber half the live pairs; then the index is rebuilt without them and their slots reused.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError
from flowlake.flow._keyindex import KeyIndex, merge_sorted, range_rows

MAX_GROUPS = 1 << 31
"""Group ids must stay below this: they are the high half of a pair hash."""

_LOW = np.int64(0xFFFFFFFF)
_NONE = np.iinfo(np.int64).min
_TOP = np.iinfo(np.int64).max


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_HALF = np.uint64(32)


def _mix32(values: np.ndarray) -> np.ndarray:
    """A 32-bit mix of int64 values (Fibonacci hashing: the high half of the product with 2**64 over
    the golden ratio), as int64 in ``[0, 2**32)``; two passes. Only the index's order depends on it
    (hits are checked against the slots, and the index is rebuilt on unpickling).

    >>> m = _mix32(np.array([0, 1, 2, -1]))
    >>> bool(((m >= 0) & (m < 2**32)).all()), len(set(m.tolist()))
    (True, 4)
    """
    x = values.astype(np.uint64, copy=False) if values.dtype != np.int64 else values.view(np.uint64)
    with np.errstate(over="ignore"):
        mixed: np.ndarray = ((x * _GOLDEN) >> _HALF).view(np.int64)
    return mixed


def pair_hashes(gids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The sort key of (group, value key) pairs: group id in the high half, a value mix in the low.

    >>> h = pair_hashes(np.array([0, 1, 1]), np.array([5, 5, 6]))
    >>> (h >> 32).tolist(), bool(h[1] != h[2])
    ([0, 1, 1], True)
    """
    hashes: np.ndarray = (gids.astype(np.int64) << np.int64(32)) | _mix32(keys)
    return hashes


def dense_codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """A code in ``0..k-1`` per row, equal codes for equal values (NULL is a value), and ``k``.

    >>> codes, k = dense_codes(pa.array(["b", None, "b", "a"]))
    >>> codes.tolist(), k
    ([0, 2, 0, 1], 3)
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    encoded = pc.dictionary_encode(array)
    k = len(encoded.dictionary)
    indices = encoded.indices
    if indices.null_count:
        indices = pc.fill_null(indices, k)
        k += 1
    return np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64), k


def first_rows(codes: np.ndarray, k: int) -> np.ndarray:
    """The first row of each code ``0..k-1``."""
    first = np.full(k, len(codes), np.int64)
    np.minimum.at(first, codes, np.arange(len(codes), dtype=np.int64))
    return first


_EXACT_FLOAT = 1 << 53
"""Integers below this in magnitude are exact in float64 (and so is a sum that stays below it)."""


def sum_by(index: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """``out[i]`` = the sum of ``values`` where ``index == i``, for ``i < size``, in ``values``' dtype
    (int64 for bools): ``np.add.at``'s result, with ``np.bincount`` (an order of magnitude faster)
    where that is exact: floats (added in the same order) and integers whose sums cannot reach 2**53.

    >>> sum_by(np.array([1, 0, 1]), np.array([5, 7, -2]), 3).tolist()
    [7, 3, 0]
    """
    dtype = np.int64 if values.dtype == bool else values.dtype
    if not len(values):
        return np.zeros(size, dtype)
    if values.dtype.kind == "f":
        out: np.ndarray = np.bincount(index, values, minlength=size).astype(dtype, copy=False)
        return out
    limit = _EXACT_FLOAT // len(values)
    if values.dtype == bool or (-limit < int(values.min()) and int(values.max()) < limit):
        return np.bincount(index, values, minlength=size).astype(dtype)
    out = np.zeros(size, dtype)
    np.add.at(out, index, values)
    return out


def row_codes(table: pa.Table, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``table`` grouped by the values of ``columns``: a code per row (``0..k-1``, equal
    codes for equal keys, NULLs equal), and the first row of each code.

    >>> codes, first = row_codes(pa.table({"a": [1, 2, 1, 1], "b": ["x", "y", "x", None]}), ["a", "b"])
    >>> codes.tolist(), first.tolist()
    ([0, 1, 0, 2], [0, 1, 3])
    """
    combined: np.ndarray | None = None
    size = 1
    for name in columns:
        codes, k = dense_codes(table.column(name))
        if combined is None:
            combined, size = codes, k
            continue
        if size * k >= 1 << 62:  # re-densify before the mixed radix could overflow
            combined, size = dense_codes(pa.array(combined))
        combined, size = combined * k + codes, size * k
    assert combined is not None
    if len(columns) > 1:
        combined, size = dense_codes(pa.array(combined))
    return combined, first_rows(combined, size)


class ValueDict:
    """Codes for values that are not integers in state form: value → code (a :class:`KeyIndex`
    over the code → value list), each code counted by the live pairs that hold it and freed (for
    reuse) when none does.

    >>> values = ValueDict()
    >>> codes = values.encode(["b", "a", "b"])
    >>> codes.tolist(), values.decode(codes)
    ([0, 1, 0], ['b', 'a', 'b'])
    """

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.index = KeyIndex(self.values)
        self.refs = np.zeros(0, np.int64)
        self.free: list[int] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self.values, "refs": self.refs, "free": self.free}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.values, self.refs, self.free = state["values"], state["refs"], state["free"]
        live = np.ones(len(self.values), bool)
        live[np.asarray(self.free, np.int64)] = False
        self.index = KeyIndex.build(self.values, live.nonzero()[0])

    def _create(self, values: list[Any]) -> np.ndarray:
        take = builtins.min(len(values), len(self.free))
        reused = self.free[len(self.free) - take :][::-1]
        del self.free[len(self.free) - take :]
        for code, value in zip(reused, values, strict=False):
            self.values[code] = value
        start = len(self.values)
        self.values.extend(values[take:])
        if len(self.values) > len(self.refs):
            grown = np.zeros(builtins.max(len(self.values), 2 * len(self.refs), 64), np.int64)
            grown[: len(self.refs)] = self.refs
            self.refs = grown
        return np.concatenate(
            [np.asarray(reused, np.int64), np.arange(start, len(self.values), dtype=np.int64)]
        )

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """The code of each value (new values get one)."""
        return self.index.assign(values, self._create)

    def decode(self, codes: np.ndarray) -> list[Any]:
        """The value of each code."""
        values = self.values
        return [values[c] for c in codes.tolist()]

    def release_unused(self, codes: np.ndarray) -> None:
        """Free those of ``codes`` that no live pair holds."""
        unused = np.unique(codes[self.refs[codes] == 0])
        for code in unused.tolist():
            self.index.discard(self.values[code], code)
            self.values[code] = None
            self.free.append(code)


class ValueCounts:
    """Per-(group, value) counts of one aggregate, and per group its distinct values and extreme.

    ``func`` is ``min``, ``max``, ``count_distinct``, ``first`` or ``last``; ``ordered`` says the
    value keys are the values themselves (int64 in value order), else codes of a :class:`ValueDict`.

    >>> counts = ValueCounts("max", ordered=True)
    >>> counts.grow(2)
    >>> counts.apply(np.array([0, 0, 1]), np.array([7, 9, 4]), np.array([1, 1, 1]))
    0
    >>> counts.apply(np.array([0]), np.array([9]), np.array([-1]))  # the max retracted: 7 again
    0
    >>> values, valid = counts.results(np.array([0, 1]))
    >>> values.tolist(), valid.tolist(), counts.dicts(np.array([0, 1]))
    ([7, 4], [True, True], [{7: 1}, {4: 1}])
    """

    RECENT_MAX = 4096
    """The recent level is merged into the main one beyond this size (or an eighth of the main one)."""
    REBUILD_MIN = 4096
    """The index is rebuilt without tombstones once they are more than this and half the live pairs."""

    def __init__(self, func: str, *, ordered: bool) -> None:
        self.func = func
        self.ordered = ordered
        self.codes: ValueDict | None = None if ordered else ValueDict()
        self.slot_gid = np.zeros(0, np.int64)
        self.slot_key = np.zeros(0, np.int64)
        self.slot_count = np.zeros(0, np.int64)
        self.slots = 0
        self.free = np.zeros(0, np.int64)
        self.distinct = np.zeros(0, np.int64)
        self.best = np.zeros(0, np.int64)
        self.tombstones = 0
        self._reset_index()

    def _reset_index(self) -> None:
        self.hashes = np.zeros(0, np.int64)
        self.hash_slots = np.zeros(0, np.int64)
        self.recent = np.zeros(0, np.int64)
        """New pairs go to this smaller sorted level (an insert costs its size, not the whole
        index's), merged into the main one when it outgrows an eighth of it."""
        self.recent_slots = np.zeros(0, np.int64)
        self.overflow: dict[tuple[int, int], int] = {}

    # -- pickling: the index is rebuilt, tombstones and free slots dropped ----------------------

    def __getstate__(self) -> dict[str, Any]:
        live = (self.slot_count[: self.slots] > 0).nonzero()[0]
        return {
            "func": self.func, "ordered": self.ordered, "codes": self.codes,
            "gid": self.slot_gid[live], "key": self.slot_key[live], "count": self.slot_count[live],
            "distinct": self.distinct, "best": self.best,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.func, self.ordered, self.codes = state["func"], state["ordered"], state["codes"]
        self.slot_gid, self.slot_key, self.slot_count = state["gid"], state["key"], state["count"]
        self.slots = len(self.slot_gid)
        self.free = np.zeros(0, np.int64)
        self.distinct, self.best = state["distinct"], state["best"]
        self.tombstones = 0
        self._rebuild(np.arange(self.slots, dtype=np.int64))

    # -- layout ---------------------------------------------------------------------------------

    def grow(self, capacity: int) -> None:
        """Room for group ids below ``capacity``."""
        if capacity <= len(self.distinct):
            return
        if capacity > MAX_GROUPS:
            raise InvalidArgumentError(
                f"an aggregate key partition holds at most {MAX_GROUPS} groups with min/max/count_distinct"
                "/first/last; use more partitions (aggregate(..., partitions=N))"
            )
        extra = capacity - len(self.distinct)
        self.distinct = np.concatenate([self.distinct, np.zeros(extra, np.int64)])
        self.best = np.concatenate([self.best, np.zeros(extra, np.int64)])

    def _new_slots(self, n: int) -> np.ndarray:
        take = builtins.min(n, len(self.free))
        reused, self.free = self.free[len(self.free) - take :], self.free[: len(self.free) - take]
        end = self.slots + n - take
        if end > len(self.slot_gid):
            cap = builtins.max(end, 2 * len(self.slot_gid), 64)
            for name in ("slot_gid", "slot_key", "slot_count"):
                grown = np.zeros(cap, np.int64)
                grown[: self.slots] = getattr(self, name)[: self.slots]
                setattr(self, name, grown)
        fresh = np.arange(self.slots, end, dtype=np.int64)
        self.slots = end
        return np.concatenate([reused, fresh])

    # -- the index ------------------------------------------------------------------------------

    def _lookup(
        self, hashes: np.ndarray, gids: np.ndarray, keys: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The slot of each pair (-1: none), and whether its hash is indexed (for another pair).

        A hit is checked against the slot's value key only: a pair hash holds its group id whole."""
        out = np.full(len(hashes), -1, np.int64)
        taken = np.zeros(len(hashes), bool)
        for level, level_slots in ((self.hashes, self.hash_slots), (self.recent, self.recent_slots)):
            if not len(level):
                continue
            pos = np.minimum(level.searchsorted(hashes), len(level) - 1)
            hit = (level[pos] == hashes).nonzero()[0]
            taken[hit] = True
            slots = level_slots[pos[hit]]
            same = self.slot_key[slots] == keys[hit]
            out[hit[same]] = slots[same]
        if self.overflow:
            for i in (out < 0).nonzero()[0].tolist():
                out[i] = self.overflow.get((int(gids[i]), int(keys[i])), -1)
        return out, taken

    def _insert(
        self, hashes: np.ndarray, slots: np.ndarray, taken: np.ndarray, *, ordered: bool = False
    ) -> None:
        """Index new pairs (distinct, none indexed yet; ``ordered``: sorted by hash already); a hash
        already held (``taken``, or by an earlier one of them) goes to the overflow."""
        if not ordered:
            order = hashes.argsort()
            hashes, slots, taken = hashes[order], slots[order], taken[order]
        first = np.ones(len(hashes), bool)
        first[1:] = hashes[1:] != hashes[:-1]
        first &= ~taken
        for slot in slots[~first].tolist():
            self.overflow[(int(self.slot_gid[slot]), int(self.slot_key[slot]))] = slot
        hashes, slots = hashes[first], slots[first]
        if not len(hashes):
            return
        self.recent, self.recent_slots = merge_sorted(self.recent, self.recent_slots, hashes, slots)
        if len(self.recent) > builtins.max(self.RECENT_MAX, len(self.hashes) // 8):
            merged = merge_sorted(self.hashes, self.hash_slots, self.recent, self.recent_slots)
            self.hashes, self.hash_slots = merged
            self.recent, self.recent_slots = self.recent[:0], self.recent_slots[:0]

    def _rebuild(self, slots: np.ndarray) -> None:
        """Index exactly ``slots`` (the live ones); every other slot below :attr:`slots` is free."""
        self._reset_index()
        keep = np.zeros(self.slots, bool)
        keep[slots] = True
        self.free = (~keep).nonzero()[0][::-1].copy()
        self.slot_gid[self.free] = -1
        self.slot_count[self.free] = 0
        hashes = pair_hashes(self.slot_gid[slots], self.slot_key[slots])
        order = hashes.argsort(kind="stable")
        hashes, slots = hashes[order], slots[order]
        first = np.ones(len(hashes), bool)
        first[1:] = hashes[1:] != hashes[:-1]
        for slot in slots[~first].tolist():
            self.overflow[(int(self.slot_gid[slot]), int(self.slot_key[slot]))] = slot
        self.hashes, self.hash_slots = hashes[first], slots[first]
        self.tombstones = 0

    def _group_slots(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every indexed slot of the groups ``gids`` (distinct) with its group's position in ``gids``."""
        parts, owners = [], []
        starts, ends = gids.astype(np.int64) << np.int64(32), (gids.astype(np.int64) + 1) << np.int64(32)
        for level, level_slots in ((self.hashes, self.hash_slots), (self.recent, self.recent_slots)):
            if not len(level):
                continue
            lo, hi = level.searchsorted(starts), level.searchsorted(ends)
            sizes = hi - lo
            if not sizes.any():
                continue
            parts.append(level_slots[range_rows(lo, sizes)])
            owners.append(np.repeat(np.arange(len(gids), dtype=np.int64), sizes))
        if self.overflow:
            where = {g: i for i, g in enumerate(gids.tolist())}
            extra = [(slot, where[g]) for (g, _), slot in self.overflow.items() if g in where]
            if extra:
                parts.append(np.asarray([s for s, _ in extra], np.int64))
                owners.append(np.asarray([o for _, o in extra], np.int64))
        if not parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(parts), np.concatenate(owners)

    def _live_of(self, gids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The live slots (count > 0) of the groups ``gids`` and their owners' positions."""
        slots, owner = self._group_slots(gids)
        live = self.slot_count[slots] > 0
        return slots[live], owner[live]

    # -- one batch ------------------------------------------------------------------------------

    def apply(self, gids: np.ndarray, keys: np.ndarray, weights: np.ndarray) -> int:
        """Add ``weights`` to the (group, value key) pairs of each row; returns how many retractions
        found no value to retract (a count never goes below zero)."""
        if not len(gids):
            return 0
        hashes = pair_hashes(gids, keys)
        order = hashes.argsort()  # by group, then value mix: cache-friendly probes
        sorted_hashes, sorted_keys = hashes[order], keys[order]
        starts = np.ones(len(order), bool)
        starts[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
        by_hash = not (~starts[1:] & (sorted_keys[1:] != sorted_keys[:-1])).any()
        if not by_hash:  # two values share a hash: by group and value instead
            order = np.lexsort((keys, gids))
            sorted_gids, sorted_keys = gids[order], keys[order]
            starts[1:] = (sorted_gids[1:] != sorted_gids[:-1]) | (sorted_keys[1:] != sorted_keys[:-1])
        at = starts.nonzero()[0]
        delta = np.add.reduceat(weights[order].astype(np.int64, copy=False), at)
        moved = delta.nonzero()[0]
        if not len(moved):
            self.release_codes(keys)
            return 0
        first, delta = order[at[moved]], delta[moved]
        pg, pk = gids[first].astype(np.int64, copy=False), keys[first].astype(np.int64, copy=False)
        ph = hashes[first]  # (in hash order where ``by_hash``)
        slots, taken = self._lookup(ph, pg, pk)
        dropped = created = 0
        missing = slots < 0
        if missing.any():
            unseen = missing & (delta < 0)
            dropped += int(-delta[unseen].sum())
            new = (missing & (delta > 0)).nonzero()[0]
            created = len(new)
            fresh = self._new_slots(created)
            self.slot_gid[fresh], self.slot_key[fresh], self.slot_count[fresh] = pg[new], pk[new], 0
            self._insert(ph[new], fresh, taken[new], ordered=by_hash)
            slots[new] = fresh
            keep = ~unseen
            slots, pg, pk, delta = slots[keep], pg[keep], pk[keep], delta[keep]
        old = self.slot_count[slots]
        count = old + delta
        under = count < 0
        if under.any():
            dropped += int(-count[under].sum())
            count[under] = 0
        self.slot_count[slots] = count
        born, died = (old == 0) & (count > 0), (old > 0) & (count == 0)
        self._update_groups(pg, pk, born, died)
        self.tombstones += int(died.sum()) - (int(born.sum()) - created)
        if self.codes is not None:
            np.add.at(self.codes.refs, pk, born.astype(np.int64) - died.astype(np.int64))
        self.release_codes(keys)
        if self.tombstones > builtins.max(self.REBUILD_MIN, (self.slots - len(self.free)) // 2):
            self._rebuild((self.slot_count[: self.slots] > 0).nonzero()[0])
        return dropped

    def release_codes(self, keys: np.ndarray) -> None:
        """Free the value codes among ``keys`` no live pair holds (after :meth:`apply`)."""
        if self.codes is not None and len(keys):
            self.codes.release_unused(keys)

    def _update_groups(self, pg: np.ndarray, pk: np.ndarray, born: np.ndarray, died: np.ndarray) -> None:
        """The distinct counts and extremes of the groups ``pg`` (sorted) after their pairs moved."""
        starts = np.ones(len(pg), bool)
        starts[1:] = pg[1:] != pg[:-1]
        owner = starts.cumsum() - 1
        groups = pg[starts]
        had = self.distinct[groups] > 0
        self.distinct[groups] += sum_by(owner, born.astype(np.int64) - died.astype(np.int64), len(groups))
        if self.func == "count_distinct":
            return
        lost = np.zeros(len(groups), bool)
        lost[owner[died & (pk == self.best[pg])]] = True
        lost &= had
        again = groups[lost]
        gained = born & ~lost[owner]
        if self.ordered:
            pick = np.maximum if self.func == "max" else np.minimum
            worst = _NONE if self.func == "max" else _TOP
            cand = np.where(had & ~lost, self.best[groups], worst)
            cand = pick(cand, pick.reduceat(np.where(gained, pk, worst), starts.nonzero()[0]))
            update = had & ~lost
            update[owner[gained]] = True
            self.best[groups[update]] = cand[update]
            if len(again):
                slots, at = self._live_of(again)
                best = np.full(len(again), worst, np.int64)
                pick.at(best, at, self.slot_key[slots])
                self.best[again] = best
            return
        self._update_coded(groups, owner, pk, had, lost, gained)

    def _update_coded(
        self,
        groups: np.ndarray,
        owner: np.ndarray,
        pk: np.ndarray,
        had: np.ndarray,
        lost: np.ndarray,
        gained: np.ndarray,
    ) -> None:
        """The extremes of coded values: compared in Python, for the groups whose extreme moved."""
        assert self.codes is not None
        values = self.codes.values
        better: Callable[[Any, Any], bool] = (
            (lambda a, b: a > b) if self.func in ("max", "last") else (lambda a, b: a < b)
        )
        best = self.best
        kept = had & ~lost
        current: dict[int, int] = {}
        for i, code in zip(owner[gained].tolist(), pk[gained].tolist(), strict=True):
            held = current.get(i)
            if held is None and kept[i]:
                held = int(best[groups[i]])
            if held is None or better(values[code], values[held]):
                current[i] = code
        again = lost.nonzero()[0]
        if len(again):
            slots, at = self._live_of(groups[again])
            for i, code in zip(again[at].tolist(), self.slot_key[slots].tolist(), strict=True):
                held = current.get(i)
                if held is None or better(values[code], values[held]):
                    current[i] = code
        if current:
            at_groups = groups[np.fromiter(current.keys(), np.int64, len(current))]
            best[at_groups] = np.fromiter(current.values(), np.int64, len(current))

    def clear(self, gids: np.ndarray) -> None:
        """Forget every value of the groups ``gids`` (released groups)."""
        if not len(gids):
            return
        slots, _ = self._live_of(np.unique(gids))
        if self.codes is not None and len(slots):
            keys = self.slot_key[slots]
            np.add.at(self.codes.refs, keys, -1)
            self.codes.release_unused(keys)
        self.slot_count[slots] = 0
        self.tombstones += len(slots)
        self.distinct[gids] = 0
        self.best[gids] = 0

    # -- reading --------------------------------------------------------------------------------

    def results(self, gids: np.ndarray) -> tuple[Any, np.ndarray]:
        """The aggregate of each group: ``(values, valid)``; values are int64 value keys (ordered),
        Python values in state form (coded), or the distinct counts (``count_distinct``)."""
        count = self.distinct[gids]
        if self.func == "count_distinct":
            return count, np.ones(len(gids), bool)
        valid = count > 0
        best = self.best[gids]
        if self.ordered:
            return np.where(valid, best, 0), valid
        assert self.codes is not None
        held = self.codes.values
        out = [held[b] if ok else None for b, ok in zip(best.tolist(), valid.tolist(), strict=True)]
        if self.func in ("first", "last"):
            out = [None if v is None else v[1] for v in out]
        return out, valid

    def pairs(self, gids: np.ndarray) -> tuple[np.ndarray, Any, np.ndarray]:
        """The live (group, value) pairs of the groups ``gids`` (distinct), grouped by group in the
        order of ``gids``: each pair's group as a position in ``gids``, its value (the int64 value keys
        if ordered, else a list of state-form values) and its count.

        >>> counts = ValueCounts("max", ordered=True)
        >>> counts.grow(2)
        >>> counts.apply(np.array([1, 0, 1]), np.array([7, 9, 4]), np.array([1, 1, 2]))
        0
        >>> [part.tolist() for part in counts.pairs(np.array([1, 0]))]
        [[0, 0, 1], [7, 4, 9], [1, 2, 1]]
        """
        slots, owner = self._live_of(gids)
        order = owner.argsort(kind="stable")
        slots, owner = slots[order], owner[order]
        keys = self.slot_key[slots]
        values = keys if self.codes is None else self.codes.decode(keys)
        return owner, values, self.slot_count[slots]

    def dicts(self, gids: np.ndarray) -> list[dict[Any, int] | None]:
        """Each group's live values and counts (state form), None for none: the chunk record form,
        the same as the per-group dicts of states before this class."""
        owner, values, counts = self.pairs(gids)
        out: list[dict[Any, int] | None] = [None] * len(gids)
        listed: list[Any] = values.tolist() if isinstance(values, np.ndarray) else values
        for i, value, count in zip(owner.tolist(), listed, counts.tolist(), strict=True):
            held = out[i]
            if held is None:
                held = out[i] = {}
            held[value] = count
        return out

    def load(self, gids: Sequence[int], dicts: Sequence[dict[Any, int] | None]) -> None:
        """Add the values and counts of per-group dicts (chunk records, states pickled before)."""
        rows = [(g, v, c) for g, d in zip(gids, dicts, strict=True) if d for v, c in d.items()]
        if not rows:
            return
        g = np.asarray([r[0] for r in rows], np.int64)
        counts = np.asarray([r[2] for r in rows], np.int64)
        values = [r[1] for r in rows]
        keys = np.asarray(values, np.int64) if self.codes is None else self.codes.encode(values)
        self.grow(int(g.max()) + 1)
        self.apply(g, keys, counts)
