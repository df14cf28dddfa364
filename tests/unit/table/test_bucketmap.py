"""The scalable hash index: routing, splits and merges of the bucket map."""

from __future__ import annotations

import numpy as np
import pytest

from flowlake.errors import InvalidArgumentError
from flowlake.table.bucketmap import BucketMap

HASHES = np.random.default_rng(3).integers(0, 2**64 - 1, 20_000, dtype=np.uint64, endpoint=True)


def test_initial_map_is_hash_mod_roots() -> None:
    m = BucketMap.initial(5)
    assert (m.route(HASHES) == (HASHES % np.uint64(5)).astype(np.int32)).all()


def test_split_partitions_exactly_the_parent_and_merge_restores_it() -> None:
    m = BucketMap.initial(3)
    before = m.route(HASHES)
    split, low, high = m.split(1)
    after = split.route(HASHES)
    assert split.version == m.version + 1
    assert ((before == 1) == np.isin(after, [low.id, high.id])).all()  # only bucket 1's keys moved
    assert (after[before != 1] == before[before != 1]).all()
    share = (after == low.id).sum() / (before == 1).sum()
    assert 0.45 < share < 0.55  # one more hash bit halves the bucket
    deeper, a, b = split.split(high.id)
    routed = deeper.route(HASHES)
    assert set(np.unique(routed[after == high.id])) == {a.id, b.id}
    merged, parent = deeper.merge(a.id)
    assert parent.depth == high.depth and parent.sub == high.sub
    assert ((merged.route(HASHES) == parent.id) == (after == high.id)).all()
    assert BucketMap.from_json(merged.to_json(), 3) == merged


def test_merge_needs_a_leaf_sibling() -> None:
    m, low, high = BucketMap.initial(2).split(0)
    m2, _, _ = m.split(low.id)
    with pytest.raises(InvalidArgumentError, match="no leaf sibling"):
        m2.merge(high.id)  # high's sibling (low) was split: it is not a leaf any more
    with pytest.raises(InvalidArgumentError, match="not in the bucket map"):
        m2.bucket(999)
    assert BucketMap.initial(2).sibling(1) is None  # roots have no siblings


def test_fences_keep_routing_move_the_version_and_expire() -> None:
    m, low, high = BucketMap.initial(2).split(0)
    fenced = m.fence([low.id], until_ms=1_000)
    assert fenced.version == m.version + 1 and (fenced.route(HASHES) == m.route(HASHES)).all()
    assert fenced.fenced([low.id, high.id], now_ms=999) == [(low.id, 1_000)]
    assert fenced.fenced([high.id], now_ms=999) == [] and fenced.fenced([low.id], now_ms=1_000) == []
    assert not fenced.expired_fences(999) and fenced.expired_fences(1_000)
    assert BucketMap.from_json(fenced.to_json(), 2) == fenced
    assert fenced.unfenced().fences == () and fenced.unfenced().version == fenced.version + 1
    split, _, _ = fenced.split(low.id)  # a split lands its fenced bucket: the fence goes with it
    assert split.fences == () and not split.is_leaf(low.id) and split.is_leaf(high.id)
    with pytest.raises(InvalidArgumentError, match="not in the bucket map"):
        m.fence([0], until_ms=1)  # bucket 0 was split: it is no longer a leaf
