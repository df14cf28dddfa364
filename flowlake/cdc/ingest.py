"""ODS ingestion: apply a CDC source's transaction groups to lake tables, exactly once.

The ingester polls a :class:`~flowlake.cdc.source.Source` for :class:`ChangeGroup` values and buffers
them until a bound is reached (``max_rows`` changes, ``max_latency_ms`` since the oldest buffered group,
or the source going idle). A flush then makes one commit per ODS table touched, each carrying the
source position of the last buffered group (plus per-table extras such as snapshot progress) in the
commit's ``sources``, so data and position land atomically. Groups are never split across commits.

On start, each ODS table's stored position is read back; the source resumes from the oldest of them,
and any group at or before a table's own position is skipped for that table. A restart after a crash
anywhere therefore neither loses nor repeats a change.

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
import pyarrow.compute as pc

from flowlake.cdc._build import build_rows
from flowlake.cdc._jsonl_bulk import MessageBatch, arrow_changelog
from flowlake.cdc._record_json import dump_record
from flowlake.cdc.deadletter import DEAD_LETTER_TABLE, dead_letter_batch, dead_letter_table
from flowlake.cdc.debezium import decode_batch
from flowlake.cdc.source import (
    ChangeGroup,
    DeadLetter,
    Order,
    Source,
    TableSpec,
    UndecodedRow,
    ods_table_name,
)
from flowlake.changelog import KIND_COLUMN, RESERVED_COLUMNS
from flowlake.errors import (
    FlowlakeError,
    InvalidArgumentError,
    InvalidNameError,
    SchemaMismatchError,
    TableNotFoundError,
    short_repr,
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


class UnstorableChangeError(FlowlakeError):
    """A decoded change does not fit its ODS table; ingestion of that table stops at its position."""

    def __init__(self, table: str, source_table: str, reason: str, *, group: int) -> None:
        super().__init__(
            f"ingestion of {table!r} (from {source_table}) stopped: {reason}; nothing after its stored "
            "position was committed to it. Fix the ODS table (e.g. evolve_schema to a type that "
            "holds the value) or the source, then restart the ingester: it resumes from that position"
        )
        self.table, self.source_table, self.reason, self.group = table, source_table, reason, group


@dataclass(slots=True)
class _Target:
    """One ODS table being fed: its pending changes and where it stands."""

    source_table: str
    name: str
    resume: Order | None
    table: LakeTable | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    row_groups: list[int] = field(default_factory=list)
    messages: list[tuple[bytes, Any]] = field(default_factory=list)
    message_groups: list[int] = field(default_factory=list)
    batches: list[MessageBatch] = field(default_factory=list)
    """Messages parsed in bulk, pending while ``messages`` is empty (else they join ``messages``)."""
    batch_groups: list[int] = field(default_factory=list)
    spec: TableSpec | None = None
    dirty: bool = False
    committed: Order | None = None
    stopped: str | None = None
    refused: dict[str, str] = field(default_factory=dict)
    """Column type changes the ODS table refused (the column kept its type), with the reason."""

    def clear(self) -> None:
        self.rows, self.row_groups, self.messages, self.message_groups = [], [], [], []
        self.batches, self.batch_groups = [], []
        self.spec, self.dirty = None, False

    def materialize(self) -> None:
        """Hand the bulk-parsed messages to the per-message decoder, keeping their order."""
        for batch, group in zip(self.batches, self.batch_groups, strict=True):
            messages = batch.messages()
            self.messages += messages
            self.message_groups += [group] * len(messages)
        self.batches, self.batch_groups = [], []


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
        self.buckets, self.checkpoint_interval = buckets, checkpoint_interval_s
        self.on_commit = on_commit
        self.stats = IngestStats()
        self._targets: dict[str, _Target] = {}
        self._groups: list[ChangeGroup] = []
        self._dead: list[tuple[DeadLetter, int]] = []
        self._dead_resume: Order | None = None
        self._pending_rows = 0
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
                    if self._pending_rows >= self.max_rows:
                        self.flush(wait=False)
                if self._groups and (
                    self._pending_rows >= self.max_rows
                    or not groups
                    or time.monotonic() - self._first_pending >= self.max_latency
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
                source_table, name, order, table=table, extras=_extras(position), committed=order
            )
            table.apply(_empty_changelog(table.schema))  # loads the writer's key state now, not mid-stream
        also: list[Mapping[str, Any]] = []
        dl_name = f"{self.namespace}.{DEAD_LETTER_TABLE}"
        if self.catalog.table_exists(dl_name):
            self._dead_table = self.catalog.load_table(dl_name)
            dl_position = stored_position(self._dead_table, key)
            if isinstance(dl_position, dict):
                self._dead_resume = self.source.order_of(dl_position)
                also.append(dl_position)
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
            rows = group.rows.get(source_table)
            if rows:
                target.rows += rows
                target.row_groups += [index] * len(rows)
                self._pending_rows += len(rows)
            messages = group.messages.get(source_table)
            if messages:
                target.materialize()
                target.messages += messages
                target.message_groups += [index] * len(messages)
                self._pending_rows += len(messages)
            batch = group.batches.get(source_table)
            if batch is not None:
                target.batches.append(batch)
                target.batch_groups.append(index)
                self._pending_rows += len(batch)
                if target.messages:
                    target.materialize()
            if source_table in group.schemas:
                target.spec = group.schemas[source_table]
            if source_table in group.extras:
                target.extras.update(group.extras[source_table])
            target.dirty = True
        if group.dead and (self._dead_resume is None or group.order > self._dead_resume):
            used = True
            self._dead += [(d, index) for d in group.dead]  # _append_dead skips the committed ones
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
                self._dead += dead
                built.append((target, changelog, dict(target.extras)))
                target.clear()
        letters = self._dead_letters()
        if self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="ods-commit")
        self._inflight = self._committer.submit(self._commit_all, letters, built, stopped, last)
        self._groups, self._pending_rows = [], 0
        self._last_position, self._last_order = last.position, last.order
        self.stats.position = last.position
        if wait:
            self._wait()

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
    ) -> None:
        if letters:
            self._append_dead(letters, last)
        for target, changelog, extras in built:
            self._commit_target(target, changelog, extras, last)
        for target, error, at in stopped:
            self._stop(target, error, at)

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
            for d, i in self._dead
            if skip is None or self._groups[i].order > skip
        ]
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
        self.stats.dead_letters += len(letters)
        DEAD_LETTERS.labels(self._dead_table.name).inc(len(letters))

    def checkpoint(self) -> None:
        """Give idle tables a position-only commit at the last flushed position."""
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

    # -- tables ---------------------------------------------------------------------------------------

    def _ensure_table(self, target: _Target) -> None:
        if target.table is not None:
            return
        target.materialize()  # a new table's shape is inferred from the messages
        try:
            target.table = self.catalog.load_table(target.name)
        except TableNotFoundError:
            spec = target.spec or self.source.describe(target.source_table) or self._infer_spec(target)
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
        marker = {**self._last_position, "table": target.source_table}
        target.table.apply(
            _empty_changelog(target.table.schema),
            token=_token(self.source.key, self._last_order) + "/create",
            sources={self.source.key: marker},
        )
        target.committed = self._last_order

    def _unroutable(self, target: _Target, error: str) -> None:
        """Dead-letter a table's buffered changes when no ODS table can be made for it."""
        target.materialize()
        for raw, _ in target.messages:
            self._dead.append((DeadLetter(raw, {}, target.source_table, error), len(self._groups) - 1))
        for _, row in target.rows:
            raw = row.raw if isinstance(row, UndecodedRow) else dump_record(row)
            self._dead.append((DeadLetter(raw, {}, target.source_table, error), len(self._groups) - 1))
        target.clear()

    def _infer_spec(self, target: _Target) -> TableSpec | None:
        """Infer an ODS table from the buffered messages (Debezium without a schema block)."""
        if not target.messages:
            return None
        raws = [m for m, _ in target.messages]
        decoded = decode_batch(raws, parsed=[o for _, o in target.messages])
        schema = _nullable(decoded.table.schema.remove(decoded.table.schema.get_field_index(KIND_COLUMN)))
        key = self._primary_key(target.source_table, schema.names)
        if key is None:
            return None
        return TableSpec(target.source_table, schema, key)

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
        dead: list[tuple[DeadLetter, int]] = []
        parts: list[pa.Table] = []
        key = table.primary_key
        if target.rows:
            rows, groups = _take_undecoded(target, dead)
            self._evolve_for_rows(target)
            built, bad = build_rows(rows, table.schema)
            if bad:
                first = min(bad)
                column, reason = bad[first]
                if column in target.refused:
                    reason += f" (the ODS table kept its column type: {target.refused[column]})"
                key_values = {k: rows[first][1].get(k) for k in key}
                reason = f"the change of key {short_repr(key_values)}: {reason}"
                raise UnstorableChangeError(target.name, target.source_table, reason, group=groups[first])

            def row_raw(row: int) -> tuple[bytes, int]:  # serialized only for a dead letter
                return dump_record(rows[row][1]), groups[row]

            parts.append(_drop_null_keys(built, key, row_raw, target, dead))
        if target.batches:
            bulk = arrow_changelog(target.batches, table.schema, key)
            if bulk is not None:
                parts.append(bulk)
                target.batches, target.batch_groups = [], []
            else:
                target.materialize()
        if target.messages:
            decoded, owners = self._decode_messages(target, dead)

            def raw_of(row: int) -> tuple[bytes, int]:
                index = owners[row]
                return target.messages[index][0], target.message_groups[index]

            parts.append(_drop_null_keys(decoded, key, raw_of, target, dead))
        return _concat(parts, table.schema), dead

    def _evolve_for_rows(self, target: _Target) -> None:
        table = target.table
        assert table is not None
        names = set(table.schema.names)
        unknown: set[str] = set()
        for _, row in target.rows:
            if row.keys() - names:
                unknown |= row.keys() - names - RESERVED_COLUMNS
        if not unknown:
            return
        spec = self.source.describe(target.source_table)
        if spec is not None and unknown <= set(spec.schema.names):
            self._evolve(target, spec.schema)
            return
        sample = {c: next((r[c] for _, r in target.rows if r.get(c) is not None), None) for c in unknown}
        inferred = [
            pa.field(c, pa.array([v]).type if v is not None else pa.string()) for c, v in sample.items()
        ]
        self._evolve(target, pa.schema([*table.schema, *sorted(inferred, key=lambda f: f.name)]))

    def _decode_messages(
        self, target: _Target, dead: list[tuple[DeadLetter, int]]
    ) -> tuple[pa.Table, list[int]]:
        table = target.table
        assert table is not None
        raws = [m for m, _ in target.messages]
        parsed = [o for _, o in target.messages]
        names = set(table.schema.names)
        unknown = _message_fields(parsed) - names - RESERVED_COLUMNS
        if unknown:
            inferred = decode_batch(raws, parsed=parsed).table.schema
            new = [inferred.field(c) for c in inferred.names if c in unknown]
            self._evolve(target, pa.schema([*table.schema, *new]))
        decoded = decode_batch(raws, table.refresh().schema, primary_key=table.primary_key, parsed=parsed)
        for failure in decoded.errors:
            letter = DeadLetter(raws[failure.index], {}, target.source_table, failure.reason)
            dead.append((letter, target.message_groups[failure.index]))
        return decoded.table, decoded.message_index.to_pylist()


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
    return {k: v for k, v in position.items() if k == "snapshot"}


