"""Chunked snapshots of a join's state: per side, the live rows of the join keys changed since the last.

A join's key partition holds both inputs' rows (:class:`~flowlake.flow._joinside.JoinSide`). With a
state folder, once its whole pickle reaches the inline threshold it snapshots through a
:class:`JoinChunkLog` instead: per side, a :func:`~flowlake.flow._snapshot.merge_row_chunks` log keyed
by the join key's hash. A batch marks the key hashes whose rows it changed on its side; a snapshot
writes, per side, every live row (with its count) of each marked hash, a marked hash without live
rows being a tombstone; a later chunk naming a hash replaces all that hash's earlier rows. A resume
merges the chunks into one Arrow table per side and rebuilds the hash indexes from it (they are never
pickled). Compacting a side's dead rows changes no key's live rows, so it needs no marks.

Rows whose key has a NULL are stored on the left (a left row must stay retractable) under the hash of
their key with the NULL in it, so they are marked, written and restored like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import pyarrow as pa

from flowlake.flow._joinside import JoinSide, key_columns, no_nulls
from flowlake.flow._snapshot import ROWS, ChunkLog, Records, RowsChunkLog, merge_row_chunks
from flowlake.table.bucketing import sorted_unique

SIDES: Final = ("left", "right")
KEY_HASH: Final = "__flowlake_kh"
"""Chunk column: the row's join-key hash (what a chunk's ``keys`` name)."""
COUNT: Final = "__flowlake_n"
"""Chunk column: the row's multiplicity."""


class JoinChunkLog(ChunkLog):
    """Snapshot chunks of a join's state: ``{"left": rows, "right": rows}``, each a rows-chunk record
    (see :func:`~flowlake.flow._snapshot.merge_row_chunks`) keyed by the join-key hash.

    >>> rows = lambda *h: pa.table({KEY_HASH: pa.array(h, pa.uint64()), COUNT: pa.array([1] * len(h))})
    >>> old = {"left": {"keys": np.array([1, 2], np.uint64), ROWS: rows(1, 2)},
    ...        "right": {"keys": np.array([2], np.uint64), ROWS: rows(2)}}
    >>> new = {"left": {"keys": np.array([2], np.uint64), ROWS: rows()},
    ...        "right": {"keys": np.zeros(0, np.uint64), ROWS: None}}
    >>> merged = JoinChunkLog.merge([old, new], drop_dead=True)
    >>> merged["left"][ROWS].column(KEY_HASH).to_pylist(), merged["right"]["keys"].tolist()
    ([1], [2])
    """

    @staticmethod
    def merge(chunks: Sequence[Records], *, drop_dead: bool) -> Records:
        """Per side, each key hash's rows from the newest chunk naming it."""
        return {
            side: merge_row_chunks([c[side] for c in chunks], drop_dead=drop_dead, key=KEY_HASH)
            for side in SIDES
        }

    @staticmethod
    def size(records: Records) -> int:
        """Key hashes named plus rows held, over both sides."""
        return sum(RowsChunkLog.size(records[side]) for side in SIDES)


def side_records(side: JoinSide | None, marked: list[np.ndarray]) -> Records:
    """The live rows (with counts and key hashes) of one side's ``marked`` key hashes."""
    keys = sorted_unique(np.concatenate(marked)) if marked else np.zeros(0, np.uint64)
    if side is None:
        return {"keys": keys, ROWS: None}
    ids = side.live_rows_with_key_hash(keys)
    rows = side.take(ids)
    rows = rows.append_column(KEY_HASH, pa.array(side.key_hash[ids], pa.uint64()))
    return {"keys": keys, ROWS: rows.append_column(COUNT, pa.array(side.count[ids], pa.int64()))}


def restore_side(
    records: Records, schema: pa.Schema, on: Sequence[str], types: Sequence[pa.DataType]
) -> JoinSide:
    """A join side holding the rows of a merged chunk record (its indexes are built on first use)."""
    side = JoinSide(schema, on)
    rows: pa.Table | None = records[ROWS]
    if rows is None or not rows.num_rows:
        return side
    body = rows.drop_columns([KEY_HASH, COUNT]).cast(schema)
    counts = np.asarray(rows.column(COUNT).to_numpy(), np.int64)
    hashes = np.asarray(rows.column(KEY_HASH).to_numpy(), np.uint64)
    side.add(body, counts, hashes, no_nulls(key_columns(body, on, types)))
    return side


class ChunkedJoin:
    """What a chunked snapshot of a join's state pickles: the manifest and the state's scalars;
    unpickling rebuilds the state (``restore``, given by the state's module)."""

    def __init__(self, restore: Any, manifest: Any, scalars: dict[str, Any]) -> None:
        self.restore, self.manifest, self.scalars = restore, manifest, scalars

    def __reduce__(self) -> tuple[Any, tuple[Any, dict[str, Any]]]:
        return self.restore, (self.manifest, self.scalars)
