"""Columnar per-(group, value) counts against a dict-of-Counters reference, under any interleaving."""

from __future__ import annotations

import pickle
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.flow import _valuecounts
from flowlake.flow._valuecounts import ValueCounts, row_codes

GROUPS = 4
FUNCS = ["min", "max", "count_distinct", "first", "last"]


class Reference:
    """What the counts must equal: a Counter per group, a batch netted per (group, value)."""

    def __init__(self, func: str) -> None:
        self.func = func
        self.groups: dict[int, Counter[Any]] = {}
        self.dropped = 0

    def apply(self, rows: list[tuple[int, Any, int]]) -> None:
        net: Counter[tuple[int, Any]] = Counter()
        for g, v, w in rows:
            net[(g, v)] += w
        for (g, v), delta in net.items():
            counter = self.groups.setdefault(g, Counter())
            total = counter[v] + delta
            if total < 0:
                self.dropped += -total
                total = 0
            if total:
                counter[v] = total
            else:
                del counter[v]

    def clear(self, gids: list[int]) -> None:
        for g in gids:
            self.groups.pop(g, None)

    def result(self, g: int) -> Any:
        live = [v for v, c in self.groups.get(g, Counter()).items() if c > 0]
        if self.func == "count_distinct":
            return len(live)
        if not live:
            return None
        if self.func == "min":
            return min(live)
        if self.func == "max":
            return max(live)
        return min(live)[1] if self.func == "first" else max(live)[1]

    def dicts(self, g: int) -> dict[Any, int] | None:
        live = {v: c for v, c in self.groups.get(g, Counter()).items() if c > 0}
        return live or None


def values_for(kind: str) -> st.SearchStrategy[Any]:
    if kind == "int":  # ties are likely; large magnitudes too (keys are int64)
        return st.one_of(st.integers(-3, 3), st.sampled_from([-(2**63), 2**63 - 1, 2**40]))
    if kind == "str":
        return st.sampled_from(["", "a", "b", "ab", "é", "zz"])
    return st.tuples(st.integers(0, 3), st.sampled_from(["x", "y", "z"]))  # first/last: (order, value)


def encode(counts: ValueCounts, values: list[Any]) -> np.ndarray:
    if counts.ordered:
        return np.asarray(values, np.int64)
    assert counts.codes is not None
    return counts.codes.encode(values)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), st.lists(st.tuples(st.integers(0, GROUPS - 1), st.integers(0, 99),
                                                       st.sampled_from([1, 1, 1, -1, -1, 2, -2])),
                                             max_size=25)),
        st.tuples(st.just("clear"), st.lists(st.integers(0, GROUPS - 1), max_size=3, unique=True)),
        st.tuples(st.just("pickle"), st.just([])),
        st.tuples(st.just("reload"), st.just([])),
    ),
    max_size=30,
)  # fmt: skip


@pytest.mark.parametrize("weak_hash", [False, True])
@settings(max_examples=300, deadline=None)
@given(
    func=st.sampled_from(FUNCS),
    kind=st.sampled_from(["int", "str"]),
    history=steps,
    data=st.data(),
    rebuild=st.sampled_from([2, 10**9]),
    recent=st.sampled_from([0, 3, 10**9]),
)
def test_counts_match_the_reference(
    func: str,
    kind: str,
    history: list[tuple[str, list[Any]]],
    data: st.DataObject,
    rebuild: int,
    recent: int,
    weak_hash: bool,
) -> None:
    """Every result, every group's values and the dropped retractions equal the reference's, also
    with a hash so weak that most pairs of a group collide (the overflow and the exact batch
    grouping), with tombstones rebuilt away at once or never, new pairs merged into the main index
    level at once, soon or never, and across pickling and reloading from dicts."""
    if func in ("first", "last"):
        kind = "tuple"
    ordered = kind == "int"
    palette = data.draw(st.lists(values_for(kind), min_size=1, max_size=8))
    counts = ValueCounts(func, ordered=ordered)
    counts.grow(GROUPS)
    reference = Reference(func)
    dropped = 0
    with pytest.MonkeyPatch.context() as patch:
        if weak_hash:
            patch.setattr(_valuecounts, "_mix32", lambda keys: keys.astype(np.int64) & 1)
        patch.setattr(ValueCounts, "REBUILD_MIN", rebuild)
        patch.setattr(ValueCounts, "RECENT_MAX", recent)
        for step, arg in history:
            if step == "batch":
                rows = [(g, palette[i % len(palette)], w) for g, i, w in arg]
                reference.apply(rows)
                if rows:
                    gids = np.asarray([r[0] for r in rows], np.int64)
                    keys = encode(counts, [r[1] for r in rows])
                    dropped += counts.apply(gids, keys, np.asarray([r[2] for r in rows], np.int64))
            elif step == "clear":
                reference.clear(arg)
                counts.clear(np.asarray(arg, np.int64))
            elif step == "pickle":
                counts = pickle.loads(pickle.dumps(counts))  # noqa: S301 - the test's own bytes
            else:  # a resume from chunk records: the per-group dicts
                every = np.arange(GROUPS)
                fresh = ValueCounts(func, ordered=ordered)
                fresh.grow(GROUPS)
                fresh.load(every.tolist(), counts.dicts(every))
                counts = fresh
            every = np.arange(GROUPS)
            got, valid = counts.results(every)
            got = got.tolist() if isinstance(got, np.ndarray) else got
            want = [reference.result(g) for g in range(GROUPS)]
            if func == "count_distinct":
                assert got == want
            else:
                assert [v if ok else None for v, ok in zip(got, valid.tolist(), strict=True)] == want
            assert counts.dicts(every) == [reference.dicts(g) for g in range(GROUPS)]
            assert dropped == reference.dropped
    if counts.codes is not None:  # a code is held exactly while some group holds its value
        live = {v for c in reference.groups.values() for v, n in c.items() if n > 0}
        held = {v for i, v in enumerate(counts.codes.values) if i not in set(counts.codes.free)}
        assert held == live


def test_row_codes_group_equal_keys_and_nulls() -> None:
    import pyarrow as pa

    table = pa.table({"a": [1, None, 1, None, 2], "b": ["x", "y", "x", "y", None]})
    codes, first = row_codes(table, ["a", "b"])
    assert codes.tolist() == [0, 1, 0, 1, 2] and first.tolist() == [0, 1, 4]


def test_too_many_groups_is_a_clear_error() -> None:
    from flowlake.errors import InvalidArgumentError

    counts = ValueCounts("max", ordered=True)
    with pytest.raises(InvalidArgumentError, match="partitions"):
        counts.grow(_valuecounts.MAX_GROUPS + 1)


def test_a_pair_whose_hash_another_pair_holds_stays_findable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values 2, 4, 6, 8 of one group share a hash: each later one goes to the overflow, and
    retracting the maximum twice finds the next one each time."""
    monkeypatch.setattr(_valuecounts, "_mix32", lambda keys: keys.astype(np.int64) & 1)
    monkeypatch.setattr(ValueCounts, "RECENT_MAX", 0)
    counts = ValueCounts("max", ordered=True)
    counts.grow(1)
    for value in (2, 4, 6, 8):
        counts.apply(np.array([0]), np.array([value]), np.array([1]))
    assert len(counts.overflow) == 3
    for gone, left in ((8, 6), (6, 4)):
        counts.apply(np.array([0]), np.array([gone]), np.array([-1]))
        assert counts.results(np.array([0]))[0].tolist() == [left]
    assert counts.dicts(np.array([0])) == [{2: 1, 4: 1}]