def _token(key: str, order: Order) -> str:
    return f"{key}@" + ":".join(str(x) for x in order)


def _empty_changelog(schema: pa.Schema) -> pa.Table:
    return pa.Table.from_batches([], pa.schema([*schema, pa.field(KIND_COLUMN, pa.int8(), nullable=False)]))


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_type(pa.string()) if f.type == pa.null() else f for f in schema])


def _message_fields(parsed: Sequence[Any]) -> set[str]:
    names: set[str] = set()
    for obj in parsed:
        payload = obj.get("payload", obj) if type(obj) is dict else None
        if type(payload) is not dict:
            continue
        for image in (payload.get("after"), payload.get("before")):
            if type(image) is dict:
                names.update(image)
    return names


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    target = pa.schema([*(f.with_nullable(True) for f in schema), pa.field(KIND_COLUMN, pa.int8())])
    fitted = []
    for part in parts:
        arrays = [
            part.column(f.name).cast(f.type)
            if f.name in part.column_names
            else pa.nulls(part.num_rows, f.type)
            for f in target
        ]
        fitted.append(pa.Table.from_arrays(arrays, schema=target))
    return pa.concat_tables(fitted) if fitted else target.empty_table()


def _take_undecoded(
    target: _Target, dead: list[tuple[DeadLetter, int]]
) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    """Move the changes whose images the source could not decode to the dead letters (an update's
    two images together, once); return the other changes and their groups."""
    rows: list[tuple[int, dict[str, Any]]] = []
    groups: list[int] = []
    seen: set[int] = set()
    for (kind, row), group in zip(target.rows, target.row_groups, strict=True):
        if isinstance(row, UndecodedRow):
            if id(row.raw) not in seen:
                seen.add(id(row.raw))
                dead.append((DeadLetter(row.raw, {}, target.source_table, row.error), group))
            continue
        rows.append((kind, row))
        groups.append(group)
    return rows, groups


def _drop_null_keys(
    changelog: pa.Table,
    key: Sequence[str],
    raw_of: Callable[[int], tuple[bytes, int]],
    target: _Target,
    dead: list[tuple[DeadLetter, int]],
) -> pa.Table:
    """Move changes with a null key column to the dead letters (``raw_of`` gives a row's record)."""
    if not changelog.num_rows:
        return changelog
    mask = None
    for name in key:
        nulls = pc.is_null(changelog.column(name))
        mask = nulls if mask is None else pc.or_(mask, nulls)
    if mask is None or not pc.any(mask).as_py():
        return changelog
    error = f"primary-key column(s) {list(key)} null in a change for {target.name!r}"
    seen: set[int] = set()
    for row in pc.indices_nonzero(mask).to_pylist():
        raw, group = raw_of(row)
        if id(raw) not in seen:  # an update's -U and +U share one record
            seen.add(id(raw))
            dead.append((DeadLetter(raw, {}, target.source_table, error), group))
    return changelog.filter(pc.invert(mask))
