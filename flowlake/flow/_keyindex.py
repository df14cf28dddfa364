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
from typing import Any

import numpy as np


def py_hashes(keys: Sequence[Any]) -> np.ndarray:
    """Python's ``hash`` of every key, as int64 (equal keys, equal hashes, as for a dict)."""
    return np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys))


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

    def __init__(self, stored: list[Any]) -> None:
        self.stored = stored
        self.hashes = np.empty(0, np.int64)
        self.ids = np.empty(0, np.int64)
        self.overflow: dict[Any, int] = {}
        self._gone: list[tuple[Any, int]] = []

    @classmethod
    def build(cls, stored: list[Any], live: np.ndarray) -> KeyIndex:
        """The index of the keys ``stored[i]`` for the ids ``live`` (distinct keys)."""
        index = cls(stored)
        keys = [stored[i] for i in live.tolist()]
        index._insert(py_hashes(keys), np.asarray(live, np.int64), keys)
        return index

    def __len__(self) -> int:
        self._flush()
        return len(self.ids) + len(self.overflow)

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
        for gid in self.ids.tolist():
            yield self.stored[gid], gid
        yield from self.overflow.items()

    def lookup(self, keys: Sequence[Any], hashes: np.ndarray | None = None) -> np.ndarray:
        """The id of each key, -1 where it has none (``hashes``: their :func:`py_hashes`, if known)."""
        self._flush()
        n = len(keys)
        out = np.full(n, -1, np.int64)
        if not n:
            return out
        if hashes is None:
            hashes = py_hashes(keys)
        if len(self.hashes):
            pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            hit = np.flatnonzero(self.hashes[pos] == hashes)
            candidates = self.ids[pos[hit]]
            stored = self.stored
            same = [stored[g] == keys[i] for i, g in zip(hit.tolist(), candidates.tolist(), strict=True)]
            found = np.asarray(same, dtype=bool) if same else np.zeros(0, bool)
            out[hit[found]] = candidates[found]
        if self.overflow:
            for i in np.flatnonzero(out < 0).tolist():
                out[i] = self.overflow.get(keys[i], -1)
        return out

    def assign(self, keys: Sequence[Any], create: Callable[[list[Any]], np.ndarray]) -> np.ndarray:
        """The id of each key (repeats allowed). The distinct new keys, in order of first appearance,
        get ``create(new_keys)`` (which stores them at those ids) and are indexed in one sorted merge."""
        hashes = py_hashes(keys)
        out = self.lookup(keys, hashes)
        missing = np.flatnonzero(out < 0)
        if not len(missing):
            return out
        h = hashes[missing]
        order = np.argsort(h, kind="stable")
        ordered = h[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        repeats = np.flatnonzero(~starts).tolist()
        at = missing[order].tolist()
        if all(keys[at[j]] == keys[at[j - 1]] for j in repeats):  # equal hashes are equal keys here
            firsts = missing[order[starts]]
            seq = np.argsort(firsts, kind="stable")
            ids = np.empty(len(firsts), np.int64)
            ids[seq] = create([keys[i] for i in firsts[seq].tolist()])
            out[missing[order]] = ids[np.cumsum(starts) - 1]
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
        self._insert(hashes[firsts], ids, [keys[i] for i in firsts.tolist()])
        return out

    def discard(self, key: Any, gid: int) -> None:
        """Forget ``key`` (id ``gid``); applied with the next lookup, in one pass."""
        self._gone.append((key, gid))

    def _insert(self, hashes: np.ndarray, ids: np.ndarray, keys: Sequence[Any]) -> None:
        order = np.argsort(hashes, kind="stable")
        hashes, ids = hashes[order], ids[order]
        first = np.ones(len(hashes), dtype=bool)
        first[1:] = hashes[1:] != hashes[:-1]
        if len(self.hashes):
            pos = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            first &= self.hashes[pos] != hashes
        for j in np.flatnonzero(~first).tolist():  # a hash some other key holds: the overflow
            self.overflow[keys[int(order[j])]] = int(ids[j])
        hashes, ids = hashes[first], ids[first]
        if not len(hashes):
            return
        at = np.searchsorted(self.hashes, hashes)
        self.hashes = np.insert(self.hashes, at, hashes)
        self.ids = np.insert(self.ids, at, ids)

    def _flush(self) -> None:
        if not self._gone:
            return
        gone, self._gone = self._gone, []
        drop: list[int] = []
        in_array = []
        for key, gid in gone:
            if self.overflow.get(key) == gid:
                del self.overflow[key]
            else:
                in_array.append((key, gid))
        if in_array:
            hashes = py_hashes([k for k, _ in in_array])
            left = np.searchsorted(self.hashes, hashes, side="left")
            right = np.searchsorted(self.hashes, hashes, side="right")
            for (_, gid), lo, hi in zip(in_array, left.tolist(), right.tolist(), strict=True):
                drop.extend(p for p in range(lo, hi) if self.ids[p] == gid)
        if drop:
            self.hashes = np.delete(self.hashes, drop)
            self.ids = np.delete(self.ids, drop)
