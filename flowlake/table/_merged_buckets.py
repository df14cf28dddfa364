"""Buckets with log files as a lazy dataset: each bucket is merged when a scan reaches it.

pyarrow has no Python-defined fragments, so each bucket is a virtual Arrow IPC file on a
:class:`pyarrow.fs.PyFileSystem` whose ``open_input_file`` merges that bucket (base + logs, see
:func:`flowlake.table.scan.read_snapshot`) and serves the result. A scan holds only the buckets
it is reading (pyarrow reads a few fragments ahead), not the table, and the dataset can be
scanned again (DuckDB scans a table once per reference), merging again each time.

pyarrow opens an IPC fragment twice per scan (its schema, then its batches); the merged bucket
of the first open is kept for the second one on the same thread and let go then.

A merge that fails (a file cleaned while the version is scanned, a corrupt file) must not raise
out of the file system: an exception from a Python file system during a DuckDB scan deadlocks
(DuckDB 2.0 with pyarrow 26). The error is logged and the bucket's file is served as
bytes that are not an Arrow file, so the scan fails in Arrow ("Could not open IPC input source
'ods/t/data/bucket-3.merged': Not an Arrow file") whatever columns it reads.
"""

from __future__ import annotations

import logging
import posixpath
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from pyarrow import ipc

from flowlake.catalog.base import DataFile

_log = logging.getLogger(__name__)

Merge = Callable[[Sequence[DataFile]], pa.Table]
"""Merges one bucket's files (in commit order) into its live rows, in the dataset's schema."""


class _MergeOnOpen(pafs.FileSystemHandler):  # type: ignore[misc]
    """A read-only file system of one file per bucket (``<bucket folder>.merged``), merged when opened."""

    def __init__(self, buckets: Mapping[str, Sequence[DataFile]], merge: Merge) -> None:
        self._buckets = dict(buckets)
        self._merge = merge
        self._kept = threading.local()

    def _bytes(self, path: str) -> pa.Buffer:
        kept: tuple[str, pa.Buffer] | None = getattr(self._kept, "item", None)
        if kept is not None and kept[0] == path:
            self._kept.item = None  # the second open of this fragment: serve and forget
            return kept[1]
        try:
            table = self._merge(self._buckets[path])
        except Exception as exc:
            _log.error("could not merge %s for a snapshot dataset: %s", path, exc)
            return pa.py_buffer(f"flowlake could not merge {path}: {exc}".encode())  # not Arrow
        sink = pa.BufferOutputStream()
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        buffer = sink.getvalue()
        self._kept.item = (path, buffer)
        return buffer

    def open_input_file(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._bytes(path))

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return pa.BufferReader(self._bytes(path))

    def get_type_name(self) -> str:
        return "flowlake-merged-buckets"

    def get_file_info(self, paths: Sequence[str]) -> list[pafs.FileInfo]:
        return [pafs.FileInfo(p, pafs.FileType.File) for p in paths]

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: Any) -> bool:
        return self is other

    def _read_only(self, *_: Any, **__: Any) -> NoReturn:
        raise OSError("the merged buckets of a flowlake snapshot are read-only")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _read_only
    delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


def merged_buckets_dataset(files: Sequence[DataFile], schema: pa.Schema, merge: Merge) -> ds.Dataset:
    """``files`` (of buckets with log files) as a dataset of ``schema`` merging a bucket per fragment."""
    by_bucket: dict[int, list[DataFile]] = {}
    for f in files:
        by_bucket.setdefault(f.bucket, []).append(f)
    buckets = {  # named for error messages: <table>/data/bucket-<n>.merged
        f"{posixpath.dirname(posixpath.dirname(found[0].path))}/bucket-{b}.merged": found
        for b, found in sorted(by_bucket.items())
    }
    filesystem = pafs.PyFileSystem(_MergeOnOpen(buckets, merge))
    fmt = ds.IpcFileFormat()
    fragments = [fmt.make_fragment(path, filesystem=filesystem) for path in buckets]
    return ds.FileSystemDataset(fragments, schema, fmt, filesystem=filesystem)
