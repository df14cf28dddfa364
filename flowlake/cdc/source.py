"""What a CDC source hands the ODS ingester: transaction groups of changes, with their positions.

A *source* (a binlog reader, a JSONL tailer, …) turns its input into :class:`ChangeGroup` values, one
per source transaction (or snapshot chunk), in log order, holding each source table's changes as
one :class:`~flowlake.cdc.batch.ChangeBatch`. A group is all-or-nothing: the ingester
puts all of a group's changes for one ODS table into one commit, together with the group's
:attr:`ChangeGroup.position`, so a restart resumes exactly after the last committed group.

Positions are JSON-able dicts (stored in the commit's ``sources`` under the source's
:attr:`Source.key`); :attr:`ChangeGroup.order` is the same position as a comparable tuple, which the
ingester uses to skip groups an ODS table already holds.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import pyarrow as pa

from flowlake.cdc.batch import ChangeBatch, UndecodedRow
from flowlake.errors import InvalidArgumentError

__all__ = [
    "AcknowledgingSource",
    "ChangeBatch",
    "ChangeGroup",
    "DeadLetter",
    "GroupingSource",
    "Order",
    "ProgressCallback",
    "SnapshotProgress",
    "Source",
    "TableFilter",
    "TableSpec",
    "TargetAwareSource",
    "UndecodedRow",
    "ods_table_name",
    "open_source",
]

Order = tuple[Any, ...]
"""A position as a tuple that sorts in log order."""

_NAME_CHARS: Final = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True, slots=True)
class TableSpec:
    """The shape of a source table, from which its ODS table is created or evolved.

    Attributes:
        source_table: ``db.table`` in the source.
        schema: Arrow schema of the rows (every column nullable except the key).
        primary_key: Key columns.
    """

    source_table: str
    schema: pa.Schema
    primary_key: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be decoded or does not fit its table.

    Attributes:
        raw: The record as the source gave it (a JSONL line, or a binlog row as JSON).
        position: Where it was read (JSON-able).
        source_table: ``db.table`` if known.
        error: What is wrong with it.
    """

    raw: bytes
    position: Mapping[str, Any]
    source_table: str | None
    error: str


@dataclass(slots=True)
class ChangeGroup:
    """The changes of one source transaction (or snapshot chunk), in order.

    Attributes:
        position: JSON-able position just after this group; stored with the commit that holds it.
        order: ``position`` as a sortable tuple.
        batches: Per source table, its changes in the group (see :mod:`flowlake.cdc.batch`).
        dead: Records of this group that could not be routed or decoded.
        schemas: Source tables whose shape changed in (or before) this group, with the new shape.
        extras: Per source table, state to store next to the position (e.g. snapshot progress).
        source_ts_ms: When the source committed the group (for latency figures), if known.
    """

    position: dict[str, Any]
    order: Order
    batches: dict[str, ChangeBatch] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    schemas: dict[str, TableSpec] = field(default_factory=dict)
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    source_ts_ms: int | None = None

    @property
    def size(self) -> int:
        """Number of changes (messages, for Debezium ones) and dead letters in the group."""
        return sum(len(b) for b in self.batches.values()) + len(self.dead)

    @property
    def tables(self) -> set[str]:
        """Source tables the group touches."""
        return set(self.batches) | set(self.schemas) | set(self.extras)


@dataclass(frozen=True, slots=True)
class SnapshotProgress:
    """How far an initial snapshot has got, for progress bars."""

    table: str
    rows: int
    estimated_rows: int
    chunks: int
    done: bool


ProgressCallback = Callable[[SnapshotProgress], None]
"""Called by a source after each snapshot chunk."""


