"""Group key → group id for the aggregate state, without a Python dict per group.

A dict of a million group keys costs ~50 MB for its table plus ~32 MB for the group-id ``int``
objects it points to. :class:`KeyIndex` keeps, per group, only its key's Python ``hash`` and its id
in two sorted numpy arrays (16 bytes a group); the keys themselves stay in the state's list (id →
key), which every hit is checked against, so equality is exactly the dict's. A key whose hash another
live key already holds (a real collision: ``hash(-1) == hash(-2)``) goes to a small overflow dict.
Inserts and removals are batched: one sorted merge per batch of new keys, one delete per batch of
removed ones. The index is never pickled; a resumed state rebuilds it from the key list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

EXACT_BELOW = (1 << 61) - 1
"""Python hashes an int in ``[0, EXACT_BELOW)`` to itself: on such keys equal hashes are equal keys."""


class KeyStore(Protocol):
    """Group id → key: a list, or :class:`IntKeys`."""

    def __len__(self) -> int: ...
    def __getitem__(self, gid: int, /) -> Any: ...
    def __setitem__(self, gid: int, key: Any, /) -> None: ...
    def extend(self, keys: list[Any], /) -> None: ...


class IntKeys:
    """Group keys of one integer column by group id, in numpy (8 bytes and a flag a group instead of a
    list slot and an ``int`` object); None (a NULL key, or a free id) is a cleared flag.

    >>> keys = IntKeys()
    >>> keys.extend([7, None, 9])
    >>> keys[1] = 4
    >>> len(keys), keys[0], keys[1], gather(keys, np.array([2, 0]))
    (3, 7, 4, [9, 7])
    """

    def __init__(self) -> None:
        self.values = np.zeros(0, np.int64)
        self.valid = np.zeros(0, bool)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, gid: int) -> int | None:
        return int(self.values[gid]) if self.valid[gid] else None

    def __setitem__(self, gid: int, key: int | None) -> None:
        self.valid[gid] = key is not None
        self.values[gid] = 0 if key is None else key

    def extend(self, keys: list[Any]) -> None:
        """Append ``keys`` (ints or None) at the next ids."""
        end = self.size + len(keys)
        if end > len(self.values):
            cap = max(end, 2 * len(self.values), 64)
            self.values = np.concatenate([self.values[: self.size], np.zeros(cap - self.size, np.int64)])
            self.valid = np.concatenate([self.valid[: self.size], np.zeros(cap - self.size, bool)])
        self.values[self.size : end] = [0 if k is None else k for k in keys]
        self.valid[self.size : end] = [k is not None for k in keys]
        self.size = end

    def __getstate__(self) -> dict[str, Any]:
        return {"values": self.values[: self.size].copy(), "valid": self.valid[: self.size].copy(),
                "size": self.size}  # fmt: skip


def gather(stored: KeyStore, ids: np.ndarray) -> list[Any]:
    """The keys of ``ids``, as Python values."""
    if isinstance(stored, IntKeys):
        values: list[Any] = stored.values[ids].tolist()
        for i in (~stored.valid[ids]).nonzero()[0].tolist():
            values[i] = None
        return values
    return [stored[i] for i in ids.tolist()]


def py_hashes(keys: Sequence[Any]) -> np.ndarray:
    """Python's ``hash`` of every key, as int64 (equal keys, equal hashes, as for a dict)."""
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))


def int_columns(keys: Sequence[Any]) -> np.ndarray | None:
    """Tuple keys whose every component is an int in int64 range as an int64 array (a row a key),
    else None.

    >>> int_columns([(1, 2), (3, -4)]).tolist(), int_columns([(1, None)]), int_columns([1, 2])
    ([[1, 2], [3, -4]], None, None)
    """
    if not keys or not all(type(k) is tuple for k in keys):
        return None
    width = len(keys[0])
    if not all(len(k) == width and all(type(x) is int for x in k) for k in keys):
        return None
    try:
        return np.asarray(keys, np.int64).reshape(len(keys), width)
    except OverflowError:
        return None


