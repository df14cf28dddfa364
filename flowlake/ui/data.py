"""What the console shows, as plain JSON-able data: the overview, a table's page, queries, dead letters.

Every function takes a :class:`~flowlake.lake.Catalog` that acts as the signed-in principal, so the
catalog store checks that principal's grants on every read (``list_tables`` lists only readable
tables, ``load_table`` refuses the rest). Nothing here reads a table without going through it, and
lineage edges to tables the principal cannot read are counted, not named.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import itertools
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa

from flowlake.errors import InvalidArgumentError, PermissionDeniedError
from flowlake.lake import Catalog
from flowlake.names import TableName
from flowlake.status import TableStatus, table_status

DEAD_LETTER_TABLE: Final = "_dead_letter"
"""Name (in each namespace) of the CDC dead-letter table."""
TABLE_SOURCE: Final = "table:"
"""Prefix of a commit source that names an upstream lake table."""
LAYER_ORDER: Final = ("ods", "dwd", "dws")
"""The layers the lineage graph lays out left to right; other namespaces follow, sorted."""
RATE_WINDOW_SECONDS: Final = 60.0
"""Window over which changes per second and latencies are computed."""
MAX_ROWS: Final = 1000
"""Most rows any console answer carries (time travel, changelog sample, SQL, dead letters)."""
RAW_PREVIEW_BYTES: Final = 16 * 1024
"""Most bytes of a dead letter's raw payload shown."""
_KINDS: Final = ("+I", "-U", "+U", "-D")


class ConsoleCatalog(Catalog):
    """A catalog acting as one principal, whose freshness does not fail on unreadable upstream tables.

    ``Catalog.freshness`` follows lineage upstream; for a principal who may read a DWS table but not
    the ODS table it came from, that walk is refused. The console then shows no freshness rather
    than an error (and nothing of the upstream table).
    """

    def freshness(self, table: str) -> float | None:
        """Seconds behind the source, or None when unknown or when an upstream table is not readable."""
        try:
            return super().freshness(table)
        except PermissionDeniedError:
            return None


def acting_as(catalog: Catalog) -> ConsoleCatalog:
    """``catalog`` (same store, warehouse and principal) as a :class:`ConsoleCatalog`."""
    if isinstance(catalog, ConsoleCatalog):
        return catalog
    return ConsoleCatalog(catalog.store, catalog.storage, catalog_url=catalog.catalog_url)


# -- validation ---------------------------------------------------------------------------------------


def table_name(text: str) -> str:
    """A validated ``namespace.table`` (raises ``InvalidNameError`` with the rule)."""
    return str(TableName.parse(text))


def parse_version(text: str | None, what: str = "version") -> int | None:
    """A non-negative version number from query text, None for empty."""
    if text is None or text == "":
        return None
    if not text.isdigit() or len(text) > 18:
        raise InvalidArgumentError(f"{what} must be a version number (0, 1, 2, ...), got {text[:40]!r}")
    return int(text)


def parse_limit(text: str | None, default: int = 200) -> int:
    """A row limit from 1 to :data:`MAX_ROWS`."""
    value = parse_version(text, "limit")
    if value is None:
        return default
    if not 1 <= value <= MAX_ROWS:
        raise InvalidArgumentError(f"limit must be from 1 to {MAX_ROWS}, got {value}")
    return value


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO 8601 time (naive is UTC), None for empty."""
    if text is None or text == "":
        return None
    try:
        moment = dt.datetime.fromisoformat(text[:64])
    except ValueError:
        raise InvalidArgumentError(
            f"time {text[:40]!r} is not ISO 8601; write e.g. 2026-01-01T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# -- values -------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """A value from Arrow's ``to_pylist`` as JSON: decimals and durations as text, bytes as base64."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, bytes):
        return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def rows_payload(table: pa.Table, limit: int) -> dict[str, Any]:
    """Columns with their types and at most ``limit`` rows (as lists), and the total row count."""
    shown = table.slice(0, limit)
    columns = shown.column_names
    data = shown.to_pydict()
    rows = [[jsonable(data[c][i]) for c in columns] for i in range(shown.num_rows)]
    return {
        "columns": [{"name": f.name, "type": str(f.type), "numeric": _numeric(f.type)} for f in table.schema],
        "rows": rows,
        "total": table.num_rows,
        "truncated": table.num_rows > limit,
    }


def _numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


# -- the overview -------------------------------------------------------------------------------------


def layer_rank(name: str) -> tuple[int, str]:
    """Sort key that puts ODS, DWD, DWS first (left to right in the graph)."""
    namespace = name.split(".", 1)[0]
    return (LAYER_ORDER.index(namespace) if namespace in LAYER_ORDER else len(LAYER_ORDER), namespace)


