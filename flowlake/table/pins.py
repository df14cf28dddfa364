"""Pinned versions: a reader keeps one version of a table readable until it releases it.

A pin is a named consumer (``pin:<uuid4 hex>``, see ``Catalog.register_consumer``) registered in the
catalog at the pinned version, so ``clean()`` in any process keeps every file that version needs
(base and log files alike, and every later version too) until the pin is released. Registering
is checked against the table's oldest readable version inside the catalog, under the same lock
that cleaning takes, so a pin either lands before a clean (which then respects it) or is refused
with ``VersionCleanedError``: once ``pin()`` returns, the version stays readable.

A holder that crashes leaves its pin registered. Without a TTL it stays until someone drops it
(``Catalog.drop_consumer(name, table)``; ``Catalog.list_consumers`` shows it); with
``ttl_seconds`` the deadline is part of the name (``pin:<hex>:<epoch ms>``) and ``clean()`` drops
the pin once the deadline has passed (by the cleaning machine's clock).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds

from flowlake.errors import InvalidArgumentError
from flowlake.table.stats import Filter

if TYPE_CHECKING:
    from flowlake.table.table import LakeTable

PIN_PREFIX = "pin:"
"""Consumer names starting with this are pins."""


def pin_name(ttl_seconds: float | None, *, now: float | None = None) -> tuple[str, float | None]:
    """A fresh pin consumer name and its deadline (epoch seconds), if it has a TTL."""
    if ttl_seconds is None:
        return f"{PIN_PREFIX}{uuid.uuid4().hex}", None
    if not ttl_seconds > 0:
        raise InvalidArgumentError(f"a pin's ttl_seconds must be positive, got {ttl_seconds!r}")
    deadline_ms = int(((time.time() if now is None else now) + ttl_seconds) * 1000)
    return f"{PIN_PREFIX}{uuid.uuid4().hex}:{deadline_ms}", deadline_ms / 1000


def pin_expired(name: str, *, now: float | None = None) -> bool:
    """Whether consumer ``name`` is a pin whose TTL deadline has passed (pins without TTL never expire)."""
    if not name.startswith(PIN_PREFIX):
        return False
    parts = name.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        return False
    return (time.time() if now is None else now) * 1000 >= int(parts[2])


class Pin:
    """One pinned version of a table; get one from :meth:`LakeTable.pin`. Use it as a context manager.

    While the pin is held, ``read()`` (and ``table.read(version=pin.version)``) returns the same rows
    every time, whatever compaction and cleaning do meanwhile.
    """

    def __init__(self, table: LakeTable, version: int, name: str, expires_at: float | None) -> None:
        self.table = table
        self.version = version
        """The pinned version."""
        self.name = name
        """The consumer name the pin is registered under (``pin:<hex>`` or ``pin:<hex>:<deadline ms>``)."""
        self.expires_at = expires_at
        """Epoch seconds after which ``clean()`` may drop the pin (None: held until released)."""
        self._released = False

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._released

    def _require_held(self) -> None:
        if self._released:
            raise InvalidArgumentError(
                f"the pin of {self.table.name!r} at version {self.version} was released; take a new pin "
                "with t.pin(version) (or read t.read(version=...) while the version lasts)"
            )

    def read(self, *, columns: Sequence[str] | None = None, filter: Filter | None = None) -> pa.Table:
        """Read the pinned version (see :meth:`LakeTable.read`)."""
        self._require_held()
        return self.table.read(version=self.version, columns=columns, filter=filter)

    def dataset(self) -> ds.Dataset:
        """The pinned version as a dataset; a lazy one stays valid only while the pin is held."""
        self._require_held()
        return self.table.dataset(self.version)

    def changes(self, end: int | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        """The changelog from the pinned version to ``end`` (head by default): ``changes(version, end)``."""
        self._require_held()
        return self.table.changes(self.version, end, columns=columns)

    def release(self) -> bool:
        """Drop the registration, so cleaning may remove the version; False if already released/dropped."""
        if self._released:
            return False
        self._released = True
        return self.table._store.drop_consumer(self.table._record.id, self.name)

    def __enter__(self) -> Pin:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Pin({self.table.name!r}, version={self.version}, {state})"
