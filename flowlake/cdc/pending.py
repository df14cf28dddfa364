"""The changes a source handed over for one ODS table, buffered until the ingester flushes them.

:class:`PendingChanges` keeps a source table's :class:`~flowlake.cdc.batch.ChangeBatch` values in one
ordered list, each with the index of its group, and :meth:`PendingChanges.changelog` turns them into
one Arrow changelog in the ODS table's columns plus ``_kind``, in source order, with the records that
cannot be applied as dead letters (each with its group): ``changelog`` batches are cast to the
table's columns; consecutive ``rows`` batches are built, and consecutive ``messages`` batches decoded,
together, straight into the table's column types, after evolving the table to cover the columns
they bring (see :mod:`flowlake.cdc.batch` for the forms).

Dead letters: a row the source could not decode (:class:`~flowlake.cdc.batch.UndecodedRow`, an
update's two images once), a message the decoder refuses, and a change whose key is null. A change
that was decoded but does not fit its ODS column raises :class:`UnstorableChangeError` instead: it
stops its table (see :mod:`flowlake.cdc.ingest`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from flowlake.cdc.batch import BatchForm, ChangeBatch, Messages, Rows, UndecodedRow, build_rows
from flowlake.cdc.debezium import decode_batch
from flowlake.cdc.record_json import dump_record
from flowlake.cdc.source import DeadLetter, TableSpec
from flowlake.changelog import KIND_COLUMN, RESERVED_COLUMNS
from flowlake.errors import FlowlakeError, short_repr

if TYPE_CHECKING:
    from flowlake.table.table import LakeTable

Letters = list[tuple[DeadLetter, int]]
"""Dead letters, each with the index of the group it belongs to."""


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
class PendingChanges:
    """What a source handed over for one source table since the last flush, in source order.

    Attributes:
        source_table: ``db.table`` in the source.
        items: ``(group, batch)``: the index of the group and its changes.

    >>> pending = PendingChanges("shop.orders")
    >>> pending.add(0, ChangeBatch.of_rows([(0, {"id": 1, "v": "a"}), (3, {"id": 2, "v": "b"})]))
    2
    >>> len(pending), pending.records()
    (2, [b'{"id":1,"v":"a"}', b'{"id":2,"v":"b"}'])
    """

    source_table: str
    items: list[tuple[int, ChangeBatch]] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(batch) for _, batch in self.items)

    def add(self, group: int, batch: ChangeBatch) -> int:
        """Buffer the changes of group ``group``; return how many (messages count one each)."""
        self.items.append((group, batch))
        return len(batch)

    def clear(self) -> None:
        """Forget everything buffered."""
        self.items = []

    def _runs(self) -> list[tuple[BatchForm, list[tuple[int, ChangeBatch]]]]:
        """The items as runs of one form, in order: ``(form, [(group, batch), ...])``."""
        runs: list[tuple[BatchForm, list[tuple[int, ChangeBatch]]]] = []
        for group, batch in self.items:
            if not runs or runs[-1][0] != batch.form:
                runs.append((batch.form, []))
            runs[-1][1].append((group, batch))
        return runs

    def records(self) -> list[bytes]:
        """Every buffered record as bytes, in order, for dead-lettering them all."""
        return [raw for _, batch in self.items for raw in batch.raws()]

    def infer_spec(self, primary_key: Callable[[Sequence[str]], tuple[str, ...] | None]) -> TableSpec | None:
        """Infer an ODS table from the buffered messages (Debezium without a schema block).

        ``primary_key`` picks the key from the inferred column names (``None``: no key known).
        """
        messages = [m for _, batch in self.items if batch.messages is not None for m in batch.messages]
        batches = [batch.changes for _, batch in self.items if batch.changes is not None]
        if messages:
            changes = decode_batch([m for m, _ in messages], parsed=[o for _, o in messages]).table
        elif batches:
            changes = batches[0]
        else:
            return None
        schema = _nullable(changes.schema.remove(changes.schema.get_field_index(KIND_COLUMN)))
        key = primary_key(schema.names)
        if key is None:
            return None
        return TableSpec(self.source_table, schema, key)

    def changelog(
        self,
        table: LakeTable,
        *,
        name: str,
        refused: Mapping[str, str],
        evolve: Callable[[pa.Schema], None],
        describe: Callable[[str], TableSpec | None],
    ) -> tuple[pa.Table, Letters]:
        """The buffered changes as one changelog in ``table``'s columns plus ``_kind``, and the dead letters.

        Args:
            table: The ODS table (named ``name``); its schema may be evolved on the way.
            name: The ODS table's name, for messages.
            refused: Column type changes the ODS table refused, quoted when a value does not fit.
            evolve: Adds a wanted schema's new columns to ``table`` (and widens types where it can).
            describe: The source's description of a source table, for columns the rows bring.

        Raises:
            UnstorableChangeError: If a decoded change does not fit the ODS table.
        """
        dead: Letters = []
        parts: list[pa.Table] = []
        for form, run in self._runs():
            if form == "changelog":
                parts += _merged([batch.changelog() for _, batch in run])
            elif form == "rows":
                parts.append(self._row_changelog(table, run, name, refused, evolve, describe, dead))
            else:
                parts.append(self._message_changelog(table, run, name, evolve, dead))
        return _concat(parts, table.schema), dead

    def _row_changelog(
        self,
        table: LakeTable,
        run: list[tuple[int, ChangeBatch]],
        name: str,
        refused: Mapping[str, str],
        evolve: Callable[[pa.Schema], None],
        describe: Callable[[str], TableSpec | None],
        dead: Letters,
    ) -> pa.Table:
        all_rows: Rows = [change for _, batch in run for change in batch.rows or ()]
        row_groups = [group for group, batch in run for _ in batch.rows or ()]
        rows, groups = self._take_undecoded(all_rows, row_groups, dead)
        self._evolve_for_rows(table, all_rows, evolve, describe)
        built, bad = build_rows(rows, table.schema)
        if bad:
            first = min(bad)
            column, reason = bad[first]
            if column in refused:
                reason += f" (the ODS table kept its column type: {refused[column]})"
            key_values = {k: rows[first][1].get(k) for k in table.primary_key}
            reason = f"the change of key {short_repr(key_values)}: {reason}"
            raise UnstorableChangeError(name, self.source_table, reason, group=groups[first])

        def row_raw(row: int) -> tuple[bytes, int]:  # serialized only for a dead letter
            return dump_record(rows[row][1]), groups[row]

        return self._drop_null_keys(built, table.primary_key, row_raw, name, dead)

    def _message_changelog(
        self,
        table: LakeTable,
        run: list[tuple[int, ChangeBatch]],
        name: str,
        evolve: Callable[[pa.Schema], None],
        dead: Letters,
    ) -> pa.Table:
        messages: Messages = [m for _, batch in run for m in batch.messages or ()]
        message_groups = [group for group, batch in run for _ in batch.messages or ()]
        decoded, owners = self._decode(table, messages, message_groups, evolve, dead)

        def raw_of(row: int) -> tuple[bytes, int]:
            index = owners[row]
            return messages[index][0], message_groups[index]

        return self._drop_null_keys(decoded, table.primary_key, raw_of, name, dead)

    def _take_undecoded(self, rows: Rows, groups: list[int], dead: Letters) -> tuple[Rows, list[int]]:
        """Move the changes whose images the source could not decode to the dead letters (an update's
        two images together, once); return the other changes and their groups."""
        kept: Rows = []
        kept_groups: list[int] = []
        seen: set[int] = set()
        for (kind, row), group in zip(rows, groups, strict=True):
            if isinstance(row, UndecodedRow):
                if id(row.raw) not in seen:
                    seen.add(id(row.raw))
                    dead.append((DeadLetter(row.raw, {}, self.source_table, row.error), group))
                continue
            kept.append((kind, row))
            kept_groups.append(group)
        return kept, kept_groups

    def _evolve_for_rows(
        self,
        table: LakeTable,
        rows: Rows,
        evolve: Callable[[pa.Schema], None],
        describe: Callable[[str], TableSpec | None],
    ) -> None:
        names = set(table.schema.names)
        unknown: set[str] = set()
        for _, row in rows:
            if row.keys() - names:
                unknown |= row.keys() - names - RESERVED_COLUMNS
        if not unknown:
            return
        spec = describe(self.source_table)
        if spec is not None and unknown <= set(spec.schema.names):
            evolve(spec.schema)
            return
        sample = {c: next((r[c] for _, r in rows if r.get(c) is not None), None) for c in unknown}
        inferred = [
            pa.field(c, pa.array([v]).type if v is not None else pa.string()) for c, v in sample.items()
        ]
        evolve(pa.schema([*table.schema, *sorted(inferred, key=lambda f: f.name)]))

    def _decode(
        self,
        table: LakeTable,
        messages: Messages,
        groups: list[int],
        evolve: Callable[[pa.Schema], None],
        dead: Letters,
    ) -> tuple[pa.Table, list[int]]:
        raws = [m for m, _ in messages]
        parsed = [o for _, o in messages]
        unknown = _message_fields(parsed) - set(table.schema.names) - RESERVED_COLUMNS
        if unknown:
            inferred = decode_batch(raws, parsed=parsed).table.schema
            evolve(pa.schema([*table.schema, *(inferred.field(c) for c in inferred.names if c in unknown)]))
        decoded = decode_batch(raws, table.refresh().schema, primary_key=table.primary_key, parsed=parsed)
        for failure in decoded.errors:
            letter = DeadLetter(raws[failure.index], {}, self.source_table, failure.reason)
            dead.append((letter, groups[failure.index]))
        return decoded.table, decoded.message_index.to_pylist()

    def _drop_null_keys(
        self,
        changelog: pa.Table,
        key: Sequence[str],
        raw_of: Callable[[int], tuple[bytes, int]],
        name: str,
        dead: Letters,
    ) -> pa.Table:
        """Move changes with a null key column to the dead letters (``raw_of`` gives a row's record)."""
        if not changelog.num_rows:
            return changelog
        mask = None
        for column in key:
            nulls = pc.is_null(changelog.column(column))
            mask = nulls if mask is None else pc.or_(mask, nulls)
        if mask is None or not pc.any(mask).as_py():
            return changelog
        error = f"primary-key column(s) {list(key)} null in a change for {name!r}"
        seen: set[int] = set()
        for row in pc.indices_nonzero(mask).to_pylist():
            raw, group = raw_of(row)
            if id(raw) not in seen:  # an update's -U and +U share one record
                seen.add(id(raw))
                dead.append((DeadLetter(raw, {}, self.source_table, error), group))
        return changelog.filter(pc.invert(mask))


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


def _merged(tables: list[pa.Table]) -> list[pa.Table]:
    """Consecutive changelogs of one schema as one table (so fitting them costs once, not per group)."""
    runs: list[list[pa.Table]] = []
    for table in tables:
        if runs and runs[-1][0].schema == table.schema:
            runs[-1].append(table)
        else:
            runs.append([table])
    return [pa.concat_tables(run) if len(run) > 1 else run[0] for run in runs]


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
