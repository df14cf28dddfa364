"""Dead letters of one ODS table: list them, and replay those that now decode, exactly once and in order.

A dead letter is identified by a hash of its source, position, source table and record
(:attr:`StoredDeadLetter.id`). Replaying a letter decodes its record again with the ODS table's current schema
(so a fix in the decoder or an ``evolve_schema`` can make it decode) and applies it in one commit that
carries the token ``dead-letter-replay/<id>`` and records the source ``flowlake:dead-letter:<id>``
(with the letter's position) atomically with the data. A letter with that record is *replayed*: a
second replay skips it, and a crash between commits leaves nothing half done.

Never out of order. A letter is older than everything the ODS table received at or after its
position, so it must not overwrite any of that. Before applying, the keys of the letter's changes are
looked up in every ODS commit whose source position is at or after the letter's position (and every
earlier replay of a letter at or after it): if one of them touched a key, the letter is *superseded*
and stays a dead letter. This is conservative by one commit: an ODS commit holds one or more whole
source groups and stores only the position at its end, so a change of the same key anywhere in the
commit that covers the letter's position (even one before it) counts as newer. Letters are replayed
in position order, so two letters of one key land in their source order.

What can be replayed: Debezium JSON lines (the record is the line), and MySQL/MariaDB row images
(tagged JSON) whose values now fit the table. A text column still holding bytes (a charset Python
cannot decode), an unparseable rows event, a ``TRUNCATE`` or a truncated over-long line cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import orjson
import pyarrow as pa

from flowlake.cdc.batch import build_rows
from flowlake.cdc.deadletter import DEAD_LETTER_TABLE
from flowlake.cdc.debezium import decode_batch
from flowlake.cdc.mysql_gtid import ResumeOrder, stored_gtids
from flowlake.cdc.pgoutput import parse_lsn
from flowlake.cdc.record_json import load_record
from flowlake.changelog import KIND_COLUMN
from flowlake.errors import TableNotFoundError

if TYPE_CHECKING:
    from flowlake.lake import Catalog
    from flowlake.table.table import LakeTable

REPLAY_SOURCE: Final = "flowlake:dead-letter:"
"""Prefix of the source key a replay commit records (``+ letter id``)."""

Status = Literal["dead", "replayed", "applied", "superseded", "undecodable"]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One dead letter of an ODS table, with what a replay did or would do with it."""

    id: str
    source: str
    source_table: str
    position: dict[str, Any]
    error: str
    raw: bytes
    ingested_at: Any
    status: Status = "dead"
    note: str = ""

    @property
    def size(self) -> int:
        """Bytes of the record kept."""
        return len(self.raw)


def letter_id(source: str, source_table: str, position: str, raw: bytes) -> str:
    """A dead letter's stable identity."""
    digest = hashlib.sha256()
    for part in (source.encode(), source_table.encode(), position.encode(), raw):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()[:20]


def order_of(source: str, position: Mapping[str, Any]) -> tuple[Any, ...]:
    """A stored position of ``source`` as its source's own ``order_of`` gives it: ``(file, offset)``
    for JSONL, ``(lsn, sub)`` for PostgreSQL, and for a binlog a
    :class:`~flowlake.cdc.mysql_gtid.ResumeOrder`, by GTID state where the position has one, so that
    letters and commits from before and after a failover compare by the transactions they hold (a
    replica's binlog files and offsets are its own).

    >>> order_of("jsonl:/cdc", {"file": "0001.jsonl", "offset": 7})
    ('0001.jsonl', 7)
    >>> pg = "postgresql://127.0.0.1:5432/shop"
    >>> order_of(pg, {"lsn": "0/16B3748"}) < order_of(pg, {"lsn": "0/16B3750", "sub": 0})
    True
    >>> letter = order_of("mysql://a:3306", {"file": "mysql-bin.000009", "pos": 900, "gtids": "0-1-5"})
    >>> after_failover = order_of("mysql://a:3306", {"file": "mysql-bin.000002", "pos": 4, "gtids": "0-1-7"})
    >>> letter < after_failover
    True
    """
    if source.startswith("jsonl:"):
        return (str(position.get("file", "")), int(position.get("offset", 0)))
    if source.startswith(("postgresql:", "postgres:")):
        lsn = position.get("lsn")
        return (parse_lsn(str(lsn)) if lsn else 0, int(position.get("sub", 0)))
    file, pos, sub = str(position.get("file", "")), int(position.get("pos", 0)), int(position.get("sub", 0))
    return (ResumeOrder(stored_gtids(position), file, pos, sub),)


