"""The aggregate's key index against a dict: batches of new keys, repeats, removals, real hash
collisions, both levels (the recent one merged into the main one as it grows) and a rebuild."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from flowlake.flow._keyindex import IntKeys, KeyIndex, KeyStore, int_columns


@pytest.mark.parametrize("kind", ["ints", "exact_ints", "mixed", "int_tuples"])
def test_key_index_matches_a_dict(kind: str) -> None:
    rng = random.Random(11)
    stored: KeyStore = IntKeys() if kind in ("ints", "exact_ints") else []
    free: list[int] = []
    index = KeyIndex(stored)
    model: dict[Any, int] = {}
    nulls = False

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
        if kind == "int_tuples":  # (-1, k) and (-2, k) hash alike; NULLs in the last rounds
            first = rng.choice([-1, -2, rng.randrange(0, 200), None if nulls else 7])
            return (first, rng.randrange(0, 200))
        return rng.choice(
            [rng.randrange(-3, 20_000), f"k{rng.randrange(20_000)}", None, (1, rng.randrange(9))]
        )

    for round_ in range(60):
        nulls = round_ >= 50
        keys = [draw() for _ in range(rng.choice([10, 500, 3000]))]
        exact = kind == "exact_ints"
        hashes = np.asarray(keys, np.int64) if exact else None
        columns = int_columns(keys)  # rows to check hits in numpy, while no key had a NULL
        ids = index.assign(keys, create, hashes, exact=exact, columns=columns)
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
        if kind == "int_tuples":
            checked = index.lookup(probe, columns=int_columns(probe))
            assert checked.tolist() == got.tolist()
        assert len(index) == len(model)
    assert len(index.hashes) > 4096 or kind == "int_tuples"  # the recent level merged into the main one
    live = np.asarray(sorted(model.values()), np.int64)
    rebuilt = KeyIndex.build(stored, live)
    assert dict(rebuilt.items()) == model == dict(index.items())
    if kind == "int_tuples":
        probe = list(model)
        assert rebuilt.lookup(probe, columns=int_columns(probe)).tolist() == list(model.values())


def test_int_tuple_keys_are_checked_in_numpy_until_one_comes_without_columns() -> None:
    stored: list[Any] = []
    index = KeyIndex(stored)

    def create(new: list[Any]) -> np.ndarray:
        stored.extend(new)
        return np.arange(len(stored) - len(new), len(stored))

    keys = [(-1, 5), (-2, 5), (3, 4)]  # the first two share a Python hash
    index.assign(keys, create, columns=int_columns(keys))
    assert shadowed(index) and index.lookup(keys, columns=int_columns(keys)).tolist() == [0, 1, 2]
    index.assign([(None, 1)], create)
    assert not shadowed(index) and index.lookup(keys, columns=int_columns(keys)).tolist() == [0, 1, 2]


def shadowed(index: KeyIndex) -> bool:
    """Whether ``index`` checks int tuple keys in numpy now (a call: it changes as keys come)."""
    return index.shadow is not None
