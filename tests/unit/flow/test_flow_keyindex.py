"""The aggregate's key index against a dict: batches of new keys, repeats, removals, real hash
collisions, both levels (the recent one merged into the main one as it grows) and a rebuild."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from flowlake.flow._keyindex import IntKeys, KeyIndex, KeyStore


@pytest.mark.parametrize("kind", ["ints", "exact_ints", "mixed"])
def test_key_index_matches_a_dict(kind: str) -> None:
    rng = random.Random(11)
    stored: KeyStore = IntKeys() if kind != "mixed" else []
    free: list[int] = []
    index = KeyIndex(stored)
    model: dict[Any, int] = {}

    def create(new: list[Any]) -> np.ndarray:
        ids = []
        for key in new:
            if free:
                gid = free.pop()
                stored[gid] = key
            else:
                gid = len(stored)
                stored.extend([key])
            ids.append(gid)
        return np.asarray(ids, np.int64)

    def draw() -> Any:
        if kind == "exact_ints":
            return rng.randrange(0, 40_000)
        if kind == "ints":  # -1 and -2 hash alike, and 2**61 - 1 + k like k
            return rng.choice([rng.randrange(-3, 40_000), 2**61 - 1 + rng.randrange(0, 5)])
        return rng.choice(
            [rng.randrange(-3, 20_000), f"k{rng.randrange(20_000)}", None, (1, rng.randrange(9))]
        )

    for _ in range(60):
        keys = [draw() for _ in range(rng.choice([10, 500, 3000]))]
        exact = kind == "exact_ints"
        hashes = np.asarray(keys, np.int64) if exact else None
        ids = index.assign(keys, create, hashes, exact=exact)
        for key, gid in zip(keys, ids.tolist(), strict=True):
            assert model.setdefault(key, gid) == gid
        for key in rng.sample(sorted(model, key=repr), min(len(model), rng.randrange(0, 800))):
            gid = model.pop(key)
            index.discard(key, gid)
            stored[gid] = None
            free.append(gid)
        probe = [draw() for _ in range(300)] + list(model)[:300]
        got = index.lookup(probe)
        assert got.tolist() == [model.get(k, -1) for k in probe]
        assert len(index) == len(model)
    assert len(index.hashes) > 4096  # the recent level was merged into the main one
    live = np.asarray(sorted(model.values()), np.int64)
    rebuilt = KeyIndex.build(stored, live)
    assert dict(rebuilt.items()) == model == dict(index.items())
