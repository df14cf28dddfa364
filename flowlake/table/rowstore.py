"""The local row store of point lookups: data files decoded once into memory-mapped Arrow files.

A Parquet file answers a lookup by decoding whole row groups (16,384 rows each in base files), so
10k keys spread over a table decode nearly all of it. A lookup instead reads rows from a copy of
each data file as an uncompressed Arrow IPC file on local disk, memory-mapped: fetching a row is
a gather of its values, and the operating system's page cache keeps what is read often. This is
what Paimon's lookup joins do with their local lookup files.

Copies are named by the data file's path, size and checksum (data files are immutable: their names
carry the commit instant and a uuid), written under a temporary name and renamed, so concurrent
processes share them and never see a partial one. The directory (``FLOWLAKE_LOOKUP_DIR``, default
``<tmp>/flowlake-lookup-<uid>``) is bounded by ``FLOWLAKE_LOOKUP_DISK_MB`` (default 4096): after a
write, the least recently opened copies are deleted until it fits (a process that has a deleted copy
mapped keeps reading it). ``FLOWLAKE_LOOKUP_DISK_MB=0`` turns the row store off; lookups then decode
the row groups of the Parquet files that hold the keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

_SUFFIX = ".arrow"
_STALE_TMP_SECONDS = 3600.0


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
        except OSError:
            with contextlib.suppress(OSError):
                scratch.unlink()
            return None
        self._evict(keep=target)
        return self.open(name)

    def _evict(self, *, keep: Path) -> None:
        """Delete the least recently opened copies until the directory fits its budget."""
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
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size

    def nbytes(self) -> int:
        """Bytes the copies take on disk."""
        with contextlib.suppress(OSError):
            return sum(p.stat().st_size for p in self.directory.glob(f"*{_SUFFIX}"))
        return 0
