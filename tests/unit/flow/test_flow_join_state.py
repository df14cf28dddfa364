"""The vectorized JoinState against a brute-force model of the regular join, change by change.

The model keeps each side as a multiset of rows and applies every change in order (a retraction of a
row that is not live is dropped and counted); the join's result is recomputed from the two multisets.
The state under test gets the same changes in batches, from both sides interleaved, with snapshots
(pickle round trips) between batches; the sum of its emitted changes must equal the model's result
after every batch, never retract a row it did not emit, and drop the same retractions.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowlake.changelog import RowKind
from flowlake.errors import InvalidArgumentError
from flowlake.flow import _hashindex, _joinside
from flowlake.flow._joinside import JoinSide
from flowlake.flow._relational import JoinHow, JoinState, PairCondition, _Changed, _Net, _Pairs
from flowlake.flow._snapshot import thaw
from flowlake.flow._stateform import to_state
from flowlake.flow.batch import from_rows, rows

LEFT = pa.schema(
    [("oid", pa.int64()), ("k", pa.int32()), ("amount", pa.decimal128(10, 2)), ("v", pa.float64())]
)
RIGHT = pa.schema([("k", pa.int64()), ("city", pa.string())])  # the key in a wider type than the left's
INS, UB, UA, D = RowKind.INSERT, RowKind.UPDATE_BEFORE, RowKind.UPDATE_AFTER, RowKind.DELETE
ADDS = (INS, UA)

Row = tuple[Any, ...]
Batch = tuple[Literal["left", "right"], list[tuple[RowKind, Row]], bool]
"""A side, its changes, and whether the state is snapshotted (pickled and resumed) after the batch."""

NAN = float("nan")
KEYS = st.one_of(st.none(), st.integers(0, 3))
LEFT_POOL = [
    (1, 1, Decimal("1.50"), 0.5), (1, 1, Decimal("-2.25"), 0.5), (2, 1, Decimal("1.50"), NAN),
    (3, 2, None, None), (4, None, Decimal("1.50"), 0.5), (2, 3, Decimal("-2.25"), NAN),
]  # fmt: skip
RIGHT_POOL = [(1, "Oslo"), (1, "Lima"), (2, "Oslo"), (None, "Oslo"), (3, None)]
LEFT_ROWS = st.one_of(
    st.sampled_from(LEFT_POOL),  # a few rows, so that identical rows are common
    st.tuples(st.integers(0, 4), KEYS, st.sampled_from([Decimal("1.50"), Decimal("-2.25"), None]),
              st.sampled_from([0.5, NAN, None])),
)  # fmt: skip
RIGHT_ROWS = st.one_of(st.sampled_from(RIGHT_POOL), st.tuples(KEYS, st.sampled_from(["Oslo", "Lima", None])))
KINDS = st.sampled_from([INS, UB, UA, D, INS, UA])  # more adds than retractions: rows stay live


def batches() -> st.SearchStrategy[list[Batch]]:
    """Batches from both sides, drawn from few rows so identical rows, repeats and stray retractions
    (of rows not live) are common; an update is a ``-U`` of a live row followed by a ``+U``."""
    left = st.tuples(st.just("left"), st.lists(st.tuples(KINDS, LEFT_ROWS), max_size=8), st.booleans())
    right = st.tuples(st.just("right"), st.lists(st.tuples(KINDS, RIGHT_ROWS), max_size=5), st.booleans())
    return st.lists(st.one_of(left, right), max_size=12)


def _city_parity(table: pa.Table) -> np.ndarray:
    """The pair condition under test: ``(city = 'Oslo') = (oid % 2 = 0)`` in SQL (NULL city: false)."""
    oslo = pc.equal(table["city"], "Oslo")
    even = pc.equal(pc.bit_wise_and(table["oid"], 1), 0)
    return np.asarray(pc.fill_null(pc.equal(oslo, even), False).to_numpy(zero_copy_only=False), dtype=bool)


CITY_PARITY = PairCondition(("oid", "city"), _city_parity)


def _model_condition(left: Row, right: Row) -> bool:
    return right[1] is not None and (right[1] == "Oslo") == (left[0] % 2 == 0)


class Model:
    """Both sides as multisets, every change applied in order."""

    def __init__(self) -> None:
        self.sides: dict[str, Counter[Row]] = {"left": Counter(), "right": Counter()}
        self.dropped = 0

    def apply(self, side: str, changes: list[tuple[RowKind, Row]]) -> None:
        rows_ = self.sides[side]
        for kind, row in changes:
            if side == "right" and row[0] is None:
                continue  # a right row with a NULL key never matches: ignored
            if kind in ADDS:
                rows_[row] += 1
            elif rows_[row] > 0:
                rows_[row] -= 1
            else:
                self.dropped += 1

    def result(self, how: str, condition: bool = False) -> Counter[Row]:
        out: Counter[Row] = Counter()
        for left, n in self.sides["left"].items():
            matched = False
            for right, m in self.sides["right"].items():
                passes = not condition or _model_condition(left, right)
                if n and m and left[1] is not None and left[1] == right[0] and passes:
                    out[_out_key((*left, right[1]))] += n * m
                    matched = True
            if n and not matched and how == "left":
                out[_out_key((*left, None))] += n
        return +out


def _out_key(row: Row) -> Row:
    """A row as a Counter key (NaN made comparable)."""
    return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)


def _table(side: str, changes: list[tuple[RowKind, Row]]) -> pa.Table:
    schema = LEFT if side == "left" else RIGHT
    return from_rows([(k, dict(zip(schema.names, r, strict=True))) for k, r in changes], schema)


def _resumed(state: JoinState) -> JoinState:
    thawed = thaw(pickle.loads(pickle.dumps(copy.deepcopy(state))))  # noqa: S301 - our own bytes
    assert isinstance(thawed, JoinState)
    return thawed


def run_history(
    history: list[Batch],
    how: JoinHow,
    make: Callable[[], JoinState] = JoinState,
    condition: PairCondition | None = None,
) -> None:
    """Feed ``history`` to the state and the model; assert they agree after every batch."""
    state, model = make(), Model()
    view: Counter[Row] = Counter()
    for side, changes, snapshot in history:
        out = state.apply(
            side, _table(side, changes), on=["k"], how=how, left_schema=LEFT, right_schema=RIGHT,
            condition=condition,
        )  # fmt: skip
        assert out.schema.names == ["oid", "k", "amount", "v", "city", "_kind"]
        for change in rows(out):
            view[_out_key(tuple(change.row.values()))] += -1 if change.kind in (UB, D) else 1
        model.apply(side, changes)
        assert all(n >= 0 for n in view.values()), "the join retracted a row it never emitted"
        assert +view == model.result(how, condition is not None)
        assert state.dropped_retractions == model.dropped
        assert len(state) == sum(np.count_nonzero(s.count) for s in state.sides.values())
        if snapshot:
            state = _resumed(state)


@pytest.mark.parametrize("condition", [None, CITY_PARITY], ids=["equi", "condition"])
@pytest.mark.parametrize("how", ["inner", "left"])
@settings(max_examples=150, deadline=None)
@given(history=batches())
def test_join_state_matches_the_model(
    how: JoinHow, condition: PairCondition | None, history: list[Batch]
) -> None:
    run_history(history, how, condition=condition)


@pytest.mark.parametrize("condition", [None, CITY_PARITY], ids=["equi", "condition"])
@settings(max_examples=100, deadline=None)
@given(history=batches())
def test_join_state_matches_the_model_when_compacting_and_merging_index_levels_at_every_batch(
    condition: PairCondition | None, history: list[Batch]
) -> None:
    with mock.patch.object(_joinside, "_COMPACT_MIN", 0), mock.patch.object(_hashindex, "_RECENT_MIN", 2):
        run_history(history, "left", condition=condition)


class _KeepsNoCounts(JoinState):
    """Broken on purpose: an identical row's second insert does not raise its count."""

    @staticmethod
    def _store(
        mine: JoinSide,
        body: pa.Table,
        net: _Net,
        key_hash: np.ndarray,
        keyed: np.ndarray,
        row_hash: np.ndarray | None = None,
    ) -> None:
        JoinState._store(mine, body, net, key_hash, keyed, row_hash)
        mine.count[mine.count > 1] = 1


