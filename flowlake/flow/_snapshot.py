"""Cheap bytewax snapshots of large operator states.

At every epoch bytewax snapshots each touched stateful key with ``copy.deepcopy(state)`` and pickles
the copy for the recovery store. For a state of a few hundred thousand Python rows (a join side, a
dedup table) the object-by-object deep copy costs more than the epoch itself, and it grows with the
state. States that mix in :class:`PickledSnapshot` answer ``deepcopy`` with :class:`Frozen`: their
pickle, taken in C in one pass (and immutable, which is all a snapshot needs). Operators call
:func:`thaw` on the state they are given, because after a resume bytewax hands back that
:class:`Frozen` value.
"""

from __future__ import annotations

import pickle
from typing import Any, TypeVar

T = TypeVar("T")


class Frozen:
    """A state's pickle, standing in for it in bytewax's snapshots."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __getstate__(self) -> bytes:
        return self.data

    def __setstate__(self, data: bytes) -> None:
        self.data = data

    def thaw(self) -> Any:
        """The state again."""
        return pickle.loads(self.data)  # noqa: S301 - bytes this process or its recovery store wrote


class PickledSnapshot:
    """Mixin: ``copy.deepcopy`` (bytewax's snapshot) returns :class:`Frozen` instead of a deep copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        return Frozen(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


def thaw(state: T | Frozen | None) -> T | None:
    """``state`` itself, or the state a :class:`Frozen` snapshot holds."""
    if isinstance(state, Frozen):
        thawed: T = state.thaw()
        return thawed
    return state
