"""Prometheus metrics and JSON logs for workers.

Every flowlake process counts what its tables commit (rows by kind, commits, conflicts, commit latency,
log backlog); dataflows and ingesters add their own series (records per step, lag, state size, dead
letters) through :data:`REGISTRY`. ``FLOWLAKE_METRICS_PORT=9100`` makes :func:`setup_from_env` serve
them at ``http://host:9100/metrics``; ``FLOWLAKE_LOG_FORMAT=json`` switches logging to one JSON object
per line.
"""

from __future__ import annotations

import logging
import os
import time

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
"""The registry every flowlake metric lives in."""

COMMITS = Counter(
    "flowlake_commits", "Commits made by this process", ["table", "operation"], registry=REGISTRY
)
ROWS = Counter("flowlake_rows_committed", "Changes committed, by kind", ["table", "kind"], registry=REGISTRY)
CONFLICTS = Counter(
    "flowlake_commit_conflicts", "Commit conflicts met", ["table", "policy"], registry=REGISTRY
)
COMMIT_SECONDS = Histogram(
    "flowlake_commit_seconds", "Time to plan, write and commit one write", ["table"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
LOG_BACKLOG = Gauge(
    "flowlake_log_backlog_files",
    "Live log (and moved) files awaiting compaction",
    ["table"],
    registry=REGISTRY,
)
RECORDS = Counter(
    "flowlake_records", "Records through a dataflow step", ["flow", "step", "direction"], registry=REGISTRY
)
LAG = Gauge(
    "flowlake_lag_versions",
    "Versions a consumer is behind its input",
    ["consumer", "table"],
    registry=REGISTRY,
)
STATE_SIZE = Gauge("flowlake_state_keys", "Keys held in operator state", ["flow", "step"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "flowlake_dead_letters", "Records sent to a dead-letter table", ["table"], registry=REGISTRY
)
MAINTAIN_JOBS = Counter(
    "flowlake_maintain_jobs", "Table service jobs run, by outcome (ok, idle, failed, lost, busy)",
    ["table", "job", "outcome"], registry=REGISTRY,
)  # fmt: skip
MAINTAIN_JOB_SECONDS = Histogram(
    "flowlake_maintain_job_seconds", "Duration of table service jobs", ["job"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)  # fmt: skip
MAINTAIN_BACKLOG = Gauge(
    "flowlake_maintain_backlog", "A table's maintenance backlog as the service last saw it",
    ["table", "measure"], registry=REGISTRY,
)  # fmt: skip
MAINTAIN_RUNNING = Gauge("flowlake_maintain_running_jobs", "Jobs this service runs now", registry=REGISTRY)


def record_commit(table: str, operation: str, summary: dict[str, object], started: float) -> None:
    """Account for one commit this process made."""
    COMMITS.labels(table, operation).inc()
    rows = summary.get("rows")
    if isinstance(rows, dict):
        for kind, count in rows.items():
            if isinstance(count, int) and count:
                ROWS.labels(table, kind).inc(count)
    backlog = summary.get("log_backlog")
    if isinstance(backlog, int):
        LOG_BACKLOG.labels(table).set(backlog)
    COMMIT_SECONDS.labels(table).observe(time.perf_counter() - started)


def count_records(step: str, direction: str, count: int) -> None:
    """Count ``count`` records into (``"in"``) or out of (``"out"``) the step with bytewax id ``step``
    (``<flow>.<step path>``)."""
    if count:
        flow, _, name = step.partition(".")
        RECORDS.labels(flow, name, direction).inc(count)


class StateSizes:
    """The ``flowlake_state_keys`` gauge of one stateful step, summed over its key partitions."""

    def __init__(self, step: str) -> None:
        flow, _, name = step.partition(".")
        self._gauge = STATE_SIZE.labels(flow, name)
        self._sizes: dict[int, int] = {}

    def update(self, state: object, keys: int) -> None:
        """Record that the partition state ``state`` now holds ``keys`` keys."""
        self._sizes[id(state)] = keys
        self._gauge.set(sum(self._sizes.values()))


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and any ``extra`` fields."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


def setup_from_env() -> int | None:
    """Start the metrics server and JSON logging if the environment asks for them; return the port."""
    if os.environ.get("FLOWLAKE_LOG_FORMAT", "").lower() == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(os.environ.get("FLOWLAKE_LOG_LEVEL", "INFO").upper())
    port = os.environ.get("FLOWLAKE_METRICS_PORT")
    if port:
        start_http_server(int(port), registry=REGISTRY)
        return int(port)
    return None
