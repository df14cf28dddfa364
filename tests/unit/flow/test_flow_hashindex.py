"""A hash index in two levels finds what a scan of every (hash, id) finds; per-row arrays grow in place."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow import _hashindex
from flowlake.flow._hashindex import HashIndex, extended


def scan(hashes: list[int], queries: list[int]) -> list[tuple[int, int]]:
    """(query index, id) of every equal hash, sorted: what the index must answer."""
    return sorted((q, i) for q, h in enumerate(queries) for i, x in enumerate(hashes) if x == h)


@pytest.mark.parametrize("recent_min", [0, 3, 1 << 14], ids=["merge-often", "both-levels", "default"])
@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 12), max_size=20), min_size=1, max_size=12),
    queries=st.lists(st.integers(0, 14), max_size=15),
)
def test_the_index_finds_every_equal_hash_in_id_order(
    recent_min: int, batches: list[list[int]], queries: list[int]
) -> None:
    with mock.patch.object(_hashindex, "_RECENT_MIN", recent_min):
        first = np.array(batches[0], np.uint64)
        index = HashIndex(first, np.arange(len(first)))
        stored = list(batches[0])
        for batch in batches[1:]:
            index.insert(np.array(batch, np.uint64), np.arange(len(stored), len(stored) + len(batch)))
            stored.extend(batch)
            query, ids = index.find(np.array(queries, np.uint64))
            assert list(zip(query.tolist(), ids.tolist(), strict=True)) == scan(stored, queries)
        assert len(index) == len(stored)


def test_ids_are_32_bit_while_they_fit() -> None:
    index = HashIndex(np.array([3, 1], np.uint64), np.array([0, 1]))
    assert index.ids.dtype == np.int32
    index.insert(np.array([2], np.uint64), np.array([1 << 33]))
    _, ids = index.find(np.array([2, 3], np.uint64))
    assert ids.tolist() == [1 << 33, 0] and ids.dtype == np.int64


def test_an_extended_array_never_writes_into_a_buffer_it_did_not_make() -> None:
    whole = np.arange(10)
    buffers: dict[str, np.ndarray] = {}
    grown = extended(whole[:5], np.array([-1, -2]), buffers, "a")
    assert grown.tolist() == [0, 1, 2, 3, 4, -1, -2]
    assert whole.tolist() == list(range(10)), "the caller's array is untouched"
    again = extended(grown, np.array([-3]), buffers, "a")
    assert again.base is grown.base, "the second append reuses the buffer"
    assert grown.tolist() == [0, 1, 2, 3, 4, -1, -2]
