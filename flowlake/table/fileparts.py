"""Log files shared by the buckets of one commit: each bucket's rows are a *part* of the file.

A commit that touches many buckets writes one Parquet file, not one per bucket: each bucket's rows
are row groups of their own in it (its images, then its ``-U`` rows), and the footer's key-value
metadata maps each bucket to its row-group range. The catalog still records one data file per bucket
(its own path, row count, stats), named ``<file>#bucket=<n>``: everything that works per bucket
(merging, compaction, splits, lookups) reads its bucket's row groups and nothing else, and every
catalog rule keyed by path (a file retired once, conflicts, cleaning) holds per part. Size and
checksum are the whole file's (what a reader verifies before decoding).

Parts of one file are only ever added together (by the commit that wrote the file) and retired one
by one (compaction retires a bucket's), so a file is deleted when no catalog entry names any of its
parts (:func:`physical_paths`).

Small commits over many buckets are where this pays: a 64-bucket table's commit wrote 64 small files
(64 object-store PUTs, 64 footers for every later merge to parse); now one.

>>> part_path("t/data/commits/i-log.parquet", 3)
't/data/commits/i-log.parquet#bucket=3'
>>> part = "t/data/commits/i-log.parquet#bucket=3"
>>> physical_path(part), part_bucket(part)
('t/data/commits/i-log.parquet', 3)
>>> physical_path("t/data/bucket-00001/x.parquet"), part_bucket("t/data/bucket-00001/x.parquet") is None
('t/data/bucket-00001/x.parquet', True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Final

import pyarrow.parquet as pq

from flowlake.errors import CorruptFileError

_MARK: Final = "#bucket="
ROW_GROUPS_KEY: Final = b"flowlake.bucket_row_groups"
"""Footer key-value metadata of a shared log file: JSON ``{"<bucket>": [first, end], ...}``."""


def part_path(physical: str, bucket: int) -> str:
    """The catalog path of ``bucket``'s part of the shared file ``physical``."""
    return f"{physical}{_MARK}{bucket}"


def physical_path(path: str) -> str:
    """The file a catalog path names (itself, unless it names a part)."""
    return path.split(_MARK, 1)[0]


def part_bucket(path: str) -> int | None:
    """The bucket whose part a catalog path names, or None for a whole file."""
    _, mark, bucket = path.partition(_MARK)
    return int(bucket) if mark else None


def physical_paths(paths: Iterable[str]) -> set[str]:
    """The distinct files that catalog ``paths`` name."""
    return {physical_path(p) for p in paths}


def distinct_bytes(files: Iterable[tuple[str, int]]) -> int:
    """Bytes of the distinct files among ``(catalog path, size)`` pairs (parts share their file's size).

    >>> distinct_bytes([("a#bucket=0", 10), ("a#bucket=1", 10), ("b", 5)])
    15
    """
    sizes = {physical_path(path): size for path, size in files}
    return sum(sizes.values())


def part_row_groups(path: str, metadata: pq.FileMetaData) -> range | None:
    """The row groups of the part ``path`` names in a file with ``metadata`` (None: a whole file).

    Raises:
        CorruptFileError: If the file does not list the part's bucket.
    """
    return None if part_bucket(path) is None else part_span(path, layout_of(metadata))


def row_groups_of(path: str, metadata: pq.FileMetaData) -> range:
    """The row groups that hold what the catalog entry ``path`` names: its part's, or every one."""
    span = part_row_groups(path, metadata)
    return range(metadata.num_row_groups) if span is None else span


def part_span(path: str, layout: dict[int, tuple[int, int]]) -> range | None:
    """The row groups of the part ``path`` names, by its file's ``layout`` (:func:`layout_of`); None
    for a whole file.

    Raises:
        CorruptFileError: If the layout does not list the part's bucket.
    """
    bucket = part_bucket(path)
    if bucket is None:
        return None
    span = layout.get(bucket)
    if span is None:
        raise CorruptFileError(
            f"data file {physical_path(path)!r} has no row groups for the part {path!r} that the catalog "
            "names; the file was replaced (restore it from a backup or drop the version)"
        )
    return range(span[0], span[1])


def layout_of(metadata: pq.FileMetaData) -> dict[int, tuple[int, int]]:
    """A shared log file's bucket → row-group range map (empty for an unshared file)."""
    raw = (metadata.metadata or {}).get(ROW_GROUPS_KEY)
    if raw is None:
        return {}
    return {int(b): (int(span[0]), int(span[1])) for b, span in json.loads(raw).items()}


def layout_metadata(groups_per_bucket: Sequence[tuple[int, int]]) -> dict[bytes, bytes]:
    """The footer metadata for buckets written in order with the given row-group counts.

    >>> layout_metadata([(4, 2), (7, 1)])
    {b'flowlake.bucket_row_groups': b'{"4": [0, 2], "7": [2, 3]}'}
    """
    spans: dict[str, list[int]] = {}
    at = 0
    for bucket, count in groups_per_bucket:
        spans[str(bucket)] = [at, at + count]
        at += count
    return {ROW_GROUPS_KEY: json.dumps(spans).encode()}