class _NeverPads(JoinState):
    """Broken on purpose: a key's right rows always look absent, so null padding is never retracted."""

    def _key_totals(self, state: JoinSide, keys: pa.Table, hashes: np.ndarray) -> np.ndarray:
        return np.zeros(keys.num_rows, np.int64)


class _PadsPerKey(JoinState):
    """Broken on purpose: under a condition, a left row's padding follows whether its key has right
    rows (as without a condition), not whether a right row passes the condition with it."""

    def _partners(self, left: JoinSide, lefts: np.ndarray, pairs: _Pairs) -> np.ndarray:
        return super()._partners(left, lefts, _Pairs(None, left.schema.names))


class _ConditionFromLeftOnly(JoinState):
    """Broken on purpose: a right row's change is joined without checking the condition."""

    def _from_right(
        self,
        out_schema: pa.Schema,
        body: pa.Table,
        change: _Changed,
        left: JoinSide,
        before: np.ndarray | None,
        pairs: _Pairs,
        how: JoinHow,
    ) -> pa.Table:
        return super()._from_right(out_schema, body, change, left, before, _Pairs(None, ["oid"]), how)


@pytest.mark.parametrize(
    ("broken", "how", "condition"),
    [
        (_KeepsNoCounts, "inner", None),
        (_NeverPads, "left", None),
        (_PadsPerKey, "left", CITY_PARITY),
        (_ConditionFromLeftOnly, "inner", CITY_PARITY),
    ],
)
def test_the_model_catches_a_broken_state(
    broken: type[JoinState], how: JoinHow, condition: PairCondition | None
) -> None:
    @settings(max_examples=300, deadline=None, database=None, report_multiple_bugs=False)
    @given(history=batches())
    def check(history: list[Batch]) -> None:
        run_history(history, how, broken, condition)

    with pytest.raises(AssertionError):
        check()


