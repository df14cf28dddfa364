"""What `flowlake status` shows: every table's version, size, files, backlog, consumers and freshness."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from flowlake.errors import FlowlakeError
from flowlake.lake import Catalog
from flowlake.table.fileparts import distinct_bytes, physical_paths
from flowlake.table.policy import MaintenancePolicy
from flowlake.table.services import job_summary


@dataclass(frozen=True, slots=True)
class TableStatus:
    """One table's state as of its head version."""

    name: str
    version: int
    rows: int
    files: int
    log_files: int
    bytes: int
    last_commit: str | None
    freshness_seconds: float | None
    consumers: dict[str, int] = field(default_factory=dict)
    """``{consumer: versions behind the head}``."""
    stopped: str | None = None
    """Why CDC ingestion of this table stopped (a change it cannot store), if it did."""
    policy: str = ""
    """The table's maintenance policy in words (see :mod:`flowlake.table.policy`)."""
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``{job: {last_outcome, last_detail, seconds_ago, runs, failures, running_on}}`` of the table
    services (``flowlake maintain``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return asdict(self)


def table_status(catalog: Catalog, name: str) -> TableStatus:
    """The status of one table."""
    table = catalog.load_table(name)
    store, table_id = table._store, table._record.id
    files = store.live_files(table_id, table.version)
    if all(f.content == "base" for f in files):
        rows = sum(f.row_count for f in files)
    else:
        rows = table.read(columns=list(table.primary_key) or None).num_rows
    history = store.commits(table_id, table.version, table.version)
    consumers = {c: table.version - v for c, v in store.consumers(table_id).items()}
    return TableStatus(
        name=name,
        version=table.version,
        rows=rows,
        files=len(physical_paths(f.path for f in files)),  # a commit's shared log file counts once
        log_files=len(physical_paths(f.path for f in files if f.content != "base")),  # and moved files
        bytes=distinct_bytes((f.path, f.size) for f in files),
        last_commit=history[0].committed_at.isoformat(timespec="seconds") if history else None,
        freshness_seconds=catalog.freshness(name),
        consumers=consumers,
        stopped=_stopped(history[0].summary if history else {}),
        policy=_policy(table.properties),
        services=job_summary({s.job: s for s in store.job_states(table_id)}),
    )


def _policy(properties: Mapping[str, str]) -> str:
    try:
        return MaintenancePolicy.from_properties(properties).describe()
    except FlowlakeError as exc:  # a property edited outside the API: show why instead of failing
        return f"invalid: {exc}"


def _stopped(summary: Mapping[str, Any]) -> str | None:
    """The ``"stopped"`` mark an ingester left in the head commit's source positions."""
    sources = summary.get("sources")
    for position in sources.values() if isinstance(sources, dict) else ():
        mark = position.get("stopped") if isinstance(position, dict) else None
        if isinstance(mark, dict):
            return str(mark.get("error", "stopped"))
    return None


def catalog_status(catalog: Catalog, namespace: str | None = None) -> list[TableStatus]:
    """The status of every table (that the principal may read), sorted by name."""
    return [table_status(catalog, name) for name in catalog.list_tables(namespace)]


def layer_freshness(statuses: list[TableStatus]) -> dict[str, float | None]:
    """The worst (largest) freshness per namespace: how far each layer lags behind its sources."""
    layers: dict[str, float | None] = {}
    for s in statuses:
        layer = s.name.split(".", 1)[0]
        current = layers.get(layer)
        if s.freshness_seconds is not None:
            layers[layer] = s.freshness_seconds if current is None else max(current, s.freshness_seconds)
        else:
            layers.setdefault(layer, None)
    return layers
