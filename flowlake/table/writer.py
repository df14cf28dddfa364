"""Turning a write (upserts and deletes by key) into the exact changelog of one commit.

Rules, in order:

1. Within one batch the last occurrence of a key wins (earlier ones are ignored).
2. A key that is absent becomes ``+I``; a present key whose row differs becomes ``-U`` (old row) then
   ``+U`` (new row); a delete of a present key becomes ``-D`` (old row).
3. Re-writing a row identical to the current one, and deleting an absent key, produce no change.

Nulls compare equal to nulls and NaN to NaN when deciding whether a row changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.changelog import KIND_COLUMN, RowKind
from flowlake.errors import SchemaMismatchError
from flowlake.table.keystate import Keys, KeyState, key_list

POS_COLUMN = "_pos"
"""Position of a change within its commit, stored in log files; ``_seq`` is derived from it."""


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """The changelog of one commit and what it does to the writer's state."""

    changelog: pa.Table
    """Table columns plus ``_kind`` and ``_pos``, in commit order."""
    upserted: pa.Table
    upserted_keys: Keys
    deleted_keys: Keys
    counts: dict[str, int]
    keys: pa.Table | None = None
    """The key columns of every key the write decided on (after last-occurrence), changed or not: a
    delete of an absent key or a rewrite of an identical row is a decision too, so a concurrent
    commit that wrote one of those keys is a conflict (else the write's effect would be lost)."""

    @property
    def empty(self) -> bool:
        """Whether the write changes nothing."""
        return bool(self.changelog.num_rows == 0)


