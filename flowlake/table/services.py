"""Table services: compaction, rebalancing and cleaning run as each table's policy asks.

:class:`TableServices` is what ``flowlake maintain`` runs. Every ``poll_seconds`` it scans the tables
that match its patterns, measures each one's backlog (:func:`measure_backlog`: log files and log
rows per bucket, log bytes, age of the oldest log, buckets over target, versions kept), decides which
jobs are due (:func:`due_jobs`, a pure function of the policy, the backlog and when the table was
last cleaned) and runs at most ``max_jobs`` of them at once in threads.

Every job runs under a lease in the catalog (:mod:`flowlake.catalog.leases`): several services, on
several hosts, never run the same job of the same table at the same time, and the lease of a service
that dies (``kill -9``) expires after ``lease_seconds``, when another takes the job over. A running
job renews its lease every third of that. Compaction and cleaning commits are compare-and-set in the
catalog anyway, so a job whose lease was taken over (a stalled holder) wastes work at worst; it never
loses data. Each job's outcome and time are recorded in the catalog (``flowlake status`` shows them)
and counted in the ``flowlake_maintain_*`` Prometheus metrics.

Writers never wait for a service: they rebase over compactions. A table whose writers should slow
down when the service falls behind sets the stall limit ``log_backlog_compact`` (see
:mod:`flowlake.table.policy`).

>>> import pyarrow as pa
>>> import flowlake as fl
>>> cat = fl.connect(catalog="sqlite://", warehouse="memory://services-doc")
>>> t = cat.create_table("ods.t", pa.schema([("id", pa.int64())]), primary_key=["id"], buckets=1,
...                      properties={"maintain.compact.log_files": "3"})
>>> for i in range(3):
...     _ = t.upsert(pa.table({"id": [i]}))
>>> service = TableServices(cat.store, cat.storage, max_jobs=1)  # one at a time: an in-memory catalog
>>> [(r.job, r.outcome) for r in service.run_once()]
[('clean', 'idle'), ('compact', 'ok')]
>>> [f.content for f in cat.store.live_files(t.refresh()._record.id, t.version)]
['base']
"""

from __future__ import annotations

import fnmatch
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from flowlake.catalog.base import DataFile, JobState, MetaStore, TableRecord
from flowlake.errors import CommitConflictError, FlowlakeError, TableNotFoundError, VersionCleanedError
from flowlake.io.fs import Storage
from flowlake.runtime.observability import (
    MAINTAIN_BACKLOG,
    MAINTAIN_JOB_SECONDS,
    MAINTAIN_JOBS,
    MAINTAIN_RUNNING,
)
from flowlake.table import maintenance
from flowlake.table.bucketmap import BucketMap
from flowlake.table.fileparts import distinct_bytes
from flowlake.table.policy import MaintenancePolicy
from flowlake.table.table import LakeTable

__all__ = ["Backlog", "DueJob", "JobKind", "JobResult", "TableServices", "due_jobs", "measure_backlog"]

JobKind = Literal["compact", "rebalance", "clean"]
"""A table service job."""

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a table's maintenance is behind on, at its head version."""

    files: int
    """Live data files."""
    log_files: int
    """Live log (and moved) files: what every read merges and compaction folds."""
    log_bytes: int
    max_bucket_log_files: int
    max_bucket_log_rows: int
    oldest_log_age: float | None
    """Seconds since the commit of the oldest live log file (None: no logs)."""
    versions: int
    """Readable versions (head - oldest + 1): what cleaning can shed."""
    rebalance_due: bool
    """A bucket holds more than ``bucket_target_rows`` rows, or two siblings could merge."""


@dataclass(frozen=True, slots=True)
class DueJob:
    """A job the policy asks for, and why."""

    job: JobKind
    reason: str
    urgency: float
    """Higher runs first when more jobs are due than may run."""


@dataclass(frozen=True, slots=True)
class JobResult:
    """How one job run ended: ``ok`` (did work), ``idle`` (nothing to do), ``failed``, ``lost`` (its
    lease was taken over before it finished; its work may still have landed) or ``busy`` (another
    service holds the lease)."""

    table: str
    job: JobKind
    outcome: Literal["ok", "idle", "failed", "lost", "busy"]
    detail: str
    seconds: float


