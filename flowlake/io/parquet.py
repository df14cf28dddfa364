"""Writing and reading the Parquet data files of a table.

Files are written whole into memory and then to the filesystem in one call, so their size is known
for the commit record, and they are written in parallel threads (compression and object-store round
trips release the GIL). A file is never rewritten: names carry the commit instant and a uuid.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from flowlake.errors import CorruptFileError, StorageError
from flowlake.io.fs import Storage

T = TypeVar("T")
"""Result type of a parallel task."""
R = TypeVar("R")
"""Input type of a parallel task."""

_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="flowlake-io")


def parallel(func: Callable[[R], T], items: Sequence[R]) -> list[T]:
    """``[func(i) for i in items]`` on the I/O thread pool (inline for a single item)."""
    if len(items) <= 1:
        return [func(i) for i in items]
    return list(_POOL.map(func, items))


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """What the commit records about a data file it wrote."""

    size: int
    checksum: int
    """CRC-32 of the file's bytes: readers refuse a file whose bytes do not match."""


def write_parquet(
    storage: Storage,
    path: str,
    table: pa.Table,
    *,
    dictionary: bool = True,
    row_group_size: int | None = None,
    compression: str = "zstd",
    statistics: bool | Sequence[str] = False,
) -> WrittenFile:
    """Write ``table`` to ``path`` (absolute, under the storage root); return its size and checksum.

    ``dictionary=False`` suits small log files: their columns rarely repeat enough for dictionary
    pages to pay off, and plain encoding writes about twice as fast (and smaller, after zstd).
    ``row_group_size``: rows per row group (pyarrow's default if None); small groups let a point
    lookup decode little. ``compression``: ``"zstd"`` (level 1, smallest) or ``"lz4"`` (about twice as
    fast to decode, a third larger: for short-lived files read often). ``statistics``: write Parquet
    row-group min/max for all columns (True) or the named ones, so readers can skip row groups.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=compression,
        compression_level=1 if compression == "zstd" else None,
        write_statistics=statistics if isinstance(statistics, bool) else list(statistics),
        use_dictionary=dictionary,
        row_group_size=row_group_size,
    )
    data = sink.getvalue()
    parent = path.rsplit("/", 1)[0]
    try:
        storage.fs.create_dir(parent, recursive=True)
        with storage.fs.open_output_stream(path) as out:
            out.write(data)
    except OSError as exc:
        raise StorageError(f"cannot write data file {path!r}: {exc}") from exc
    return WrittenFile(int(data.size), zlib.crc32(memoryview(data)))


def read_parquet(
    storage: Storage,
    path: str,
    columns: Sequence[str] | None = None,
    *,
    size: int | None = None,
    checksum: int | None = None,
    row_groups: Callable[[pq.FileMetaData], Sequence[int] | None] | None = None,
) -> pa.Table:
    """Read ``columns`` (all if None) of one data file; columns the file lacks are left out.

    ``row_groups`` picks, from the file's footer, the row groups to decode (None from it: all).

    With ``size``/``checksum`` (from the commit record), the file's bytes are verified first, so a
    torn or altered file raises :class:`CorruptFileError` instead of being read.
    """
    try:
        with storage.fs.open_input_file(path) as handle:
            source: Any = handle
            if size is not None or checksum is not None:
                data = handle.read()
                if size is not None and len(data) != size:
                    raise CorruptFileError(
                        f"data file {path!r} has {len(data)} bytes but its commit recorded {size}; "
                        "the file was truncated or replaced (restore it from a backup or drop the version)"
                    )
                if checksum is not None and zlib.crc32(data) != checksum:
                    raise CorruptFileError(
                        f"data file {path!r} does not match the checksum its commit recorded; "
                        "its bytes were altered (restore it from a backup or drop the version)"
                    )
                source = pa.BufferReader(data)
            parquet = pq.ParquetFile(source)
            names = parquet.schema_arrow.names
            present = None if columns is None else [c for c in columns if c in names]
            chosen = None if row_groups is None else row_groups(parquet.metadata)
            if chosen is not None:
                return parquet.read_row_groups(list(chosen), columns=present, use_threads=False)
            return parquet.read(columns=present, use_threads=False)  # callers parallelize across files
    except FileNotFoundError as exc:
        raise StorageError(
            f"data file {path!r} is missing; it may have been cleaned while this version was read "
            "(pin versions that are being read, or keep more history)"
        ) from exc
    except CorruptFileError:
        raise
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"cannot read data file {path!r}: {exc}") from exc