def test_a_batch_nets_changes_per_identical_row_and_keeps_the_causes_kinds() -> None:
    state = JoinState()
    kw: dict[str, Any] = {"on": ["k"], "how": "left", "left_schema": LEFT, "right_schema": RIGHT}
    state.apply("right", _table("right", [(INS, (1, "Oslo"))]), **kw)
    a, b = (1, 1, Decimal("1.50"), 0.5), (1, 1, Decimal("-2.25"), 0.5)
    out = state.apply("left", _table("left", [(INS, a), (UB, a), (UA, b), (INS, a), (D, a)]), **kw)
    assert [(c.kind, c.row["amount"], c.row["city"]) for c in rows(out)] == [(UA, Decimal("-2.25"), "Oslo")]
    # the key's only right row goes: its match is retracted and the null padding restored, last
    out = state.apply("right", _table("right", [(D, (1, "Oslo"))]), **kw)
    assert [(c.kind, c.row["city"]) for c in rows(out)] == [(D, "Oslo"), (INS, None)]
    out = state.apply("right", _table("right", [(INS, (1, "Lima")), (INS, (1, "Lima"))]), **kw)
    assert [(c.kind, c.row["city"]) for c in rows(out)] == [(D, None), (INS, "Lima"), (INS, "Lima")]
    assert state.dropped_retractions == 0
    state.apply("left", _table("left", [(D, (9, 1, Decimal("1.50"), None))]), **kw)
    assert state.dropped_retractions == 1


