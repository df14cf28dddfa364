"""The kept rows of a Top-N key partition, found by partition without a scan: each partition's live
rows are one contiguous run of the kept table, and a sorted index of the runs (partition hash, first
row, row count) finds a batch's partitions with one binary search each. Rows a batch replaces are
only marked dead (the table is not copied); they are dropped once they are a quarter of the table.

>>> runs = Runs.of(np.array([7, 7, 3, 9, 9, 9], np.uint64))
>>> assert runs is not None and Runs.of(np.array([7, 3, 7], np.uint64)) is None
>>> runs.hashes.tolist(), runs.starts.tolist(), runs.lengths.tolist()
([3, 7, 9], [2, 0, 3], [1, 2, 3])
>>> rows, found = runs.rows_of(np.array([9, 4, 7], np.uint64))
>>> rows.tolist(), found.tolist()
([3, 4, 5, 0, 1], [True, False, True])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowlake.flow._keyindex import range_rows


@dataclass(frozen=True, slots=True)
class Runs:
    """Partition runs of a table, sorted by partition hash (:meth:`empty_at` and :meth:`placed`
    update the arrays in place)."""

    hashes: np.ndarray
    """Partition hash of each run (sorted, distinct; uint64)."""
    starts: np.ndarray
    """First row of each run (int64)."""
    lengths: np.ndarray
    """Rows of each run (int64)."""

    @classmethod
    def of(cls, row_hashes: np.ndarray, offset: int = 0) -> Runs | None:
        """The runs of rows whose partition hashes are ``row_hashes`` (first row ``offset``); None if a
        partition's rows are not one run."""
        n = len(row_hashes)
        if not n:
            return cls.empty()
        begins = np.ones(n, bool)
        begins[1:] = row_hashes[1:] != row_hashes[:-1]
        firsts = begins.nonzero()[0]
        lengths = np.diff(np.append(firsts, n))
        hashes = row_hashes[firsts]
        order = hashes.argsort(kind="stable")
        hashes = hashes[order]
        if len(hashes) > 1 and bool((hashes[1:] == hashes[:-1]).any()):
            return None
        return cls(hashes, (firsts + offset)[order].astype(np.int64), lengths[order].astype(np.int64))

    @classmethod
    def empty(cls) -> Runs:
        return cls(np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64))

    def find(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``wanted`` (partition hashes): whether it has a run, and the positions of the
        runs found (in ``wanted``'s order)."""
        if not len(self.hashes) or not len(wanted):
            return np.zeros(len(wanted), bool), np.empty(0, np.int64)
        at = np.minimum(self.hashes.searchsorted(wanted), len(self.hashes) - 1)
        found = self.hashes[at] == wanted
        return found, at[found]

    def rows_of(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the runs of ``wanted`` (run by run), and which of ``wanted`` have one."""
        found, at = self.find(wanted)
        return self.rows_at(at), found

    def rows_at(self, at: np.ndarray) -> np.ndarray:
        """The rows of the runs at positions ``at``, run by run."""
        return range_rows(self.starts[at], self.lengths[at])

    def empty_at(self, at: np.ndarray) -> None:
        """Make the runs at positions ``at`` empty (in place: their partitions stay indexed, without
        rows, until :meth:`placed` gives them new ones or :meth:`compacted` drops them)."""
        self.lengths[at] = 0

    def placed(self, added: Runs) -> Runs:
        """These runs with ``added``'s: a partition indexed already moves to its new run (in place),
        others are inserted (a new index)."""
        if not len(added.hashes):
            return self
        found, at = self.find(added.hashes)
        self.starts[at], self.lengths[at] = added.starts[found], added.lengths[found]
        if bool(found.all()):
            return self
        new = ~found
        where = self.hashes.searchsorted(added.hashes[new])
        return Runs(
            np.insert(self.hashes, where, added.hashes[new]),
            np.insert(self.starts, where, added.starts[new]),
            np.insert(self.lengths, where, added.lengths[new]),
        )

    def compacted(self, dead: np.ndarray) -> Runs:
        """These runs once the rows ``dead`` marks are dropped from the table (each run moves up by the
        dead rows before it; empty runs are dropped).

        >>> runs = Runs.of(np.array([7, 7, 3, 9], np.uint64))
        >>> runs.empty_at(np.array([0]))  # partition 3's run
        >>> moved = runs.compacted(np.array([False, False, True, False]))
        >>> moved.hashes.tolist(), moved.starts.tolist(), moved.lengths.tolist()
        ([7, 9], [0, 2], [2, 1])
        """
        live = self.lengths > 0
        starts = self.starts[live]
        return Runs(self.hashes[live], starts - dead.cumsum()[starts], self.lengths[live])
