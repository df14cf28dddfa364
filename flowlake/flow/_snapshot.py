"""Cheap bytewax snapshots of large operator states.

At every epoch bytewax snapshots each touched stateful key with ``copy.deepcopy(state)`` and pickles
the copy for the recovery store. For a state of a few hundred thousand Python rows (a join side, a
dedup table) the object-by-object deep copy costs more than the epoch itself, and it grows with the
state. States that mix in :class:`PickledSnapshot` answer ``deepcopy`` with :class:`Frozen`: their
pickle, taken in C in one pass (and immutable, which is all a snapshot needs). Operators call
:func:`thaw` on the state they are given, because after a resume bytewax hands back that
:class:`Frozen` value.
"""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from flowlake.errors import InvalidArgumentError, StorageError

T = TypeVar("T")


class Frozen:
    """A state's pickle, standing in for it in bytewax's snapshots."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __getstate__(self) -> bytes:
        return self.data

    def __setstate__(self, data: bytes) -> None:
        self.data = data

    def thaw(self) -> Any:
        """The state again."""
        return pickle.loads(self.data)  # noqa: S301 - bytes this process or its recovery store wrote


class PickledSnapshot:
    """Mixin: ``copy.deepcopy`` (bytewax's snapshot) returns :class:`Frozen` instead of a deep copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        return Frozen(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


def thaw(state: T | Frozen | None) -> T | None:
    """``state`` itself, or the state a :class:`Frozen` snapshot holds."""
    if isinstance(state, Frozen):
        thawed: T = state.thaw()
        return thawed
    return state


STATE_DIR_ENV = "FLOWLAKE_STATE_DIR"
"""Environment variable naming the folder where keyed state keeps its chunk files (see :class:`ChunkLog`)."""

RETAIN_SNAPSHOTS = 32
"""Snapshots a chunk outlives its last manifest: how far back (in snapshots of one key) a resume may go."""


INLINE_BYTES_ENV = "FLOWLAKE_STATE_INLINE_BYTES"
"""Environment variable: the pickled size below which a state with a folder still snapshots inline."""

DEFAULT_INLINE_BYTES = 1 << 20
"""Below this many pickled bytes a whole pickle is cheaper than an fsynced chunk (``benchmarks/
aggregate.py --snapshots-only``, section (f)), so a key partition's state snapshots inline until it
first grows past it, and in chunks from then on."""

STATE_SUBDIR = "state"
"""``flowlake run -r DIR`` keeps keyed state chunks in ``DIR/state`` unless told otherwise."""


def state_dir(given: str | os.PathLike[str] | None) -> Path | None:
    """The chunk folder for keyed state: ``given``, else ``$FLOWLAKE_STATE_DIR``, else None (none)."""
    value = given if given is not None else os.environ.get(STATE_DIR_ENV) or None
    return None if value is None else Path(value)


def inline_bytes(given: int | None = None) -> int:
    """The inline threshold: ``given``, else ``$FLOWLAKE_STATE_INLINE_BYTES``, else the default.

    >>> inline_bytes(0), inline_bytes(None) > 0
    (0, True)
    """
    if given is not None:
        return given
    text = os.environ.get(INLINE_BYTES_ENV) or ""
    try:
        return int(text) if text else DEFAULT_INLINE_BYTES
    except ValueError as exc:
        message = f"{INLINE_BYTES_ENV} must be a whole number of bytes, got {text!r}"
        raise InvalidArgumentError(message) from exc


Records = dict[str, Any]
"""One chunk: ``keys`` (a list), ``live`` (bool array; False is a tombstone) and named columns
(numpy arrays or lists), all of one length; a later record of a key replaces an earlier one."""


def merge_records(chunks: Sequence[Records], *, drop_dead: bool) -> Records:
    """The records of ``chunks`` (oldest first) with each key's last record, tombstones kept unless
    ``drop_dead``.

    >>> old = {"keys": ["a", "b"], "live": np.array([True, True]), "n": np.array([1, 2])}
    >>> new = {"keys": ["b", "a"], "live": np.array([True, False]), "n": np.array([5, 0])}
    >>> merged = merge_records([old, new], drop_dead=True)
    >>> merged["keys"], merged["n"].tolist()
    (['b'], [5])
    """
    keys = [k for chunk in chunks for k in chunk["keys"]]
    last = {k: i for i, k in enumerate(keys)}
    take = np.fromiter(last.values(), dtype=np.int64, count=len(last))
    live = np.concatenate([c["live"] for c in chunks]) if chunks else np.zeros(0, bool)
    if drop_dead:
        take = take[live[take]]
    out: Records = {"keys": [keys[i] for i in take.tolist()], "live": live[take]}
    for name in chunks[0] if chunks else ():
        if name in ("keys", "live"):
            continue
        parts = [c[name] for c in chunks]
        if isinstance(parts[0], np.ndarray):
            out[name] = np.concatenate(parts)[take]
        else:
            joined = [v for part in parts for v in part]
            out[name] = [joined[i] for i in take.tolist()]
    return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a snapshot of chunked state holds instead of the state: its folder and chunk names."""

    folder: str
    chunks: tuple[tuple[str, int], ...]
    retired: tuple[tuple[int, str], ...]
    snapshots: int


class ChunkLog:
    """The immutable chunk files of one keyed state, so that a snapshot costs what changed.

    bytewax keeps, per state key, only the latest snapshot at or before the resume epoch (older ones
    are garbage-collected), so a snapshot must describe the whole state. Here it is a
    :class:`Manifest` naming chunk files: every snapshot writes one new chunk (the records changed
    since the last one, fsynced) and the manifest lists all chunks still needed, oldest first. Chunks
    are never rewritten; a merge writes a new chunk and retires the old ones, which are deleted only
    :data:`RETAIN_SNAPSHOTS` snapshots later, so a resume from any recent snapshot finds its files,
    and files written after the resumed epoch are simply never referenced again. Merges keep the chunk
    sizes geometric (a newer chunk at most half its predecessor), so each record is rewritten
    O(log n) times and the big base chunk only when the changes since outgrow half of it.
    """

    def __init__(self, manifest: Manifest) -> None:
        self.folder = Path(manifest.folder)
        self.chunks = list(manifest.chunks)
        self.retired = list(manifest.retired)
        self.snapshots = manifest.snapshots
        self.bytes_written = 0

    @classmethod
    def create(cls, root: Path) -> ChunkLog:
        """A new, empty log in a fresh folder under ``root``."""
        folder = root / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        return cls(Manifest(str(folder), (), (), 0))

    def manifest(self) -> Manifest:
        """The chunks as they stand, to snapshot."""
        return Manifest(str(self.folder), tuple(self.chunks), tuple(self.retired), self.snapshots)

    def read(self, name: str) -> Records:
        """One chunk's records."""
        path = self.folder / name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise StorageError(
                f"state chunk {str(path)!r} named by a bytewax snapshot is missing; resume with the state "
                "folder the flow ran with (FLOWLAKE_STATE_DIR), visible to every worker, or start the "
                "flow afresh from empty recovery partitions"
            ) from exc
        records: Records = pickle.loads(data)  # noqa: S301 - a chunk this flow wrote
        return records

    def _write(self, records: Records) -> tuple[str, int]:
        data = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        name = f"{self.snapshots:08d}-{uuid.uuid4().hex[:12]}.chunk"
        with (self.folder / name).open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        self.bytes_written += len(data)
        return name, len(records["keys"])

    def append(self, records: Records) -> Manifest:
        """Write ``records`` (the changes since the last snapshot) as a chunk; the new manifest."""
        self.snapshots += 1
        if records["keys"] or not self.chunks:
            self.chunks.append(self._write(records))
        while len(self.chunks) >= 2 and self.chunks[-2][1] <= 2 * self.chunks[-1][1]:
            older, newer = self.chunks[-2], self.chunks[-1]
            merged = merge_records(
                [self.read(older[0]), self.read(newer[0])], drop_dead=len(self.chunks) == 2
            )
            self.chunks[-2:] = [self._write(merged)]
            self.retired += [(self.snapshots, older[0]), (self.snapshots, newer[0])]
        keep = []
        for since, name in self.retired:
            if self.snapshots - since >= RETAIN_SNAPSHOTS:
                (self.folder / name).unlink(missing_ok=True)
            else:
                keep.append((since, name))
        self.retired = keep
        return self.manifest()

    def load(self) -> Records:
        """Every live record of the manifest's chunks (what a resume rebuilds the state from)."""
        return merge_records([self.read(name) for name, _ in self.chunks], drop_dead=True)
