"""ODS ingestion: apply a CDC source's transaction groups to lake tables, exactly once.

The ingester polls a :class:`~flowlake.cdc.source.Source` for :class:`ChangeGroup` values and buffers
them until a bound is reached (``max_rows`` changes, ``max_latency_ms`` since the oldest buffered group,
or the source going idle; up to ``catchup_rows`` while the previous flush's commits still run and the
source keeps delivering). A flush then makes one commit per ODS table touched, each carrying the
source position of the last buffered group (plus per-table extras such as snapshot progress) in the
commit's ``sources``, so data and position land atomically. Groups are never split across commits.

On start, each ODS table's stored position is read back; the source resumes from the oldest of them,
and any group at or before a table's own position is skipped for that table. A restart after a crash
anywhere therefore neither loses nor repeats a change.

A group holds each source table's changes as one :class:`~flowlake.cdc.batch.ChangeBatch`, the
only item shape the ingester knows: it buffers them per ODS table and, at a flush, evolves the table
to cover their columns and fits them to its current columns (:mod:`flowlake.cdc.pending`). A source
that decodes straight into Arrow changelogs (a :class:`~flowlake.cdc.source.TargetAwareSource`) is
told each ODS table's columns and key whenever the ingester loads, creates or evolves it; its batches
are only cast (added columns are null, widened types cast).

Tables are created from the source's description (or, for Debezium messages without one, inferred
from the first batch); new columns and lossless type widenings (integers, float32→float64, decimals
to more digits) become schema evolution. A narrower source type keeps the wider ODS column (its values
still fit) and is logged. Records that cannot be decoded go to the append table
``<namespace>._dead_letter`` (an update's two images together) and ingestion goes on.

A change that was decoded but cannot be stored (its value does not fit the ODS column, or its column
cannot be added) *stops that table*: nothing of the buffered changes commits to it, its stored
position stays where it was, and a position-only commit records ``"stopped": {"error", "at"}`` there
(``flowlake status`` shows it). The other tables go on. A restart retries the table from its position,
so once the ODS table is fixed (or flowlake can evolve it) nothing is lost. A change always lands
whole or not at all: never an update's retraction without its new image.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from flowlake.cdc.deadletter import DEAD_LETTER_TABLE, dead_letter_batch, dead_letter_table
from flowlake.cdc.pending import PendingChanges, UnstorableChangeError
from flowlake.cdc.source import (
    AcknowledgingSource,
    ChangeGroup,
    DeadLetter,
    GroupingSource,
    Order,
    Source,
    TableSpec,
    TargetAwareSource,
    ods_table_name,
)
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import (
    InvalidArgumentError,
    InvalidNameError,
    SchemaMismatchError,
    TableNotFoundError,
)
from flowlake.runtime.observability import DEAD_LETTERS

if TYPE_CHECKING:
    from flowlake.catalog.base import Commit
    from flowlake.lake import Catalog
    from flowlake.table.table import LakeTable

log = logging.getLogger(__name__)

CommitCallback = Callable[[str, "Commit", pa.Table], None]
"""Called after each ODS data commit with the table name, the commit and the changelog applied."""


@dataclass(slots=True)
class IngestStats:
    """What an ingestion run did."""

    groups: int = 0
    changes: int = 0
    commits: int = 0
    dead_letters: int = 0
    skipped_groups: int = 0
    tables: dict[str, int] = field(default_factory=dict)
    """Changes applied per ODS table."""
    position: dict[str, Any] | None = None
    """The source position of the last flush."""
    seconds: float = 0.0
    stopped: dict[str, str] = field(default_factory=dict)
    """ODS tables whose ingestion stopped at a change they cannot store, with the reason."""


@dataclass(slots=True)
class _Target:
    """One ODS table being fed: its pending changes and where it stands."""

    source_table: str
    name: str
    resume: Order | None
    table: LakeTable | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    pending: PendingChanges = field(init=False)
    spec: TableSpec | None = None
    dirty: bool = False
    committed: Order | None = None
    stopped: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    """Column type changes the ODS table refused (the column kept its type), with the reason."""
    unwritten_after: Order | None = None
    """Where the table's stored position said it had stopped when the ingester started: the dead
    letters of its changes after that were never written (its changes were skipped while it was
    stopped), whatever the dead-letter table's own position says."""

    def __post_init__(self) -> None:
        self.pending = PendingChanges(self.source_table)

    def clear(self) -> None:
        self.pending.clear()
        self.spec, self.dirty = None, False