def overview(catalog: ConsoleCatalog, *, now: float | None = None) -> dict[str, Any]:
    """The lineage graph of every readable table with its status, flows, ingesters and dead letters."""
    now = time.time() if now is None else now
    names = catalog.list_tables()
    readable = set(names)
    statuses = {name: table_status(catalog, name) for name in names}
    activity = {name: _activity(catalog.load_table(name).history(), now) for name in names}
    edges: list[dict[str, Any]] = []
    sources: dict[str, dict[str, Any]] = {}
    hidden = 0
    for name in names:
        for source, (position, _) in sorted(catalog.positions_of(name).items()):
            if source.startswith(TABLE_SOURCE):
                upstream = source.removeprefix(TABLE_SOURCE)
                if upstream in readable:
                    edges.append({"from": upstream, "to": name, "version": _int_or_none(position)})
                else:
                    hidden += 1
            else:
                node = sources.setdefault(source, {"id": source, "tables": []})
                node["tables"].append(name)
                edges.append({"from": source, "to": name, "version": None, "external": True})
    nodes = [
        _node(statuses[n], activity[n]) for n in sorted(names, key=lambda n: (*layer_rank(n), n))
        if not n.endswith("." + DEAD_LETTER_TABLE)
    ]  # fmt: skip
    dead = {n.split(".", 1)[0]: statuses[n].rows for n in names if n.endswith("." + DEAD_LETTER_TABLE)}
    return {
        "principal": catalog.principal,
        "generated_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "tables": nodes,
        "sources": sorted(sources.values(), key=lambda s: str(s["id"])),
        "edges": edges,
        "hidden_upstream_edges": hidden,
        "flows": _flows(edges, activity),
        "ingesters": _ingesters(edges, activity),
        "dead_letters": dead,
        "stamp": ",".join(f"{n}@{statuses[n].version}" for n in names),
    }


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _activity(history: Sequence[Any], now: float) -> dict[str, Any]:
    """Changes per second, commit latency and the interval between write commits, recent window."""
    recent = [
        c
        for c in history
        if c.operation == "write" and now - c.committed_at.timestamp() <= RATE_WINDOW_SECONDS
    ]
    changes = sum(_changes(c.summary) for c in recent)
    latencies = [lat for c in recent if (lat := commit_latency_ms(c.instant, c.committed_at)) is not None]
    times = sorted(c.committed_at.timestamp() for c in recent)
    intervals = [b - a for a, b in itertools.pairwise(times)]
    return {
        "changes_per_second": round(changes / RATE_WINDOW_SECONDS, 2),
        "commits_in_window": len(recent),
        "commit_latency_ms": round(statistics.median(latencies), 1) if latencies else None,
        "epoch_interval_ms": round(statistics.median(intervals) * 1000, 1) if intervals else None,
    }


def _changes(summary: Mapping[str, Any]) -> int:
    rows = summary.get("rows")
    if isinstance(rows, Mapping):
        return sum(int(v) for k, v in rows.items() if k in _KINDS and isinstance(v, int))
    return 0


def commit_latency_ms(instant: str, committed_at: dt.datetime) -> float | None:
    """Milliseconds from a commit's request (its instant: microseconds since the epoch) to completion."""
    head = instant.split("-", 1)[0]
    if not head.isdigit() or "create" in instant:
        return None
    started = int(head) / 1e6
    return round(max(0.0, committed_at.timestamp() - started) * 1000, 1)


def health(status: TableStatus) -> tuple[str, list[str]]:
    """``ok``, ``warn`` or ``bad`` and the reasons: stopped ingestion, freshness, log backlog, lag."""
    reasons: list[str] = []
    level = 0
    if status.stopped:
        reasons.append(f"CDC ingestion stopped: {status.stopped}")
        level = 2
    fresh = status.freshness_seconds
    if fresh is not None and fresh > 300:
        reasons.append(f"{fresh:,.0f}s behind its source")
        level = max(level, 2)
    elif fresh is not None and fresh > 30:
        reasons.append(f"{fresh:,.0f}s behind its source")
        level = max(level, 1)
    if status.log_files > 200:
        reasons.append(f"{status.log_files} log files wait for compaction")
        level = max(level, 1)
    lagging = [c for c, lag in status.consumers.items() if not c.startswith("pin:") and lag > 100]
    if lagging:
        reasons.append(f"consumers over 100 versions behind: {', '.join(sorted(lagging))}")
        level = max(level, 1)
    return ("ok", "warn", "bad")[level], reasons


def _node(status: TableStatus, activity: Mapping[str, Any]) -> dict[str, Any]:
    level, reasons = health(status)
    return {
        **status.to_dict(),
        "namespace": status.name.split(".", 1)[0],
        "health": level,
        "health_reasons": reasons,
        **activity,
    }