def _same_rows(old: pa.Table, new: pa.Table, columns: Sequence[str]) -> np.ndarray:
    same = np.ones(old.num_rows, dtype=bool)
    for name in columns:
        a, b = old.column(name), new.column(name)
        eq = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        eq = pc.or_(eq, both_null)
        if pa.types.is_floating(a.type):
            eq = pc.or_(eq, pc.fill_null(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
        same &= eq.to_numpy(zero_copy_only=False)
    return same


def keys_distinct(rows: pa.Table, primary_key: Sequence[str]) -> bool:
    """Whether no two rows share a key, decided in Arrow (NULLs compare equal, as in a group-by)."""
    if len(primary_key) == 1:
        column = rows.column(primary_key[0])
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        if pa.types.is_integer(column.type) and not column.null_count:
            # a sort beats count_distinct's hash table several times over on integers
            values = np.sort(column.to_numpy())
            return bool(len(values) < 2 or (values[1:] != values[:-1]).all())
        return bool(pc.count_distinct(column, mode="all").as_py() == rows.num_rows)
    groups = rows.select(list(primary_key)).group_by(list(primary_key), use_threads=False).aggregate([])
    return bool(groups.num_rows == rows.num_rows)


def _integer_key(rows: pa.Table, primary_key: Sequence[str]) -> np.ndarray | None:
    """The key as a numpy integer array, if it is one integer (or timestamp) column without nulls."""
    if len(primary_key) != 1:
        return None
    column = rows.column(primary_key[0])
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    if not pa.types.is_integer(column.type) or column.null_count:
        return None
    return np.asarray(column.to_numpy())


def last_occurrences(rows: pa.Table, primary_key: Sequence[str]) -> np.ndarray | None:
    """Row numbers (ascending) of the last occurrence of each key, or None if no key repeats.

    An integer key is decided by one stable sort (the last row of each run of equal keys); other
    keys through a dict of their Python values.

    >>> last_occurrences(pa.table({"id": [5, 7, 5, 9, 7]}), ["id"]).tolist()
    [2, 3, 4]
    >>> last_occurrences(pa.table({"id": [1, 2]}), ["id"]) is None
    True
    """
    if rows.num_rows < 2:
        return None
    values = _integer_key(rows, primary_key)
    if values is not None:
        order = np.argsort(values, kind="stable")  # equal keys keep their row order
        ordered = values[order]
        last = np.empty(len(ordered), dtype=bool)
        last[-1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=last[:-1])
        if last.all():
            return None
        return np.sort(order[last])
    if keys_distinct(rows, primary_key):
        return None
    final = {k: i for i, k in enumerate(key_list(rows, primary_key))}
    return np.fromiter(sorted(final.values()), dtype=np.int64, count=len(final))


def _pick(values: Keys, indices: np.ndarray) -> Keys:
    """``[values[i] for i in indices]``, without a numpy scalar per item."""
    if isinstance(values, np.ndarray):
        picked: np.ndarray = values[indices]
        return picked
    return list(map(values.__getitem__, indices.tolist()))


def plan_write(state: KeyState, rows: pa.Table, is_delete: np.ndarray) -> PlannedWrite:
    """Compute the changelog of writing ``rows`` (upserts, or deletes where ``is_delete``)."""
    keep = last_occurrences(rows, state.primary_key)
    if keep is not None:
        rows = rows.take(pa.array(keep))
        is_delete = is_delete[keep]
    keys = state.keys_of(rows)
    positions = state.lookup(keys)
    found = positions >= 0

    update_candidates = np.flatnonzero(found & ~is_delete)
    value_columns = [n for n in rows.column_names if n not in state.primary_key]
    changed = np.ones(len(update_candidates), dtype=bool)
    if len(update_candidates) and value_columns:
        old = state.take(positions[update_candidates])
        new = rows.take(pa.array(update_candidates))
        changed = ~_same_rows(old, new, value_columns)
    elif len(update_candidates):
        changed[:] = False  # a key-only table: rewriting a present key changes nothing
    updates = update_candidates[changed]
    inserts = np.flatnonzero(~found & ~is_delete)
    deletes = np.flatnonzero(found & is_delete)

    # after-images (+I, +U) come from the batch, before-images (-U, -D) from the state
    after_idx = np.concatenate([inserts, updates])
    after_kind = np.concatenate(
        [np.full(len(inserts), RowKind.INSERT, np.int8), np.full(len(updates), RowKind.UPDATE_AFTER, np.int8)]
    )
    before_idx = np.concatenate([updates, deletes])
    before_kind = np.concatenate(
        [
            np.full(len(updates), RowKind.UPDATE_BEFORE, np.int8),
            np.full(len(deletes), RowKind.DELETE, np.int8),
        ]
    )
    if len(inserts) == rows.num_rows:  # only new keys (an insert-only epoch): the batch as it is
        after, changelog, kinds = rows.cast(state.schema), rows.cast(state.schema), after_kind
        after_keys = keys
    else:
        after = rows.take(pa.array(after_idx, type=pa.int64())).cast(state.schema)
        before = state.take(positions[before_idx])
        # order: by batch position; a -U comes right before its +U
        order_key = np.concatenate([after_idx * 2 + 1, before_idx * 2])
        slots = np.full(2 * rows.num_rows, -1, dtype=np.int64)  # the keys are distinct: no sort needed
        slots[order_key] = np.arange(len(order_key))
        order = slots[slots >= 0]
        kinds = np.concatenate([after_kind, before_kind])[order]
        changelog = pa.concat_tables([after, before]).take(pa.array(order))
        after_keys = _pick(keys, after_idx)
    changelog = changelog.append_column(KIND_COLUMN, pa.array(kinds, type=pa.int8()))
    changelog = changelog.append_column(POS_COLUMN, pa.array(np.arange(len(kinds), dtype=np.int32)))

    return PlannedWrite(
        changelog=changelog,
        upserted=after,
        upserted_keys=after_keys,
        deleted_keys=_pick(keys, deletes),
        counts={"+I": len(inserts), "-U": len(updates), "+U": len(updates), "-D": len(deletes)},
        keys=rows.select(list(state.primary_key)),
    )


def changelog_to_write(changes: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Interpret a changelog as a write: the last change of each key decides its final state.

    ``+I``/``+U`` write the row; ``-D`` deletes the key, and so does a ``-U`` that is not followed by a
    ``+U`` of the same key (a retraction). A ``-U`` that is followed by its ``+U`` loses to it under the
    last-occurrence rule. Before-images in the input are not trusted: the commit computes exact ones
    from the table's current rows.
    """
    kinds = changes.column(KIND_COLUMN).to_numpy(zero_copy_only=False)
    is_delete = (kinds == RowKind.DELETE) | (kinds == RowKind.UPDATE_BEFORE)
    return changes.drop_columns([KIND_COLUMN]), is_delete


def merge_partial(state: KeyState, rows: pa.Table, columns: Sequence[str], table: str) -> pa.Table:
    """Full rows for a column-level update: the batch's ``columns`` over each key's current row.

    Keys that are absent get nulls in the other columns; a non-nullable column there is an error.
    """
    keys = key_list(rows, state.primary_key)
    positions = state.lookup(keys)
    found = positions >= 0
    old = state.take(np.where(found, positions, 0)) if found.any() else None
    arrays = []
    for field in state.schema:
        if field.name in rows.column_names:
            arrays.append(rows.column(field.name).cast(field.type))
            continue
        if old is None:
            column = pa.nulls(rows.num_rows, field.type)
        else:
            column = pc.if_else(pa.array(found), old.column(field.name), pa.nulls(rows.num_rows, field.type))
        if not field.nullable and column.null_count:
            first = int(np.flatnonzero(~found)[0])
            raise SchemaMismatchError(
                table, field.name,
                f"key {keys[first]!r} is new, so update_columns needs this non-nullable column too",
            )  # fmt: skip
        arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=state.schema)
