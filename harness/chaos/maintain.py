"""The compaction and cleaning component: one short-lived maintenance pass over the pipeline's tables."""

from __future__ import annotations

import time
from typing import Any, Final, Literal

from flowlake.lake import Catalog, connect

READY: Final = "chaos-maintain ready"
"""Printed once a maintenance process starts its work."""


def _slow_writes(cat: Catalog, seconds: float) -> Catalog:
    """``cat`` with each new file held open (it exists, empty) ``seconds`` before it is written.

    Compaction writes its files in parallel just before it commits, a window of milliseconds; held
    open, they make a kill at a random moment of the work often leave files and an inflight commit
    behind, for cleaning to deal with.
    """
    import pyarrow.fs as pafs

    from flowlake.io.fs import Storage

    class SlowWrites(pafs.FSSpecHandler):  # type: ignore[misc]
        def open_output_stream(self, path: str, metadata: Any) -> Any:
            stream = super().open_output_stream(path, metadata)
            time.sleep(seconds)
            return stream

    fs = pafs.PyFileSystem(SlowWrites(cat.storage.fsspec_fs))
    storage = Storage(uri=cat.storage.uri, root=cat.storage.root, fs=fs, fsspec_fs=cat.storage.fsspec_fs)
    return Catalog(cat.store, storage, catalog_url=cat.catalog_url)


def run_maintenance(
    action: Literal["compact", "clean"], *, retain_last: int, orphan_grace: float, slow_writes: float
) -> int:
    """One maintenance pass over the pipeline's tables (a short-lived chaos component).

    Args:
        action: Compact every table, or clean it.
        retain_last: Cleaning keeps this many latest versions.
        orphan_grace: Cleaning's grace period for orphan files (seconds).
        slow_writes: Seconds each new file is held open before it is written (see :func:`_slow_writes`).

    Returns:
        The exit code: 0; a table whose commit conflicts is skipped.
    """
    from flowlake.demo.flows import TABLES
    from flowlake.errors import CommitConflictError

    cat = connect()
    if slow_writes > 0:
        cat = _slow_writes(cat, slow_writes)
    print(READY, flush=True)
    started = time.monotonic()
    for name in TABLES:
        t = cat.load_table(name)
        print(f"{action} {name}", flush=True)
        try:
            if action == "compact":
                commit = t.compact()
                print(f"  -> {'nothing' if commit is None else commit.version}", flush=True)
            else:
                done = t.clean(retain_last=retain_last, orphan_grace_seconds=orphan_grace)
                removed = f"{done.files_deleted} files, {done.orphans_deleted} orphans"
                print(f"  -> oldest {done.oldest_version}, {removed}", flush=True)
        except CommitConflictError as exc:
            print(f"  -> skipped: {exc}", flush=True)
    print(f"done in {time.monotonic() - started:.3f}s", flush=True)
    return 0
