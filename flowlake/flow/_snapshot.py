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
import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlake.errors import InvalidArgumentError, StorageError
from flowlake.table.bucketing import sorted_unique

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


def thaw_or_new(state: T | Frozen | None, new: Callable[[], T]) -> T:
    """The state a stateful operator gets (see :func:`thaw`), or ``new()`` for a key without one. A
    resumed state may be falsy (a Top-N or join state whose rows are on disk has length 0): it is
    tested for None, not for truth.

    >>> thaw_or_new(None, list), thaw_or_new([], lambda: [1])
    ([], [])
    """
    thawed = thaw(state)
    return new() if thawed is None else thawed


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


_CHUNK_MAGIC = b"FLCHUNK1"
"""First bytes of a chunk file with out-of-band buffers (older chunk files are one plain pickle)."""
_ALIGN = 64
_OUT_OF_BAND_MIN = 4096
"""Arrow buffers from this size on are stored beside the pickle and memory-mapped on read."""
_HEADER = struct.Struct("<8sQQ")
"""Magic, pickle length, buffer count; then (offset, length) per buffer, the pickle and the buffers."""
_SLOT = struct.Struct("<QQ")


def save_chunk(path: Path, records: Records) -> int:
    """Write ``records`` to ``path`` (fsynced): a pickle whose large Arrow buffers follow it, aligned,
    so that :func:`load_chunk` maps them instead of copying. The bytes written.

    >>> import tempfile
    >>> chunk = {"keys": np.arange(3), ROWS: pa.table({"v": pa.array(np.arange(10_000))})}
    >>> path = Path(tempfile.mkdtemp()) / "c.chunk"
    >>> size = save_chunk(path, chunk)
    >>> loaded = load_chunk(path)
    >>> loaded[ROWS].equals(chunk[ROWS]), loaded["keys"].tolist()
    (True, [0, 1, 2])
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if isinstance(raw.obj, pa.Buffer) and raw.nbytes >= _OUT_OF_BAND_MIN:
            buffers.append(raw)
            return False  # out of band: written after the pickle
        return True  # numpy arrays (operators may write to them) and small buffers stay in the pickle

    data = pickle.dumps(records, protocol=5, buffer_callback=out_of_band)
    start = _HEADER.size + _SLOT.size * len(buffers) + len(data)
    slots, at = [], start + -start % _ALIGN
    for raw in buffers:
        slots.append((at, raw.nbytes))
        at += raw.nbytes + -raw.nbytes % _ALIGN
    with path.open("wb") as file:
        file.write(_HEADER.pack(_CHUNK_MAGIC, len(data), len(buffers)))
        for slot in slots:
            file.write(_SLOT.pack(*slot))
        file.write(data)
        for (offset, _), raw in zip(slots, buffers, strict=True):
            file.write(bytes(offset - file.tell()))
            file.write(raw)
        file.flush()
        os.fsync(file.fileno())
        return file.tell()


def load_chunk(path: Path) -> Records:
    """The records :func:`save_chunk` wrote to ``path`` (or a chunk file of one plain pickle). Arrow
    data is not read but memory-mapped: the pages a resume touches are what it costs, in time and in
    memory, and the operating system may drop them again (the file is never rewritten; a mapping
    outlives the file's deletion)."""
    mapped = pa.memory_map(str(path))
    whole = mapped.read_buffer()
    mapped.close()  # the buffer keeps the mapping
    if whole.size < _HEADER.size or whole.slice(0, 8).to_pybytes() != _CHUNK_MAGIC:
        records: Records = pickle.loads(whole)  # noqa: S301 - a chunk this flow wrote
        return records
    _, length, count = _HEADER.unpack(whole.slice(0, _HEADER.size).to_pybytes())
    table = whole.slice(_HEADER.size, _SLOT.size * count).to_pybytes()
    views = [whole.slice(*_SLOT.unpack_from(table, i * _SLOT.size)) for i in range(count)]
    start = _HEADER.size + _SLOT.size * count
    loaded: Records = pickle.loads(whole.slice(start, length), buffers=views)  # noqa: S301 - ours
    return loaded


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

    @staticmethod
    def merge(chunks: Sequence[Records], *, drop_dead: bool) -> Records:
        """The records of ``chunks`` (oldest first), each key's last record (see :func:`merge_records`)."""
        return merge_records(chunks, drop_dead=drop_dead)

    @staticmethod
    def size(records: Records) -> int:
        """A chunk's size, which keeps the chunk sizes geometric."""
        return len(records["keys"])

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
        """One chunk's records (Arrow data memory-mapped from the file, see :func:`load_chunk`)."""
        path = self.folder / name
        try:
            return self._load(path)
        except FileNotFoundError as exc:
            raise StorageError(
                f"state chunk {str(path)!r} named by a bytewax snapshot is missing; resume with the state "
                "folder the flow ran with (FLOWLAKE_STATE_DIR), visible to every worker, or start the "
                "flow afresh from empty recovery partitions"
            ) from exc

    def _load(self, path: Path) -> Records:
        """A chunk file's records (a log with its own file form overrides this and :meth:`_save`)."""
        return load_chunk(path)

    def _save(self, path: Path, records: Records) -> int:
        """Write ``records`` to ``path``, fsynced; the bytes written."""
        return save_chunk(path, records)

    def _new_name(self) -> str:
        return f"{self.snapshots:08d}-{uuid.uuid4().hex[:12]}.chunk"

    def _write(self, records: Records) -> tuple[str, int]:
        name = self._new_name()
        self.bytes_written += self._save(self.folder / name, records)
        return name, self.size(records)

    def _merge_pair(self, older: str, newer: str, *, drop_dead: bool) -> tuple[str, int]:
        """Merge two chunks into a new one: its name and size."""
        return self._write(self.merge([self.read(older), self.read(newer)], drop_dead=drop_dead))

    def append(self, records: Records) -> Manifest:
        """Write ``records`` (the changes since the last snapshot) as a chunk; the new manifest."""
        self.snapshots += 1
        if self.size(records) or not self.chunks:
            self.chunks.append(self._write(records))
        while len(self.chunks) >= 2 and self.chunks[-2][1] <= 2 * self.chunks[-1][1]:
            older, newer = self.chunks[-2], self.chunks[-1]
            self.chunks[-2:] = [self._merge_pair(older[0], newer[0], drop_dead=len(self.chunks) == 2)]
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
        return self.merge([self.read(name) for name, _ in self.chunks], drop_dead=True)


ROWS = "rows"
"""A :class:`RowsChunkLog` chunk's Arrow table of rows, each carrying its key in a uint64 column."""


def merge_row_chunks(chunks: Sequence[Records], *, drop_dead: bool, key: str) -> Records:
    """Chunks of keys that each own many rows: ``keys`` (sorted unique uint64: the keys the chunk
    describes, a key without rows being gone) and :data:`ROWS` (an Arrow table whose ``key`` column
    holds each row's key). A later chunk naming a key replaces all of that key's earlier rows; a
    key's rows keep their order. Keys without rows are dropped only if ``drop_dead``.

    >>> import pyarrow as pa
    >>> old = {"keys": np.array([1, 2], np.uint64), ROWS: pa.table({"k": pa.array([1, 2, 2], pa.uint64())})}
    >>> new = {"keys": np.array([2], np.uint64), ROWS: pa.table({"k": pa.array([], pa.uint64())})}
    >>> merged = merge_row_chunks([old, new], drop_dead=True, key="k")
    >>> merged["keys"].tolist(), merged[ROWS].column("k").to_pylist()
    ([1], [1])
    """
    if not chunks:
        return {"keys": np.zeros(0, np.uint64), ROWS: None}
    # newest first: a chunk keeps the rows of the keys no newer chunk names (membership by Arrow's
    # hash-based is_in: a binary search per row over a million keys costs ten times more)
    newer: list[np.ndarray] = []
    parts: list[pa.Table] = []
    for chunk in reversed(chunks):
        rows = chunk[ROWS]
        if rows is not None and rows.num_rows and newer:
            named = pa.array(np.concatenate(newer), pa.uint64())
            taken = pc.is_in(rows.column(key), value_set=named)
            if pc.any(taken).as_py():
                rows = rows.filter(pc.invert(taken))
        if rows is not None and rows.num_rows:
            parts.append(rows)
        newer.append(np.asarray(chunk["keys"], np.uint64))
    parts.reverse()
    keys = sorted_unique(np.concatenate(newer))
    tables = [c[ROWS] for c in chunks if c[ROWS] is not None]
    merged = pa.concat_tables(parts) if parts else (tables[0].slice(0, 0) if tables else None)
    if drop_dead:
        column = np.zeros(0, np.uint64) if merged is None else merged.column(key).to_numpy()
        held = sorted_unique(np.asarray(column, np.uint64))
        at = np.minimum(np.searchsorted(keys, held), max(len(keys) - 1, 0))  # sorted needles: fast
        keys = held[keys[at] == held] if len(keys) else keys
    return {"keys": keys, ROWS: merged}


class RowsChunkLog(ChunkLog):
    """A :class:`ChunkLog` of keys that own many rows each (see :func:`merge_row_chunks`); the key
    column is named by :attr:`key` (a subclass sets it)."""

    key = ""

    @classmethod
    def merge(cls, chunks: Sequence[Records], *, drop_dead: bool) -> Records:
        """Each key's rows from the newest chunk naming it."""
        return merge_row_chunks(chunks, drop_dead=drop_dead, key=cls.key)

    @staticmethod
    def size(records: Records) -> int:
        """Keys named plus rows held."""
        rows = records[ROWS]
        return len(records["keys"]) + (0 if rows is None else int(rows.num_rows))


class ChunkedSnapshot(PickledSnapshot):
    """Mixin: a state that snapshots as one pickle while small, as a :class:`ChunkLog` manifest once
    its pickle reached the inline threshold (and from then on).

    A subclass says which log it keeps (:attr:`log_class`), marks everything changed when the log
    starts (:meth:`_mark_all_changed`), turns what changed since the last snapshot into records
    (:meth:`_changed_records`) and wraps a manifest into the object a snapshot pickles
    (:meth:`_chunked_snapshot`, whose unpickling rebuilds the state). Its ``__getstate__`` leaves
    out ``_log``, ``_chunk_root`` and ``_inline_bytes`` (the class defaults below stand in, also for
    states pickled before this mixin).
    """

    log_class: type[ChunkLog] = ChunkLog
    _log: ChunkLog | None = None
    _chunk_root: Path | None = None
    _inline_bytes = 0
    _not_pickled: tuple[str, ...] = ("_log", "_chunk_root", "_inline_bytes")
    """Attributes the snapshot's, or the operator's to set before each batch, not the state's."""

    def __getstate__(self) -> dict[str, Any]:
        """The state without its chunk log and folder (the snapshot's, not the state's)."""
        state = dict(self.__dict__)
        for name in self._not_pickled:
            state.pop(name, None)
        return state

    def keep_chunks(self, root: Path, inline_bytes: int = 0) -> None:
        """Snapshot as chunk files under ``root`` once the state's whole pickle reaches
        ``inline_bytes`` (0: from the next snapshot on); below that, one pickle as without.

        The first chunked snapshot writes the whole state; each later one only what changed since.
        A state stays chunked once it switched (its chunks are what later snapshots name).
        """
        self._chunk_root, self._inline_bytes = root, inline_bytes

    @property
    def chunked(self) -> bool:
        """Whether snapshots are chunk manifests (else whole pickles)."""
        return self._log is not None

    @property
    def snapshot_bytes(self) -> int:
        """Chunk bytes written by snapshots so far (0 without a chunk log)."""
        return 0 if self._log is None else self._log.bytes_written

    def __deepcopy__(self, memo: dict[int, Any]) -> Frozen:
        if self._log is None:
            whole = super().__deepcopy__(memo)
            if self._chunk_root is None or len(whole.data) < self._inline_bytes:
                return whole
            self._log = self.log_class.create(self._chunk_root)
            self._mark_all_changed()
        manifest = self._log.append(self._changed_records())
        return Frozen(pickle.dumps(self._chunked_snapshot(manifest), protocol=pickle.HIGHEST_PROTOCOL))

    def _mark_all_changed(self) -> None:
        raise NotImplementedError

    def _changed_records(self) -> Records:
        raise NotImplementedError

    def _chunked_snapshot(self, manifest: Manifest) -> object:
        raise NotImplementedError


class ChunkedState:
    """What a chunked snapshot pickles for a state: its manifest and scalars; unpickling calls
    ``restore(manifest, scalars)``, a module-level function of the state's module, to rebuild it."""

    def __init__(self, restore: Callable[[Manifest, dict[str, Any]], Any], manifest: Manifest,
                 scalars: dict[str, Any]) -> None:  # fmt: skip
        self.restore, self.manifest, self.scalars = restore, manifest, scalars

    def __reduce__(self) -> tuple[Any, tuple[Manifest, dict[str, Any]]]:
        return self.restore, (self.manifest, self.scalars)