def measure_backlog(store: MetaStore, record: TableRecord, *, now: float | None = None) -> Backlog:
    """The backlog of ``record``'s table at its version (one catalog read, two with logs)."""
    files = store.live_files(record.id, record.current_version)
    logs = [f for f in files if f.content != "base"]
    per_bucket: dict[int, list[DataFile]] = defaultdict(list)
    for f in logs:
        per_bucket[f.bucket].append(f)
    age = None
    if logs:
        oldest = min(f.added_version for f in logs)
        commit = store.commits(record.id, oldest, oldest)
        if commit:
            age = max(0.0, (time.time() if now is None else now) - commit[0].committed_at.timestamp())
    rebalance_due = False
    if record.primary_key:
        target = int(record.properties.get("bucket_target_rows", maintenance.DEFAULT_TARGET_BUCKET_ROWS))
        bmap = BucketMap.from_json(record.bucket_map, record.buckets)
        rebalance_due = bool(maintenance.plan_rebalance(files, bmap, {}, target_bucket_rows=target))
    return Backlog(
        files=len(files),
        log_files=len(logs),
        log_bytes=distinct_bytes((f.path, f.size) for f in logs),
        max_bucket_log_files=max((len(fs) for fs in per_bucket.values()), default=0),
        max_bucket_log_rows=max((sum(f.row_count for f in fs) for fs in per_bucket.values()), default=0),
        oldest_log_age=age,
        versions=record.current_version - record.oldest_version + 1,
        rebalance_due=rebalance_due,
    )


def due_jobs(policy: MaintenancePolicy, backlog: Backlog, *, since_clean: float | None) -> list[DueJob]:
    """The jobs ``policy`` asks for given ``backlog``; ``since_clean``: seconds since the last clean
    finished (None: never cleaned). Most urgent first.

    >>> quiet = Backlog(files=4, log_files=0, log_bytes=0, max_bucket_log_files=0, max_bucket_log_rows=0,
    ...                 oldest_log_age=None, versions=3, rebalance_due=False)
    >>> due_jobs(MaintenancePolicy(), quiet, since_clean=5.0)
    []
    >>> busy = Backlog(files=40, log_files=36, log_bytes=10_000, max_bucket_log_files=9,
    ...                max_bucket_log_rows=900, oldest_log_age=2.0, versions=40, rebalance_due=False)
    >>> [(j.job, j.reason) for j in due_jobs(MaintenancePolicy(), busy, since_clean=61.0)]
    [('compact', 'a bucket has 9 log files (limit 8)'), ('clean', '40 versions kept (retain_last 10)')]
    """
    if not policy.enabled:
        return []
    jobs: list[DueJob] = []
    compact = _compact_reason(policy, backlog)
    if compact is not None:
        jobs.append(DueJob("compact", compact, 1.0 + backlog.log_files))
    elif policy.rebalance and backlog.rebalance_due:  # a compaction splits and merges too
        jobs.append(DueJob("rebalance", "a bucket is over bucket_target_rows or siblings can merge", 1.0))
    if since_clean is None:
        jobs.append(DueJob("clean", "never cleaned by the service", 0.5))
    elif since_clean >= policy.clean_interval:
        if backlog.versions > policy.clean_retain_last:
            reason = f"{backlog.versions} versions kept (retain_last {policy.clean_retain_last})"
            jobs.append(DueJob("clean", reason, 0.5))
        elif since_clean >= policy.orphan_grace:
            jobs.append(DueJob("clean", "orphan files may have passed their grace", 0.1))
    return sorted(jobs, key=lambda j: -j.urgency)


def _compact_reason(policy: MaintenancePolicy, b: Backlog) -> str | None:
    if b.log_files == 0:
        return None
    if b.max_bucket_log_files >= policy.compact_log_files:
        return f"a bucket has {b.max_bucket_log_files} log files (limit {policy.compact_log_files})"
    if b.max_bucket_log_rows >= policy.compact_log_rows:
        return f"a bucket has {b.max_bucket_log_rows:,} log rows (limit {policy.compact_log_rows:,})"
    if b.log_bytes >= policy.compact_log_bytes:
        return f"log files take {b.log_bytes:,} bytes (limit {policy.compact_log_bytes:,})"
    if b.oldest_log_age is not None and b.oldest_log_age >= policy.compact_max_age:
        return f"the oldest log is {b.oldest_log_age:.0f}s old (limit {policy.compact_max_age:g}s)"
    return None


