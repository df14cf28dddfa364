"""Lineage (which inputs at which positions produced a table's versions) and freshness.

Every commit may record the source positions it covers: ``{"table:ods.orders": 17}`` for an upstream
lake table at a version, or an external position such as a binlog ``{"file": ..., "pos": ...,
"ts_ms": ...}``. The lineage of a table is the graph of its newest positions, followed upstream; the
*source time* of a version is the time of the oldest source event it includes: an external source's
``ts_ms`` if it has one (else the commit time that recorded it), an upstream table's own source time
at the recorded version (recursively). Freshness is now minus the source time of the head.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowlake.catalog.base import Commit

TABLE_SOURCE = "table:"
"""Prefix of source keys that name an upstream lake table (the value is its version)."""


class _Tables(Protocol):
    def commits_of(self, table: str) -> list[Commit]: ...
    def positions_of(self, table: str) -> dict[str, tuple[Any, int]]: ...


@dataclass
class LineageNode:
    """A table, the version a downstream read of it covered, and its own inputs."""

    name: str
    version: int | None = None
    position: Any = None
    upstream: list[LineageNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "name": self.name,
            "version": self.version,
            "position": self.position,
            "upstream": [u.to_dict() for u in self.upstream],
        }


def lineage(catalog: _Tables, table: str, *, version: int | None = None, depth: int = 16) -> LineageNode:
    """The upstream graph of ``table`` (newest positions), ``depth`` levels deep at most."""
    node = LineageNode(table, version)
    if depth == 0:
        return node
    for source, (position, _) in sorted(catalog.positions_of(table).items()):
        if source.startswith(TABLE_SOURCE):
            upstream = source.removeprefix(TABLE_SOURCE)
            node.upstream.append(lineage(catalog, upstream, version=int(position), depth=depth - 1))
        else:
            node.upstream.append(LineageNode(source, None, position))
    return node


def source_time_ms(
    catalog: _Tables, table: str, version: int | None = None, *, depth: int = 16
) -> int | None:
    """Epoch ms of the oldest source event included in ``table`` at ``version`` (head by default)."""
    history = [c for c in catalog.commits_of(table) if version is None or c.version <= version]
    writes = [c for c in history if c.operation == "write"]
    if not writes:
        return None
    newest_sources: dict[str, tuple[Any, Commit]] = {}
    for commit in reversed(writes):
        for source, position in commit.summary.get("sources", {}).items():
            newest_sources.setdefault(source, (position, commit))
    if not newest_sources:
        return int(writes[-1].committed_at.timestamp() * 1000)
    times = []
    for source, (position, commit) in newest_sources.items():
        if source.startswith(TABLE_SOURCE) and depth > 0:
            upstream = source_time_ms(
                catalog, source.removeprefix(TABLE_SOURCE), int(position), depth=depth - 1
            )
            times.append(upstream if upstream is not None else int(commit.committed_at.timestamp() * 1000))
        elif isinstance(position, dict) and isinstance(position.get("ts_ms"), int | float):
            times.append(int(position["ts_ms"]))
        else:
            times.append(int(commit.committed_at.timestamp() * 1000))
    return min(times)


def freshness_seconds(catalog: _Tables, table: str) -> float | None:
    """Seconds between now and the source time of the newest change ``table`` includes."""
    source = source_time_ms(catalog, table)
    return None if source is None else max(0.0, time.time() - source / 1000)
