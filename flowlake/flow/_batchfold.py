"""``fold_batches``: bytewax's ``stateful_flat_map`` with every item a key has queued handed to the
mapper at once, so that it can fold them together (see :func:`flowlake.flow.batch.coalesce`).

Its steps have the ids ``stateful_flat_map``'s have (``<id>.stateful.stateful_batch``) and its
snapshots are the same deep copy of the state, so a recovery store written by an operator built on
``stateful_flat_map`` resumes under it.

>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSink, TestingSource, run_main
>>> flow = Dataflow("fold_batches_doc")
>>> up = op.key_on("key", op.input("in", flow, TestingSource([1, 2, 3], batch_size=3)), lambda _: "k")
>>> def total(state: int | None, values: list[int]) -> tuple[int, list[int]]:
...     state = (state or 0) + sum(values)
...     return state, [state]
>>> out: list[tuple[str, int]] = []
>>> op.output("out", fold_batches("sum", up, total), TestingSink(out))
>>> run_main(flow)
>>> out
[('k', 6)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")

Folder = Callable[[S | None, list[V]], tuple[S, Iterable[W]]]
"""``(state or None, the key's queued values) -> (new state, values to emit)``."""


class _FoldLogic(StatefulBatchLogic[V, W, S], Generic[V, W, S]):
    def __init__(self, folder: Folder[S, V, W], state: S | None) -> None:
        self.folder, self.state = folder, state

    def on_batch(self, values: list[V]) -> tuple[Iterable[W], bool]:
        self.state, out = self.folder(self.state, values)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> S:
        assert self.state is not None
        return copy.deepcopy(self.state)


@operator
def fold_batches(step_id: str, up: KeyedStream[V], folder: Folder[S, V, W]) -> KeyedStream[W]:
    """Fold each key's queued values with ``folder`` (a whole activation's at once)."""
    return _stateful("stateful", up, folder)


@operator
def _stateful(step_id: str, up: KeyedStream[V], folder: Folder[S, V, W]) -> KeyedStream[W]:
    def build(resume: S | None) -> _FoldLogic[V, W, S]:
        return _FoldLogic(folder, resume)

    return op.stateful_batch("stateful_batch", up, build)