class OdsIngester:
    """Feed a CDC source into ODS lake tables with exactly-once commits.

    Args:
        catalog: Where the ODS tables live.
        source: The CDC source (:class:`~flowlake.cdc.mysql.MySqlSource`,
            :class:`~flowlake.cdc.jsonl.JsonlSource`, …).
        namespace: Namespace of the ODS tables and of ``_dead_letter``.
        table_template: ODS table name from ``{db}`` and ``{table}`` of the source table.
        primary_keys: Key columns per source table (``db.table``), for sources that do not know them
            (Debezium messages carry no key). Otherwise a column ``id`` or ``<table>_id`` is used.
        max_rows: Flush once this many changes are buffered (whole groups are never split).
        max_latency_ms: Flush once the oldest buffered group is this old.
        catchup_rows: While the previous commit is still running and the source keeps delivering,
            keep buffering up to this many changes instead of waiting for it (group commit): commits
            grow when the lake is the bottleneck, as in a catch-up after an outage, and a change
            costs less CPU in a larger commit. At a steady rate the lake keeps up and commits stay
            at ``max_rows``/``max_latency_ms``. Never below ``max_rows``.
        buckets: Buckets of newly created ODS tables.
        checkpoint_interval_s: How often idle tables get a position-only commit, so a restart need not
            re-read the log from an old position.
        on_commit: Called after every data commit.
    """

    def __init__(
        self,
        catalog: Catalog,
        source: Source,
        *,
        namespace: str = "ods",
        table_template: str = "{table}",
        primary_keys: Mapping[str, Sequence[str]] | None = None,
        max_rows: int = 10_000,
        max_latency_ms: int = 500,
        catchup_rows: int = 100_000,
        buckets: int = 4,
        checkpoint_interval_s: float = 30.0,
        on_commit: CommitCallback | None = None,
    ) -> None:
        if max_rows < 1 or max_latency_ms < 0:
            raise InvalidArgumentError("max_rows must be >= 1 and max_latency_ms >= 0")
        self.catalog, self.source, self.namespace = catalog, source, namespace
        self.table_template = table_template
        self.primary_keys = {k: tuple(v) for k, v in (primary_keys or {}).items()}
        self.max_rows, self.max_latency = max_rows, max_latency_ms / 1000.0
        self.catchup_rows = max(max_rows, catchup_rows)
        self.buckets, self.checkpoint_interval = buckets, checkpoint_interval_s
        self.on_commit = on_commit
        self.stats = IngestStats()
        self._targets: dict[str, _Target] = {}
        self._groups: list[ChangeGroup] = []
        self._dead: list[tuple[DeadLetter, int, Order | None]] = []
        """Buffered letters: the letter, its group, and for a table's letters the ``unwritten_after``
        of that table (None: the dead-letter table's position says whether it is written)."""
        self._dead_resume: Order | None = None
        self._dead_committed: Order | None = None  # the dead-letter table's stored position, as an order
        self._pending_rows = 0
        self._untargeted = False
        self._first_pending = 0.0
        self._last_position: dict[str, Any] = {}
        self._last_order: Order = ()
        self._last_checkpoint = time.monotonic()
        self._dead_table: LakeTable | None = None
        self._committer: ThreadPoolExecutor | None = None
        self._inflight: Future[None] | None = None

    # -- running --------------------------------------------------------------------------------------

    def run(
        self,
        *,
        until_idle: bool = False,
        duration: float | None = None,
        stop: threading.Event | None = None,
        poll_timeout: float = 0.05,
    ) -> IngestStats:
        """Ingest until ``stop`` is set, ``duration`` seconds pass, or (``until_idle``) the source has
        nothing more right now; then flush, checkpoint and close the source."""
        started = time.monotonic()
        self._start()
        try:
            while not (stop is not None and stop.is_set()):
                if duration is not None and time.monotonic() - started >= duration:
                    break
                groups = self.source.poll(
                    min(poll_timeout, self.max_latency) if self._groups else poll_timeout
                )
                for group in groups:
                    self._buffer(group)
                    if self._pending_rows >= self._flush_rows(delivering=True):
                        self.flush(wait=False)
                if self._groups and (
                    self._pending_rows >= self._flush_rows(delivering=bool(groups))
                    or not groups
                    or self._untargeted
                    or (
                        time.monotonic() - self._first_pending >= self.max_latency
                        and not (groups and self._committing())
                    )
                ):
                    self.flush(wait=False)
                if until_idle and not groups and not self._groups and self.source.caught_up():
                    break
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval and not self._groups:
                    self.checkpoint()
            self.flush()
            self.checkpoint()
        finally:
            try:
                self._wait()
            finally:
                if self._committer is not None:
                    self._committer.shutdown(wait=True)
                    self._committer = None
                self.source.close()
            self.stats.seconds = time.monotonic() - started
        return self.stats

    def _start(self) -> None:
        resume: dict[str, Mapping[str, Any] | None] = {}
        key = self.source.key
        for name in self.catalog.list_tables(self.namespace):
            if name.endswith("." + DEAD_LETTER_TABLE):
                continue
            table = self.catalog.load_table(name)
            position = stored_position(table, key)
            if not isinstance(position, dict) or "table" not in position:
                continue
            source_table = str(position["table"])
            resume[source_table] = position
            order = self.source.order_of(position)
            self._targets[source_table] = _Target(
                source_table, name, order, table=table, extras=_extras(position), committed=order,
                unwritten_after=order if "stopped" in position else None,
            )  # fmt: skip
            table.apply(_empty_changelog(table.schema))  # loads the writer's key state now, not mid-stream
            self._announce(self._targets[source_table])
        also: list[Mapping[str, Any]] = []
        dl_name = f"{self.namespace}.{DEAD_LETTER_TABLE}"
        if self.catalog.table_exists(dl_name):
            self._dead_table = self.catalog.load_table(dl_name)
            dl_position = stored_position(self._dead_table, key)
            if isinstance(dl_position, dict):
                self._dead_resume = self._dead_committed = self.source.order_of(dl_position)
                also.append(dl_position)
        if isinstance(self.source, GroupingSource):
            self.source.limit_groups(self.max_rows)
        start = self.source.start(resume, also=also)
        self._last_position, self._last_order = start, self.source.order_of(start)

    def _buffer(self, group: ChangeGroup) -> None:
        index = len(self._groups)
        used = False
        for source_table in sorted(group.tables):
            target = self._target(source_table)
            if target.stopped is not None or (target.resume is not None and group.order <= target.resume):
                continue
            used = True
            batch = group.batches.get(source_table)
            if target.table is None and batch is not None and batch.form == "messages":
                # flush soon: a target-aware source decodes in bulk once it knows the ODS table
                self._untargeted = True
            if batch is not None and len(batch):
                self._pending_rows += target.pending.add(index, batch)
            if source_table in group.schemas:
                target.spec = group.schemas[source_table]
            if source_table in group.extras:
                target.extras.update(group.extras[source_table])
            target.dirty = True
        if group.dead and (self._dead_resume is None or group.order > self._dead_resume):
            used = True
            self._dead += [(d, index, None) for d in group.dead]  # _dead_letters skips the written ones
        if not used and (group.tables or group.dead):
            self.stats.skipped_groups += 1  # every table it touches has it already
        if not self._groups:
            self._first_pending = time.monotonic()
        self._groups.append(group)
        self.stats.groups += 1

    def _target(self, source_table: str) -> _Target:
        target = self._targets.get(source_table)
        if target is None:
            name = ods_table_name(self.namespace, source_table, self.table_template)
            target = self._targets[source_table] = _Target(source_table, name, None)
        return target

    # -- flushing -------------------------------------------------------------------------------------

    def flush(self, *, wait: bool = True) -> None:
        """Commit everything buffered: the dead letters, then one commit per ODS table touched.

        Changelogs are built (and their dead letters found) before anything commits, and the dead
        letters commit first: a crash between the two commits re-derives the dead letters of the
        ODS commits still to do, and skips them as already in the dead-letter table.

        The commits themselves run on the ingester's commit thread. With ``wait=False`` (what
        :meth:`run` does) flush returns at once, so that the source reads and decodes the next groups
        meanwhile (Parquet writing and the catalog release the GIL); the next flush, :meth:`checkpoint`
        and the end of :meth:`run` wait for them, in order, and re-raise what they raised. Everything
        that reads or changes a table runs while none is in flight.
        """
        self._wait()
        if not self._groups:
            return
        last = self._groups[-1]
        dirty = [t for t in self._targets.values() if t.dirty]
        for target in dirty:  # create (with a position marker) before any data lands: see module doc
            self._ensure_table(target)
        built: list[tuple[_Target, pa.Table, dict[str, Any]]] = []
        stopped: list[tuple[_Target, UnstorableChangeError, dict[str, Any]]] = []
        for target in dirty:
            if target.table is not None:
                try:
                    if target.spec is not None:
                        self._evolve(target, target.spec.schema)
                    changelog, dead = self._changelog(target)
                except UnstorableChangeError as exc:
                    stopped.append((target, exc, self._groups[exc.group].position))
                    target.clear()
                    target.stopped = str(exc)
                    continue
                self._dead += [(d, i, target.unwritten_after) for d, i in dead]
                built.append((target, changelog, dict(target.extras)))
                target.clear()
                self._announce(target)  # the table may have evolved
        letters = self._dead_letters()
        # what a source may release once these commits land: not past a stopped table's position
        held = [t.committed for t in self._targets.values() if t.stopped is not None and t.committed]
        durable = min([last.order, *held])
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="ods-commit")
        self._inflight = self._committer.submit(self._commit_all, letters, built, stopped, last, durable)
        self._groups, self._pending_rows, self._untargeted = [], 0, False
        self._last_position, self._last_order = last.position, last.order
        self.stats.position = last.position
        if wait:
            self._wait()

    def _committing(self) -> bool:
        """Whether the last flush's commits are still running."""
        return self._inflight is not None and not self._inflight.done()

    def _flush_rows(self, *, delivering: bool) -> int:
        """How many buffered changes make a flush: ``max_rows``, or while the source keeps
        delivering and the previous commit still runs, ``catchup_rows`` (a flush now would only
        wait for that commit, so the source reads on and the next commit takes more)."""
        return self.catchup_rows if delivering and self._committing() else self.max_rows

    def _wait(self) -> None:
        """Wait for the commits of the last flush; re-raise what they raised."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.result()

    def _commit_all(
        self,
        letters: list[DeadLetter],
        built: list[tuple[_Target, pa.Table, dict[str, Any]]],
        stopped: list[tuple[_Target, UnstorableChangeError, dict[str, Any]]],
        last: ChangeGroup,
        durable: Order,
    ) -> None:
        if letters:
            self._append_dead(letters, last)
        for target, changelog, extras in built:
            self._commit_target(target, changelog, extras, last)
        for target, error, at in stopped:
            self._stop(target, error, at)
        if isinstance(self.source, AcknowledgingSource):
            self.source.acknowledge(durable)  # only now: everything up to it is in ODS

    def _commit_target(
        self, target: _Target, changelog: pa.Table, extras: dict[str, Any], last: ChangeGroup
    ) -> None:
        table = target.table
        assert table is not None
        position = {**last.position, "table": target.source_table, **extras}
        commit = table.apply(
            changelog, token=_token(self.source.key, last.order), sources={self.source.key: position}
        )
        target.committed = last.order
        self.stats.commits += 1
        self.stats.changes += changelog.num_rows
        self.stats.tables[target.name] = self.stats.tables.get(target.name, 0) + changelog.num_rows
        if self.on_commit is not None:
            self.on_commit(target.name, commit, changelog)

    def _stop(self, target: _Target, error: UnstorableChangeError, at: dict[str, Any]) -> None:
        """Stop a table at its stored position: mark it there (for ``status``); its buffer is dropped."""
        table = target.table
        assert table is not None
        log.error("%s (the change is at %s)", error, at)
        stored = stored_position(table, self.source.key)
        if isinstance(stored, dict):
            marker = {**stored, "stopped": {"error": str(error), "at": at}}
            table.apply(
                _empty_changelog(table.schema),
                token=_token(self.source.key, self.source.order_of(stored)) + "/stopped",
                sources={self.source.key: marker},
            )
        self.stats.stopped[target.name] = str(error)

    def _dead_letters(self) -> list[DeadLetter]:
        """The buffered dead letters the dead-letter table does not hold yet, with their positions."""
        skip = self._dead_resume
        letters = [
            DeadLetter(d.raw, d.position or self._groups[i].position, d.source_table, d.error)
            for d, i, unwritten_after in self._dead
            if skip is None
            or self._groups[i].order > skip
            or (unwritten_after is not None and self._groups[i].order > unwritten_after)
        ]  # (a crash between writing such letters and the table's next commit writes them twice)
        self._dead = []
        return letters

    def _append_dead(self, letters: list[DeadLetter], last: ChangeGroup) -> None:
        if self._dead_table is None:
            self._dead_table = dead_letter_table(self.catalog, self.namespace)
        self._dead_table.append(
            dead_letter_batch(self.source.key, letters),
            token=_token(self.source.key, last.order),
            sources={self.source.key: last.position},
        )
        self._dead_committed = last.order
        self.stats.dead_letters += len(letters)
        DEAD_LETTERS.labels(self._dead_table.name).inc(len(letters))

    def checkpoint(self) -> None:
        """Give idle tables a position-only commit at the last flushed position.

        The dead-letter table gets one too (unless a table is stopped, whose letters after its kept
        position are not written yet): a restart starts reading no earlier than the oldest stored
        position, the dead-letter table's included, so a letter long ago would otherwise make every
        restart read the log again from there, and fail once the server has purged that log.
        """
        self._wait()
        self._last_checkpoint = time.monotonic()
        if self._groups or not self._last_order:
            return
        for target in self._targets.values():
            table = target.table
            if target.stopped is not None or table is None or target.committed is None:
                continue
            if target.committed >= self._last_order:
                continue
            position = {**self._last_position, "table": target.source_table, **target.extras}
            empty = _empty_changelog(table.schema)
            table.apply(
                empty, token=_token(self.source.key, self._last_order), sources={self.source.key: position}
            )
            target.committed = self._last_order
        dead = self._dead_table
        stopped = any(t.stopped is not None for t in self._targets.values())
        if (
            dead is not None
            and not stopped
            and (self._dead_committed is None or self._dead_committed < self._last_order)
        ):
            dead.append(
                dead_letter_batch(self.source.key, []),
                token=_token(self.source.key, self._last_order) + "/checkpoint",
                sources={self.source.key: self._last_position},
            )
            self._dead_committed = self._last_order

    # -- tables ---------------------------------------------------------------------------------------

    def _ensure_table(self, target: _Target) -> None:
        if target.table is not None:
            return
        try:
            target.table = self.catalog.load_table(target.name)
        except TableNotFoundError:
            spec = (
                target.spec
                or self.source.describe(target.source_table)
                or target.pending.infer_spec(lambda names: self._primary_key(target.source_table, names))
            )
            if spec is not None and not spec.primary_key:
                key = self._primary_key(target.source_table, spec.schema.names)
                spec = TableSpec(spec.source_table, spec.schema, key) if key else None
            if spec is None:
                self._unroutable(target, _no_key_error(target.source_table))
                return
            try:
                target.table = self.catalog.create_table(
                    target.name,
                    spec.schema,
                    primary_key=list(spec.primary_key),
                    buckets=self.buckets,
                    exist_ok=True,
                )
            except (SchemaMismatchError, InvalidArgumentError, InvalidNameError) as exc:
                self._unroutable(target, f"cannot create ODS table {target.name!r}: {exc}")
                return
        self._announce(target)
        marker = {**self._last_position, "table": target.source_table}
        target.table.apply(
            _empty_changelog(target.table.schema),
            token=_token(self.source.key, self._last_order) + "/create",
            sources={self.source.key: marker},
        )
        target.committed = self._last_order

    def _announce(self, target: _Target) -> None:
        """Tell a source that decodes into ODS columns what the target's table holds now."""
        table = target.table
        if table is not None and isinstance(self.source, TargetAwareSource):
            spec = TableSpec(target.source_table, table.schema, tuple(table.primary_key))
            self.source.target(target.source_table, spec)

    def _unroutable(self, target: _Target, error: str) -> None:
        """Dead-letter a table's buffered changes when no ODS table can be made for it."""
        group = len(self._groups) - 1
        self._dead += [
            (DeadLetter(raw, {}, target.source_table, error), group, None) for raw in target.pending.records()
        ]
        target.clear()

    def _primary_key(self, source_table: str, columns: Sequence[str]) -> tuple[str, ...] | None:
        if source_table in self.primary_keys:
            return self.primary_keys[source_table]
        table = source_table.rpartition(".")[2]
        for guess in ("id", f"{table}_id"):
            if guess in columns:
                return (guess,)
        return None

    def _evolve(self, target: _Target, wanted: pa.Schema) -> None:
        """Add ``wanted``'s new columns and widen changed types where that is lossless.

        A refused type change keeps the ODS column (logged once; a value that then does not fit stops
        the table, naming the refusal). A column that cannot be added stops the table at once: its
        values would otherwise be dropped silently.
        """
        table = target.table
        assert table is not None
        current = table.refresh().schema
        fields = list(current)
        added: list[str] = []
        for f in wanted:
            if f.name not in current.names:
                fields.append(pa.field(f.name, f.type if f.type != pa.null() else pa.string(), nullable=True))
                added.append(f.name)
            elif current.field(f.name).type != f.type:
                candidate = pa.schema([x if x.name != f.name else x.with_type(f.type) for x in fields])
                try:
                    table.evolve_schema(candidate)
                    fields = list(table.schema)
                    target.refused.pop(f.name, None)
                except SchemaMismatchError as exc:
                    if target.refused.get(f.name) != str(exc):
                        log.warning("keeping the column type of %s: %s", target.name, exc)
                    target.refused[f.name] = str(exc)
        if added:
            try:
                table.evolve_schema(pa.schema(fields))
            except (SchemaMismatchError, InvalidNameError, InvalidArgumentError) as exc:
                raise UnstorableChangeError(
                    target.name, target.source_table, f"cannot add column(s) {added}: {exc}", group=0
                ) from exc

    # -- building changelogs --------------------------------------------------------------------------

    def _changelog(self, target: _Target) -> tuple[pa.Table, list[tuple[DeadLetter, int]]]:
        table = target.table
        assert table is not None
        return target.pending.changelog(
            table,
            name=target.name,
            refused=target.refused,
            evolve=lambda wanted: self._evolve(target, wanted),
            describe=self.source.describe,
        )


def stored_position(table: LakeTable, key: str) -> Any | None:
    """The source position ``key`` stored by the table's newest commit that carries one."""
    return table.source_position(key)


def _no_key_error(source_table: str) -> str:
    return (
        f"no primary key known for source table {source_table!r}: pass "
        f"primary_keys={{{source_table!r}: [...]}} (CLI: --primary-key {source_table}=col), "
        "or give it a column 'id'"
    )


def _extras(position: Mapping[str, Any]) -> dict[str, Any]:
    """The per-table state a source stores beside its position: snapshot progress, the source
    table's shape as ODS last saw it (``columns``, for sources whose log does not record DDL)."""
    return {k: v for k, v in position.items() if k in ("snapshot", "columns")}


def _token(key: str, order: Order) -> str:
    return f"{key}@" + ":".join(str(x) for x in order)


def _empty_changelog(schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches([], pa.schema([*schema, pa.field(KIND_COLUMN, pa.int8(), nullable=False)]))