def test_a_state_pickled_by_the_per_row_join_resumes() -> None:
    """The former JoinState pickled ``{"left": {key: {row: n}}, "right": ..., "dropped_retractions"}``,
    rows as tuples in state form (keys as Python values); such a state must resume where it was."""
    model = Model()
    left_rows = [
        (1, 1, Decimal("1.50"), 0.5),
        (2, 1, Decimal("-2.25"), None),
        (3, None, Decimal("1.50"), 0.5),
    ]
    model.apply("left", [(INS, r) for r in [*left_rows, left_rows[0]]])
    model.apply("right", [(INS, (1, "Oslo")), (INS, (2, "Lima"))])
    old: dict[str, Any] = {"dropped_retractions": 2}
    for side, schema in (("left", LEFT), ("right", RIGHT)):
        held: dict[Any, dict[Row, int]] = {}
        for row, n in model.sides[side].items():
            table = pa.Table.from_pylist([dict(zip(schema.names, row, strict=True))], schema)
            form = tuple(
                table.column(c).to_pylist()[0] if c == "k" else to_state(table.column(c))[0]
                for c in schema.names
            )
            held.setdefault((row[schema.names.index("k")],), {})[form] = n
        old[side] = held
    legacy = JoinState.__new__(JoinState)
    legacy.__dict__ = old  # pickles exactly as the per-row JoinState did (no __getstate__)
    state = pickle.loads(pickle.dumps(legacy))  # noqa: S301 - our own bytes
    assert isinstance(state, JoinState)
    kw: dict[str, Any] = {"on": ["k"], "how": "left", "left_schema": LEFT, "right_schema": RIGHT}
    out = state.apply("right", _table("right", [(D, (1, "Oslo")), (INS, (1, "Rome"))]), **kw)
    got = Counter((c.kind, c.row["oid"], c.row["city"]) for c in rows(out))
    assert got == Counter({(D, 1, "Oslo"): 2, (D, 2, "Oslo"): 1, (INS, 1, "Rome"): 2, (INS, 2, "Rome"): 1})
    out = state.apply("left", _table("left", [(D, left_rows[2]), (D, left_rows[0])]), **kw)
    assert [(c.kind, c.row["oid"], c.row["city"]) for c in rows(out)] == [(D, 3, None), (D, 1, "Rome")]
    assert state.dropped_retractions == 2
    assert len(state) == 4  # two distinct left rows, two right rows


def test_keys_without_a_common_type_are_refused() -> None:
    right = pa.schema([("k", pa.list_(pa.int64())), ("city", pa.string())])
    with pytest.raises(InvalidArgumentError, match="no common"):
        JoinState().apply(
            "left", from_rows([], LEFT), on=["k"], how="inner", left_schema=LEFT, right_schema=right
        )


def test_large_batches_join_many_keys_in_one_pass() -> None:
    n = 50_000
    left = pa.table({
        "oid": np.arange(n, dtype=np.int64), "k": pa.array(np.arange(n) % 5000, pa.int32()),
        "amount": pa.array([Decimal("1.50")] * n, pa.decimal128(10, 2)), "v": np.ones(n),
        "_kind": pa.array(np.zeros(n, np.int8)),
    })  # fmt: skip
    right = pa.table({"k": np.arange(0, 5000, 2, dtype=np.int64), "city": ["c"] * 2500,
                      "_kind": pa.array(np.zeros(2500, np.int8))})  # fmt: skip
    state = JoinState()
    kw: dict[str, Any] = {"on": ["k"], "how": "left", "left_schema": LEFT, "right_schema": RIGHT}
    out = state.apply("left", left, **kw)
    assert out.num_rows == n and out.column("city").null_count == n
    out = state.apply("right", right, **kw)
    assert out.num_rows == n  # half the orders: padding retracted, joined row added
    assert Counter(out.column("_kind").to_pylist()) == {D: n // 2, INS: n // 2}
    deletes = left.slice(0, n // 2).set_column(4, "_kind", pa.array(np.full(n // 2, D, np.int8)))
    out = state.apply("left", deletes, **kw)
    assert out.num_rows == n // 2 and len(state) == n // 2 + 2500