def exact_ints(keys: Sequence[Any]) -> bool:
    """Whether every key is an int in ``[0, EXACT_BELOW)`` (its hash is itself)."""
    return all(type(k) is int and 0 <= k < EXACT_BELOW for k in keys)


_SORT_MERGE_BELOW = 12_000
"""Merges of at most this many entries sort the concatenation (measured faster below ~16k entries)."""


def merge_sorted(
    level: np.ndarray, values: np.ndarray, new: np.ndarray, new_values: np.ndarray, *, after: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The sorted ``level`` with the sorted ``new`` merged in (each before the equal ones already
    there, as ``np.insert`` at ``searchsorted`` puts them; ``after``: after them, as at
    ``searchsorted(..., "right")``), and ``values`` moved along with it (in the wider of the two value
    types): one placement mask for both arrays.

    >>> merge_sorted(np.array([1, 5]), np.array([10, 50]), np.array([0, 5, 9]), np.array([0, 55, 90]))
    (array([0, 1, 5, 5, 9]), array([ 0, 10, 55, 50, 90]))
    >>> merge_sorted(np.array([5]), np.array([50]), np.array([5]), np.array([55]), after=True)[1].tolist()
    [50, 55]
    """
    n = len(level) + len(new)
    if n <= _SORT_MERGE_BELOW:  # small: a stable sort of both is several times faster
        pairs = [(level, values), (new, new_values)]  # the earlier of equal keys comes first
        first, second = pairs if after else pairs[::-1]
        both = np.concatenate([first[0], second[0]])
        order = both.argsort(kind="stable")
        return both[order], np.concatenate([first[1], second[1]])[order]
    placed = level.searchsorted(new, "right" if after else "left") + np.arange(len(new))
    old = np.ones(n, bool)
    old[placed] = False
    merged, moved = np.empty(n, level.dtype), np.empty(n, np.promote_types(values.dtype, new_values.dtype))
    merged[old], merged[placed] = level, new
    moved[old], moved[placed] = values, new_values
    return merged, moved


def range_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions ``starts[i] .. starts[i] + lengths[i] - 1`` of every range ``i``, range by range.

    >>> range_rows(np.array([5, 0, 9]), np.array([2, 1, 0])).tolist()
    [5, 6, 0]
    """
    total = int(lengths.sum())
    if not total:
        return np.zeros(0, np.int64)
    shift = np.repeat(np.asarray(starts, np.int64) - (lengths.cumsum() - lengths), lengths)
    rows: np.ndarray = np.arange(total, dtype=np.int64) + shift
    return rows


def take_keys(keys: Sequence[Any], at: np.ndarray) -> list[Any]:
    """``keys[i]`` for each ``i`` of ``at``, in one pass for :class:`RowKeys`."""
    if isinstance(keys, RowKeys):  # (per column: no list a row for the collector to count)
        parts = [keys.columns[at, j].tolist() for j in range(keys.columns.shape[1])]
        return parts[0] if keys.single else list(zip(*parts, strict=True))
    return [keys[i] for i in at.tolist()]


class KeyIndex:
    """Sorted key hashes with their group ids, and an overflow dict for colliding keys.

    ``stored`` is the state's id → key list, which the index checks hits against.

    >>> keys: list[Any] = []
    >>> index = KeyIndex(keys)
    >>> def create(new: list[Any]) -> np.ndarray:
    ...     keys.extend(new)
    ...     return np.arange(len(keys) - len(new), len(keys))
    >>> ids = index.assign(["a", "b", "a", -1, -2], create)
    >>> ids.tolist(), len(index), index["b"], -2 in index
    ([0, 1, 0, 2, 3], 4, 1, True)
    >>> index.discard("b", 1)
    >>> index.lookup(["b", "a"]).tolist()
    [-1, 0]
    """

    def __init__(self, stored: KeyStore) -> None:
        self.stored = stored
        self.hashes = np.empty(0, np.int64)
        self.ids = np.empty(0, np.int64)
        self.recent_hashes = np.empty(0, np.int64)
        """New keys go to this smaller sorted level first (an insert costs its size, not the whole
        index's), merged into the main one when it outgrows an eighth of it."""
        self.recent_ids = np.empty(0, np.int64)
        self.overflow: dict[Any, int] = {}
        self._gone: list[tuple[Any, int]] = []
        self.exact = True
        """Whether every key indexed so far is an int whose hash is itself (see :data:`EXACT_BELOW`)."""
        self.shadow: np.ndarray | None = np.zeros((0, 0), np.int64)
        """Tuple keys of ints as rows of an int64 array by id, so that hits are checked in numpy; None
        once a key was indexed without its columns (checked in Python from then on)."""

    @classmethod
    def build(cls, stored: KeyStore, live: np.ndarray) -> KeyIndex:
        """The index of the keys ``stored[i]`` for the ids ``live`` (distinct keys)."""
        index = cls(stored)
        keys = gather(stored, np.asarray(live, np.int64))
        exact = exact_ints(keys)
        hashes = np.asarray(keys, np.int64) if exact and keys else py_hashes(keys)
        columns = int_columns(keys)
        index._insert(hashes, np.asarray(live, np.int64), keys, exact=exact, columns=columns)
        return index

    def __len__(self) -> int:
        self._flush()
        return len(self.ids) + len(self.recent_ids) + len(self.overflow)

    def __contains__(self, key: Any) -> bool:
        return bool(self.lookup([key])[0] >= 0)

    def __getitem__(self, key: Any) -> int:
        gid = int(self.lookup([key])[0])
        if gid < 0:
            raise KeyError(key)
        return gid

    def items(self) -> Iterator[tuple[Any, int]]:
        """(key, id) of every live group."""
        self._flush()
        for gid in [*self.ids.tolist(), *self.recent_ids.tolist()]:
            yield self.stored[gid], gid
        yield from self.overflow.items()

    def lookup(
        self,
        keys: Sequence[Any],
        hashes: np.ndarray | None = None,
        *,
        exact: bool = False,
        columns: np.ndarray | None = None,
    ) -> np.ndarray:
        """The id of each key, -1 where it has none (``hashes``: their :func:`py_hashes`, if known;
        ``exact``: the keys are ints in ``[0, EXACT_BELOW)``, so a hit needs no check if all indexed
        keys are too; ``columns``: the keys, tuples of ints, as rows of an int64 array (see
        :func:`int_columns`), so hits are checked in numpy while every indexed key had them too)."""
        return self._lookup(keys, hashes, exact=exact, columns=columns)[0]

    def _lookup(
        self,
        keys: Sequence[Any],
        hashes: np.ndarray | None,
        *,
        exact: bool,
        columns: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`lookup`, and the positions whose hash either level holds (for another key, where
        the id is -1)."""
        self._flush()
        n = len(keys)
        out = np.full(n, -1, np.int64)
        if not n:
            return out, np.zeros(0, np.int64)
        if hashes is None:
            hashes = py_hashes(keys)
        hit, candidates = self._probe(hashes)
        if len(hit):
            if exact and self.exact:
                out[hit] = candidates
            elif (
                columns is not None and self.shadow is not None and self.shadow.shape[1:] == columns.shape[1:]
            ):
                shadow, rows = self.shadow[candidates], columns[hit]
                found = shadow[:, 0] == rows[:, 0]
                for j in range(1, rows.shape[1]):
                    found &= shadow[:, j] == rows[:, j]
                out[hit[found]] = candidates[found]
            else:
                stored = self.stored
                pairs = zip(hit.tolist(), candidates.tolist(), strict=True)
                same = [stored[g] == keys[i] for i, g in pairs]
                found = np.asarray(same, dtype=bool) if same else np.zeros(0, bool)
                out[hit[found]] = candidates[found]
        if self.overflow:
            for i in (out < 0).nonzero()[0].tolist():
                out[i] = self.overflow.get(keys[i], -1)
        return out, hit

    def assign(
        self,
        keys: Sequence[Any],
        create: Callable[[list[Any]], np.ndarray],
        hashes: np.ndarray | None = None,
        *,
        exact: bool = False,
        columns: np.ndarray | None = None,
    ) -> np.ndarray:
        """The id of each key (repeats allowed). The distinct new keys, in order of first appearance,
        get ``create(new_keys)`` (which stores them at those ids) and are indexed in one sorted merge.
        ``hashes``, ``exact`` and ``columns`` as for :meth:`lookup`."""
        if hashes is None:
            hashes = py_hashes(keys)
        out, hit = self._lookup(keys, hashes, exact=exact, columns=columns)
        missing = (out < 0).nonzero()[0]
        if not len(missing):
            return out
        h = hashes[missing]
        order = h.argsort(kind="stable")
        ordered = h[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        repeats = (~starts).nonzero()[0].tolist()
        at = missing[order].tolist()
        if exact or all(keys[at[j]] == keys[at[j - 1]] for j in repeats):  # equal hashes, equal keys
            firsts = missing[order[starts]]
            seq = argsort_distinct(firsts, len(keys))
            ids = np.empty(len(firsts), np.int64)
            firsts = firsts[seq]  # (in order of appearance)
            new_keys = take_keys(keys, firsts)
            ids[seq] = create(new_keys)
            out[missing[order]] = ids[starts.cumsum() - 1]
            ids = ids[seq]
        else:  # two new keys share a hash: one by one
            fresh: dict[Any, int] = {}
            firsts_list: list[int] = []
            for i in missing.tolist():
                gid = fresh.get(keys[i])
                if gid is None:
                    gid = fresh[keys[i]] = int(create([keys[i]])[0])
                    firsts_list.append(i)
                out[i] = gid
            firsts = np.asarray(firsts_list, np.int64)
            ids = out[firsts]
            new_keys = take_keys(keys, firsts)
        new_columns = None if columns is None else columns[firsts]
        held = np.zeros(len(keys), bool)
        held[hit] = True  # (a new key whose hash an indexed key holds goes to the overflow)
        self._insert(hashes[firsts], ids, new_keys, exact=exact, columns=new_columns, held=held[firsts])
        return out

    def _probe(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions (into ``hashes``) found in either level, and the ids indexed under them."""
        hits, ids = [], []
        order = hashes.argsort()  # increasing needles: searchsorted narrows each search by the last
        ordered = hashes[order]
        for level, level_ids in ((self.hashes, self.ids), (self.recent_hashes, self.recent_ids)):
            if len(level):
                pos = np.minimum(level.searchsorted(ordered), len(level) - 1)
                hit = (level[pos] == ordered).nonzero()[0]
                hits.append(order[hit])
                ids.append(level_ids[pos[hit]])
        if not hits:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(hits), np.concatenate(ids)

    def discard(self, key: Any, gid: int) -> None:
        """Forget ``key`` (id ``gid``); applied with the next lookup, in one pass."""
        self._gone.append((key, gid))

    def _insert(
        self,
        hashes: np.ndarray,
        ids: np.ndarray,
        keys: Sequence[Any],
        *,
        exact: bool,
        columns: np.ndarray | None = None,
        held: np.ndarray | None = None,
    ) -> None:
        """Index new keys; ``held``: whether each one's hash is indexed already (None: probed here)."""
        self.exact = self.exact and exact
        self._shadow(ids, columns)
        order = hashes.argsort(kind="stable")
        hashes, ids = hashes[order], ids[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        if held is None:
            first[self._probe(hashes)[0]] = False
        else:
            first &= ~held[order]
        for j in (~first).nonzero()[0].tolist():  # a hash some other key holds: the overflow
            self.overflow[keys[int(order[j])]] = int(ids[j])
        hashes, ids = hashes[first], ids[first]
        if not len(hashes):
            return
        self.recent_hashes, self.recent_ids = merge_sorted(self.recent_hashes, self.recent_ids, hashes, ids)
        if len(self.recent_hashes) > max(4096, len(self.hashes) // 8):
            self.hashes, self.ids = merge_sorted(self.hashes, self.ids, self.recent_hashes, self.recent_ids)
            self.recent_hashes, self.recent_ids = self.recent_hashes[:0], self.recent_ids[:0]

    def _shadow(self, ids: np.ndarray, columns: np.ndarray | None) -> None:
        """Keep the rows ``columns`` of the new keys ``ids`` (or stop keeping rows: None)."""
        shadow = self.shadow
        if shadow is None or not len(ids):
            return
        if columns is None or (len(shadow) and shadow.shape[1:] != columns.shape[1:]):
            self.shadow = None
            return
        need = int(ids.max()) + 1
        if need > len(shadow):
            grown = np.zeros((max(need, len(shadow) + len(shadow) // 4), columns.shape[1]), np.int64)
            if len(shadow):
                grown[: len(shadow)] = shadow
            self.shadow = shadow = grown
        shadow[ids] = columns

    def _flush(self) -> None:
        if not self._gone:
            return
        gone, self._gone = self._gone, []
        in_array = []
        for key, gid in gone:
            if self.overflow.get(key) == gid:
                del self.overflow[key]
            else:
                in_array.append((key, gid))
        if not in_array:
            return
        hashes = py_hashes([k for k, _ in in_array])
        gids = np.asarray([g for _, g in in_array], np.int64)
        for recent in (False, True):
            level, level_ids = (self.recent_hashes, self.recent_ids) if recent else (self.hashes, self.ids)
            if not len(level):
                continue
            pos = np.minimum(level.searchsorted(hashes), len(level) - 1)
            drop = pos[(level[pos] == hashes) & (level_ids[pos] == gids)]
            if len(drop):
                if recent:
                    self.recent_hashes, self.recent_ids = np.delete(level, drop), np.delete(level_ids, drop)
                else:
                    self.hashes, self.ids = np.delete(level, drop), np.delete(level_ids, drop)


_MODULUS = np.uint64((1 << 61) - 1)
_XXPRIME_1 = np.uint64(11400714785074694791)
_XXPRIME_2 = np.uint64(14029467366897019727)
_XXPRIME_5 = np.uint64(2870177450012600261)


def int_hashes(values: np.ndarray) -> np.ndarray:
    """Python's ``hash`` of each int64 value, computed in numpy (CPython's: the value modulo
    ``2**61 - 1`` with its sign, -1 becoming -2).

    >>> int_hashes(np.array([5, -1, -7, 2**62])).tolist() == [hash(5), hash(-1), hash(-7), hash(2**62)]
    True
    """
    values = np.asarray(values, np.int64)
    if not len(values) or (int(values.min()) >= 0 and int(values.max()) < EXACT_BELOW):
        return values  # (the common case: a hash that is the value itself)
    negative = values < 0
    with np.errstate(over="ignore"):
        magnitude = np.where(negative, (~values).view(np.uint64) + np.uint64(1), values.view(np.uint64))
        reduced = (magnitude % _MODULUS).view(np.int64)
    out = np.where(negative, -reduced, reduced)
    out[out == -1] = -2
    return out


def tuple_hashes(columns: np.ndarray) -> np.ndarray:
    """Python's ``hash`` of each row of an int64 array as a tuple of ints, computed in numpy
    (CPython's xxHash-based tuple hash over :func:`int_hashes`).

    >>> rows = np.array([[1, 2], [-1, 2**62]])
    >>> tuple_hashes(rows).tolist() == [hash((1, 2)), hash((-1, 2**62))]
    True
    """
    n, width = columns.shape
    acc = np.full(n, _XXPRIME_5, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):
            lane = int_hashes(columns[:, j]).view(np.uint64)
            acc += lane * _XXPRIME_2
            acc = (acc << np.uint64(31)) | (acc >> np.uint64(33))
            acc *= _XXPRIME_1
        acc += np.uint64(width) ^ (_XXPRIME_5 ^ np.uint64(3527539))
    out = acc.view(np.int64)
    out[out == -1] = 1546275796
    return out


class RowKeys(Sequence[Any]):
    """The keys of an int64 array's rows as Python values, made on demand: a tuple of ints a row
    (an int where ``single``), what :func:`int_columns` reads back.

    >>> keys = RowKeys(np.array([[1, 2], [3, 4]]))
    >>> len(keys), keys[1], RowKeys(np.array([[7]]), single=True)[0]
    (2, (3, 4), 7)
    """

    def __init__(self, columns: np.ndarray, *, single: bool = False) -> None:
        self.columns, self.single = columns, single

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.columns[i].tolist()
        return row[0] if self.single else tuple(row)


def argsort_distinct(values: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort`` of distinct ints in ``[0, bound)``, by marking them in a table of ``bound``
    slots (a few linear passes: several times faster than a sort for the few thousand values of a
    batch's first rows).

    >>> argsort_distinct(np.array([7, 2, 5]), 8).tolist()
    [1, 2, 0]
    """
    where = np.empty(bound, np.int64)
    where[values] = np.arange(len(values), dtype=np.int64)
    seen = np.zeros(bound, bool)
    seen[values] = True
    return where[seen.nonzero()[0]]


def dense_row_codes(columns: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows of an int64 array grouped by value without a sort, where their key space is small: a code
    per row (numbered in order of first appearance) and the first row of each code, as
    :func:`int_row_codes` gives them; None where a column's span (divided by the greatest common
    divisor of its offsets from its minimum, e.g. a window's size, where it is wider than ``limit``)
    or, for several columns, the product of their numbers of distinct values exceeds ``limit``.

    Each column's values are numbered through a table over its span (for several columns), each
    row's position in the product of those numbers is its slot in a table of first rows
    (``np.minimum.at``), so equal rows get equal codes exactly, in a few passes over the rows and
    tables of at most ``limit`` slots.

    >>> codes, first = dense_row_codes(np.array([[5, 120], [2, 60], [5, 120], [5, 60]]), 100)
    >>> codes.tolist(), first.tolist()
    ([0, 1, 0, 2], [0, 1, 3])
    >>> dense_row_codes(np.array([[0], [10**12], [3]]), 100) is None
    True
    """
    n, width = columns.shape
    if not n:
        return None
    combined: np.ndarray | None = None
    size = 1
    for j in range(width):
        column = columns[:, j]
        low, high = int(column.min()), int(column.max())
        if high - low >= 1 << 62:  # (offsets must not overflow)
            return None
        code = column - low
        step = 1 if high - low < limit else int(np.gcd.reduce(code)) or 1
        span = (high - low) // step + 1
        if span > limit:
            return None
        if step > 1:
            code //= step
        if width > 1 and span > 1:  # numbered by value: the product counts distinct values only
            seen = np.zeros(span, bool)
            seen[code] = True
            number = seen.cumsum() - 1
            code, span = number[code], int(number[-1]) + 1
        size *= span
        if size > limit:
            return None
        combined = code if combined is None else combined * span + code
    assert combined is not None
    first = np.full(size, n, np.int64)
    np.minimum.at(first, combined, np.arange(n, dtype=np.int64))
    present = (first < n).nonzero()[0]  # (by key position)
    firsts = first[present]
    by_appearance = argsort_distinct(firsts, n)
    rank = np.empty(size, np.int64)
    rank[present[by_appearance]] = np.arange(len(present), dtype=np.int64)
    return rank[combined], firsts[by_appearance]


def int_row_codes(columns: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of an int64 array grouped by value, given each row's hash: a code per row (equal rows,
    equal codes; codes numbered in order of first appearance) and the first row of each code.

    Rows are sorted by hash, and a run of equal hashes splits wherever the row changes, so two keys
    whose hashes tie may get several codes each (callers map codes to keys, which merges them).

    >>> codes, first = int_row_codes(np.array([[5, 1], [2, 2], [5, 1]]), np.array([9, 4, 9]))
    >>> codes.tolist(), first.tolist()
    ([0, 1, 0], [0, 1])
    """
    order = hashes.argsort()
    ordered = hashes[order]
    starts = np.ones(len(order), bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    for j in range(columns.shape[1]):
        column = columns[order, j]
        starts[1:] |= column[1:] != column[:-1]
    at = starts.nonzero()[0]
    first = np.minimum.reduceat(order, at) if len(at) else at
    by_appearance = argsort_distinct(first, len(order))
    rank = np.empty(len(first), np.int64)
    rank[by_appearance] = np.arange(len(first), dtype=np.int64)
    codes = np.empty(len(order), np.int64)
    codes[order] = rank[starts.cumsum() - 1]
    return codes, first[by_appearance]
