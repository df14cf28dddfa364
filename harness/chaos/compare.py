"""Pure checks of rows and changelogs: replay a changelog per key, build and compare expected changes."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from flowlake.changelog import KIND_COLUMN, SEQ_COLUMN, RowKind
from harness.chaos.source import Key, Row, SourceChange


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def same_row(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Rows equal column by column (NaN equals NaN); None equals only None."""
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(_same(a[c], b[c]) for c in a)


def keyed_rows(table: pa.Table, primary_key: Sequence[str]) -> tuple[dict[Key, Row], list[Key]]:
    """``({key: row}, keys seen more than once)``."""
    rows: dict[Key, Row] = {}
    twice: list[Key] = []
    for row in table.to_pylist():
        key = tuple(row[k] for k in primary_key)
        if key in rows:
            twice.append(key)
        rows[key] = row
    return rows, twice


@dataclass
class _Replay:
    """Replays a changelog per key onto a snapshot, noting every change that does not fit."""

    state: dict[Key, Row]
    problems: list[str] = field(default_factory=list)
    pending: dict[Key, int] = field(default_factory=dict)
    """Keys whose ``-U`` waits for its ``+U``, with the version of the ``-U``."""
    touched: set[tuple[int, Key]] = field(default_factory=set)

    def apply(self, kind: RowKind, key: Key, version: int, row: Row) -> None:
        where = f"{kind.symbol} {key} in version {version}"
        if kind is not RowKind.UPDATE_AFTER:
            if key in self.pending:
                self.problems.append(f"-U of {key} in version {self.pending.pop(key)} has no +U after it")
            if (version, key) in self.touched:
                self.problems.append(f"{where}: the key already changed in this commit")
            self.touched.add((version, key))
        current = self.state.get(key)
        if kind is RowKind.INSERT or kind is RowKind.UPDATE_AFTER:
            if kind is RowKind.UPDATE_AFTER and self.pending.pop(key, None) != version:
                self.problems.append(f"{where}: no -U of the key right before it in the same commit")
            if current is not None:
                self.problems.append(f"{where}: the key is already present ({current}); a duplicated change")
            self.state[key] = row
            return
        if current is None:
            self.problems.append(f"{where}: the key is absent; a duplicated retraction or a missing insert")
        elif not same_row(current, row):
            self.problems.append(f"{where}: before-image {row} is not the current row {current}")
        self.state.pop(key, None)
        if kind is RowKind.UPDATE_BEFORE:
            self.pending[key] = version