class Source(Protocol):
    """A CDC source the ingester can drive."""

    @property
    def key(self) -> str:
        """The name its positions are stored under in commits (e.g. ``mysql://127.0.0.1:3306``)."""
        ...

    def order_of(self, position: Mapping[str, Any]) -> Order:
        """A stored position as a sortable tuple."""
        ...

    def start(
        self, resume: Mapping[str, Mapping[str, Any] | None], *, also: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        """Begin reading; return the position reading starts from.

        ``resume`` maps each known source table to its ODS table's stored position; ``also`` lists
        further stored positions (the dead-letter table's) that reading must not start after.
        """
        ...

    def poll(self, timeout: float) -> list[ChangeGroup]:
        """The groups ready now, in log order; waits up to ``timeout`` seconds when there are none."""
        ...

    def describe(self, source_table: str) -> TableSpec | None:
        """The shape of a source table, if the source knows it (else the ingester infers it)."""
        ...

    def caught_up(self) -> bool:
        """Whether everything the source holds right now has been returned by :meth:`poll`."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


@runtime_checkable
class AcknowledgingSource(Source, Protocol):
    """A source that must be told when ODS holds its changes (a PostgreSQL slot keeps WAL until then)."""

    def acknowledge(self, order: Order) -> None:
        """Every group up to ``order`` is committed to ODS (a restart will not need it again)."""
        ...


@runtime_checkable
class GroupingSource(Source, Protocol):
    """A source that may hand several small transactions over as one group (ending on the last one's
    boundary, with its position), so it must know how many changes one commit is meant to hold."""

    def limit_groups(self, changes: int) -> None:
        """Never join transactions into a group of more than ``changes`` changes (the ingester's
        ``max_rows``: with 1, every transaction stays a group, and a commit, of its own).

        Called by the ingester before :meth:`start`.
        """
        ...


@runtime_checkable
class TargetAwareSource(Source, Protocol):
    """A source that decodes straight into the ODS tables' columns, so it must know them (the schema
    hints that flow from the ingester back to the source)."""

    def target(self, source_table: str, spec: TableSpec) -> None:
        """The ODS table of ``source_table`` now has ``spec``'s columns, types and primary key.

        Called by the ingester when it loads, creates or evolves an ODS table, before it polls again.
        Changes the source decodes into ``changelog`` batches from then on use these columns;
        records that do not map exactly onto them go as ``rows``/``messages`` batches (the ingester
        evolves the table or dead-letters them).
        """
        ...


def open_source(
    url: str,
    *,
    tables: str | Sequence[str] | None = None,
    chunk_size: int | None = None,
    snapshot: str = "initial",
    follow: bool = True,
    on_progress: ProgressCallback | None = None,
    storage_options: Mapping[str, Any] | None = None,
    max_line_bytes: int | None = None,
) -> Source:
    """A source from a URL: ``mysql://user:pw@host:port/db`` (or ``mariadb://``),
    ``postgresql://user:pw@host:port/db[?slot=…&publication=…]`` (logical replication), or
    ``debezium-jsonl:<fsspec path>`` for Debezium JSON lines.

    Args:
        url: Where to read.
        tables: ``db.table`` glob patterns to take (default: the URL's database, or every table).
        chunk_size: Rows per snapshot chunk (database sources; default 5,000, or 20,000 for MySQL tables
            read straight into Arrow).
        snapshot: ``"initial"`` or ``"never"`` (database sources).
        follow: Keep tailing for new lines (JSONL sources).
        on_progress: Called after every snapshot chunk (database sources).
        storage_options: Passed to fsspec (JSONL sources).
        max_line_bytes: Longer lines become dead letters (JSONL sources; default 8 MiB).

    Raises:
        InvalidArgumentError: For any other URL, or a JSONL path where nothing exists.

    >>> open_source("debezium-jsonl:memory://cdc/orders.jsonl", follow=False).key
    Traceback (most recent call last):
    ...
    flowlake.errors.InvalidArgumentError: debezium-jsonl source 'memory://cdc/orders.jsonl': no such ...
    >>> import fsspec
    >>> fsspec.filesystem("memory").pipe("/cdc/orders.jsonl", b"")
    >>> open_source("debezium-jsonl:memory://cdc/orders.jsonl", follow=False).key
    'jsonl:memory://cdc/orders.jsonl'
    """
    if url.startswith(("mysql://", "mariadb://", "postgresql://", "postgres://")):
        from flowlake.cdc.mysql import MySqlSource
        from flowlake.cdc.postgres import PostgresSource

        if snapshot not in ("initial", "never"):
            raise InvalidArgumentError(f"snapshot must be 'initial' or 'never', got {snapshot!r}")
        database = MySqlSource if url.startswith(("mysql://", "mariadb://")) else PostgresSource
        return database(
            url,
            tables=tables,
            chunk_size=chunk_size,
            snapshot="initial" if snapshot == "initial" else "never",
            on_progress=on_progress,
        )
    if url.startswith("debezium-jsonl:"):
        from flowlake.cdc.jsonl import jsonl_source_from_url

        options: dict[str, Any] = {} if max_line_bytes is None else {"max_line_bytes": max_line_bytes}
        return jsonl_source_from_url(
            url, tables=tables, follow=follow, storage_options=storage_options, **options
        )
    raise InvalidArgumentError(
        f"unknown source {url!r}: use mysql://user@host:3306/db, postgresql://user@host:5432/db "
        "or debezium-jsonl:file:///path"
    )


# --- table selection and naming ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableFilter:
    """Select source tables by ``db.table`` glob patterns (``shop.*``, ``*.orders``); ``!`` excludes."""

    patterns: tuple[str, ...] = ("*.*",)

    @classmethod
    def parse(cls, patterns: str | Sequence[str] | None) -> TableFilter:
        """From a comma-separated string or a sequence of patterns; ``None`` selects every table."""
        if patterns is None:
            return cls()
        items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
        cleaned = tuple(p.strip() for p in items if p.strip())
        for p in cleaned:
            if "." not in p.lstrip("!"):
                raise InvalidArgumentError(
                    f"table pattern {p!r} needs the form db.table (globs allowed, e.g. 'shop.*')"
                )
        return cls(cleaned or ("*.*",))

    def __call__(self, source_table: str) -> bool:
        return _matches(self.patterns, source_table)

    @property
    def databases(self) -> list[str] | None:
        """The databases named literally by the patterns, or ``None`` if a pattern globs the database."""
        dbs: list[str] = []
        for p in self.patterns:
            if p.startswith("!"):
                continue
            db = p.split(".", 1)[0]
            if any(ch in db for ch in "*?["):
                return None
            dbs.append(db)
        return sorted(set(dbs))


@functools.lru_cache(maxsize=4096)
def _matches(patterns: tuple[str, ...], source_table: str) -> bool:
    name = source_table.lower()
    included = any(fnmatch.fnmatchcase(name, p.lower()) for p in patterns if not p.startswith("!"))
    excluded = any(fnmatch.fnmatchcase(name, p[1:].lower()) for p in patterns if p.startswith("!"))
    return included and not excluded


def ods_table_name(namespace: str, source_table: str, template: str = "{table}") -> str:
    """The ODS table for a source table: ``namespace.`` + the template filled with ``db``/``table``.

    Names are lowercased and characters outside ``[a-z0-9_]`` become ``_``.
    """
    db, _, table = source_table.partition(".")
    if not table:
        db, table = "", db
    name = template.format(db=db, table=table).lower()
    name = _NAME_CHARS.sub("_", name).strip("_") or "t"
    if name[0].isdigit():
        name = "t_" + name
    return f"{namespace}.{name[:63]}"