def _flows(
    edges: Sequence[Mapping[str, Any]], activity: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One flow per table fed by lake tables: its inputs' and its own changes per second."""
    inputs: dict[str, list[str]] = {}
    for edge in edges:
        if not edge.get("external"):
            inputs.setdefault(str(edge["to"]), []).append(str(edge["from"]))
    return [
        {
            "output": out,
            "inputs": sorted(ins),
            "in_per_second": round(sum(activity[i]["changes_per_second"] for i in ins), 2),
            "out_per_second": activity[out]["changes_per_second"],
            "epoch_interval_ms": activity[out]["epoch_interval_ms"],
            "commit_latency_ms": activity[out]["commit_latency_ms"],
        }
        for out, ins in sorted(inputs.items())
    ]


def _ingesters(
    edges: Sequence[Mapping[str, Any]], activity: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (external source, table): the table's changes per second and commit latency."""
    return [
        {
            "source": str(e["from"]),
            "table": str(e["to"]),
            "out_per_second": activity[str(e["to"])]["changes_per_second"],
            "commit_latency_ms": activity[str(e["to"])]["commit_latency_ms"],
        }
        for e in edges
        if e.get("external")
    ]


# -- one table ----------------------------------------------------------------------------------------


def table_detail(catalog: ConsoleCatalog, name: str) -> dict[str, Any]:
    """Schema and its evolution, key, buckets and map, backlog, properties, consumers, pins, lineage."""
    name = table_name(name)
    table = catalog.load_table(name)  # refuses a table the principal may not read
    status = table_status(catalog, name)
    history = table.history()
    bucket_map = table.bucket_map
    consumers = catalog.list_consumers(name)
    readable = set(catalog.list_tables())
    upstream, external, hidden = [], [], 0
    for source, (position, version) in sorted(catalog.positions_of(name).items()):
        if source.startswith(TABLE_SOURCE):
            up = source.removeprefix(TABLE_SOURCE)
            if up in readable:
                upstream.append({"table": up, "version": _int_or_none(position), "at_version": version})
            else:
                hidden += 1
        else:
            external.append({"source": source, "position": jsonable(position), "at_version": version})
    downstream = sorted(
        other
        for other in readable
        if other != name and f"{TABLE_SOURCE}{name}" in catalog.positions_of(other)
    )
    level, reasons = health(status)
    return {
        "name": name,
        "status": status.to_dict(),
        "health": level,
        "health_reasons": reasons,
        "schema": [
            {"name": f.name, "type": str(f.type), "nullable": f.nullable, "key": f.name in table.primary_key}
            for f in table.schema
        ],
        "schema_changes": [
            {
                "version": c.version,
                "committed_at": c.committed_at.isoformat(timespec="seconds"),
                "schema_id": c.schema_id,
                "columns": jsonable(c.summary.get("columns", [])),
            }
            for c in history
            if c.operation == "schema"
        ],
        "primary_key": list(table.primary_key),
        "append_only": table.is_append_only,
        "buckets": table.buckets,
        "bucket_map": {
            "version": bucket_map.version,
            "roots": bucket_map.roots,
            "leaves": [
                {"id": b.id, "root": b.root, "depth": b.depth, "sub": b.sub} for b in bucket_map.buckets
            ],
            "fences": [{"bucket": b, "until_ms": until} for b, until in bucket_map.fences],
        },
        "properties": dict(table.properties),
        "version": table.version,
        "oldest_version": table.oldest_version,
        "consumers": [
            {"name": c, "version": v, "behind": table.version - v}
            for c, v in sorted(consumers.items())
            if not c.startswith("pin:")
        ],
        "pins": [{"name": c, "version": v} for c, v in sorted(consumers.items()) if c.startswith("pin:")],
        "upstream": upstream,
        "external_sources": external,
        "hidden_upstream": hidden,
        "downstream": downstream,
    }


def timeline(catalog: ConsoleCatalog, name: str, *, last: int = 500) -> dict[str, Any]:
    """The newest ``last`` commits: rows by kind, commit latency, log backlog, operation."""
    table = catalog.load_table(table_name(name))
    commits = table.history()[-last:]
    out = []
    for c in commits:
        rows = c.summary.get("rows")
        kinds = (
            {k: int(rows.get(k, 0)) for k in _KINDS}
            if isinstance(rows, Mapping)
            else dict.fromkeys(_KINDS, 0)
        )
        backlog = c.summary.get("log_backlog")
        out.append(
            {
                "version": c.version,
                "operation": c.operation,
                "committed_at": c.committed_at.isoformat(timespec="milliseconds"),
                "time_ms": int(c.committed_at.timestamp() * 1000),
                "rows": kinds,
                "latency_ms": commit_latency_ms(c.instant, c.committed_at),
                "log_backlog": backlog if isinstance(backlog, int) else None,
                "principal": c.principal,
            }
        )
    return {"name": table.name, "commits": out}


def rows_at(
    catalog: ConsoleCatalog,
    name: str,
    *,
    version: int | None = None,
    as_of: dt.datetime | None = None,
    limit: int = 200,
) -> dict[str, Any]:
    """Time travel: the table's rows at ``version`` or as of a time (the head by default)."""
    table = catalog.load_table(table_name(name))
    if version is not None and as_of is not None:
        raise InvalidArgumentError("give a version or a time, not both")
    resolved = table.resolve_version(version, as_of)
    data = table.read(version=resolved)
    if table.primary_key:
        data = data.sort_by([(k, "ascending") for k in table.primary_key])
    return {"name": table.name, "version": resolved, **rows_payload(data, limit)}


def changes_between(
    catalog: ConsoleCatalog, name: str, *, start: int, end: int | None = None, limit: int = 200
) -> dict[str, Any]:
    """A sample of the changelog of commits ``start+1 .. end``, with ``_kind`` as ``+I/-U/+U/-D``."""
    table = catalog.load_table(table_name(name))
    changes = table.changes(start, end)
    if "_kind" in changes.column_names:
        kinds = [
            _KINDS[k] if k is not None and 0 <= k < 4 else "?" for k in changes.column("_kind").to_pylist()
        ]
        index = changes.column_names.index("_kind")
        changes = changes.set_column(index, "_kind", pa.array(kinds, pa.string()))
    return {
        "name": table.name,
        "start": start,
        "end": table.version if end is None else end,
        **rows_payload(changes, limit),
    }


def dead_letters(catalog: ConsoleCatalog, namespace: str, *, limit: int = 200) -> dict[str, Any]:
    """The newest dead letters of a namespace: source table, position, reason and the raw payload."""
    name = table_name(f"{namespace}.{DEAD_LETTER_TABLE}")
    if name not in catalog.list_tables(namespace.lower()):
        return {"namespace": namespace, "letters": [], "total": 0, "truncated": False}
    data = catalog.load_table(name).read()
    if "ingested_at" in data.column_names:
        data = data.sort_by([("ingested_at", "descending")])
    letters = []
    for row in data.slice(0, limit).to_pylist():
        raw = row.get("raw") or b""
        letters.append(
            {
                "source": row.get("source"),
                "source_table": row.get("source_table"),
                "position": row.get("position"),
                "error": row.get("error"),
                "size": len(raw),
                "raw": raw[:RAW_PREVIEW_BYTES].decode("utf-8", errors="replace"),
                "raw_truncated": len(raw) > RAW_PREVIEW_BYTES,
                "ingested_at": jsonable(row.get("ingested_at")),
            }
        )
    return {
        "namespace": namespace,
        "letters": letters,
        "total": data.num_rows,
        "truncated": data.num_rows > limit,
    }


def dead_letter_namespaces(catalog: ConsoleCatalog) -> list[str]:
    """Namespaces with a dead-letter table the principal may read."""
    return sorted(n.split(".", 1)[0] for n in catalog.list_tables() if n.endswith("." + DEAD_LETTER_TABLE))


MAX_SQL_CHARS: Final = 64 * 1024
"""Longest query text the console runs."""


def run_sql(
    catalog: ConsoleCatalog, sql: str, *, as_of: str | None = None, limit: int = MAX_ROWS
) -> dict[str, Any]:
    """One read-only SELECT in the same sandbox as ``flowlake sql``, as the catalog's principal.

    Raises:
        InvalidArgumentError: An empty or over-long query, or a bad ``as_of``.
        SqlSandboxError, PermissionDeniedError, TableNotFoundError: As ``flowlake sql``.
    """
    from flowlake.sql.sandbox import run_query

    if not isinstance(sql, str) or not sql.strip():
        raise InvalidArgumentError("write a SELECT to run, e.g. select * from ods.orders limit 10")
    if len(sql) > MAX_SQL_CHARS:
        raise InvalidArgumentError(
            f"the query is {len(sql):,} characters; the console runs up to {MAX_SQL_CHARS:,}"
        )
    moment: str | int | None = None
    if as_of:
        if as_of.isdigit():
            moment = int(parse_version(as_of, "as_of") or 0)
        else:
            parse_time(as_of)  # a clear error before the sandbox runs anything
            moment = as_of
    started = time.perf_counter()
    result = run_query(catalog, sql, as_of=moment)
    elapsed = time.perf_counter() - started
    return {
        "versions": dict(result.versions),
        "elapsed_ms": round(elapsed * 1000, 1),
        **rows_payload(result.table, limit),
    }
