"""Debezium JSON from JSONL files on any fsspec path: one message per line, a folder of growing files.

The source reads a file, or every ``*.jsonl``/``*.json``/``*.ndjson`` file under a folder in name order,
and tails them: a file is finished once a later file exists and it has been read to its end, and
only complete lines (ending in a newline) of the newest file are read, so a writer may append
while the source reads. Its position is ``{"file": path, "offset": bytes}`` just after the last line
of a group, so a restart resumes at exactly that byte.

Routing and grouping: each change goes to ``<source.db>.<source.table>`` (``<source.schema>.<table>``
for connectors with schemas, such as Postgres). Changes that carry the same ``transaction.id`` form
one group (one ODS commit per table); a group opened by a ``BEGIN`` event ends at its ``END`` event,
and one without a ``BEGIN`` ends at the next change of another transaction or when the input runs
dry. Consecutive changes without transaction metadata are grouped up to 1000 at a time (each is
its own transaction, so grouping them only makes commits coarser). Lines that are not JSON, or
cannot be routed, become dead letters.

A line longer than ``max_line_bytes`` (default 8 MiB; ``flowlake ingest --max-line-mb``) becomes a
dead letter holding its size and its first 4 KiB, and reading goes on after it; the source never
holds more than one read window (``max_line_bytes`` + 1 bytes at least) in memory.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import fsspec
import orjson
import pyarrow as pa

from flowlake.cdc.batch import ChangeBatch, Messages
from flowlake.cdc.debezium import debezium_schema_to_arrow
from flowlake.cdc.envelope import route, transaction_of, transaction_status, unwrap
from flowlake.cdc.jsonl_bulk import BulkWindow, changelog_batch, groups_of, parse_hint, parse_window
from flowlake.cdc.source import ChangeGroup, DeadLetter, Order, TableFilter, TableSpec
from flowlake.errors import CdcDecodeError, InvalidArgumentError

_SUFFIXES: Final = (".jsonl", ".json", ".ndjson")
DEFAULT_MAX_LINE_BYTES: Final = 8 << 20
"""Longest JSONL line a source decodes; longer lines become dead letters."""
_DEAD_HEAD: Final = 4096
"""How much of an over-long line its dead letter keeps."""
_LOOSE: Final = 1000
"""Consecutive changes without transaction metadata that may share one group (each is atomic alone)."""
_UNTARGETED_BYTES: Final = 64 << 10
"""How much of a window goes through the per-line path while the ingester has named no ODS table
yet (it creates them at its next flush; the bulk path then decodes into their columns)."""


@dataclass(slots=True)
class _OpenGroup:
    txid: str | None
    begun: bool
    group: ChangeGroup
    count: int = 0
    messages: dict[str, Messages] = field(default_factory=dict)
    """Its messages so far, per table (the group's batches once it is closed)."""


@dataclass(slots=True)
class _Cursor:
    file: str = ""
    offset: int = 0
    blocks: dict[str, Any] = field(default_factory=dict)


class JsonlSource:
    """Tail Debezium JSON lines from a file or folder on any fsspec filesystem.

    Args:
        url: A file or folder: ``file:///data/cdc``, ``s3://bucket/cdc/``, a local path, …
        tables: Which ``db.table`` to take (glob patterns); others are skipped.
        storage_options: Passed to fsspec.
        follow: Keep tailing for new lines and files (else :meth:`caught_up` is true at the end).
        read_bytes: How much to read per poll (at least ``max_line_bytes + 1``).
        max_line_bytes: Longer lines become dead letters (with their size) and are skipped.
        bulk: Parse windows of plain change lines in bulk into Arrow changelogs in the ODS tables'
            columns (see :mod:`flowlake.cdc.jsonl_bulk` and :meth:`target`); ``False`` reads every
            line on its own.
    """

    def __init__(
        self,
        url: str,
        *,
        tables: str | Sequence[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        follow: bool = True,
        read_bytes: int = 8 << 20,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        bulk: bool = True,
    ) -> None:
        if max_line_bytes < 1:
            raise InvalidArgumentError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.filter = TableFilter.parse(tables)
        self.follow = follow
        self.max_line_bytes = max_line_bytes
        self.bulk = bulk
        self.read_bytes = max(read_bytes, max_line_bytes + 1)  # a line that fits also fits one read
        self._cursor = _Cursor()
        self._open: _OpenGroup | None = None
        self._idle = False
        self._targets: dict[str, TableSpec] = {}
        self._hint: pa.Schema | None = None

    @property
    def key(self) -> str:
        """``jsonl:<url>``."""
        return f"jsonl:{self.url}"

    def order_of(self, position: Mapping[str, Any]) -> Order:
        """``(file, offset)``."""
        return (str(position.get("file", "")), int(position.get("offset", 0)))

    def start(
        self, resume: Mapping[str, Mapping[str, Any] | None], *, also: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        """Start at the oldest stored position (the beginning if there is none)."""
        known = [p for p in [*resume.values(), *also] if p is not None]
        if any(p is None for p in resume.values()) or not known:
            self._cursor = _Cursor()
        else:
            file, offset = min(self.order_of(p) for p in known)
            self._cursor = _Cursor(file, offset)
        return {"file": self._cursor.file, "offset": self._cursor.offset}

    def describe(self, source_table: str) -> TableSpec | None:
        """Unknown up front: shapes come from schema blocks (in groups) or are inferred."""
        return None

    def target(self, source_table: str, spec: TableSpec) -> None:
        """Decode ``source_table``'s plain change lines in bulk into these ODS columns from now on."""
        if self._targets.get(source_table) != spec:
            self._targets[source_table] = spec
            self._hint = parse_hint(self._targets.values())

    def caught_up(self) -> bool:
        """Whether the last poll found no complete line left to read.

        A transaction opened by ``BEGIN`` whose ``END`` has not arrived stays unread (its lines are
        read again after a restart), so that it still lands in one commit.
        """
        return self._idle

    def close(self) -> None:
        """Nothing to release."""

    # -- reading --------------------------------------------------------------------------------------

    def _files(self) -> list[str]:
        if self.fs.isfile(self.root):
            return [self.root]
        if not self.fs.exists(self.root):
            return []
        found = [str(p) for p in self.fs.find(self.root) if str(p).endswith(_SUFFIXES)]
        return sorted(found)

    def poll(self, timeout: float) -> list[ChangeGroup]:
        """Read the next complete lines; wait up to ``timeout`` when there are none."""
        files = [f for f in self._files() if f >= self._cursor.file]
        groups: list[ChangeGroup] = []
        consumed = 0
        for name in files:
            if name != self._cursor.file:
                self._cursor.file, self._cursor.offset = name, 0
            data = self._read(name)
            more = len(data) >= self.read_bytes
            newest = name == files[-1]
            # the newest file may be mid-append: take complete lines only; a finished file all of it
            end = data.rfind(b"\n") + 1 if newest or more else len(data)
            if not end and more:  # a whole window without a newline: the line is too long
                consumed += self._skip_long_line(name, data[:_DEAD_HEAD], newest, groups)
                break  # the next poll goes on after it
            if end:
                taken = self._bulk(data[:end], groups) if self.bulk and self._open is None else 0
                if taken == 0:
                    self._lines(data[:end], groups)
                    taken = end
                consumed += taken
                if taken < end:
                    break  # an unfinished transaction at the end: the next poll reads it again
            if newest or more:
                break
        self._idle = consumed == 0
        current = self._open
        if current is not None and not current.begun and (self._idle or current.txid is None):
            groups.append(self._close_open())  # see the module doc: when groups without BEGIN end
        if not groups and self.follow:
            time.sleep(timeout)
        return groups

    def _skip_long_line(self, name: str, head: bytes, newest: bool, groups: list[ChangeGroup]) -> int:
        """Dead-letter the over-long line at the cursor; return the bytes skipped (0: not complete yet)."""
        start = self._cursor.offset
        scanned = start + self.read_bytes  # the first window holds no newline
        newline_at: int | None = None
        with self.fs.open(name, "rb") as f:
            f.seek(scanned)
            while chunk := f.read(self.read_bytes):
                nl = chunk.find(b"\n")
                if nl >= 0:
                    newline_at = scanned + nl
                    break
                scanned += len(chunk)
        if newline_at is None:
            if newest:
                return 0  # still being written: wait for its newline
            size, end = scanned - start, scanned  # a finished file's last line needs no newline
        else:
            size, end = newline_at - start, newline_at + 1
        self._cursor.offset = end
        self._emit_dead(head, None, self._too_long(size, start), groups)
        return end - start

    def _too_long(self, size: int, start: int) -> str:
        return (
            f"line of {size:,} bytes exceeds max_line_bytes={self.max_line_bytes:,} "
            f"({self._cursor.file} at byte {start:,}); raise the limit (flowlake ingest --max-line-mb) "
            f"to take such lines; raw holds the first {min(size, _DEAD_HEAD):,} bytes"
        )

    def _read(self, name: str) -> bytes:
        with self.fs.open(name, "rb") as f:
            f.seek(self._cursor.offset)
            data: bytes = f.read(self.read_bytes)
        return data

    def _bulk(self, data: bytes, groups: list[ChangeGroup]) -> int:
        """Take the complete lines ``data`` at the cursor through the bulk parser; return the bytes
        taken (0: read them line by line)."""
        if not self._targets:  # read a little line by line: the ingester then creates the tables
            return self._lines_until_closed(data, _UNTARGETED_BYTES, groups)
        window = parse_window(data, self.max_line_bytes, self.filter, self._hint)
        runs = None if window is None else groups_of(window, _LOOSE)
        if window is None or runs is None:
            return 0
        base = self._cursor.offset
        whole = {table: self._changelog(window, 0, runs[-1][1], table) for table in window.tables}
        for start, stop, _ in runs:
            self._cursor.offset = base + int(window.ends[stop - 1])
            group = self._empty()
            for table in window.tables:
                changes = whole[table]
                if changes is not None:  # every group's changes of the table decoded at once
                    part = changes.lines(start, stop)
                    if len(part):
                        group.batches[table] = part
                    continue
                parsed = window.batch(start, stop, table)
                if not len(parsed):
                    continue
                batch = self._changelog(window, start, stop, table)
                if batch is not None:
                    group.batches[table] = batch
                else:  # the ingester's per-message decoder names the problem (or evolves the table)
                    group.batches[table] = ChangeBatch.of_messages(parsed.messages())
            groups.append(group)
        return self._cursor.offset - base

    def _changelog(self, window: BulkWindow, start: int, stop: int, table: str) -> ChangeBatch | None:
        """Lines ``[start, stop)`` of ``table`` as an Arrow changelog in its ODS columns, if exact."""
        spec = self._targets.get(table)
        if spec is None:
            return None
        return changelog_batch(window.batch(start, stop, table), spec.schema, spec.primary_key)

    def _lines_until_closed(self, data: bytes, at_least: int, groups: list[ChangeGroup]) -> int:
        """Read about ``at_least`` bytes of ``data`` line by line, and on until no transaction without
        ``BEGIN`` is open (so the bulk path can take the rest); return the bytes read."""
        cut = data.find(b"\n", at_least) + 1
        if not 0 < cut < len(data):
            return 0
        self._lines(data[:cut], groups)
        while cut < len(data) and (current := self._open) is not None:
            if current.begun or current.txid is None:
                break  # closed at the end of the poll, or read line by line until its END anyway
            end = data.find(b"\n", cut) + 1 or len(data)
            self._lines(data[cut:end], groups)
            cut = end
        return cut

    def _lines(self, data: bytes, groups: list[ChangeGroup]) -> None:
        start = 0
        base = self._cursor.offset
        while start < len(data):
            nl = data.find(b"\n", start)
            stop = len(data) if nl < 0 else nl + 1
            line = data[start:stop].rstrip(b"\r\n")
            self._cursor.offset = base + stop
            if len(line) > self.max_line_bytes:
                self._emit_dead(line[:_DEAD_HEAD], None, self._too_long(len(line), base + start), groups)
            elif line.strip():
                self._line(line, groups)
            elif self._open is None:
                groups.append(self._empty())
            start = stop

    def _position(self) -> dict[str, Any]:
        return {"file": self._cursor.file, "offset": self._cursor.offset}

    def _empty(self) -> ChangeGroup:
        position = self._position()
        return ChangeGroup(position, self.order_of(position))

    def _close_open(self) -> ChangeGroup:
        assert self._open is not None
        opened, self._open = self._open, None
        group = opened.group
        for table, messages in opened.messages.items():
            group.batches[table] = ChangeBatch.of_messages(messages)
        return group

    def _line(self, line: bytes, groups: list[ChangeGroup]) -> None:
        try:
            obj = orjson.loads(line)
            payload, block = unwrap(obj)
        except (orjson.JSONDecodeError, CdcDecodeError) as exc:
            self._emit_dead(line, None, f"line is not a Debezium message: {exc}", groups)
            return
        if payload is None:
            self._advance(groups)
            return
        status = transaction_status(payload)
        if status is not None:
            self._transaction_event(payload, status, groups)
            return
        try:
            table = route(payload)
        except CdcDecodeError as exc:
            self._emit_dead(line, None, str(exc), groups)
            return
        if not self.filter(table):
            self._advance(groups)
            return
        txid = transaction_of(payload)
        current = self._open
        if current is not None and (txid != current.txid or (txid is None and current.count >= _LOOSE)):
            groups.append(self._close_open())
        if self._open is None:
            position = self._position()
            self._open = _OpenGroup(txid, False, ChangeGroup(position, self.order_of(position)))
        group = self._open.group
        group.position = self._position()
        group.order = self.order_of(group.position)
        self._open.messages.setdefault(table, []).append((line, obj))
        self._open.count += 1
        if block is not None and block != self._cursor.blocks.get(table):
            self._cursor.blocks[table] = block
            with contextlib.suppress(CdcDecodeError):  # the decoder reports the message itself
                group.schemas[table] = TableSpec(table, debezium_schema_to_arrow(block), ())

    def _transaction_event(self, payload: dict[str, Any], status: str, groups: list[ChangeGroup]) -> None:
        txid = payload.get("id")
        txid = str(txid) if txid is not None else None
        if status == "BEGIN":
            if self._open is not None:
                groups.append(self._close_open())
            position = self._position()
            self._open = _OpenGroup(txid, True, ChangeGroup(position, self.order_of(position)))
            return
        if self._open is not None and self._open.txid == txid:
            group = self._close_open()
            group.position = self._position()
            group.order = self.order_of(group.position)
            groups.append(group)
        else:
            self._advance(groups)

    def _advance(self, groups: list[ChangeGroup]) -> None:
        """A line without changes: move the open group's end (or emit an empty group) past it."""
        if self._open is not None:
            self._open.group.position = self._position()
            self._open.group.order = self.order_of(self._open.group.position)
        else:
            groups.append(self._empty())

    def _emit_dead(self, line: bytes, table: str | None, error: str, groups: list[ChangeGroup]) -> None:
        """Attach a dead letter to the open group, or emit it in a group of its own."""
        if self._open is not None and not self._open.begun:
            groups.append(self._close_open())
        if self._open is not None:
            self._advance(groups)
            self._open.group.dead.append(DeadLetter(line, self._position(), table, error))
            return
        group = self._empty()
        group.dead.append(DeadLetter(line, self._position(), table, error))
        groups.append(group)


def jsonl_source_from_url(url: str, **options: Any) -> JsonlSource:
    """A :class:`JsonlSource` for ``url`` (``debezium-jsonl:`` prefix allowed).

    Raises:
        InvalidArgumentError: No path given, or nothing exists there.
    """
    url = url.removeprefix("debezium-jsonl:")
    if not url:
        raise InvalidArgumentError("a debezium-jsonl source needs a path or URL, e.g. file:///data/cdc")
    source = JsonlSource(url, **options)
    if not source.fs.exists(source.root):
        raise InvalidArgumentError(
            f"debezium-jsonl source {url!r}: no such file or folder; check the path, or create the "
            "folder the connector writes to before starting the ingester"
        )
    return source
