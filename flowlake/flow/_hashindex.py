"""Row ids by a 64-bit hash, and per-row arrays that grow in place: the bookkeeping of a join side.

A join side of millions of rows took each batch's new rows into one sorted index with ``np.insert``,
which copies the whole index (and every per-row array was concatenated with the batch): a cost in
proportion to the state, every batch, and a freed copy of each array for the allocator to keep.
:class:`HashIndex` keeps its entries in two sorted levels, a main one and a recent one that takes
the new entries and is merged into the main one when it outgrows an eighth of it, so an insert costs
the recent level's size. An entry is 8 bytes: the high 32 bits of its hash and a 32-bit row id (while
ids fit); a hit on the prefix is checked against the row's whole hash, which the side keeps anyway.
:func:`extended` appends to a per-row array inside a buffer with room to spare (growing it by half
when full), so a batch costs its own rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from flowlake.flow._keyindex import merge_sorted, range_rows

_RECENT_SHARE = 8
"""The recent level is merged into the main one when it holds more than 1/8 of its entries."""
_RECENT_MIN = 1 << 14
"""...and more than this many (a small index merges rarely)."""
_INT32_END = 1 << 31


def id_dtype(largest: int) -> type[np.int32] | type[np.int64]:
    """The narrowest of int32 and int64 that holds ids (or other counts) up to ``largest``.

    >>> id_dtype(5).__name__, id_dtype(1 << 40).__name__
    ('int32', 'int64')
    """
    return np.int32 if largest < _INT32_END else np.int64


def candidates(
    sorted_hashes: np.ndarray, ids: np.ndarray, queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every (query index, id) whose hash equals the query's, from one level sorted by hash: sorted
    by query index, each query's ids in the level's order.

    >>> level = np.array([1, 5, 5, 9], np.uint64), np.array([3, 0, 2, 1])
    >>> q, i = candidates(*level, np.array([5, 7, 9], np.uint64))
    >>> q.tolist(), i.tolist()
    ([0, 0, 2], [0, 2, 1])
    """
    lo = np.searchsorted(sorted_hashes, queries, "left")
    hi = np.searchsorted(sorted_hashes, queries, "right")
    sizes = hi - lo
    query = np.repeat(np.arange(len(queries), dtype=np.int64), sizes)
    return query, np.asarray(ids[range_rows(lo, sizes)], np.int64)


def prefixes(hashes: np.ndarray) -> np.ndarray:
    """The high 32 bits of uint64 hashes, as uint32 (what an index level sorts and searches).

    >>> prefixes(np.array([(7 << 32) | 5], np.uint64)).tolist()
    [7]
    """
    return (hashes >> np.uint64(32)).astype(np.uint32)


class HashIndex:
    """Row ids by hash in two sorted levels; ids inserted later must be larger than every id in the
    index (a side appends rows), so each hash's ids come out in increasing order. A search is given
    the whole hash of every row (by id) to check prefix hits against.

    >>> full = np.array([9, 5, 9, 5, 7], np.uint64) << np.uint64(32)
    >>> index = HashIndex(full[:3], np.array([0, 1, 2]))
    >>> index.insert(full[3:], np.array([3, 4]))
    >>> q, ids = index.find(full[[0, 1]], full)
    >>> q.tolist(), ids.tolist(), len(index)
    ([0, 0, 1, 1], [0, 2, 1, 3], 5)
    """

    def __init__(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(hashes, kind="stable")
        dtype = id_dtype(int(ids.max()) if len(ids) else 0)
        self.hashes = prefixes(hashes[order])
        self.ids = np.asarray(ids[order], dtype)
        self.recent_hashes = np.zeros(0, np.uint32)
        self.recent_ids = np.zeros(0, dtype)

    def __len__(self) -> int:
        return len(self.hashes) + len(self.recent_hashes)

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold."""
        return sum(a.nbytes for a in (self.hashes, self.ids, self.recent_hashes, self.recent_ids))

    def levels(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(sorted hashes, ids) of each non-empty level."""
        for hashes, ids in ((self.hashes, self.ids), (self.recent_hashes, self.recent_ids)):
            if len(hashes):
                yield hashes, ids

    def insert(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        """Index ``ids`` (each larger than every indexed id) under ``hashes``."""
        if not len(ids):
            return
        high = prefixes(hashes)
        order = np.argsort(high, kind="stable")
        new_ids = np.asarray(ids[order], id_dtype(int(ids.max())))
        self.recent_hashes, self.recent_ids = merge_sorted(
            self.recent_hashes, self.recent_ids, high[order], new_ids, after=True
        )
        if len(self.recent_hashes) > max(_RECENT_MIN, len(self.hashes) // _RECENT_SHARE):
            self.hashes, self.ids = merge_sorted(
                self.hashes, self.ids, self.recent_hashes, self.recent_ids, after=True
            )
            self.recent_hashes, self.recent_ids = self.recent_hashes[:0], self.recent_ids[:0]

    def find(self, queries: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (query index, id) whose hash (``full[id]``) equals the query's, sorted by query
        index, then id."""
        high = prefixes(queries)
        found = [candidates(hashes, ids, high) for hashes, ids in self.levels()]
        found = [(q, i) for q, i in found if len(q)]
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(found) == 1:
            query, ids = found[0]
        else:
            query = np.concatenate([found[0][0], found[1][0]])
            ids = np.concatenate([found[0][1], found[1][1]])
            order = np.argsort(query, kind="stable")  # per query: the main level's ids, then the recent's
            query, ids = query[order], ids[order]
        same = full[ids] == queries[query]
        return query[same], ids[same]


def extended(array: np.ndarray, values: np.ndarray, buffers: dict[str, np.ndarray], name: str) -> np.ndarray:
    """``array`` with ``values`` appended: a view of ``buffers[name]`` (a buffer this function made
    for ``array``, with room to spare), grown by half when full; a new buffer when ``array`` is not a
    view of it (replaced by its owner since, e.g. compacted or read back from a snapshot).

    >>> buffers: dict[str, np.ndarray] = {}
    >>> a = extended(np.zeros(0, np.int64), np.array([1, 2]), buffers, "a")
    >>> b = extended(a, np.array([3]), buffers, "a")
    >>> b.tolist(), b.base is a.base, len(buffers["a"]) >= 3
    ([1, 2, 3], True, True)
    """
    n, end = len(array), len(array) + len(values)
    buffer = buffers.get(name)
    if buffer is None or array.base is not buffer or len(buffer) < end or buffer.dtype != array.dtype:
        buffer = np.empty(max(end, n + n // 2, 1024), array.dtype)
        buffer[:n] = array
        buffers[name] = buffer
    grown = buffer[:end]
    grown[n:] = values
    return grown
