"""Filesystems by URI: ``file://``, ``memory://``, ``s3://`` and anything else fsspec knows.

Data files are read and written through a :class:`pyarrow.fs.FileSystem`: the native local one for
``file://`` (fastest) and fsspec's implementation wrapped in ``PyFileSystem`` otherwise. All paths that
flowlake builds are joined under the warehouse root with validated names, so no name can reach outside it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

from flowlake.errors import InvalidArgumentError


class ConcurrentMemoryFileSystem(MemoryFileSystem):  # type: ignore[misc]
    """fsspec's in-memory filesystem (the same store), but every file opened for reading is a handle
    of its own: fsspec hands all readers of a path one shared buffer and position, so two threads
    reading one file (the parts of a shared log file, see :mod:`flowlake.table.fileparts`) would
    read each other's bytes.

    >>> fs = ConcurrentMemoryFileSystem()
    >>> fs.pipe("/doc/f", b"abc")
    >>> a, b = fs.open("/doc/f"), fs.open("/doc/f")
    >>> a.read(2), b.read(), a.read()
    (b'ab', b'abc', b'c')
    """

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        handle = super()._open(path, mode, **kwargs)
        if mode != "rb":
            return handle
        return MemoryFile(None, path, handle.getvalue())


@dataclass(frozen=True)
class Storage:
    """A warehouse root on one filesystem."""

    uri: str
    root: str
    fs: pafs.FileSystem
    fsspec_fs: Any = field(repr=False)

    def path(self, *parts: str) -> str:
        """Join validated path segments under the root."""
        for part in parts:
            if not part or part in {".", ".."} or "\\" in part or part.startswith("/"):
                raise InvalidArgumentError(f"refusing unsafe path segment {part!r} under {self.uri}")
            if any(seg in {"", ".", ".."} for seg in part.split("/")):
                raise InvalidArgumentError(f"refusing unsafe path segment {part!r} under {self.uri}")
        return posixpath.join(self.root, *parts)

    def relative(self, path: str) -> str:
        """Return ``path`` relative to the root (as stored in the catalog)."""
        prefix = self.root.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise InvalidArgumentError(f"path {path!r} is outside the warehouse {self.uri}")
        return path[len(prefix) :]

    def delete_tree(self, path: str) -> None:
        """Remove a folder and everything in it; absent folders are fine."""
        info = self.fs.get_file_info(path)
        if info.type != pafs.FileType.NotFound:
            self.fs.delete_dir(path)

    def list_files(self, path: str) -> list[pafs.FileInfo]:
        """Every file below ``path`` (recursively); empty if the folder is absent."""
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]


def open_storage(uri: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """Open the warehouse at ``uri``; a bare path means a local folder.

    For ``s3://`` without explicit options, ``FLOWLAKE_S3_ENDPOINT`` (e.g. a MinIO URL) sets the
    endpoint; credentials come from the usual AWS variables.
    """
    options = dict(storage_options or {})
    endpoint = os.environ.get("FLOWLAKE_S3_ENDPOINT")
    if uri.startswith("s3://") and endpoint and "client_kwargs" not in options:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if "://" not in uri:
        uri = Path(uri).resolve().as_uri()
    protocol, _, rest = uri.partition("://")
    if protocol == "file":
        root = str(Path(rest).resolve())
        Path(root).mkdir(parents=True, exist_ok=True)
        return Storage(uri=uri, root=root, fs=pafs.LocalFileSystem(), fsspec_fs=fsspec.filesystem("file"))
    try:
        fs_impl = (
            ConcurrentMemoryFileSystem() if protocol == "memory" else fsspec.filesystem(protocol, **options)
        )
    except (ImportError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot open warehouse {uri!r}: {exc}") from exc
    root = fs_impl._strip_protocol(uri).rstrip("/")
    if protocol == "memory":
        root = "/" + root.lstrip("/")
    if not root:
        raise InvalidArgumentError(f"warehouse {uri!r} needs a path or bucket")
    return Storage(uri=uri, root=root, fs=pafs.PyFileSystem(pafs.FSSpecHandler(fs_impl)), fsspec_fs=fs_impl)
