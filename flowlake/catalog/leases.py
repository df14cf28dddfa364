"""Leases for table service jobs, and the record of each job's last run, inside the catalog store.

A table service job (``compact``, ``rebalance``, ``clean`` of one table) runs under a lease: one row
of ``flowlake_table_jobs`` per ``(table, job)`` naming its holder and when the lease expires.
Several ``flowlake maintain`` processes, on several hosts, share work through these rows:

- **Acquire** is one write transaction: create the row if it is missing (``ON CONFLICT DO NOTHING``),
  read it under the row lock (SQLite: the database's write lock from ``BEGIN IMMEDIATE``; PostgreSQL:
  ``SELECT ... FOR UPDATE``), and take it if nobody holds it or the holder's lease has expired. The
  lease's *epoch* goes up by one on every acquisition: it is the fencing token that renewals and the
  release must present, so a holder whose lease was taken over can neither renew nor release it.
- **Renew** moves the expiry forward (holder and epoch must still match); the service renews every
  third of the lease's length while the job runs. **Release** clears the holder and records the run's
  outcome in the same statement.
- **The clock rule.** Every time in the lease table comes from the *database's* clock, read inside
  the transaction (PostgreSQL ``clock_timestamp()``; SQLite ``julianday('now')``, i.e. the clock of
  the host that runs the catalog: the process itself for an embedded catalog, the server behind the
  REST metastore). Host clocks are never compared with each other, so skew between ``maintain`` hosts
  does not matter. A holder's own view is conservative: it treats its lease as lost once its renewals
  fail, and measures nothing against the database's clock.
- The lease is an efficiency and safety layer, not what keeps data correct: compaction and cleaning
  commits are compare-and-set operations in the catalog, so two jobs that race (a lease taken over
  while the old holder still runs) can waste work but never lose data.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flowlake.catalog.access import AccessControl, Privilege
from flowlake.catalog.base import JobState
from flowlake.catalog.engine import begin_write, insert_if_missing
from flowlake.catalog.sqltables import table_jobs
from flowlake.errors import InvalidArgumentError

JOB_KINDS: frozenset[str] = frozenset({"compact", "rebalance", "clean"})
"""The jobs a lease can be held for."""

OUTCOMES: frozenset[str] = frozenset({"ok", "idle", "failed", "lost"})
"""How a job run can end: did work, found nothing to do, raised, or lost its lease."""


def db_now_ms(conn: Connection) -> int:
    """The database's clock in epoch milliseconds (see the clock rule in this module's docstring)."""
    if conn.dialect.name == "postgresql":
        query = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
    else:
        query = "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
    return int(conn.execute(sa.text(query)).scalar_one())


def _check(job: str, ttl_seconds: float | None = None) -> None:
    if job not in JOB_KINDS:
        raise InvalidArgumentError(f"unknown table service job {job!r}; use one of {sorted(JOB_KINDS)}")
    if ttl_seconds is not None and not 0 < ttl_seconds <= 86_400:
        raise InvalidArgumentError(f"a lease lasts more than 0 and at most 86400 seconds, got {ttl_seconds}")


def _held_by(table_id: int, job: str, holder: str, epoch: int) -> tuple[sa.ColumnElement[bool], ...]:
    """The lease row of ``job`` on a table as ``holder`` took it at ``epoch`` (not taken over since)."""
    return (
        table_jobs.c.table_id == table_id,
        table_jobs.c.job == job,
        table_jobs.c.holder == holder,
        table_jobs.c.epoch == epoch,
    )


class LeaseRegistry(AccessControl):
    """Job leases and last runs over the catalog's ``flowlake_table_jobs`` table."""

    def _allow(self, privilege: Privilege, table_id: int) -> None:  # the store provides it
        raise NotImplementedError

    def acquire_lease(self, table_id: int, job: str, holder: str, ttl_seconds: float) -> int | None:
        """Take the lease of ``job`` on a table if nobody holds it or its lease expired.

        Returns:
            The lease's epoch (present it to :meth:`renew_lease` and :meth:`release_lease`), or None
            if another holder's lease is still running.

        Raises:
            PermissionDeniedError: Without ``write`` on the table.
        """
        _check(job, ttl_seconds)
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            insert_if_missing(
                conn, table_jobs, {"table_id": table_id, "job": job, "epoch": 0, "runs": 0, "failures": 0}
            )
            row = conn.execute(
                sa.select(table_jobs).where(table_jobs.c.table_id == table_id, table_jobs.c.job == job)
                .with_for_update()
            ).one()._mapping  # fmt: skip
            now = db_now_ms(conn)
            held = row["holder"] is not None and row["expires_at"] is not None and row["expires_at"] > now
            if held:
                return None
            epoch = int(row["epoch"]) + 1
            values: dict[str, Any] = {
                "holder": holder, "epoch": epoch, "expires_at": now + int(ttl_seconds * 1000),
                "last_holder": holder, "last_started_at": now,
            }  # fmt: skip
            if row["holder"] is not None:  # the previous holder died (or stalled) mid-job
                values.update(
                    last_finished_at=now,
                    last_outcome="lost",
                    failures=table_jobs.c.failures + 1,
                    last_detail=f"{row['holder']} let its lease expire; taken over by {holder}",
                )
            conn.execute(
                sa.update(table_jobs)
                .where(
                    table_jobs.c.table_id == table_id,
                    table_jobs.c.job == job,
                    table_jobs.c.epoch == row["epoch"],
                )
                .values(**values)
            )
            return epoch

    def renew_lease(self, table_id: int, job: str, holder: str, epoch: int, ttl_seconds: float) -> bool:
        """Extend a held lease by ``ttl_seconds`` from now; False if it was taken over (it is lost)."""
        _check(job, ttl_seconds)
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            now = db_now_ms(conn)
            return bool(
                conn.execute(
                    sa.update(table_jobs)
                    .where(*_held_by(table_id, job, holder, epoch))
                    .values(expires_at=now + int(ttl_seconds * 1000))
                ).rowcount
            )

    def release_lease(
        self, table_id: int, job: str, holder: str, epoch: int, outcome: str, detail: str
    ) -> bool:
        """Give a lease back and record the run's ``outcome`` (see :data:`OUTCOMES`) and ``detail``.

        Returns:
            False if the lease had been taken over meanwhile (nothing is recorded then: the new
            holder's run is the one that counts).
        """
        _check(job)
        if outcome not in OUTCOMES:
            raise InvalidArgumentError(f"unknown job outcome {outcome!r}; use one of {sorted(OUTCOMES)}")
        self._allow("write", table_id)
        with begin_write(self.engine) as conn:
            now = db_now_ms(conn)
            return bool(
                conn.execute(
                    sa.update(table_jobs)
                    .where(*_held_by(table_id, job, holder, epoch))
                    .values(
                        holder=None,
                        expires_at=None,
                        last_finished_at=now,
                        last_outcome=outcome,
                        last_detail=detail[:2000],
                        runs=table_jobs.c.runs + 1,
                        failures=table_jobs.c.failures + (1 if outcome in ("failed", "lost") else 0),
                    )
                ).rowcount
            )

    def job_states(self, table_id: int) -> list[JobState]:
        """Every job's lease and last run on a table, by job name."""
        self._allow("read", table_id)
        with self.engine.connect() as conn:
            now = db_now_ms(conn)
            rows = conn.execute(
                sa.select(table_jobs).where(table_jobs.c.table_id == table_id).order_by(table_jobs.c.job)
            ).all()
        out = []
        for r in rows:
            m = r._mapping
            expires = m["expires_at"]
            out.append(
                JobState(
                    table_id=int(m["table_id"]),
                    job=m["job"],
                    holder=m["holder"],
                    epoch=int(m["epoch"]),
                    expires_in_ms=None if expires is None else int(expires) - now,
                    last_holder=m["last_holder"],
                    last_started_at=_opt_int(m["last_started_at"]),
                    last_finished_at=_opt_int(m["last_finished_at"]),
                    last_outcome=m["last_outcome"],
                    last_detail=m["last_detail"],
                    runs=int(m["runs"]),
                    failures=int(m["failures"]),
                    now_ms=now,
                )
            )
        return out


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
