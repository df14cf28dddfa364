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
    return _store(storage, path, sink.getvalue())


def _store(storage: Storage, path: str, data: pa.Buffer) -> WrittenFile:
    parent = path.rsplit("/", 1)[0]
    try:
        storage.fs.create_dir(parent, recursive=True)
        with storage.fs.open_output_stream(path) as out:
            out.write(data)
    except OSError as exc:
        raise StorageError(f"cannot write data file {path!r}: {exc}") from exc
    return WrittenFile(int(data.size), zlib.crc32(memoryview(data)))


MAX_GROUP_ROWS = 1_000_000
"""Most rows :func:`write_parquet_groups` writes as one row group (pyarrow's own limit is higher)."""


def write_parquet_groups(
    storage: Storage,
    path: str,
    groups: Sequence[pa.Table],
    *,
    metadata: dict[bytes, bytes],
    statistics: Sequence[str],
) -> WrittenFile:
    """Write ``groups`` (same schema, none empty, each at most :data:`MAX_GROUP_ROWS` rows) to
    ``path`` as one row group each, lz4 and plain encoded (as small log files are), with
    ``metadata`` in the footer and row-group statistics for the ``statistics`` columns; return its
    size and checksum."""
    if any(g.num_rows > MAX_GROUP_ROWS or not g.num_rows for g in groups):
        raise ValueError(f"each row group must hold 1 to {MAX_GROUP_ROWS} rows")
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(
        sink,
        groups[0].schema,
        compression="lz4",
        use_dictionary=False,
        write_statistics=list(statistics),
    ) as writer:
        for group in groups:
            writer.write_table(group, row_group_size=group.num_rows)
        writer.add_key_value_metadata(metadata)
    data = sink.getvalue()
    if pq.read_metadata(pa.BufferReader(data)).num_row_groups != len(groups):  # the layout relies on it
        raise StorageError(f"writing {path!r} did not give one row group per part")
    return _store(storage, path, data)


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

    def pick(metadata: pq.FileMetaData) -> list[Sequence[int] | None]:
        return [None if row_groups is None else row_groups(metadata)]

    return read_parquet_parts(storage, path, columns, size=size, checksum=checksum, parts=pick)[0]


def read_parquet_parts(
    storage: Storage,
    path: str,
    columns: Sequence[str] | None,
    *,
    size: int | None,
    checksum: int | None,
    parts: Callable[[pq.FileMetaData], Sequence[Sequence[int] | None]],
) -> list[pa.Table]:
    """Several parts of one data file, each a set of its row groups, in one decoding pass.

    ``parts`` gives, from the footer, each part's row groups (None: all); the union is decoded once
    and every part is a zero-copy slice of it. Verification as in :func:`read_parquet`.
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
            metadata = parquet.metadata
            every = range(metadata.num_row_groups)
            wanted = [list(every if groups is None else groups) for groups in parts(metadata)]
            union = sorted({g for groups in wanted for g in groups})
            if len(wanted) == 1 and union == list(every):
                table = parquet.read(columns=present, use_threads=False)  # callers parallelize files
            else:
                table = parquet.read_row_groups(union, columns=present, use_threads=False)
    except FileNotFoundError as exc:
        raise StorageError(
            f"data file {path!r} is missing; it may have been cleaned while this version was read "
            "(pin versions that are being read, or keep more history)"
        ) from exc
    except CorruptFileError:
        raise
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"cannot read data file {path!r}: {exc}") from exc
    table = without_layout_metadata(table)
    if len(wanted) == 1:
        return [table]
    starts: dict[int, int] = {}
    at = 0
    for g in union:
        starts[g] = at
        at += metadata.row_group(g).num_rows
    out = []
    for groups in wanted:
        slices = [table.slice(starts[g], metadata.row_group(g).num_rows) for g in groups]
        out.append(
            pa.concat_tables(slices) if len(slices) > 1 else slices[0] if slices else table.slice(0, 0)
        )
    return out


def without_layout_metadata(table: pa.Table) -> pa.Table:
    """``table`` without the footer metadata of the file layout (keys ``flowlake.*``), which is not
    part of the rows' schema."""
    meta = table.schema.metadata
    if not meta or not any(k.startswith(b"flowlake.") for k in meta):
        return table
    kept = {k: v for k, v in meta.items() if not k.startswith(b"flowlake.")}
    return table.replace_schema_metadata(kept or None)
