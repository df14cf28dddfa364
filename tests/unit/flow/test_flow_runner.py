"""The runner exempts the heap it starts with from the cyclic collector, and still collects the rest."""

from __future__ import annotations

import gc
import weakref

from flowlake.flow.runner import freeze_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_objects_alive_at_start_are_frozen_and_later_cycles_are_still_collected() -> None:
    alive = _Node()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is alive for o in gc.get_objects())  # frozen objects are not scanned
        later = _Node()
        ref = weakref.ref(later)
        del later
        gc.collect()
        assert ref() is None  # a cycle made after the freeze is collected as before
    finally:
        gc.unfreeze()