def check_changelog(
    snapshot: pa.Table,
    changes: pa.Table,
    primary_key: Sequence[str],
    head: pa.Table | None = None,
    *,
    limit: int = 10,
) -> list[str]:
    """Problems of a table's changelog replayed per key onto ``snapshot`` (empty if none).

    Each change must fit the state it lands on: ``+I`` only for an absent key; ``-U`` and ``-D`` only
    for a present key, with a before-image equal to its current row; ``+U`` right after the key's
    ``-U`` in the same commit; a key changes at most once per commit. With ``head``, the replay must
    end with exactly its rows. A duplicated change breaks the first rule or the before-images; a
    missing one breaks a later before-image or the final comparison.
    """
    state, twice = keyed_rows(snapshot, primary_key)
    replay = _Replay(state, [f"snapshot holds key {k} twice" for k in twice])
    columns = [c for c in changes.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
    has_seq = SEQ_COLUMN in changes.column_names
    if has_seq:
        changes = changes.sort_by(SEQ_COLUMN)
    seqs = changes.column(SEQ_COLUMN).to_pylist() if has_seq else [0] * changes.num_rows
    kinds = changes.column(KIND_COLUMN).to_pylist()
    for seq, kind, row in zip(seqs, kinds, changes.select(columns).to_pylist(), strict=True):
        replay.apply(RowKind(kind), tuple(row[k] for k in primary_key), seq >> 32, row)
    problems = replay.problems
    problems += [f"-U of {k} in version {v} has no +U after it" for k, v in replay.pending.items()]
    if head is not None:
        final, _ = keyed_rows(head, primary_key)
        for key in sorted(set(final) | set(state), key=repr):
            if not same_row(final.get(key), state.get(key)):
                problems.append(
                    f"replaying the log gives {state.get(key)} for {key}, the head has {final.get(key)}"
                )
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


Change = tuple[int, int, Row]
"""One change of a key: ``(version, kind, row)``."""


def changelog_by_key(changes: pa.Table, primary_key: Sequence[str]) -> dict[Key, list[Change]]:
    """``{key: [(version, kind, row), ...]}`` in commit order."""
    if SEQ_COLUMN in changes.column_names:
        changes = changes.sort_by(SEQ_COLUMN)
        versions = [seq >> 32 for seq in changes.column(SEQ_COLUMN).to_pylist()]
    else:
        versions = [0] * changes.num_rows
    kinds = changes.column(KIND_COLUMN).to_pylist()
    columns = [c for c in changes.column_names if c not in (KIND_COLUMN, SEQ_COLUMN)]
    out: dict[Key, list[Change]] = defaultdict(list)
    for version, kind, row in zip(versions, kinds, changes.select(columns).to_pylist(), strict=True):
        out[tuple(row[k] for k in primary_key)].append((version, int(kind), row))
    return out


def source_state(transactions: Iterable[Sequence[SourceChange]], table: str) -> dict[Key, Row]:
    """A source table's rows after ``transactions``."""
    state: dict[Key, Row] = {}
    for tx in transactions:
        for c in tx:
            if c.table == table:
                if c.after is None:
                    state.pop(c.key, None)
                else:
                    state[c.key] = c.after
    return state


def expected_changes(
    transactions: Sequence[Sequence[SourceChange]], table: str, commits: Iterable[tuple[int, int]]
) -> dict[Key, list[Change]]:
    """The exact changelog an ODS table must hold, per key.

    ``commits`` are ``(version, cut)`` in version order: that version holds the source transactions
    up to index ``cut`` (its stored position). Each commit holds, for every key that its new
    transactions touched, the net change from the key's state before them to its state after them:
    one source change when a commit holds one transaction, and fewer when an ingester catching up
    puts several transactions into one commit (a key inserted then updated is one ``+I``).
    """
    state: dict[Key, Row] = {}
    done = -1
    out: dict[Key, list[Change]] = defaultdict(list)
    for version, cut in commits:
        before: dict[Key, Row | None] = {}
        for tx in transactions[done + 1 : cut + 1]:
            for c in tx:
                if c.table == table:
                    before.setdefault(c.key, state.get(c.key))
                    if c.after is None:
                        state.pop(c.key, None)
                    else:
                        state[c.key] = c.after
        done = max(done, cut)
        for key, old in before.items():
            new = state.get(key)
            if old is None and new is not None:
                out[key].append((version, int(RowKind.INSERT), new))
            elif old is not None and new is None:
                out[key].append((version, int(RowKind.DELETE), old))
            elif old is not None and new is not None and not same_row(old, new):
                out[key] += [
                    (version, int(RowKind.UPDATE_BEFORE), old),
                    (version, int(RowKind.UPDATE_AFTER), new),
                ]
    return out


def compare_changes(
    expected: Mapping[Key, Sequence[Change]], actual: Mapping[Key, Sequence[Change]], *, limit: int = 10
) -> tuple[list[str], int, int]:
    """``(problems, changes missing, changes duplicated)``: per key, actual must equal expected."""
    problems: list[str] = []
    missing = duplicated = 0

    def fingerprint(change: Change) -> tuple[Any, ...]:
        return (change[0], change[1], *sorted(change[2].items()))

    def symbols(changes: Sequence[Change]) -> str:
        return " ".join(f"{RowKind(k).symbol}@{v}" for v, k, _ in changes)

    for key in sorted(set(expected) | set(actual), key=repr):
        want, got = list(expected.get(key, ())), list(actual.get(key, ()))
        if len(want) == len(got) and all(
            w[:2] == g[:2] and same_row(w[2], g[2]) for w, g in zip(want, got, strict=True)
        ):
            continue
        lacking = Counter(map(fingerprint, want)) - Counter(map(fingerprint, got))
        extra = Counter(map(fingerprint, got)) - Counter(map(fingerprint, want))
        missing += sum(lacking.values())
        duplicated += sum(extra.values())
        what = (
            f"{sum(lacking.values())} missing, {sum(extra.values())} extra"
            if lacking or extra
            else "reordered"
        )
        problems.append(f"key {key}: {what}; source [{symbols(want)}], log [{symbols(got)}]")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more keys"]
    return problems, missing, duplicated


def compare_rows(
    expected: Mapping[Key, Row], actual: Mapping[Key, Row], *, limit: int = 10
) -> tuple[list[str], int, int]:
    """``(problems, rows missing, rows extra)`` of a table against the rows it must hold."""
    problems: list[str] = []
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    differ = [k for k in expected if k in actual and not same_row(expected[k], actual[k])]
    problems += [f"missing {k}: {expected[k]}" for k in missing[:limit]]
    problems += [f"extra {k}: {actual[k]}" for k in extra[:limit]]
    problems += [f"differs {k}: source {expected[k]}, table {actual[k]}" for k in differ[:limit]]
    return problems, len(missing), len(extra)