def resolve_ods_table(catalog: Catalog, name: str, namespace: str = "ods") -> tuple[LakeTable, str]:
    """The ODS table and its source table (``db.table``) from either name.

    Raises:
        TableNotFoundError: If neither names an ODS table fed by CDC.
    """
    from flowlake.cdc.source import ods_table_name

    candidates = [name] if "." in name else [f"{namespace}.{name}"]
    if "." in name and not name.startswith(namespace + "."):
        candidates.append(ods_table_name(namespace, name))
    for candidate in candidates:
        if catalog.table_exists(candidate):
            table = catalog.load_table(candidate)
            for position in _positions(table).values():
                if isinstance(position, dict) and "table" in position:
                    return table, str(position["table"])
            if candidate != name:
                return table, name
    raise TableNotFoundError(
        name,
        hint=f"no ODS table in namespace {namespace!r} has it as its source either; pass an ODS table "
        "(ods.orders) or its source table (shop.orders), see `flowlake tables`",
    )


def _positions(table: LakeTable) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for commit in table.history():
        sources = commit.summary.get("sources")
        if isinstance(sources, dict):
            found.update({k: v for k, v in sources.items() if not k.startswith(REPLAY_SOURCE)})
    return found


def list_dead_letters(
    catalog: Catalog, table: LakeTable, source_table: str, namespace: str = "ods"
) -> list[StoredDeadLetter]:
    """The table's dead letters in position order, each marked ``replayed`` if a replay applied it."""
    name = f"{namespace}.{DEAD_LETTER_TABLE}"
    if not catalog.table_exists(name):
        return []
    rows = catalog.load_table(name).read().to_pylist()
    replayed = _replayed(table)
    letters = []
    for row in rows:
        if row["source_table"] != source_table:
            continue
        position = orjson.loads(row["position"] or "{}")
        ident = letter_id(row["source"] or "", source_table, row["position"] or "", row["raw"] or b"")
        status: Status = "replayed" if ident in replayed else "dead"
        note = f"applied at version {replayed[ident]}" if ident in replayed else ""
        letters.append(
            StoredDeadLetter(
                ident, row["source"] or "", source_table, position, row["error"] or "", row["raw"] or b"",
                row["ingested_at"], status, note,
            )
        )  # fmt: skip
    letters.sort(key=lambda x: (x.source, order_of(x.source, x.position)))
    return letters


def _replayed(table: LakeTable) -> dict[str, int]:
    out: dict[str, int] = {}
    for commit in table.history():
        sources = commit.summary.get("sources")
        if isinstance(sources, dict):
            for key in sources:
                if key.startswith(REPLAY_SOURCE):
                    out[key.removeprefix(REPLAY_SOURCE)] = commit.version
    return out


def replay_dead_letters(
    catalog: Catalog, table: LakeTable, source_table: str, namespace: str = "ods"
) -> list[StoredDeadLetter]:
    """Apply the table's dead letters that now decode and are not superseded; return every letter with
    its outcome (``applied``, ``replayed`` before, ``superseded`` or ``undecodable`` with the reason)."""
    out: list[StoredDeadLetter] = []
    for letter in list_dead_letters(catalog, table, source_table, namespace):
        if letter.status == "replayed":
            out.append(letter)
            continue
        changelog, reason = _decode(letter, table)
        if changelog is None:
            out.append(_with(letter, "undecodable", reason))
            continue
        newer = _newer_touch(table, letter, changelog)
        if newer is not None:
            out.append(_with(letter, "superseded", newer))
            continue
        marker = {"position": letter.position, "source": letter.source}
        commit = table.apply(
            changelog, token=f"dead-letter-replay/{letter.id}", sources={REPLAY_SOURCE + letter.id: marker}
        )
        out.append(_with(letter, "applied", f"{changelog.num_rows} change(s) at version {commit.version}"))
    return out


