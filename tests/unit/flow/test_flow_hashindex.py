"""A hash index in two levels finds what a scan of every (hash, id) finds; per-row arrays grow in place."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow import _hashindex
from flowlake.flow._hashindex import HashIndex, extended


def hashed(values: list[int]) -> np.ndarray:
    """Hashes whose high 32 bits repeat (values 0-3 share a prefix, and so on): prefix hits that are
    not hash hits are common, as they must be to be tested."""
    return (np.array(values, np.uint64) // np.uint64(4) << np.uint64(32)) | np.array(values, np.uint64)


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
        first = hashed(batches[0])
        index = HashIndex(first, np.arange(len(first)))
        stored = list(batches[0])
        for batch in batches[1:]:
            index.insert(hashed(batch), np.arange(len(stored), len(stored) + len(batch)))
            stored.extend(batch)
            query, ids = index.find(hashed(queries), hashed(stored))
            assert list(zip(query.tolist(), ids.tolist(), strict=True)) == scan(stored, queries)
        assert len(index) == len(stored)


def test_ids_are_32_bit_while_they_fit() -> None:
    index = HashIndex(np.array([3, 1], np.uint64), np.array([0, 1]))
    assert index.ids.dtype == np.int32 and index.hashes.dtype == np.uint32
    index.insert(np.array([2], np.uint64), np.array([1 << 33]))
    assert index.recent_ids.dtype == np.int64 and index.recent_ids.tolist() == [1 << 33]


def test_an_extended_array_never_writes_into_a_buffer_it_did_not_make() -> None:
    whole = np.arange(10)
    buffers: dict[str, np.ndarray] = {}
    grown = extended(whole[:5], np.array([-1, -2]), buffers, "a")
    assert grown.tolist() == [0, 1, 2, 3, 4, -1, -2]
    assert whole.tolist() == list(range(10)), "the caller's array is untouched"
    again = extended(grown, np.array([-3]), buffers, "a")
    assert again.base is grown.base, "the second append reuses the buffer"
    assert grown.tolist() == [0, 1, 2, 3, 4, -1, -2]