def default_holder() -> str:
    """``host:pid:random``: who holds a lease (unique per service instance)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class TableServices:
    """Runs compaction, rebalancing and cleaning of the matching tables as their policies ask.

    Args:
        store: The catalog; the service acts as its principal, which needs ``write`` on every table
            it looks after (tables it may not write are skipped, with one message each).
        storage: The warehouse.
        tables: ``fnmatch`` patterns of ``namespace.table`` names (``"ods.*"``; default all).
        max_jobs: Jobs run at once (threads).
        poll_seconds: How often the tables are scanned.
        lease_seconds: A job's lease; a dead service's jobs are taken over this long after its last
            renewal.
        holder: This instance's name in the leases (default ``host:pid:random``).
        emit: Called with one line per finished job (and per skipped table).
    """

    def __init__(
        self,
        store: MetaStore,
        storage: Storage,
        *,
        tables: str | Sequence[str] = "*",
        max_jobs: int = 2,
        poll_seconds: float = 1.0,
        lease_seconds: float = 30.0,
        holder: str | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        if max_jobs < 1:
            raise FlowlakeError(f"max_jobs must be at least 1, got {max_jobs}")
        if not 0 < lease_seconds <= 86_400 or poll_seconds <= 0:
            raise FlowlakeError(
                f"lease_seconds must be in (0, 86400] and poll_seconds positive, got {lease_seconds}, "
                f"{poll_seconds}"
            )
        self.store = store
        self.storage = storage
        self.patterns = [tables] if isinstance(tables, str) else list(tables)
        self.max_jobs = max_jobs
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.holder = holder or default_holder()
        self._emit = emit or (lambda line: _log.info("%s", line))
        self._stop = threading.Event()
        self._told: set[str] = set()
        self.results: list[JobResult] = []
        """Every job this instance ran, in the order they finished."""

    # -- scanning -------------------------------------------------------------------------------

    def _once(self, key: str, line: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self._emit(line)

    def matching_tables(self) -> list[str]:
        """The tables this service looks after now."""
        names = self.store.list_tables()
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in self.patterns)]

    def scan(self) -> list[tuple[TableRecord, DueJob]]:
        """The jobs due now over every matching table, most urgent first (leases held elsewhere left out)."""
        due: list[tuple[TableRecord, DueJob]] = []
        for name in self.matching_tables():
            if not self.store.has_privilege("write", name):
                self._once(f"grant:{name}", f"{name}: skipped, {self.store.principal!r} lacks write on it "
                           f"(`flowlake grant write {name} {self.store.principal}`)")  # fmt: skip
                continue
            namespace, table = name.split(".", 1)
            try:
                record = self.store.get_table(namespace, table)
                policy = MaintenancePolicy.from_properties(record.properties)
                backlog = measure_backlog(self.store, record)
                states = {s.job: s for s in self.store.job_states(record.id)}
            except TableNotFoundError:
                continue  # dropped meanwhile
            except FlowlakeError as exc:
                self._once(f"error:{name}:{exc}", f"{name}: skipped: {exc}")
                continue
            self._record_backlog(name, backlog)
            for job in due_jobs(policy, backlog, since_clean=_since_finished(states.get("clean"))):
                state = states.get(job.job)
                if state is not None and state.holder is not None and (state.expires_in_ms or 0) > 0:
                    continue  # another service runs it now
                due.append((record, job))
        return sorted(due, key=lambda d: -d[1].urgency)

    @staticmethod
    def _record_backlog(name: str, backlog: Backlog) -> None:
        for measure, value in (
            ("files", backlog.files), ("log_files", backlog.log_files), ("log_bytes", backlog.log_bytes),
            ("max_bucket_log_files", backlog.max_bucket_log_files), ("versions", backlog.versions),
        ):  # fmt: skip
            MAINTAIN_BACKLOG.labels(name, measure).set(value)

    # -- running jobs ---------------------------------------------------------------------------

    def run_job(self, record: TableRecord, job: JobKind) -> JobResult:
        """Take the job's lease, run it (renewing the lease), release it with the outcome."""
        name = record.qualified_name
        started = time.perf_counter()
        try:
            epoch = self.store.acquire_lease(record.id, job, self.holder, self.lease_seconds)
        except FlowlakeError as exc:  # a busy catalog, a revoked grant, a dropped table: next scan
            return self._finish(JobResult(name, job, "failed", f"could not take the lease: {exc}", 0.0))
        if epoch is None:
            return self._finish(JobResult(name, job, "busy", "another service holds the lease", 0.0))
        lost = threading.Event()
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew,
            args=(record.id, job, epoch, done, lost),
            name=f"lease-{name}-{job}",
            daemon=True,
        )
        renewer.start()
        outcome: Literal["ok", "idle", "failed", "lost"]
        try:
            outcome, detail = self._work(record, job)
        except (CommitConflictError, VersionCleanedError) as exc:
            outcome, detail = "idle", f"lost a race with another writer of the table: {exc}"
        except Exception as exc:  # a job's failure is recorded and reported, the service goes on
            _log.exception("table service job %s of %s failed", job, name)
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            done.set()
            renewer.join()
        if lost.is_set():
            outcome, detail = "lost", f"the lease expired before the job ended ({detail})"
        try:
            released = self.store.release_lease(record.id, job, self.holder, epoch, outcome, detail)
        except FlowlakeError as exc:
            released, detail = False, f"{detail}; releasing the lease failed: {exc}"
        if not released and outcome != "lost":
            outcome, detail = "lost", f"the lease was taken over before the job ended ({detail})"
        return self._finish(JobResult(name, job, outcome, detail, time.perf_counter() - started))

    def _finish(self, result: JobResult) -> JobResult:
        MAINTAIN_JOBS.labels(result.table, result.job, result.outcome).inc()
        if result.outcome != "busy":
            MAINTAIN_JOB_SECONDS.labels(result.job).observe(result.seconds)
            self._emit(
                f"{result.table} {result.job} {result.outcome} in {result.seconds:.2f}s: {result.detail}"
            )
        self.results.append(result)
        return result

    def _renew(
        self, table_id: int, job: JobKind, epoch: int, done: threading.Event, lost: threading.Event
    ) -> None:
        while not done.wait(self.lease_seconds / 3):
            try:
                if not self.store.renew_lease(table_id, job, self.holder, epoch, self.lease_seconds):
                    lost.set()
                    return
            except FlowlakeError as exc:  # a busy catalog: try again at the next beat
                _log.warning("renewing the %s lease of table id %s failed: %s", job, table_id, exc)

    def _work(self, record: TableRecord, job: JobKind) -> tuple[Literal["ok", "idle"], str]:
        table = LakeTable(self.store, self.storage, record)
        policy = MaintenancePolicy.from_properties(record.properties)
        if job == "clean":
            result = table.clean(
                retain_last=policy.clean_retain_last,
                orphan_grace_seconds=policy.orphan_grace,
                retain_for_seconds=policy.clean_retain_for,
                consumer_max_lag_seconds=policy.clean_consumer_max_lag,
            )
            detail = (
                f"deleted {result.files_deleted} files ({result.bytes_deleted:,} bytes) and "
                f"{result.orphans_deleted} orphans; oldest readable version {result.oldest_version}"
            )
            return ("ok" if result.files_deleted or result.orphans_deleted else "idle"), detail
        commit = table.compact() if job == "compact" else table.rebalance()
        if commit is None:
            return "idle", f"nothing to {job}"
        s = commit.summary
        return "ok", (
            f"version {commit.version}: {s.get('files_removed', 0)} files into {s.get('files_added', 0)} "
            f"base files over buckets {s.get('buckets', [])}"
        )

    # -- the loop -------------------------------------------------------------------------------

    def run_once(self) -> list[JobResult]:
        """Scan once and run every due job (``max_jobs`` at a time); return their results."""
        due = self.scan()
        with ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="maintain") as pool:
            futures = [pool.submit(self.run_job, record, d.job) for record, d in due]
            return sorted((f.result() for f in futures), key=lambda r: (r.table, r.job))

    def run(self, *, duration: float | None = None) -> list[JobResult]:
        """Scan and run jobs until :meth:`stop` (or ``duration`` seconds); jobs in flight then finish.

        Returns:
            Every job run, in the order they finished.
        """
        deadline = None if duration is None else time.monotonic() + duration
        running: dict[tuple[int, str], Future[JobResult]] = {}
        with ThreadPoolExecutor(max_workers=self.max_jobs, thread_name_prefix="maintain") as pool:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for key in [k for k, f in running.items() if f.done()]:
                    failure = running.pop(key).exception()  # run_job records job failures itself
                    if failure is not None:
                        _log.error("table service job %s failed outside the job", key, exc_info=failure)
                if len(running) < self.max_jobs:
                    try:
                        due = self.scan()
                    except FlowlakeError as exc:  # the catalog is unreachable or busy: next poll
                        self._once(f"scan:{exc}", f"scanning the tables failed: {exc}; retrying")
                        due = []
                    for record, job in due:
                        key = (record.id, job.job)
                        if key in running or len(running) >= self.max_jobs:
                            continue
                        running[key] = pool.submit(self.run_job, record, job.job)
                MAINTAIN_RUNNING.set(len(running))
                self._stop.wait(self.poll_seconds)
            for future in running.values():
                future.exception()  # wait for the jobs in flight (their results are in self.results)
        MAINTAIN_RUNNING.set(0)
        return list(self.results)

    def stop(self) -> None:
        """Ask :meth:`run` to return once the jobs in flight have finished (safe from a signal handler)."""
        self._stop.set()


def _since_finished(state: JobState | None) -> float | None:
    """Seconds since a job last finished, by the database's clock (None: never)."""
    if state is None or state.last_finished_at is None:
        return None
    return max(0.0, (state.now_ms - state.last_finished_at) / 1000)


def job_summary(states: Mapping[str, JobState]) -> dict[str, dict[str, object]]:
    """Plain data of each job's last run and lease, for ``flowlake status --json``."""
    out: dict[str, dict[str, object]] = {}
    for job, s in sorted(states.items()):
        out[job] = {
            "last_outcome": s.last_outcome,
            "last_detail": s.last_detail,
            "seconds_ago": None if s.last_finished_at is None else (s.now_ms - s.last_finished_at) / 1000,
            "runs": s.runs,
            "failures": s.failures,
            "running_on": s.holder if s.holder is not None and (s.expires_in_ms or 0) > 0 else None,
        }
    return out
