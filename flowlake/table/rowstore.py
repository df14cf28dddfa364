"""The local row store of point lookups: data files decoded once into memory-mapped Arrow files.

A Parquet file answers a lookup by decoding whole row groups (16,384 rows each in base files), so
10k keys spread over a table decode nearly all of it. A lookup instead reads rows from a copy of
each data file as an uncompressed Arrow IPC file on local disk, memory-mapped: fetching a row is
a gather of its values, and the operating system's page cache keeps what is read often. This is
what Paimon's lookup joins do with their local lookup files.

Copies are named by the data file's path, size and checksum (data files are immutable: their names
carry the commit instant and a uuid), written under a temporary name and renamed, so concurrent
processes share them and never see a partial one. The directory (``FLOWLAKE_LOOKUP_DIR``, default
``<tmp>/flowlake-lookup-<uid>``) is bounded by ``FLOWLAKE_LOOKUP_DISK_MB`` (default 4096): once a
write takes it past that, the least recently opened copies are deleted until it is back under 90% of
it (a process that has a deleted copy mapped keeps reading it). Listing the directory costs a stat per
copy, thousands of them in a full one, so a store keeps a running total of the bytes it knows of and
lists the directory only when that total passes the budget, or every :data:`RESCAN_S` seconds (other
processes write there too). ``FLOWLAKE_LOOKUP_DISK_MB=0`` turns the row store off; lookups then decode
the row groups of the Parquet files that hold the keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa

_SUFFIX = ".arrow"
_STALE_TMP_SECONDS = 3600.0
RESCAN_S = 30.0
"""Seconds after which a store lists its directory again, whatever its running total says."""
LOW_WATER = 0.9
"""Eviction brings the directory down to this share of the budget (so the next writes do not evict)."""


def _default_dir() -> Path:
    uid = getattr(os, "getuid", lambda: 0)()
    configured = os.environ.get("FLOWLAKE_LOOKUP_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"flowlake-lookup-{uid}"


class RowStore:
    """A directory of memory-mapped copies of data files, bounded by ``max_bytes`` (0: off)."""

    def __init__(self, directory: str | Path | None = None, max_bytes: int | None = None) -> None:
        self.directory = Path(directory) if directory is not None else _default_dir()
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("FLOWLAKE_LOOKUP_DISK_MB", "4096")) * 2**20)
        self.max_bytes = max_bytes
        self._known_bytes: int | None = None
        """The directory's bytes as of the last listing, plus what this store wrote since."""
        self._listed_at = 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """Whether copies are kept at all."""
        return self.max_bytes > 0

    def name(self, path: str, size: int | None, checksum: int | None, protocol: str) -> str:
        """The copy's file name for a data file (its identity: where it is and what its bytes are)."""
        ident = f"{protocol}\0{path}\0{size}\0{checksum}".encode()
        return hashlib.sha1(ident, usedforsecurity=False).hexdigest() + _SUFFIX

    def open(self, name: str) -> pa.Table | None:
        """The copy called ``name``, memory-mapped (None if there is none, or it is unreadable)."""
        target = self.directory / name
        try:
            mapped = pa.memory_map(str(target))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError:
            return None
        try:
            table = pa.ipc.open_file(mapped).read_all()
        except (pa.ArrowInvalid, OSError):
            with contextlib.suppress(OSError):
                target.unlink()  # torn or foreign: rebuilt by the caller
            return None
        finally:
            mapped.close()  # the mapping lives on in the table's buffers; the descriptor is freed
        with contextlib.suppress(OSError):
            os.utime(target)  # eviction deletes the least recently opened copies first
        return table

    def put(self, name: str, table: pa.Table) -> pa.Table | None:
        """Write ``table`` as the copy ``name`` and map it; None if it cannot be written (disk full,
        a read-only directory, or larger than the whole budget): the caller reads Parquet instead."""
        if not self.enabled:
            return None
        table = table.combine_chunks()
        if table.nbytes > self.max_bytes:
            return None
        target = self.directory / name
        scratch = self.directory / f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with pa.OSFile(str(scratch), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            scratch.replace(target)
            written = target.stat().st_size
        except OSError:
            with contextlib.suppress(OSError):
                scratch.unlink()
            return None
        with self._lock:
            known = self._known_bytes
            if (
                known is None
                or known + written > self.max_bytes
                or time.monotonic() - self._listed_at > RESCAN_S
            ):
                self._evict(keep=target)
            else:
                self._known_bytes = known + written
        return self.open(name)

    def _evict(self, *, keep: Path) -> None:
        """List the directory; if it is over its budget, delete the least recently opened copies until
        it is under :data:`LOW_WATER` of it. Sets the running total (with the lock held)."""
        entries: list[tuple[float, int, Path]] = []
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(self.directory) as listing:
            for entry in listing:
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                if entry.name.endswith(".tmp"):
                    if now - stat.st_mtime > _STALE_TMP_SECONDS:  # left by a process that died
                        with contextlib.suppress(OSError):
                            Path(entry.path).unlink()
                    continue
                if entry.name.endswith(_SUFFIX):
                    entries.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in entries)
        if total > self.max_bytes:
            for _, size, path in sorted(entries):
                if total <= self.max_bytes * LOW_WATER:
                    break
                if path == keep:
                    continue
                with contextlib.suppress(OSError):
                    path.unlink()
                    total -= size
        self._known_bytes, self._listed_at = total, time.monotonic()

    def nbytes(self) -> int:
        """Bytes the copies take on disk."""
        with contextlib.suppress(OSError):
            return sum(p.stat().st_size for p in self.directory.glob(f"*{_SUFFIX}"))
        return 0