def _with(letter: StoredDeadLetter, status: Status, note: str) -> StoredDeadLetter:
    return StoredDeadLetter(
        letter.id, letter.source, letter.source_table, letter.position, letter.error, letter.raw,
        letter.ingested_at, status, note,
    )  # fmt: skip


def _decode(letter: StoredDeadLetter, table: LakeTable) -> tuple[pa.Table | None, str]:
    """The letter's changelog in the table's current schema, or why it still cannot be had."""
    schema = table.refresh().schema
    if letter.source.startswith("jsonl:"):
        decoded = decode_batch([letter.raw], schema, primary_key=table.primary_key)
        if decoded.errors:
            return None, decoded.errors[0].reason
        if not decoded.table.num_rows:
            return None, "the record carries no change"
        return _fit(decoded.table, schema), ""
    try:
        record = load_record(letter.raw)
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        return None, f"the record is not a row image ({exc})"
    if not isinstance(record, dict) or "kind" not in record:
        return None, "the record is not a row image (e.g. an unparseable rows event or a DDL statement)"
    steps = _steps(record)
    for _, row in steps:
        for name, value in row.items():
            if isinstance(value, bytes | bytearray) and name in schema.names:
                kind = schema.field(name).type
                if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                    return None, f"column {name!r} still holds undecoded bytes"
    unknown = sorted({c for _, row in steps for c in row} - set(schema.names))
    if unknown:
        return None, f"column(s) {unknown} are not in {table.name!r}; evolve its schema first"
    built, bad = build_rows(steps, schema)
    if bad:
        return None, next(iter(bad.values()))[1]
    return built, ""


def _steps(record: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    kind = record["kind"]
    if kind == "update":
        return [(1, dict(record["before"])), (2, dict(record["after"]))]
    return [(3 if kind == "delete" else 0, dict(record["values"]))]


def _fit(changelog: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = [
        changelog.column(f.name).cast(f.type)
        if f.name in changelog.column_names
        else pa.nulls(changelog.num_rows, f.type)
        for f in schema
    ]
    fields = [*(f.with_nullable(True) for f in schema), pa.field(KIND_COLUMN, pa.int8())]
    return pa.Table.from_arrays([*arrays, changelog.column(KIND_COLUMN)], schema=pa.schema(fields))


def _newer_touch(table: LakeTable, letter: StoredDeadLetter, changelog: pa.Table) -> str | None:
    """Why the letter is superseded (a later commit touched one of its keys), or ``None``."""
    key = table.primary_key
    keys = _keys(changelog, key)
    mine = order_of(letter.source, letter.position)
    for commit in table.history():
        sources = commit.summary.get("sources")
        if not isinstance(sources, dict) or not commit.summary.get("rows"):
            continue
        at = _commit_order(sources, letter.source)
        if at is None or at < mine:
            continue
        changes = table.changes(commit.version - 1, commit.version, columns=list(key))
        touched = keys & _keys(changes, key)
        if touched:
            shown = sorted(touched, key=repr)[0]
            return (
                f"a newer change of key {dict(zip(key, shown, strict=True))} is in {table.name!r} "
                f"(version {commit.version}); the letter stays dead"
            )
    return None


def _commit_order(sources: Mapping[str, Any], source: str) -> tuple[Any, ...] | None:
    position = sources.get(source)
    if isinstance(position, dict):
        return order_of(source, position)
    for name, marker in sources.items():  # a replayed letter counts at its own position
        if name.startswith(REPLAY_SOURCE) and isinstance(marker, dict) and marker.get("source") == source:
            inner = marker.get("position")
            if isinstance(inner, dict):
                return order_of(source, inner)
    return None


def _keys(changelog: pa.Table, key: Sequence[str]) -> set[tuple[Any, ...]]:
    if not changelog.num_rows:
        return set()
    columns = [changelog.column(k).to_pylist() for k in key]
    return set(zip(*columns, strict=True))


def summarize_dead_letters(letters: Iterable[StoredDeadLetter]) -> dict[str, int]:
    """Letters per status."""
    counts: dict[str, int] = {}
    for letter in letters:
        counts[letter.status] = counts.get(letter.status, 0) + 1
    return counts
