"""The bounded queue between a CDC source's reader thread and the thread that polls the source.

The reader (:class:`flowlake.cdc.mysql_binlog.BinlogReader`, :class:`flowlake.cdc.postgres_stream.
WalReader`) puts whole transactions, positions and watermarks in server order, and last the exception
that stopped it; the source drains them in that order.

>>> handoff = Handoff(limit=2)
>>> handoff.put("tx1", stopping=lambda: False)
>>> handoff.drain(0.0)
['tx1']
>>> handoff.drain(0.01)
[]
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Final

MAX_QUEUED: Final = 20_000
"""Items (by weight, see :func:`weight_of`) a reader thread may queue ahead of the ingester."""

DRAIN_MAX: Final = 5000
"""Items (by weight) one :meth:`Handoff.drain` takes."""

WAKE_BATCH: Final = 256
"""Items (by weight) a reader queues without waking the poller (see :meth:`Handoff.put`)."""


class Handoff:
    """A deque the reader appends to and the poller pops from, with an event for waiting on it."""

    def __init__(self, limit: int = MAX_QUEUED) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.ready = threading.Event()
        self.limit = limit
        # the weight put and the weight taken (see weight_of): each written by one thread only
        self._put_weight = 0
        self._taken_weight = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def weight(self) -> int:
        """The weight queued (see :func:`weight_of`)."""
        return self._put_weight - self._taken_weight

    def put(
        self,
        item: Any,
        stopping: Callable[[], bool],
        while_full: Callable[[], None] | None = None,
        *,
        wake: bool = True,
    ) -> None:
        """Append ``item``; while the queue is full (the ingester is behind) wait, calling
        ``while_full`` every few milliseconds, unless the reader is ``stopping``.

        ``wake=False`` leaves a waiting poller asleep until items of :data:`WAKE_BATCH` weight are
        queued or the reader calls :meth:`wake` (before it blocks on its connection): one wake-up,
        and one switch between the threads, per batch of small transactions instead of per
        transaction. An item that holds several transactions weighs as many (:func:`weight_of`),
        for the limit, the wake-ups and :meth:`drain`.
        """
        while self.weight >= self.limit and not stopping():
            self.ready.set()  # (a reader holding back wake-ups must not wait for a sleeping poller)
            if while_full is not None:
                while_full()
            time.sleep(0.005)
        self.items.append(item)
        self._put_weight += weight_of(item)
        if not self.ready.is_set() and (wake or self.weight >= WAKE_BATCH):
            self.ready.set()  # (wait() clears it before it looks at the items)

    def wake(self) -> None:
        """Wake a waiting poller if anything is queued."""
        if self.items and not self.ready.is_set():
            self.ready.set()

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for an item unless one is queued."""
        if not self.items and timeout > 0:
            self.ready.clear()
            if not self.items:
                self.ready.wait(timeout)

    def drain(self, timeout: float) -> list[Any]:
        """Take what is queued (items of at most :data:`DRAIN_MAX` weight, and at least one item),
        waiting up to ``timeout`` for some."""
        self.wait(timeout)
        items: list[Any] = []
        taken = 0
        with contextlib.suppress(IndexError):
            while taken < DRAIN_MAX:
                item = self.items.popleft()
                items.append(item)
                taken += weight_of(item)
        self._taken_weight += taken
        return items

    def pop_first(self) -> Any:
        """Take the first item queued (``IndexError`` if none)."""
        item = self.items.popleft()
        self._taken_weight += weight_of(item)
        return item


def weight_of(item: Any) -> int:
    """How many transactions an item holds: its ``handoff_weight``, else 1.

    >>> weight_of("tx"), weight_of(type("Run", (), {"handoff_weight": 5})())
    (1, 5)
    """
    return getattr(item, "handoff_weight", 1)


class ReaderThread(threading.Thread):
    """A source's reader thread: :meth:`_read` puts what it reads on the hand-off in server order; the
    exception that ends it is put there last (unless the source is stopping it), for the poller to
    raise; :meth:`_close` then releases the connection.
    """

    def __init__(self, name: str, handoff: Handoff) -> None:
        super().__init__(name=name, daemon=True)
        self.handoff = handoff
        self._stopping = threading.Event()

    def _put(self, item: Any, *, wake: bool = True) -> None:
        """Hand ``item`` over; waits while the ingester is behind (``wake``: see :meth:`Handoff.put`)."""
        self.handoff.put(item, self._stopping.is_set, wake=wake)

    def run(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # reported to the polling thread
            if not self._stopping.is_set():
                self._put(exc)
        finally:
            self._close()

    def _read(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        """Release what :meth:`_read` opened (called after it ends, however it ends)."""
